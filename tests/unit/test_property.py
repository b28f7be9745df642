"""Property: any federation that validates renders without error, deterministically."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escape_fed.model import parse_federation
from escape_fed.model.view import hosts
from escape_fed.ops.plan import plan
from escape_fed.render.inventory import inventory_files

BACKENDS = ["ssh", "lab", "openstack", "aws", "kubernetes"]


@st.composite
def federations(draw: st.DrawFn) -> dict[str, Any]:
    """Valid-by-construction federations exercising every backend, role and mode."""
    mode = draw(st.sampled_from(["global-pool", "flock"]))
    n_sites = draw(st.integers(1, 6))
    counter = iter(range(10_000))
    sites: dict[str, Any] = {}

    def host(backend: str, roles: list[str], capacity: bool = False) -> dict[str, Any]:
        h: dict[str, Any] = {"roles": roles}
        if backend == "ssh":
            n = next(counter)
            h["address"] = f"10.{n // 250}.{n % 250}.9"
        if backend in ("openstack", "aws", "kubernetes"):
            h["flavor"] = draw(st.sampled_from(["m1.small", "t3.large", "pod-4c"]))
        if capacity:
            h["capacity"] = {
                "cpus": draw(st.integers(1, 128)),
                "memory_mb": draw(st.integers(256, 1 << 20)),
                "gpus": draw(st.integers(0, 8)),
            }
        return h

    def cloud(backend: str) -> dict[str, Any] | None:
        if backend == "kubernetes":
            return {"namespace": "escape", "image": "htcondor/execute"}
        if backend in ("openstack", "aws"):
            return {"image": "debian-13", "region": "r1"}
        return None

    central_backend = draw(st.sampled_from(["ssh", "lab"]))
    central_hosts = {"cm": host(central_backend, ["central_manager"])}
    if draw(st.booleans()):
        central_hosts["gw"] = host(central_backend, ["ingress", "monitoring"])
    sites["central"] = {"backend": central_backend, "hosts": central_hosts}
    rses = []
    for s in range(n_sites):
        backend = draw(st.sampled_from(BACKENDS))
        hosts_: dict[str, Any] = {}
        ap_roles = ["access_point"] + (["central_manager"] if mode == "flock" else [])
        hosts_[f"ap{s}"] = host(backend, ap_roles)
        for w in range(draw(st.integers(1, 4))):
            hosts_[f"wn{s}x{w}"] = host(backend, ["execute"], capacity=True)
            if backend in ("openstack", "aws", "kubernetes") and draw(st.booleans()):
                hosts_[f"wn{s}x{w}"]["count"] = draw(st.integers(2, 5))
        site: dict[str, Any] = {
            "backend": backend,
            "hosts": hosts_,
            "network": {"behind_nat": draw(st.booleans())},
        }
        if c := cloud(backend):
            site["cloud"] = c
        if draw(st.booleans()):
            rse = f"SITE{s}_DISK"
            rses.append(rse)
            site["storage"] = {
                "rse": rse,
                "origin": f"root://se{s}.example.org:1094",
                "paths": ["/escape"],
            }
            if draw(st.booleans()):
                hosts_[f"xc{s}"] = host(backend, ["cache"])
                site["cache"] = {"disk_gb": draw(st.integers(1, 500))}
        sites[f"site-{s}"] = site
    datasets = {f"ds{i}": {"rses": [r], "path": f"/escape/ds{i}"} for i, r in enumerate(rses)}
    return {
        "federation": {"name": "prop", "trust_domain": "prop.example.org", "mode": mode},
        "iam": {
            "issuer": "https://iam.example.org/",
            "audience": "prop",
            "groups": {"/g1": {"account": "g1"}, "/g2": {"account": "g2"}},
        },
        "sites": sites,
        "datasets": datasets,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(federations())
def test_any_valid_federation_renders(data: dict[str, Any]) -> None:
    fed = parse_federation(data)  # valid by construction: the checks must agree
    files = inventory_files(fed)
    assert files == inventory_files(parse_federation(data))  # deterministic
    tree = yaml.safe_load(files["hosts.yml"])
    listed: set[str] = set()
    for group in tree["all"]["children"]["sites"]["children"].values():
        listed |= set(group["hosts"])
    assert listed == {h.name for h in hosts(fed)}
    for rel, text in files.items():
        assert isinstance(yaml.safe_load(text), dict), rel
    actions = plan(fed).actions
    assert actions and all(a.action == "create" for a in actions)

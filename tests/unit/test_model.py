"""The federation model: valid files load with defaults applied; derived facts are right."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import yaml

from escape_fed.errors import BadInput
from escape_fed.model import Mode, Role, load_federation, parse_federation
from escape_fed.model.loader import FederationFileError
from escape_fed.model.schema import _abs_path
from escape_fed.model.view import (
    cache_url,
    datasets_at,
    federation_central_manager,
    hosts,
    hosts_with,
    pool_central_manager,
    site_capacity,
)
from tests.conftest import BROKEN, LAB_FEDERATION, SAMPLES


def test_lab_federation_is_valid_and_complete() -> None:
    fed = load_federation(LAB_FEDERATION)
    assert fed.federation.mode is Mode.GLOBAL_POOL
    assert {"central", "site-a", "site-b"} <= set(fed.sites)
    for site in ("site-a", "site-b"):
        assert fed.sites[site].storage is not None
        assert hosts_with(fed, Role.CACHE, site)
        assert hosts_with(fed, Role.EXECUTE, site)
        assert hosts_with(fed, Role.ACCESS_POINT, site)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_are_valid_and_name_no_real_hosts(path: Path) -> None:
    fed = load_federation(path)
    for h in hosts(fed):
        # RFC 2606 / RFC 5737 placeholders only: never a real host in a sample.
        assert h.fqdn.endswith(".example.org"), h.fqdn
        if h.address:
            assert h.address.startswith(("192.0.2.", "198.51.100.", "203.0.113.")), h.address


def test_defaults_are_applied_in_one_place() -> None:
    data = yaml.safe_load((BROKEN / "_base.yaml").read_text())
    fed = parse_federation(data)
    assert fed.federation.domain == "escape.lab"
    assert fed.federation.central_site == "central"
    site_a = fed.sites["site-a"]
    assert site_a.cache is not None
    assert site_a.cache.ram_gb == 1  # XRootD's pfc.ram minimum
    assert (site_a.cache.low_watermark, site_a.cache.high_watermark) == (0.90, 0.95)
    assert fed.security.encryption == "REQUIRED"
    assert fed.lab.state_dir == "/var/lib/escape-fed/lab"
    wn = site_a.hosts["wn-a1"]
    assert wn.capacity is not None and wn.capacity.gpus == 0 and wn.capacity.disk_gb == 10


def test_derived_facts_of_the_lab() -> None:
    fed = load_federation(LAB_FEDERATION)
    cm = federation_central_manager(fed)
    assert cm is not None and cm.fqdn == "cm.central.escape.lab"
    assert pool_central_manager(fed, "site-b") == cm  # global-pool: one pool
    assert cache_url(fed, "site-a") == "root://cache-a.site-a.escape.lab:1094"
    assert cache_url(fed, "central") is None
    assert datasets_at(fed, "site-b") == ["collisions-2026"]
    assert site_capacity(fed, "site-a") == {
        "nodes": 2,
        "cpus": 3,
        "memory_mb": 3072,
        "gpus": 0,
        "disk_gb": 10,
    }
    # Lab addresses: site i of the file gets 10.77.i.0/24, hosts from .10, unique.
    addresses = [h.address for h in hosts(fed)]
    assert len(set(addresses)) == len(addresses)
    by_name = {h.name: h for h in hosts(fed)}
    assert by_name["cm"].address == "10.77.1.10"
    assert by_name["ap-a"].address == "10.77.2.10"
    assert by_name["ap-b"].address == "10.77.3.10"


def test_flock_sample_has_a_pool_per_site() -> None:
    fed = load_federation(Path(SAMPLES[0]))
    assert fed.federation.mode is Mode.FLOCK
    for site in ("infn-cnaf", "desy", "egi-cloud"):
        cm = pool_central_manager(fed, site)
        assert cm is not None and cm.site == site


def test_cloud_count_expands_to_named_instances() -> None:
    fed = load_federation(Path(SAMPLES[0]))
    names = [h.name for h in hosts(fed) if h.site == "egi-cloud"]
    assert names == ["egi-cm", "egi-wn-1", "egi-wn-2", "egi-wn-3", "egi-wn-4"]
    assert all(h.address is None for h in hosts(fed) if h.site == "egi-cloud")


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = (BROKEN / "_base.yaml").read_text()
    text = text.replace("mode: global-pool", "mode: federated")
    text = text.replace(
        "cpus: 2, memory_mb: 2048}\n      xc-a", "cpus: -1, memory_mb: 2048}\n      xc-a"
    )
    text = text.replace("issuer: https://", "issuer: http://")
    bad = tmp_path / "three.yaml"
    bad.write_text(text)
    with pytest.raises(FederationFileError) as info:
        load_federation(bad)
    paths = [p.path for p in info.value.problems]
    assert paths == ["federation.mode", "iam.issuer", "sites.site-a.hosts.wn-a1.capacity.cpus"]
    assert all(line.startswith(f"{bad}: ") for line in info.value.message.splitlines())


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        load_federation(tmp_path / "nope.yaml")
    with pytest.raises(BadInput, match="is a directory"):
        load_federation(tmp_path)


def test_yaml_anchors_and_aliases_are_refused_naming_the_line(tmp_path: Path) -> None:
    text = (
        (BROKEN / "_base.yaml")
        .read_text()
        .replace(
            "capacity: {cpus: 2, memory_mb: 2048}\n      xc-a",
            "capacity: &wn {cpus: 2, memory_mb: 2048}\n      xc-a",
        )
    )
    path = tmp_path / "anchors.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as info:
        load_federation(path)
    assert info.value.message.startswith(f"{path}: line 27, column 19: field 'capacity': ")
    assert "anchor '&wn': YAML anchors are not accepted" in info.value.message
    # positive control: the same file written out in full loads, and an inline merge still works
    path.write_text(
        text.replace("&wn ", "").replace("{cpus: 2, memory_mb", "{<<: {cpus: 2}, memory_mb")
    )
    fed = load_federation(path)
    cap = fed.sites["site-a"].hosts["wn-a1"].capacity
    assert cap is not None and (cap.cpus, cap.memory_mb) == (2, 2048)


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError("the loader took more than 2 s")


@pytest.mark.parametrize("name", ["yaml-alias-bomb", "yaml-alias-self"])
def test_an_alias_bomb_is_refused_in_well_under_a_second(name: str) -> None:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 2.0)  # the old loader expanded 10^9 nodes: stop it
    try:
        started = time.monotonic()
        with pytest.raises(BadInput, match="YAML anchors are not accepted"):
            load_federation(BROKEN / f"{name}.yaml")
        took = time.monotonic() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert took < 0.2, took


def test_a_dataset_beside_an_embargo_is_accepted(tmp_path: Path) -> None:
    """Paths compare by whole parts: /data/ds1x is neither in nor above /data/ds1."""
    text = (BROKEN / "_base.yaml").read_text()
    text = text.replace("{account: mini-a}", "{account: mini-a, paths: [/data/ds1x, /data/a]}")
    path = tmp_path / "beside.yaml"
    path.write_text(text)
    assert load_federation(path).datasets["ds1"].path == "/data/ds1"
    path.write_text(text.replace("[/data/ds1x, /data/a]", "[/data/ds1x, /data/ds1/a]"))
    with pytest.raises(FederationFileError) as info:
        load_federation(path)
    assert [p.path for p in info.value.problems] == ["datasets.ds1.path"]


@pytest.mark.parametrize(
    "value",
    ["/data", "/", "/escape/astro/sky-survey-dr1", "/a.b_c-d/e"],
)
def test_clean_paths_match_the_one_pattern(value: str) -> None:
    assert _abs_path(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "data",
        "/data/",
        "//data",
        "/data//x",
        "/data/../etc",
        "/./data",
        "/data\n",
        "/da ta",
        "/$(id)",
        "/`id`",
        "/data;x",
        "/data*",
        "/data%20",
        "/d'x",
        "",
    ],
)
def test_unclean_paths_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a clean absolute path"):
        _abs_path(value)


def _own_cert_federation(tmp_path: Path, key_mode: int) -> Path:
    """The base federation where the cache host gives its own certificate (and its CA)."""
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (tmp_path / "site.crt").write_text(pem)
    (tmp_path / "site-ca.crt").write_text(pem)
    key = tmp_path / "site.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    key.chmod(key_mode)
    text = (
        (BROKEN / "_base.yaml")
        .read_text()
        .replace(
            "      xc-a: {roles: [cache]}",
            f"      xc-a:\n        roles: [cache]\n"
            f"        tls: {{certificate: {tmp_path}/site.crt, key: {key}}}",
        )
    )
    text += f"security:\n  trusted_cas: [{tmp_path}/site-ca.crt]\n"
    path = tmp_path / "own.yaml"
    path.write_text(text)
    return path


def test_a_site_may_give_its_own_certificate(tmp_path: Path) -> None:
    fed = load_federation(_own_cert_federation(tmp_path, 0o600))
    tls = fed.sites["site-a"].hosts["xc-a"].tls
    assert tls is not None and tls.key == str(tmp_path / "site.key")
    assert fed.security.trusted_cas == (str(tmp_path / "site-ca.crt"),)


def test_an_own_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FederationFileError) as info:
        load_federation(_own_cert_federation(tmp_path, 0o644))
    assert [p.path for p in info.value.problems] == ["sites.site-a.hosts.xc-a.tls.key"]
    assert "readable by others (mode 644): expected 0600" in info.value.message

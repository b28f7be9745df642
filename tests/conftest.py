"""Shared test paths, the test tiers, and the deployed labs every lab tier shares.

Tiers (a marker each, given by where a test lives; `make test-TIER` runs one alone):

    unit      model, render, CLI, tokens and submit logic (no root, seconds)
    static    roles and playbooks: ansible-lint production profile, syntax, specs (no root)
    install   the package installed from a wheel and the Ansible collection
    runtime   the lab runtime itself (tests/lab): image, hosts, network, identity (no deploy)
    roles     molecule scenarios and role checks on lab hosts (root)
    e2e       the deployed federation in both modes: jobs, data, faults (root)
    tokens    IAM tokens at every entry point of the deployed federation (root)

Every test that needs lab hosts is also marked ``lab``: `pytest -m "not lab"` is the fast suite.

Deployed labs are shared: ONE global-pool federation (brought up by `escape-fed demo`, the
README's main command) serves every e2e, token, data-role and install test; ONE flock federation
serves the flock e2e tests and the flock role checks. Tests are ordered so that each lab's users
run together, tests marked ``destructive`` run last on their lab (in their marker's order), and
the flock lab goes down as soon as its last user has run.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB_FEDERATION = ROOT / "inventories" / "lab" / "federation.yaml"
FLOCK_FEDERATION = ROOT / "inventories" / "lab" / "federation-flock.yaml"
SAMPLES = sorted((ROOT / "inventories" / "samples").glob("*.yaml"))
BROKEN = ROOT / "tests" / "broken"
GOLDEN = ROOT / "tests" / "golden"

TOKEN_MODULES = ("test_issuer", "test_secrets", "test_rotation", "test_tokens_")


@pytest.fixture
def lab_federation_path() -> Path:
    return LAB_FEDERATION


def require_root() -> None:
    """The lab tiers run or fail with the reason: never a silent skip where `make test` runs."""
    if os.geteuid() != 0:
        pytest.fail(
            "the lab tiers need root (network namespaces, systemd-nspawn): run as root, "
            "or select the tiers without lab hosts: pytest -m 'not lab'",
            pytrace=False,
        )


# --- tiers and order ---------------------------------------------------------------------


def tier(item: pytest.Item) -> str:
    return tier_of(Path(str(item.path)))


def tier_of(path: Path) -> str:
    """The tier of a test file: its folder under tests/, split where one folder holds two."""
    rel = (path if path.is_absolute() else ROOT / path).relative_to(ROOT / "tests").parts
    top, name = rel[0], path.stem
    if top == "e2e":
        return "tokens" if name.startswith(TOKEN_MODULES) else "e2e"
    if top == "roles":
        return "static" if name == "test_static" else "roles"
    return "runtime" if top == "lab" else top  # unit, install; lab/ is the lab runtime


def lab_of(item: pytest.Item) -> str | None:
    """Which shared deployed lab ITEM uses: "flock", "global-pool" or None."""
    callspec = getattr(item, "callspec", None)
    mode = callspec.params.get("fed") if callspec is not None else None
    names = getattr(item, "fixturenames", ())
    if mode == "flock" or "flock_lab" in names:
        return "flock"
    if mode == "global-pool" or "shared_lab" in names:
        return "global-pool"
    return None


def _order(item: pytest.Item) -> tuple[int, int]:
    if item.get_closest_marker("lab") is None:
        group = 0  # no lab hosts: first, fast feedback
    elif tier(item) == "runtime":
        group = 1  # the lab runtime: boots hosts, deploys nothing
    elif lab_of(item) == "flock":
        group = 3
    elif lab_of(item) == "global-pool":
        group = 4
    else:
        group = 2  # a lab of its own (molecule)
    marker = item.get_closest_marker("destructive")
    return group, (int(marker.kwargs.get("order", 1)) if marker else 0)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # First: `-m TIER` deselects by these markers afterwards.
    for item in items:
        item.add_marker(getattr(pytest.mark, tier(item)))


class _Order:
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # After every other plugin's reordering (pytest groups parametrized fixtures): a stable
        # sort keeps their order inside each group.
        items.sort(key=_order)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Order(), "escape-fed-order")


# --- the shared deployed labs ------------------------------------------------------------


@dataclass
class DeployedLab:
    """A lab federation copy, deployed once for the whole session."""

    file: Path
    mode: str
    first: dict[str, Any]  # what the first run printed (--output json)
    home: Path | None  # HOME of the first run (it must stay empty)

    @cached_property
    def fed(self) -> Any:
        from escape_fed.model import load_federation

        return load_federation(self.file)

    @property
    def state_dir(self) -> Path:
        return Path(self.fed.lab.state_dir)

    def first_deploy(self) -> dict[str, Any]:
        """The first deploy's result: per-host recap and totals."""
        deploy: dict[str, Any] = self.first.get("deploy", self.first)
        return deploy

    def first_recap(self) -> dict[str, dict[str, int]]:
        """The first deploy's per-host recap, as the role checks read a converge's."""
        return {
            host: {
                "ok": s["ok"],
                "changed": s["changed"],
                "unreachable": s["unreachable"],
                "failed": s["failures"],
            }
            for host, s in self.first_deploy()["hosts"].items()
        }


SHARED = {
    # mode: (source, tag, prefix, supernet, command that brings it up)
    "global-pool": (LAB_FEDERATION, "e2e-efz", "efz", "10.92.0.0/16", "demo"),
    "flock": (FLOCK_FEDERATION, "e2e-efl", "efl", "10.82.0.0/16", "deploy"),
}
# Development side by side: ESCAPE_FED_TEST_SLOT=PP:N (two letters, an octet) gives this run's
# shared labs their own prefix and addresses (PPz on 10.N.0.0/16, PPl on 10.N+50.0.0/16), so
# two checkouts can run the lab tiers at once without touching each other's labs.
_SLOT = os.environ.get("ESCAPE_FED_TEST_SLOT")
if _SLOT:
    _pp, _n = _SLOT.split(":")
    _flock_net = f"10.{int(_n) + 50}.0.0/16"
    SHARED = {
        "global-pool": (LAB_FEDERATION, f"e2e-{_pp}z", f"{_pp}z", f"10.{_n}.0.0/16", "demo"),
        "flock": (FLOCK_FEDERATION, f"e2e-{_pp}l", f"{_pp}l", _flock_net, "deploy"),
    }
# Development: run against a lab this fixture deployed earlier and left up (its state dir's
# federation.yaml); it is reused as it is and left up afterwards.
REUSE = {"global-pool": "ESCAPE_FED_SHARED_LAB", "flock": "ESCAPE_FED_FLOCK_LAB"}
_DOWN: dict[str, Callable[[], None]] = {}


def _deployed(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedLab]:
    from tests.labfed import cli, lab_copy

    require_root()
    given = os.environ.get(REUSE[mode])
    if given:  # a lab deployed earlier by this fixture, reused and left up (development)
        path = Path(given)
        first = json.loads((path.parent / "first.json").read_text())
        yield DeployedLab(path, mode, first, None)
        return
    source, tag, prefix, supernet, command = SHARED[mode]
    workdir = Path(f"/var/lib/escape-fed/test-{tag}")
    path = lab_copy(source, tag, prefix, supernet, tmp_path_factory.mktemp(prefix))
    home = tmp_path_factory.mktemp(f"{prefix}-home")

    def down() -> None:
        cli("lab", "down", str(path))

    down()  # leftovers of a killed earlier run
    _DOWN[mode] = down
    try:
        proc = cli(command, str(path), "--output", "json", home=home, timeout=1500)
        assert proc.returncode == 0, f"{command} failed:\n{proc.stderr[-4000:]}"
        first: dict[str, Any] = json.loads(proc.stdout)
        kept = workdir / "first.json"  # for ESCAPE_FED_SHARED_LAB reuse
        kept.write_text(json.dumps(first))
        (workdir / "federation.yaml").write_text(path.read_text())
        print(f"\n{mode} lab: {command} took {first.get('seconds', '?')} s", file=sys.stderr)
        yield DeployedLab(path, mode, first, home)
    finally:
        _DOWN.pop(mode, None)
        down()


@pytest.fixture(scope="session")
def shared_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedLab]:
    """The global-pool lab federation, deployed by `escape-fed demo`; down at the end."""
    yield from _deployed("global-pool", tmp_path_factory)


@pytest.fixture(scope="session")
def flock_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedLab]:
    """The flock-mode lab federation, deployed by `escape-fed deploy`; down after its last user."""
    yield from _deployed("flock", tmp_path_factory)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield
    mode = lab_of(item)
    if mode == "flock" and (nextitem is None or lab_of(nextitem) != mode) and mode in _DOWN:
        _DOWN.pop(mode)()  # its users are done: free the machine for the next lab


# --- the suite's own time, tier by tier (bench/suite_time.py prints it) -------------------

_TIMES: dict[str, dict[str, float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    kind = "lab setup" if report.when == "setup" and report.duration > 60 else report.when
    key = tier_of(Path(report.fspath))
    row = _TIMES.setdefault(key, {})
    row[kind] = row.get(kind, 0.0) + report.duration
    if report.when == "call":
        row["tests"] = row.get("tests", 0) + 1
        if report.failed:
            row["failed"] = row.get("failed", 0) + 1


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = os.environ.get("ESCAPE_FED_SUITE_TIME")
    if out and _TIMES:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(_TIMES, indent=2, sort_keys=True) + "\n")

"""Shared test fixtures and paths."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB_FEDERATION = ROOT / "inventories" / "lab" / "federation.yaml"
SAMPLES = sorted((ROOT / "inventories" / "samples").glob("*.yaml"))
BROKEN = ROOT / "tests" / "broken"
GOLDEN = ROOT / "tests" / "golden"


@pytest.fixture
def lab_federation_path() -> Path:
    return LAB_FEDERATION

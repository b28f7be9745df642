"""`escape-fed revoke-node`: an unknown or non-execute host is bad input (exit 2), nothing done."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from escape_fed.cli.main import main
from tests.conftest import LAB_FEDERATION


@pytest.mark.parametrize("host", ["wn-z9", "ap-a", "cm.central.escape.lab"])
def test_a_host_that_is_no_execute_node_exits_2_naming_file_and_choices(host: str) -> None:
    result = CliRunner().invoke(main, ["revoke-node", "-f", str(LAB_FEDERATION), host])
    assert result.exit_code == 2, result.output
    assert str(LAB_FEDERATION) in result.output and f"HOST {host}:" in result.output
    assert "execute nodes: wn-a1, wn-a2, wn-b1" in result.output

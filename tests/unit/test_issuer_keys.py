"""Key ids: the lab issuer never makes one that begins with '-', and every command that takes a
key id accepts any id, one that begins with '-' included (older keys have such ids).

The issuer's key module is the file the token_issuer role installs on the host, imported from
its path; it needs joserfc only (in the dev environment), not the issuer's web stack.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import LAB_FEDERATION

FILES = Path(__file__).resolve().parents[2] / "roles" / "token_issuer" / "files"
TOOL = FILES / "escape-fed-issuer-keys"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "escape_fed_issuer_keys_under_test", FILES / "escape_fed_issuer" / "keys.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


keys = _load()


# --- the issuer's side: new kids never begin with '-' -----------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.integers(min_value=0, max_value=10**6))
def test_new_kids_never_begin_with_a_dash(_: int) -> None:
    data = keys.new_key()
    kid = data["kid"]
    assert not kid.startswith("-"), kid
    assert len(kid) == 16 and keys.KID.match(kid)


def test_a_key_whose_thumbprint_begins_with_a_dash_is_drawn_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deterministic: a real key whose kid would begin with '-' comes first; new_key skips it
    and keeps the thumbprint rule (kid = first 16 characters) for the next one."""
    real = keys.ECKey.generate_key
    dashed = next(
        k
        for k in (real(keys.CURVE, private=True) for _ in range(5000))
        if k.thumbprint().startswith("-")
    )
    drawn: list[Any] = []

    def generate(curve: str, private: bool = True) -> Any:
        key = dashed if not drawn else real(curve, private=private)
        drawn.append(key)
        return key

    monkeypatch.setattr(keys.ECKey, "generate_key", staticmethod(generate))
    data = keys.new_key()
    assert len(drawn) >= 2 and drawn[0] is dashed
    assert data["kid"] == drawn[-1].thumbprint()[:16] and not data["kid"].startswith("-")


# --- the host tool: `escape-fed-issuer-keys remove -- -XYZ` -------------------------------------


def key_dir(tmp_path: Path, *kids: str) -> Path:
    """A keys directory as the role leaves it: a JWK file per kid, the first kid active."""
    directory = tmp_path / "keys"
    directory.mkdir()
    for kid in kids:
        data = {**keys.new_key(), "kid": kid}
        (directory / f"{kid}{keys.SUFFIX}").write_text(json.dumps(data) + "\n")
    (directory / keys.ACTIVE).write_text(kids[0] + "\n")
    return directory


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tool changes keys only as root, and gives its files to the issuer's account: here,
    root (faked) giving them to whoever runs the test."""
    import pwd

    monkeypatch.setattr(keys.os, "geteuid", lambda: 0)
    monkeypatch.setattr(keys.pwd, "getpwnam", lambda name: pwd.getpwuid(os.getuid()))


@pytest.mark.parametrize(
    "argv",
    [
        ["remove", "--", "-XYZ"],  # the documented form
        ["remove", "-XYZ"],  # as older callers (the issuer-keys playbook) give it
    ],
)
def test_remove_accepts_an_id_that_begins_with_a_dash(
    tmp_path: Path, as_root: None, argv: list[str]
) -> None:
    directory = key_dir(tmp_path, "AbCdEf0123456789", "-XYZ")
    assert keys.main(["--dir", str(directory), *argv]) == 0
    assert keys._kids(directory) == ["AbCdEf0123456789"]


def test_an_id_that_reads_as_help_is_still_an_id(tmp_path: Path, as_root: None) -> None:
    directory = key_dir(tmp_path, "AbCdEf0123456789", "-hXY", "--v2")
    assert keys.main(["--dir", str(directory), "remove", "-hXY"]) == 0
    assert keys.main(["--dir", str(directory), "activate", "--v2"]) == 0
    assert keys._active(directory) == "--v2"
    assert keys._kids(directory) == ["--v2", "AbCdEf0123456789"]


def test_activate_accepts_an_id_that_begins_with_a_dash(tmp_path: Path, as_root: None) -> None:
    directory = key_dir(tmp_path, "AbCdEf0123456789", "-XYZ")
    assert keys.main(["--dir", str(directory), "activate", "--", "-XYZ"]) == 0
    assert keys._active(directory) == "-XYZ"


def test_the_active_key_is_still_refused_whatever_its_id(
    tmp_path: Path, as_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = key_dir(tmp_path, "-XYZ", "AbCdEf0123456789")
    assert keys.main(["--dir", str(directory), "remove", "--", "-XYZ"]) == 2
    assert "-XYZ is the active signing key" in capsys.readouterr().err
    assert keys._kids(directory) == ["-XYZ", "AbCdEf0123456789"]


def test_ids_as_operands_leaves_other_words_alone() -> None:
    f = keys.ids_as_operands
    assert f(["remove", "-XYZ"]) == ["remove", "--", "-XYZ"]
    assert f(["--dir", "/k", "remove", "-XYZ"]) == ["--dir", "/k", "remove", "--", "-XYZ"]
    assert f(["--dir", "remove", "list"]) == ["--dir", "remove", "list"]  # a dir named remove
    for same in (["remove", "--", "-XYZ"], ["remove", "-h"], ["remove", "abc"], ["add"]):
        assert f(same) == same
    assert f(["remove", "-a b"]) == ["remove", "-a b"]  # not an id: argparse's to refuse


@pytest.mark.skipif(os.geteuid() != 0, reason="the host tool changes keys as root only")
def test_the_installed_script_removes_an_id_that_begins_with_a_dash(tmp_path: Path) -> None:
    """The script itself (as /usr/local/sbin/escape-fed-issuer-keys), with this Python."""
    directory = key_dir(tmp_path, "AbCdEf0123456789", "-XYZ")
    env = {**os.environ, "PYTHONPATH": str(FILES), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--dir", str(directory), "remove", "--", "-XYZ"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    listed = subprocess.run(
        [sys.executable, str(TOOL), "--dir", str(directory), "list"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["AbCdEf0123456789"]


# --- escape-fed keys retire -- -abc -----------------------------------------------------------


def test_keys_retire_takes_an_id_that_begins_with_a_dash_after_the_separator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from escape_fed.cli.main import main
    from escape_fed.ops import keys as ops

    listed = [
        {"kid": "AbCdEf0123456789", "alg": "ES256", "state": "active", "created": 0},
        {"kid": "-abc", "alg": "ES256", "state": "published", "created": 0},
    ]
    runs: list[dict[str, str]] = []

    def run(fed: Any, source: str, progress: Any, extra: dict[str, str]) -> float:
        runs.append(extra)
        listed.pop()
        return 1.0

    monkeypatch.setattr(ops, "list_keys", lambda fed: [dict(k) for k in listed])
    monkeypatch.setattr(ops, "_run", run)
    result = CliRunner().invoke(
        main, ["keys", "retire", "-f", str(LAB_FEDERATION), "-o", "json", "--", "-abc"]
    )
    assert result.exit_code == 0, result.output
    assert runs == [{"escape_fed_keys_action": "retire", "escape_fed_keys_kid": "-abc"}]
    assert json.loads(result.stdout)["retired"] == "-abc"
    bare = CliRunner().invoke(main, ["keys", "retire", "-f", str(LAB_FEDERATION), "-abc"])
    assert bare.exit_code == 2 and "No such option" in bare.stderr
    assert "goes after --" in bare.stderr  # and says how
    helptext = CliRunner().invoke(main, ["keys", "retire", "--help"]).stdout
    assert "Give KID after --" in helptext

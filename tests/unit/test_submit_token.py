"""submit --token: a bad token file is refused before anything happens (exit 2, nothing sent).

The CLI runs in-process (click's runner) with the network side replaced by a tripwire: any
attempt to reach an access point fails the test. What a good token does is the lab's business
(tests/e2e/test_tokens_condor.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from escape_fed.backends import condor
from escape_fed.cli.main import main
from escape_fed.errors import BadInput
from escape_fed.model import load_federation
from escape_fed.ops.submit import JobRequest, _token_request, check_token_file, plan_job
from escape_fed.ops.tokens import exchange_for_job, job_scopes
from tests.conftest import LAB_FEDERATION

LAB = load_federation(LAB_FEDERATION)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


GOOD_SHAPE = f"{b64({'alg': 'ES256', 'typ': 'at+jwt'})}.{b64({'sub': 'x'})}.c2lnbmF0dXJl"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def tripwire(sub: Any) -> Any:
        calls.append(sub)
        raise AssertionError("a bad token file reached the access point")

    monkeypatch.setattr(condor, "submit_with_token", tripwire)
    return calls


def token_file(tmp_path: Path, text: str, mode: int = 0o600, name: str = "t.tok") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def submit(*args: str) -> Result:
    return CliRunner().invoke(
        main, ["submit", str(LAB_FEDERATION), *args, "--", "/usr/bin/id", "-un"]
    )


def refused(result: Result, needle: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert needle in result.output, result.output
    assert GOOD_SHAPE.split(".")[0] not in result.output  # never echoes the token


def test_missing_token_file_is_refused(tmp_path: Path, no_network: list[Any]) -> None:
    refused(submit("--token", str(tmp_path / "nope.tok")), "no such file")
    assert no_network == []


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666, 0o602])
def test_token_file_other_users_may_read_is_refused(
    tmp_path: Path, no_network: list[Any], mode: int
) -> None:
    path = token_file(tmp_path, GOOD_SHAPE, mode)
    refused(submit("--token", str(path)), f"mode {mode:04o}")
    assert no_network == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a token",
        "a.b",
        "a.b.c.d",
        f"{GOOD_SHAPE}\n{GOOD_SHAPE}",  # two lines
        f"{b64({'typ': 'JWT'})}.{b64({'sub': 'x'})}.c2ln",  # header without alg
        f"{b64({'alg': 'ES256'})}.bm90IGpzb24.c2ln",  # payload not JSON
        f"{b64({'alg': 'ES256'})}.{b64({'sub': 'x'})[:-1]}!.c2ln",  # not base64url
    ],
    ids=["empty", "text", "two-parts", "four-parts", "two-lines", "no-alg", "not-json", "bad-b64"],
)
def test_a_file_that_is_no_jwt_is_refused(tmp_path: Path, no_network: list[Any], text: str) -> None:
    refused(submit("--token", str(token_file(tmp_path, text))), "not a")
    assert no_network == []


def test_a_directory_is_refused(tmp_path: Path, no_network: list[Any]) -> None:
    refused(submit("--token", str(tmp_path)), "is a directory")


def test_user_and_token_together_are_refused(tmp_path: Path, no_network: list[Any]) -> None:
    path = token_file(tmp_path, GOOD_SHAPE)
    refused(submit("--token", str(path), "--user", "escape"), "--user and --token")


def test_wait_needs_a_token(no_network: list[Any]) -> None:
    refused(submit("--wait"), "only with --token")


def test_a_well_formed_token_file_passes_the_local_check(tmp_path: Path) -> None:
    for mode in (0o600, 0o400, 0o640):
        path = token_file(tmp_path, GOOD_SHAPE + "\n", mode, f"t{mode:o}.tok")
        assert check_token_file(path) == path


def test_the_job_carries_the_token_and_runs_the_nodes_program(tmp_path: Path) -> None:
    path = token_file(tmp_path, GOOD_SHAPE)
    req = _token_request(JobRequest("/usr/bin/id", ["-un"], dataset="sky-survey-dr1"), path)
    desc = plan_job(LAB, req).description
    assert "executable = /usr/bin/id\ntransfer_executable = false\n" in desc
    assert f"transfer_input_files = {path.resolve()}" in desc
    assert "BEARER_TOKEN_FILE=t.tok" in desc and "ESCAPE_DATASET=sky-survey-dr1" in desc


def test_a_relative_executable_is_sent_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.sh").write_text("#!/bin/sh\nid -un\n")
    path = token_file(tmp_path, GOOD_SHAPE)
    desc = plan_job(LAB, _token_request(JobRequest("job.sh"), path)).description
    assert f"executable = {tmp_path / 'job.sh'}\n" in desc
    assert "transfer_executable" not in desc
    with pytest.raises(BadInput, match="no such file here"):
        _token_request(JobRequest("missing.sh"), path)


def test_token_file_names_that_would_break_the_submit_file_are_refused(tmp_path: Path) -> None:
    path = token_file(tmp_path, GOOD_SHAPE, name="a,b.tok")
    with pytest.raises(BadInput, match="plain file name"):
        _token_request(JobRequest("/bin/true"), path)


def test_a_job_token_asks_for_the_dataset_only_or_the_users_reads() -> None:
    user = ["compute.create", "storage.read:/escape/astro", "storage.read:/escape/astro/embargoed"]
    path = LAB.datasets["sky-survey-dr1"].path
    assert job_scopes(LAB, "sky-survey-dr1", user) == [f"storage.read:{path}"]
    assert job_scopes(LAB, None, user) == user[1:]  # never a compute scope
    assert job_scopes(LAB, None, ["compute.create"]) == []


def test_a_token_that_reads_nothing_gets_no_job_token(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="reads nothing"):
        exchange_for_job(LAB, GOOD_SHAPE, [], tmp_path / "job.token")
    assert not (tmp_path / "job.token").exists()

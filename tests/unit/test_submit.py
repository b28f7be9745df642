"""submit: jobs go where their dataset is, with the capacity asked, or a clear refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escape_fed.errors import BadInput
from escape_fed.model import load_federation
from escape_fed.ops.submit import JobRequest, dataset_sites, parse_cron, plan_job
from tests.conftest import LAB_FEDERATION, SAMPLES

LAB = load_federation(LAB_FEDERATION)


def test_dataset_lookup_is_one_function() -> None:
    assert dataset_sites(LAB, "collisions-2026") == ["site-b"]
    assert dataset_sites(load_federation(SAMPLES[0]), "lsst-dp1") == ["infn-cnaf", "desy"]


def test_a_dataset_job_is_sent_to_the_site_that_holds_it() -> None:
    plan = plan_job(LAB, JobRequest("/bin/sh", ["-c", "echo hi"], dataset="collisions-2026"))
    assert plan.sites == ["site-b"]
    assert 'requirements = (TARGET.ESCAPE_SITE == "site-b")' in plan.description
    assert "ESCAPE_DATASET_PATH=/escape/hep/collisions-2026" in plan.description
    assert plan.description.rstrip().endswith("queue")


def test_capacity_narrows_the_sites() -> None:
    fed = load_federation(SAMPLES[0])
    plan = plan_job(fed, JobRequest("/bin/true", gpus=2))
    assert plan.sites == ["infn-cnaf"]  # the only site with a GPU node
    assert "request_gpus = 2" in plan.description


def test_gpus_where_no_site_has_any_are_refused_with_what_is_offered() -> None:
    with pytest.raises(BadInput) as info:
        plan_job(LAB, JobRequest("/bin/true", gpus=1))
    msg = info.value.message
    assert "no facility offers 1 cpus, 512 MB and 1 GPUs" in msg
    assert "site-a: 2 cpus, 2048 MB, 0 gpus" in msg


def test_a_job_must_fit_on_one_node() -> None:
    with pytest.raises(BadInput, match="no facility offers 3 cpus"):
        plan_job(LAB, JobRequest("/bin/true", cpus=3))  # site-a has 3 cpus, over two nodes


def test_dataset_and_site_that_disagree_are_refused() -> None:
    with pytest.raises(BadInput, match="held at site-a, not at --site site-b"):
        plan_job(LAB, JobRequest("/bin/true", dataset="sky-survey-dr1", site="site-b"))
    with pytest.raises(BadInput, match="unknown dataset"):
        plan_job(LAB, JobRequest("/bin/true", dataset="nope"))


def test_periodic_jobs_use_htcondor_cron_commands() -> None:
    plan = plan_job(LAB, JobRequest("/bin/true", every="*/5 1-3 * * 1,3", max_runs=2))
    for line in (
        "cron_minute = */5",
        "cron_hour = 1-3",
        "cron_day_of_month = *",
        "cron_month = *",
        "cron_day_of_week = 1,3",
        "on_exit_remove = (JobRunCount ?: 0) >= 2",
    ):
        assert line in plan.description
    forever = plan_job(LAB, JobRequest("/bin/true", every="0 * * * *"))
    assert "on_exit_remove = false" in forever.description


@pytest.mark.parametrize("bad", ["", "* * * *", "61x * * * *", "* * * * * *", "a b c d e"])
def test_bad_cron_is_refused(bad: str) -> None:
    with pytest.raises(BadInput, match="five-field cron expression"):
        parse_cron(bad)


def test_arguments_are_quoted_for_htcondor() -> None:
    plan = plan_job(LAB, JobRequest("/bin/sh", ["-c", "echo 'a b' \"q\""]))
    assert "arguments = \"-c 'echo ''a b'' \"\"q\"\"'\"" in plan.description


def test_access_point_choice_is_shared_by_submit_and_smoke() -> None:
    from escape_fed.ops.submit import check_user, choose_access_point

    assert choose_access_point(LAB, None, ["site-b"]).name == "ap-b"  # one near the data
    assert choose_access_point(LAB, None, ["central"]).name == "ap-a"  # none there: the first
    assert choose_access_point(LAB, "ap-b.site-b.escape.lab", ["site-a"]).name == "ap-b"
    with pytest.raises(BadInput, match="--access-point wn-a1: not an access point"):
        choose_access_point(LAB, "wn-a1", ["site-a"])
    check_user("escape")
    for bad in ("root; rm -rf /", "a b", "escape\n"):
        with pytest.raises(BadInput, match="expected a plain account name"):
            check_user(bad)


# --- bad input: a value that would break out of its line in the submit description ----------


@pytest.fixture
def nothing_submitted(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Both ways to an access point replaced by a tripwire that records the attempt."""
    from escape_fed.backends import condor, remote

    calls: list[Any] = []

    def tripwire(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        raise AssertionError("a bad argument reached the access point")

    monkeypatch.setattr(remote, "run", tripwire)
    monkeypatch.setattr(condor, "submit_with_token", tripwire)
    return calls


INJECTED = "/bin/true\nqueue 500\n#"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--", INJECTED], "COMMAND"),
        (["--", "/bin/echo", "ok", "x\nqueue 500"], "argument 2 of COMMAND"),
        (["--", "/bin/echo", "a\rqueue 500"], "argument 1 of COMMAND"),
        (["--", "/bin/echo", "a\0b"], "argument 1 of COMMAND"),
        (["--dry-run", "--", "/bin/echo", "x\nqueue 500"], "argument 1 of COMMAND"),
        (["--site", "site-a\nqueue 5", "--", "/bin/true"], "--site"),
        (["--dataset", "sky-survey-dr1\nqueue 5", "--", "/bin/true"], "--dataset"),
    ],
)
def test_a_line_break_in_any_argument_is_refused_and_nothing_is_submitted(
    argv: list[str], named: str, nothing_submitted: list[Any]
) -> None:
    from click.testing import CliRunner

    from escape_fed.cli.main import main

    result = CliRunner().invoke(main, ["submit", str(LAB_FEDERATION), *argv])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], result.stderr
    assert "single lines" in errors[0]
    assert "queue 500" not in result.stdout  # no description printed, even with --dry-run
    assert nothing_submitted == []


def test_a_line_break_is_refused_on_the_token_path_too(
    tmp_path: Path, nothing_submitted: list[Any]
) -> None:
    from escape_fed.ops.submit import submit_with_token

    token = tmp_path / "t.tok"
    token.write_text(
        "eyJhbGciOiAiRVMyNTYifQ.eyJzdWIiOiAieCJ9.c2ln\n"  # {"alg": "ES256"}.{"sub": "x"}
    )
    token.chmod(0o600)
    with pytest.raises(BadInput, match="argument 1 of COMMAND"):
        submit_with_token(LAB, JobRequest("/bin/echo", ["x\nqueue 500"]), token, outdir=tmp_path)
    with pytest.raises(BadInput, match="--outdir"):
        submit_with_token(LAB, JobRequest("/bin/true"), token, outdir=tmp_path / "a\nqueue 5")
    assert nothing_submitted == []


def test_check_request_names_every_kind_of_value() -> None:
    from escape_fed.ops.submit import check_request

    check_request(JobRequest("/bin/echo", ["a b", "it's", '"q"'], environment={"A": "b c"}))
    for req, named in (
        (JobRequest("/bin/true", input_files=["a\nb"]), "input file"),
        (JobRequest("/bin/true", environment={"A": "x\ry"}), "environment variable A"),
        (JobRequest("/bin/true", every="* * * * *\nqueue 5"), "--every"),
    ):
        with pytest.raises(BadInput, match=named):
            check_request(req)


def _v2_args(raw: str) -> list[str]:
    """HTCondor's V2 (job ad ``Arguments``) syntax back into a list: spaces separate, ``'``
    quotes, ``''`` inside quotes is one ``'``."""
    out: list[str] = []
    cur: list[str] | None = None
    quoted, i = False, 0
    while i < len(raw):
        c = raw[i]
        if quoted and c == "'" and raw[i + 1 : i + 2] == "'":
            (cur := cur if cur is not None else []).append("'")
            i += 2
            continue
        if c == "'":
            quoted = not quoted
            cur = cur if cur is not None else []
        elif c == " " and not quoted:
            if cur is not None:
                out.append("".join(cur))
            cur = None
        else:
            (cur := cur if cur is not None else []).append(c)
        i += 1
    if cur is not None:
        out.append("".join(cur))
    return out


NORMAL_ARGS = [
    "-c",
    "echo 'a b' \"q\"",
    "two  spaces",
    "it's",
    '"',
    "'",
    "$HOME and $(Cluster) and $ENV(HOME) $",
    "tab\there",
    "plain",
]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_normal_arguments_round_trip_through_htcondor_submit_exactly() -> None:
    """The positive twin: what HTCondor's own submit code makes of the description's arguments
    is the list given, spaces, quotes and dollars included."""
    import htcondor  # type: ignore[import-untyped]  # the v1 bindings: Submit.jobs() expands

    plan = plan_job(LAB, JobRequest("/bin/sh", NORMAL_ARGS, dataset="collisions-2026"))
    assert plan.description.rstrip().endswith("queue")
    sub = htcondor.Submit(plan.description.rsplit("queue", 1)[0])
    ad = next(iter(sub.jobs(count=1)))
    assert ad["Cmd"] == "/bin/sh"
    assert _v2_args(ad["Arguments"]) == NORMAL_ARGS
    assert "ESCAPE_DATASET_PATH=/escape/hep/collisions-2026" in ad["Environment"]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\0"),
            min_size=1,
            max_size=12,
        ).filter(lambda a: "$$" not in a),  # $$(ATTR): HTCondor's match-time substitution
        min_size=1,
        max_size=5,
    )
)
def test_any_single_line_arguments_round_trip(args: list[str]) -> None:
    import htcondor

    plan = plan_job(LAB, JobRequest("/bin/echo", args))
    sub = htcondor.Submit(plan.description.rsplit("queue", 1)[0])
    ad = next(iter(sub.jobs(count=1)))
    assert _v2_args(ad["Arguments"]) == args

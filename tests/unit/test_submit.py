"""submit: jobs go where their dataset is, with the capacity asked, or a clear refusal."""

from __future__ import annotations

import pytest

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

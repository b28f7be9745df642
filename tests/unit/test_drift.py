"""The converge record (escape_fed/ops/drift.py) and the host-side check that reads it
(playbooks/files/verify_state.py), without a lab: events in, record out; files on this machine
checked against a record, each kind of drift found and named.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

from escape_fed.ops.drift import Recorder, load_record, record_path
from tests.conftest import ROOT

CHECK = ROOT / "playbooks" / "files" / "verify_state.py"
ME = pwd.getpwuid(os.getuid()).pw_name


def _event(kind: str, host: str, action: str, res: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": kind,
        "event_data": {"host": host, "task_action": f"ansible.builtin.{action}", "res": res},
    }


def test_the_record_keeps_what_each_host_was_left_with() -> None:
    rec = Recorder()
    owner = {"mode": "0644", "owner": "root", "group": "root"}
    events = [
        _event(
            "runner_on_ok", "wn", "template", {"dest": "/etc/a.conf", "checksum": "c1", **owner}
        ),
        _event(
            "runner_item_on_ok",
            "wn",
            "file",
            {"path": "/etc/d", "state": "directory", "mode": "0700", "owner": "root"},
        ),
        # the loop's summary after its items: not read again
        _event(
            "runner_on_ok", "wn", "file", {"results": [{"path": "/etc/d", "state": "directory"}]}
        ),
        _event("runner_on_ok", "wn", "systemd_service", {"name": "condor", "state": "started"}),
        _event("runner_on_ok", "wn", "systemd_service", {"name": "condor", "enabled": True}),
        _event(
            "runner_on_ok",
            "wn",
            "user",
            {"name": "astro", "state": "present", "uid": 1000, "home": "/home/astro"},
        ),
        _event("runner_on_ok", "wn", "file", {"path": "/opt/x/__pycache__", "state": "absent"}),
        _event(
            "runner_on_ok", "wn", "file", {"path": "/etc/a.conf", "state": "file", "mode": "0600"}
        ),
    ]
    for ev in events:
        rec.observe(ev)
    wn = rec.hosts["wn"].as_dict()
    assert wn["files"] == {"/etc/a.conf": {"checksum": "c1", **owner, "mode": "0600"}}
    assert wn["dirs"] == {"/etc/d": {"mode": "0700", "owner": "root"}}
    assert wn["services"] == {"condor": {"active": True, "enabled": True}}
    assert wn["users"] == {"astro": {"uid": 1000, "home": "/home/astro"}}
    assert wn["absent"] == ["/opt/x/__pycache__"]


def test_delegated_hidden_failed_and_read_only_results_are_not_the_hosts_state() -> None:
    rec = Recorder()
    delegated = {"_ansible_delegated_vars": {"ansible_host": "localhost"}}
    for ev in [
        # made on the control machine for this host (a loop item carries the mark)
        _event(
            "runner_item_on_ok",
            "gw",
            "file",
            {"path": "/secrets", "state": "directory", **delegated},
        ),
        _event(
            "runner_on_ok", "gw", "copy", {"dest": "/secrets/x.ext", "checksum": "c", **delegated}
        ),
        _event("runner_on_ok", "gw", "copy", {"censored": "the output has been hidden"}),
        _event("runner_on_ok", "gw", "stat", {"stat": {"path": "/etc/passwd", "exists": True}}),
        _event("runner_on_failed", "gw", "copy", {"dest": "/etc/f", "checksum": "c"}),
        _event("runner_on_ok", "gw", "command", {"cmd": ["true"], "rc": 0}),
    ]:
        rec.observe(ev)
    state = rec.hosts["gw"].as_dict()
    assert not any(state[k] for k in ("files", "dirs", "links", "absent", "services", "users"))
    assert rec.hosts.keys() == {"gw"}  # the host is known, with nothing recorded


def test_a_record_is_read_only_for_the_inputs_it_was_written_for(tmp_path: Path) -> None:
    rec = Recorder()
    rec.observe(_event("runner_on_ok", "wn", "template", {"dest": "/etc/a", "checksum": "c"}))
    path = record_path(tmp_path / "state")
    rec.save(path, "fp-1")
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_record(path, "fp-1") == {
        "wn": {
            "files": {"/etc/a": {"checksum": "c"}},
            "dirs": {},
            "links": {},
            "absent": [],
            "services": {},
            "users": {},
            "listed": {},
        }
    }
    assert load_record(path, "fp-2") is None  # inputs changed since: a converge is due
    path.write_text("{not json")
    assert load_record(path, "fp-1") is None


def _check(want: dict[str, Any]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(CHECK)],
        input=json.dumps(want),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found: list[str] = json.loads(proc.stdout)
    return found


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_the_host_check_finds_each_kind_of_drift_and_nothing_else(tmp_path: Path) -> None:
    conf, gone, made = tmp_path / "a.conf", tmp_path / "gone.conf", tmp_path / "d"
    conf.write_text("x = 1\n")
    os.chmod(conf, 0o640)
    made.mkdir(mode=0o700)
    os.chmod(made, 0o700)
    removed = tmp_path / "removed"
    want: dict[str, Any] = {
        "files": {str(conf): {"checksum": _sha1(conf), "mode": "0640", "owner": ME}},
        "dirs": {str(made): {"mode": "0700"}},
        "absent": [str(removed)],
        "users": {ME: {"uid": os.getuid()}},
    }
    assert _check(want) == []  # as recorded: nothing to say

    conf.write_text("x = 2\n")
    os.chmod(made, 0o755)
    removed.mkdir()
    want["files"][str(gone)] = {"checksum": "0" * 40}
    want["users"]["no-such-account-ef"] = {"uid": 4242}
    found = _check(want)
    assert f"{conf}: content differs from the converge" in found
    assert f"{made}: mode 0755, recorded 0700" in found
    assert f"{removed}: exists, the converge removed it" in found
    assert f"{gone}: missing" in found
    assert "account no-such-account-ef: missing" in found
    assert len(found) == 5, found


def test_a_captured_directory_holds_every_entry_and_notices_one_added(tmp_path: Path) -> None:
    conf = tmp_path / "config.d"
    conf.mkdir()
    (conf / "10-ours.conf").write_text("A = 1\n")
    (conf / "20-secret.key").write_text("k\n")  # written by a task that hid its result
    os.chmod(conf / "20-secret.key", 0o600)
    (conf / "sub").mkdir()
    (conf / "unit.service").symlink_to("/dev/null")
    proc = subprocess.run(
        [sys.executable, str(CHECK)],
        input=json.dumps({"capture": [str(conf)]}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rec = Recorder()
    rec.observe(
        _event("runner_on_ok", "h", "template", {"dest": f"{conf}/10-ours.conf", "checksum": "x"})
    )
    state = rec.hosts["h"]
    assert state.config_dirs() == []  # not under /etc, /usr/local or /opt: nothing to capture
    state.add_listing(json.loads(proc.stdout))
    want = state.as_dict()
    assert want["files"][f"{conf}/10-ours.conf"] == {"checksum": "x"}  # the role's result wins
    assert want["files"][f"{conf}/20-secret.key"]["mode"] == "0600"
    assert want["links"] == {f"{conf}/unit.service": "/dev/null"}
    assert f"{conf}/sub" in want["dirs"]
    want["files"][f"{conf}/10-ours.conf"]["checksum"] = _sha1(conf / "10-ours.conf")
    assert _check(want) == []

    (conf / "99-stray.conf").write_text("ALLOW_WRITE = *\n")
    (conf / "20-secret.key").unlink()
    found = _check(want)
    assert f"{conf}/99-stray.conf: added since the converge" in found
    assert f"{conf}/20-secret.key: removed since the converge" in found
    assert f"{conf}/20-secret.key: missing" in found
    assert len(found) == 3, found

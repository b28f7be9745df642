# Ansible callback plugin: one JSON line per play, task and host result, for escape-fed's
# progress display and deploy summary. Loaded by escape_fed.backends.ansible; writes to the file
# named by ESCAPE_FED_EVENTS. Results of no_log tasks carry no message.
from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]

DOCUMENTATION = """
name: escape_fed_events
type: notification
short_description: JSON lines of task results for escape-fed
description: One JSON object per line for each play, task, host result and host summary.
requirements: [ESCAPE_FED_EVENTS names the output file]
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "escape_fed_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        path = os.environ.get("ESCAPE_FED_EVENTS")
        self._out = open(path, "a", buffering=1, encoding="utf-8") if path else None  # noqa: SIM115

    def _emit(self, **event: Any) -> None:
        if self._out is not None:
            self._out.write(json.dumps(event, default=str) + "\n")

    def _result(self, kind: str, result: Any) -> None:
        task = result._task
        msg = None
        if kind in ("failed", "unreachable") and not task.no_log:
            res = result._result
            msg = res.get("msg") or res.get("stderr") or res.get("module_stderr")
            if isinstance(msg, str):
                msg = msg.strip()[-600:]
        self._emit(event=kind, host=result._host.get_name(), task=task.get_name(), msg=msg)

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._emit(event="play", name=play.get_name())

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._emit(event="task", name=task.get_name())

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result("changed" if result._result.get("changed") else "ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result("unreachable", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result("skipped", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        for host in sorted(stats.processed):
            self._emit(event="stats", host=host, **stats.summarize(host))

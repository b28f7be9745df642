"""Ansible from Python: what driving it through ansible-runner costs.

escape-fed drives Ansible with ansible-runner (escape_fed.backends.ansible.run_playbook: its
event stream gives the progress lines and the recap). Its hand-written runner (a subprocess and
a callback plugin writing JSON lines) was not measurably faster: 9.03 s against ansible-runner's
9.30 s for this playbook (3 %, within noise), so the maintained library replaced it.

This prints, for one playbook of N no-op tasks on the control machine (connection local: no
lab needed, the figure is the driver's own cost), the median wall time of R runs of
escape-fed's run_playbook and of a bare `ansible-playbook` subprocess with the same
environment, and the overhead: target under 10 %.
Usage: python bench/runner_bench.py [--tasks 40] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from escape_fed.backends.ansible import ansible_env, executable, run_playbook  # noqa: E402

TASK = """\
    - name: No-op {n}
      ansible.builtin.command: /bin/true
      changed_when: false
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ef-runner-bench-"))
    inventory = work / "hosts.yml"
    inventory.write_text(
        "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    book = work / "noop.yml"
    book.write_text(
        "- name: Runner benchmark\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        + "".join(TASK.format(n=n) for n in range(args.tasks))
    )
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.runs):
        start = time.monotonic()
        result = run_playbook(inventory, book, lambda _m: None)
        ours.append(time.monotonic() - start)
        assert result.ok and result.hosts["localhost"].ok == args.tasks, result
        with ansible_env() as env:
            start = time.monotonic()
            bare = subprocess.run(
                [executable("ansible-playbook"), "-i", str(inventory), str(book)],
                env=env,
                capture_output=True,
                check=False,
            )
            theirs.append(time.monotonic() - start)
        assert bare.returncode == 0, bare.stdout[-2000:]
    a, b = statistics.median(ours), statistics.median(theirs)
    overhead = a / b - 1
    print(
        f"runner.run_playbook_s {a:.2f}  (escape-fed through ansible-runner, median of {args.runs})"
    )
    print(
        f"runner.bare_s {b:.2f}  (ansible-playbook alone, {args.tasks} tasks, "
        f"median of {args.runs})"
    )
    verdict = "met" if overhead < 0.10 else "MISSED"
    print(f"runner.overhead {overhead:+.0%}  (target < 10 %: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

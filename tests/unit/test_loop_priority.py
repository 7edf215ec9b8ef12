"""podrt.aio.priority in a real process: the loop's thread raised, the threads
and children it starts at nice 0 (SCHED_RESET_ON_FORK), and a session
leader's autogroup raised too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lowering a nice value needs root (CAP_SYS_NICE)")

PROBE = """
import os, subprocess, threading
from podrt.aio.priority import prioritize_loop_thread
prioritize_loop_thread(-5)
seen = []
thread = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
thread.start(); thread.join()
child = subprocess.run(["sh", "-c", "exec cat /proc/self/stat"], capture_output=True, text=True).stdout
# empty for a task in the kernel's default autogroup (a session that no setsid() ever made, as PID 1's)
autogroup = (open("/proc/self/autogroup").read().split() or ["-"])[-1] if os.path.exists("/proc/self/autogroup") else "-"
print(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), seen[0], child.rsplit(")", 1)[1].split()[16], autogroup)
"""


def _probe(new_session: bool) -> list[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": src}, start_new_session=new_session)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_loop_thread_is_raised_and_its_threads_and_children_are_not() -> None:
    loop, thread, child, _ = _probe(new_session=False)
    assert (loop, thread, child) == ("-5", "0", "0")


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="no autogroup scheduling here")
def test_a_session_leader_raises_its_autogroup_and_only_then() -> None:
    assert _probe(new_session=True)[3] == "-5"
    assert _probe(new_session=False)[3] != "-5"  # the session of whoever started it is not ours to raise

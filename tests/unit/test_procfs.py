"""host/procfs: the one reader of /proc's per-process files."""

from __future__ import annotations

import os
import subprocess
import sys

from podrt.host import procfs


def test_stat_of_self() -> None:
    st = procfs.stat(os.getpid())
    assert st is not None
    assert (st.state, st.ppid, st.pgrp) == ("R", os.getppid(), os.getpgrp())


def test_scan_finds_a_child_by_parent_and_group() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        found = dict(procfs.scan())[child.pid]
        assert (found.ppid, found.pgrp) == (os.getpid(), child.pid)
        assert procfs.cmdline(child.pid)[:2] == [sys.executable.encode(), b"-c"]
        assert procfs.pid_running(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not procfs.pid_running(child.pid)


def test_a_zombie_is_not_running() -> None:
    child = subprocess.Popen(["true"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
    try:
        assert procfs.stat(child.pid) is not None
        assert not procfs.pid_running(child.pid)
    finally:
        child.wait()


def test_a_gone_process_reads_as_none() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    assert procfs.stat(child.pid) is None
    assert procfs.comm(child.pid) is None
    assert procfs.cmdline(child.pid) is None
    assert procfs.cgroup(child.pid) is None
    assert child.pid not in procfs.pids()

"""podrt.aio.reaper with real children: the exit status without reaping, the
reap a moment later through the pidfd, and nothing left behind."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time

import pytest

from podrt.aio import reaper
from podrt.host import proc, procfs
from tests.support.popen_threads import gone


def exited(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """A child started in a group of its own, and its pidfd once it has exited (unreaped)."""
    child = subprocess.Popen(argv, start_new_session=True)
    pidfd = os.pidfd_open(child.pid)
    select.select([pidfd], [], [], 10)
    return child, pidfd


def test_the_status_is_read_without_reaping_and_the_reap_comes_after_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper, "REAP_DELAY", 0.3)
    child, pidfd = exited(["sh", "-c", "exit 7"])
    assert reaper.exit_status(pidfd) == 7
    assert reaper.exit_status(pidfd) == 7  # still there to ask: not reaped
    st = procfs.stat(child.pid)
    assert st is not None and st.state == "Z"
    assert not proc.group_has_members(child.pid)  # a zombie leader holds no pipes
    asked = time.monotonic()
    reaper.reap_later(pidfd)
    assert os.path.exists(f"/proc/{child.pid}")  # not yet: the delay
    assert gone(child.pid)
    assert time.monotonic() - asked >= 0.25
    child.returncode = 7  # what callers tell Popen, so it never waits itself


def test_a_child_killed_by_a_signal_reads_as_popen_has_it() -> None:
    child, pidfd = exited(["sh", "-c", "kill -KILL $$"])
    assert reaper.exit_status(pidfd) == -signal.SIGKILL
    reaper.reap_later(pidfd)
    assert gone(child.pid)
    child.returncode = -signal.SIGKILL


def test_a_child_reaped_elsewhere_first_is_no_error_and_its_pidfd_is_closed() -> None:
    child, pidfd = exited(["true"])
    assert child.wait() == 0  # Popen reaped it (as a send_signal's poll may)
    assert reaper.exit_status(pidfd) is None
    reaper.reap_later(pidfd)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/self/fd/{pidfd}") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not os.path.exists(f"/proc/self/fd/{pidfd}")  # closed by the reaper (the number may be reused after)


def test_reaps_come_in_order_of_exit_from_one_thread() -> None:
    children = [exited(["sh", "-c", f"exit {n}"]) for n in range(5)]
    for n, (child, pidfd) in enumerate(children):
        assert reaper.exit_status(pidfd) == n
        reaper.reap_later(pidfd)
        child.returncode = n
    assert all(gone(child.pid) for child, _ in children)
    assert sum(t.name == "podrt-reaper" for t in threading.enumerate()) == 1


def test_what_waits_is_reaped_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reaper, "REAP_DELAY", 60.0)
    child, pidfd = exited(["true"])
    assert reaper.exit_status(pidfd) == 0
    reaper.reap_later(pidfd)
    child.returncode = 0
    reaper.reap_all_now()  # what the process runs at exit (atexit)
    assert not os.path.exists(f"/proc/{child.pid}")

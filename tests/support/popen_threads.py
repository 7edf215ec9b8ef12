"""Which threads start and reap children: Popen and the reaping waitid, spied; whether a child is gone."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any

import pytest


def popen_threads(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """(starters, reapers): the names of the threads that run each Popen and
    each reap (a waitid that releases the child, not a WNOWAIT look at its
    status) from now on, in order."""
    starters: list[str] = []
    reapers: list[str] = []
    real, real_waitid = subprocess.Popen, os.waitid

    started: set[int] = set()

    def spy(*args: Any, **kwargs: Any) -> Any:
        starters.append(threading.current_thread().name)
        child = real(*args, **kwargs)
        started.add(child.pid)
        return child

    def waitid_spy(idtype: int, ident: int, options: int) -> Any:
        found = real_waitid(idtype, ident, options)
        if not options & os.WNOWAIT and found is not None and found.si_pid in started:  # not an earlier test's child
            reapers.append(threading.current_thread().name)
        return found

    monkeypatch.setattr(os, "waitid", waitid_spy)
    monkeypatch.setattr(subprocess, "Popen", spy)
    return starters, reapers


def gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether process `pid` is gone (reaped: no /proc entry, zombie or not) within `timeout`."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.005)
    return not os.path.exists(f"/proc/{pid}")


def reaped(reapers: list[str], count: int, timeout: float = 10.0) -> list[str]:
    """`reapers` once it holds `count` reaps (they come a moment after each exit: aio/reaper.py)."""
    deadline = time.monotonic() + timeout
    while len(reapers) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return reapers

"""Which threads start and reap children: Popen and Popen.wait, spied."""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import pytest


def popen_threads(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """(starters, reapers): the names of the threads that run each Popen and
    each Popen.wait from now on, in order."""
    starters: list[str] = []
    reapers: list[str] = []
    real, real_wait = subprocess.Popen, subprocess.Popen.wait

    def spy(*args: Any, **kwargs: Any) -> Any:
        starters.append(threading.current_thread().name)
        return real(*args, **kwargs)

    def wait_spy(self: subprocess.Popen[bytes], timeout: float | None = None) -> int:
        reapers.append(threading.current_thread().name)
        return real_wait(self, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", wait_spy)
    monkeypatch.setattr(subprocess, "Popen", spy)
    return starters, reapers

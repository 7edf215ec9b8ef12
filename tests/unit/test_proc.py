"""podrt.host.proc with real children: groups killed, pipes bounded, output kept."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from podrt.host import proc
from podrt.host.procfs import pid_running


def _pid(path: Path) -> int:
    for _ in range(200):
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.01)
    raise AssertionError(f"{path} never written")


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether `pid` is gone (or a zombie) within `within` s: a SIGKILL is
    delivered, and the orphan reaped, a moment after the signal was sent."""
    deadline = time.monotonic() + within
    while pid_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def test_cancel_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper"
    task = asyncio.ensure_future(proc.run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], timeout=60))
    sleeper = await asyncio.to_thread(_pid, pidfile)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(_gone, sleeper)


async def test_output_is_kept_when_a_helper_outside_the_group_holds_the_pipe(tmp_path: Path) -> None:
    """A helper that left the group (setsid) is not ours to kill; the caller
    still gets what the child printed, after a bounded wait."""
    pidfile = tmp_path / "escaped"
    started = time.monotonic()
    try:
        code, out, _ = await proc.run(["sh", "-c", f"echo result; setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' &"],
                                      timeout=60)
        assert (code, out) == (0, b"result\n")
        assert time.monotonic() - started < 30  # not the helper's 300 s
    finally:
        escaped = _pid(pidfile)
        os.kill(escaped, signal.SIGKILL)  # started by this test


def test_run_sync_kills_leftovers_holding_its_pipes(tmp_path: Path) -> None:
    pidfile = tmp_path / "leftover"
    code, out, _ = proc.run_sync(["sh", "-c", f"echo hi; sleep 300 & echo $! > {pidfile}"], timeout=60)
    assert (code, out) == (0, "hi\n")
    assert _gone(_pid(pidfile))


def test_run_sync_timeout(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError):
        proc.run_sync(["sh", "-c", "trap '' TERM; sleep 300"], timeout=0.5)

"""podrt.host.proc with real children: groups killed, pipes bounded, output kept."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from podrt.aio import reaper
from podrt.host import proc, procfs
from podrt.host.procfs import pid_running
from tests.support.popen_threads import gone, popen_threads, reaped


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


def _reaped(pid: int) -> bool:
    """Whether our child `pid` had exited by now (a zombie at most) and is reaped
    within a few seconds, by the reaper (aio/reaper.py: a moment after the exit)."""
    st = procfs.stat(pid)
    return (st is None or st.state == "Z") and gone(pid)


async def test_children_live_on_a_runner_thread_not_the_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start, stdin, output and reaping all off the loop's thread: through
    asyncio's transport a child cost the loop ~1 ms of CPU (issue 20)."""
    starters, reapers = popen_threads(monkeypatch)
    results = await asyncio.gather(*(proc.run(["sh", "-c", f"cat; echo err{n} >&2; exit {n}"], stdin=f"in{n}".encode(),
                                              timeout=30) for n in range(8)))
    assert results == [(n, f"in{n}".encode(), f"err{n}\n".encode()) for n in range(8)]
    assert len(starters) == 8 and all(name.startswith("podrt-run") for name in starters), starters
    assert reaped(reapers, 8) == ["podrt-reaper"] * 8


async def test_cancel_reaches_the_thread_at_once(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.ensure_future(proc.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"], timeout=60))
    pid = await asyncio.to_thread(_pid, pidfile)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < proc.KILL_GRACE  # sleep dies of the SIGTERM
    assert _reaped(pid)


async def test_cancel_kills_a_child_ignoring_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "KILL_GRACE", 0.3)
    pidfile = tmp_path / "pid"
    task = asyncio.ensure_future(proc.run(["sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; exec sleep 300"],
                                          timeout=60))
    pid = await asyncio.to_thread(_pid, pidfile)
    started = time.monotonic()
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # a second cancel while the thread ends the child: still waited for
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0.3 <= time.monotonic() - started < 0.3 + 5
    assert _reaped(pid)


async def test_timeout_kills_the_group_and_raises(tmp_path: Path) -> None:
    pidfile = tmp_path / "sleeper"
    with pytest.raises(TimeoutError, match="sh timed out after 0.3s"):
        await proc.run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], timeout=0.3)
    assert await asyncio.to_thread(_gone, _pid(pidfile))


async def test_output_beyond_max_output_is_read_and_dropped() -> None:
    """The child writes far more than the pipe holds: it must not block on it."""
    code, out, err = await proc.run(["sh", "-c", "head -c 1000000 /dev/zero; echo done >&2"], timeout=30,
                                    max_output=100)
    assert (code, out, err) == (0, b"\0" * 100, b"done\n")


async def test_large_stdin_and_output_move_together() -> None:
    """cat echoes 1 MB back while we still write: writes and reads interleave."""
    data = os.urandom(1 << 20)
    assert await proc.run(["cat"], stdin=data, timeout=30) == (0, data, b"")


async def test_a_child_not_reading_its_stdin_is_no_error() -> None:
    assert await proc.run(["sh", "-c", "exec 0<&-; echo ok"], stdin=b"x" * (1 << 20), timeout=30) == (0, b"ok\n", b"")


async def test_a_grandchild_holding_stdout_is_killed_after_pipe_grace(tmp_path: Path) -> None:
    pidfile = tmp_path / "leftover"
    started = time.monotonic()
    code, out, _ = await proc.run(["sh", "-c", f"echo hi; sleep 300 & echo $! > {pidfile}"], timeout=60)
    assert (code, out) == (0, b"hi\n")
    assert time.monotonic() - started < proc.PIPE_GRACE + 5
    assert await asyncio.to_thread(_gone, _pid(pidfile))


async def test_a_missing_program_raises() -> None:
    with pytest.raises(FileNotFoundError):
        await proc.run(["/nonexistent/program"], timeout=30)


async def test_no_descriptor_outlives_a_call(tmp_path: Path) -> None:
    """Pipes, pidfd and the stop eventfd are closed, whichever way the call ended."""
    await proc.run(["true"], timeout=30)  # the runner pool's threads exist
    reaper.reap_all_now()  # its pidfd, the reaper's until it reaps, closed now
    before = len(os.listdir("/proc/self/fd"))
    await proc.run(["cat"], stdin=b"x", timeout=30)
    with pytest.raises(TimeoutError):
        await proc.run(["sleep", "300"], timeout=0.1)
    task = asyncio.ensure_future(proc.run(["sh", "-c", f"echo $$ > {tmp_path / 'pid'}; exec sleep 300"], timeout=60))
    await asyncio.to_thread(_pid, tmp_path / "pid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reaper.reap_all_now()  # the last pidfds, the reaper's until it reaps (a moment after the exit), closed now
    assert len(os.listdir("/proc/self/fd")) == before


async def test_a_child_whose_pidfd_cannot_be_had_is_killed_and_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    children: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def spy(*args: Any, **kwargs: Any) -> Any:
        children.append(real(*args, **kwargs))
        return children[-1]

    def no_descriptors(pid: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(subprocess, "Popen", spy)
    monkeypatch.setattr(os, "pidfd_open", no_descriptors)
    with pytest.raises(OSError, match="Too many open files"):
        await proc.run(["sleep", "300"], timeout=60)
    [child] = children
    assert child.returncode == -signal.SIGKILL
    assert child.stdout is not None and child.stdout.closed

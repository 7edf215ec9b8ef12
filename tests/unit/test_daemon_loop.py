"""podrt.aio.loop with real children: started on a spawner thread, watched by
pidfd, seen by callers as asyncio's own Process (output, exit code, stdin,
errors, cancellation)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from podrt.aio.loop import DaemonLoop, run
from podrt.host.procfs import pid_running
from tests.support.popen_threads import popen_threads, reaped


def test_children_start_and_are_reaped_off_the_loop_thread_and_no_thread_waits_for_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the loop's thread: Popen's set-up and the reaping of the zombie (the
    kernel's release of a CNI plugin took 13-160 ms of the reaper's CPU), which
    is the reaper thread's, after the exit code reached the caller."""
    starters, reapers = popen_threads(monkeypatch)

    async def one(n: int) -> tuple[int, bytes, bytes]:
        child = await asyncio.create_subprocess_exec("sh", "-c", f"echo out{n}; echo err{n} >&2; exit {n}",
                                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await child.communicate()
        return await child.wait(), out, err

    async def main() -> tuple[list[tuple[int, bytes, bytes]], int]:
        threads = threading.active_count()
        results = await asyncio.gather(*(one(n) for n in range(8)))
        return results, threading.active_count() - threads

    results, more_threads = run(main())
    assert results == [(n, f"out{n}\n".encode(), f"err{n}\n".encode()) for n in range(8)]
    assert len(starters) == 8 and all(name.startswith("podrt-spawn") for name in starters), starters
    assert reaped(reapers, 8) == ["podrt-reaper"] * 8
    assert more_threads <= 4  # the spawner pool; asyncio's watcher would leave no thread either, but start 8


def test_stdin_reaches_the_child() -> None:
    async def main() -> tuple[bytes, bytes]:
        child = await asyncio.create_subprocess_exec("cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE)
        return await child.communicate(b"hello")

    assert run(main()) == (b"hello", b"")


def test_a_missing_program_raises_as_asyncio_does() -> None:
    with pytest.raises(FileNotFoundError):
        run(asyncio.create_subprocess_exec("/nonexistent/program"))


def test_exit_code_kept_when_popen_reaped_the_child_first() -> None:
    """send_signal polls the child first and may reap it: the loop's reap then
    finds no child (ECHILD) and must report the code Popen read, not 255."""

    async def main() -> int:
        # the child waits for a word on a pipe: exiting at once, the loop (at the
        # create's await) could reap it before waitid looks
        r, w = os.pipe()
        try:
            child = await asyncio.create_subprocess_exec("sh", "-c", "read x; exit 7", stdin=r)
            os.write(w, b"go\n")
        finally:
            os.close(r)
            os.close(w)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped (the loop is not running)
        child.send_signal(signal.SIGTERM)  # Popen.poll reaps it, and keeps 7
        return await asyncio.wait_for(child.wait(), 10)

    assert run(main()) == 7


def test_cancelled_while_starting_leaves_no_child(tmp_path: Path) -> None:
    """A caller cancelled while its child is being started: the child is
    started anyway (on the spawner thread), then killed and reaped."""
    pidfile = tmp_path / "pid"

    async def main() -> None:
        task = asyncio.ensure_future(asyncio.create_subprocess_exec(
            "sh", "-c", f"echo $$ > {pidfile}; exec sleep 300"))
        await asyncio.sleep(0)  # the start is on its thread now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():  # the child may not have written it yet: killed first
        if time.monotonic() > deadline:
            return  # killed before its shell ran: nothing to find
        time.sleep(0.01)
    pid = int(pidfile.read_text())
    while pid_running(pid):
        assert time.monotonic() < deadline, f"child {pid} outlived its cancelled start"
        time.sleep(0.01)


def test_the_loop_is_asyncios_selector_loop() -> None:
    loop = DaemonLoop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()

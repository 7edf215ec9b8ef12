"""Running helper programs (runc, CNI plugins, unshare, host probes): the one way.

Every child starts in a session of its own, so whatever it forks (a shell
wrapper's commands, a helper daemon) shares its process group. On timeout or
cancellation the whole group gets SIGTERM, then SIGKILL after ``KILL_GRACE``,
and a warning names the command and the timeout. Output pipes are then read
for at most ``PIPE_GRACE``: a helper that keeps the child's stdout open can
no longer hang the caller for its whole life (Python 3.11's Process.wait()
waits for the pipes too, so the exit is watched through the protocol). If the
child exits on its own but something it left still holds its pipes, that
group is killed as well: no orphan outlives the call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from typing import Any, Mapping, Sequence

from podrt.aio import await_shielded

log = logging.getLogger(__name__)

KILL_GRACE = 1.0  # SIGTERM -> SIGKILL
PIPE_GRACE = 1.0  # exit -> pipes closed (then the group is killed)
PIPE_LIMIT = 2**16


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a process group we created; False when it is already empty."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _describe(argv: Sequence[str]) -> str:
    return " ".join(argv)[:200]


class _ExitWatch(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol, plus a future set when the child itself exits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=PIPE_LIMIT, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _bounded(fut: asyncio.Future[Any], seconds: float) -> bool:
    """Wait for `fut` up to `seconds` without cancelling it; whether it finished."""
    done, _ = await asyncio.wait({fut}, timeout=seconds)
    return bool(done)


async def _stop(proc: asyncio.subprocess.Process, watch: _ExitWatch, io: asyncio.Future[Any],
                argv: Sequence[str], why: str) -> None:
    """Terminate the child's group (TERM, then KILL), then let the pipes drain, bounded."""
    if not watch.exited.done():
        log.warning("%s: %s; killing its process group", _describe(argv), why)
        kill_group(proc.pid, signal.SIGTERM)
        if not await _bounded(watch.exited, KILL_GRACE):
            kill_group(proc.pid, signal.SIGKILL)
            await _bounded(watch.exited, KILL_GRACE)
    await _drain(proc, io, argv)


async def _drain(proc: asyncio.subprocess.Process, io: asyncio.Future[Any], argv: Sequence[str]) -> None:
    """The child is gone; whatever it left that still holds its pipes is killed."""
    if await _bounded(io, PIPE_GRACE):
        return
    log.warning("%s: exited, but processes it left hold its output open; killing them", _describe(argv))
    kill_group(proc.pid, signal.SIGKILL)
    if not await _bounded(io, PIPE_GRACE):  # it escaped the group (setsid): stop reading
        transport = proc._transport  # type: ignore[attr-defined]
        transport.close()
        io.cancel()
        await asyncio.wait({io})


async def run(argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
              env: Mapping[str, str] | None = None, cwd: str | None = None) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of a child. TimeoutError after `timeout` s,
    CancelledError on cancellation, each only once the child's group is dead."""
    loop = asyncio.get_running_loop()
    transport, watch = await loop.subprocess_exec(
        lambda: _ExitWatch(loop), *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
    )
    proc = asyncio.subprocess.Process(transport, watch, loop)
    io = asyncio.ensure_future(proc.communicate(stdin))
    try:
        done = await _bounded(watch.exited, timeout)
    except asyncio.CancelledError:
        await await_shielded(asyncio.ensure_future(_stop(proc, watch, io, argv, "cancelled")))
        raise
    if not done:
        cleanup = asyncio.ensure_future(_stop(proc, watch, io, argv, f"still running after its {timeout:g}s timeout"))
        if await await_shielded(cleanup):
            raise asyncio.CancelledError
        raise TimeoutError(f"{argv[0]} timed out after {timeout:g}s")
    cleanup = asyncio.ensure_future(_drain(proc, io, argv))
    if await await_shielded(cleanup):
        raise asyncio.CancelledError
    if io.cancelled():
        return transport.get_returncode() or 0, b"", b""
    out, err = io.result()
    return transport.get_returncode() or 0, out, err


def run_sync(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """The same rules for the few blocking callers (`podrt check`, start-up probes)."""
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=dict(env) if env is not None else None, start_new_session=True, text=True,
                             errors="replace")
    try:
        out, err = child.communicate(timeout=timeout)
        return child.returncode, out, err
    except subprocess.TimeoutExpired:
        log.warning("%s: did not finish within %gs; killing its process group", _describe(argv), timeout)
    kill_group(child.pid, signal.SIGTERM)
    try:
        child.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    kill_group(child.pid, signal.SIGKILL)
    try:
        out, err = child.communicate(timeout=PIPE_GRACE)
    except subprocess.TimeoutExpired:
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
        child.wait()
        out = err = ""
    raise subprocess.TimeoutExpired(argv, timeout, out, err)

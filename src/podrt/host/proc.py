"""Running helper programs (runc, CNI plugins, unshare, host probes): the one way.

Every child starts in a session of its own, so whatever it forks (a shell
wrapper's commands, a helper daemon) shares its process group. On timeout or
cancellation the whole group gets SIGTERM, then SIGKILL after ``KILL_GRACE``,
with a warning naming the command (and the timeout). Output pipes are then
read for at most ``PIPE_GRACE``: a helper that keeps the child's stdout open
can no longer hang the caller for its whole life (Python 3.11's
Process.wait() waits for the pipes too, so the exit is watched through the
protocol). If the child exits on its own but members of its group still hold
its pipes, they are killed; one that left the group (setsid) is logged and
left alone, since its group is not ours to signal, and its pipes are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from podrt.aio import await_shielded
from podrt.host import procfs

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


def group_has_members(pgid: int) -> bool:
    """Whether any process is still in group `pgid`. Checked before signalling
    a group whose leader is already reaped: an empty group's ID is free for
    reuse, and then it is not ours."""
    return any(st.pgrp == pgid for _, st in procfs.scan())


def _describe(argv: Sequence[str]) -> str:
    return " ".join(argv).replace("\n", " ")[:200]


class _ExitWatch(asyncio.subprocess.SubprocessStreamProtocol):
    """The stream protocol, plus a future set when the child itself exits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=PIPE_LIMIT, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _communicate(proc: asyncio.subprocess.Process, stdin: bytes | None, limit: int) -> tuple[bytes, bytes]:
    if stdin is not None and proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
        proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = await asyncio.gather(_collect(proc.stdout, limit), _collect(proc.stderr, limit))
    return out, err


async def _collect(stream: asyncio.StreamReader, limit: int) -> bytes:
    kept = bytearray()
    while chunk := await stream.read(1 << 16):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)


async def _bounded(fut: asyncio.Future[Any], seconds: float) -> bool:
    """Wait for `fut` up to `seconds` without cancelling it; whether it finished."""
    done, _ = await asyncio.wait({fut}, timeout=seconds)
    return bool(done)


async def _finish(proc: asyncio.subprocess.Process, watch: _ExitWatch, io: asyncio.Future[Any],
                  argv: Sequence[str], why: str | None) -> None:
    """End the call: terminate the group if the child still runs (`why` says
    why), then bound the wait for its pipes, killing what holds them."""
    if why is not None and not watch.exited.done():
        log.warning("%s: %s; killing its process group", _describe(argv), why)
        kill_group(proc.pid, signal.SIGTERM)
        if not await _bounded(watch.exited, KILL_GRACE):
            kill_group(proc.pid, signal.SIGKILL)
            await _bounded(watch.exited, KILL_GRACE)
    if await _bounded(io, PIPE_GRACE):
        return
    if group_has_members(proc.pid):
        log.warning("%s: processes it left hold its output open; killing them", _describe(argv))
        kill_group(proc.pid, signal.SIGKILL)
        if await _bounded(io, PIPE_GRACE):
            return
    log.warning("%s: a process outside its group holds its output open; not ours to kill, closing the pipes",
                _describe(argv))
    proc._transport.close()  # type: ignore[attr-defined]  # EOF to both readers: what was read is kept
    await asyncio.wait({io})


async def spawn(argv: Sequence[str], *, stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE,
                stderr: Any = subprocess.PIPE, env: Mapping[str, str] | None = None,
                cwd: str | None = None) -> tuple[asyncio.subprocess.Process, _ExitWatch]:
    """A child in a session of its own, and the watch whose `exited` is set
    when the child itself exits (not when its pipes close)."""
    loop = asyncio.get_running_loop()
    transport, watch = await loop.subprocess_exec(
        lambda: _ExitWatch(loop), *argv, stdin=stdin, stdout=stdout, stderr=stderr,
        env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
    )
    return asyncio.subprocess.Process(transport, watch, loop), watch


async def run(argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
              env: Mapping[str, str] | None = None, cwd: str | None = None,
              max_output: int | None = None) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of a child. TimeoutError after `timeout` s,
    CancelledError on cancellation; either only once the child has exited and
    its group was signalled. `max_output`: keep at most this many bytes of
    each stream (the rest is read and dropped, so the child never blocks)."""
    proc, watch = await spawn(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                              env=env, cwd=cwd)
    transport = proc._transport  # type: ignore[attr-defined]
    io = asyncio.ensure_future(_communicate(proc, stdin, max_output if max_output is not None else sys.maxsize))
    why: str | None = None
    cancelled = False
    try:
        if not await _bounded(watch.exited, timeout):
            why = f"still running after its {timeout:g}s timeout"
    except asyncio.CancelledError:
        why, cancelled = "cancelled", True
    cancelled |= await await_shielded(asyncio.ensure_future(_finish(proc, watch, io, argv, why)))
    if cancelled:
        raise asyncio.CancelledError
    if why is not None:
        raise TimeoutError(f"{argv[0]} timed out after {timeout:g}s")
    out, err = io.result()
    return transport.get_returncode() or 0, out, err


def run_sync(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """`run` for the few blocking callers (`podrt check`, the start-up probe of
    oom.py, which runs inside the daemon's loop): on a private loop in a worker
    thread, so the same rules hold. Output is decoded text."""
    with ThreadPoolExecutor(1, thread_name_prefix="podrt-proc") as pool:
        code, out, err = pool.submit(asyncio.run, run(argv, timeout=timeout, env=env)).result()
    return code, out.decode(errors="replace"), err.decode(errors="replace")

"""Running helper programs (runc, CNI plugins, unshare, host probes): the one way.

Every child starts in a session of its own, so whatever it forks (a shell
wrapper's commands, a helper daemon) shares its process group. On timeout or
cancellation the whole group gets SIGTERM, then SIGKILL after ``KILL_GRACE``,
with a warning naming the command (and the timeout). Output pipes are then
read for at most ``PIPE_GRACE``: a helper that keeps the child's stdout open
can no longer hang the caller for its whole life (the child's exit is watched
through a pidfd, apart from its pipes). If the child exits on its own but
members of its group still hold its pipes, they are killed; one that left the
group (setsid) is logged and left alone, since its group is not ours to
signal, and its pipes are closed.

`run` lives the child's whole life (start, stdin, output, exit, reaping) on a
worker thread of its own, in one poll loop, and the event loop awaits one
future: through asyncio's subprocess transport a child cost the loop's thread
~1 ms of CPU and 20-30 callbacks (pipe transports, reader tasks, waits), and a
pod cycle runs a dozen (runc, CNI plugins), which was most of the loop lag
under concurrent cycles (issue 20). A cancel reaches the thread through an
eventfd its poll watches. `spawn` stays on asyncio, for children whose output
is streamed (conmon, exec sessions, namespace pins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from podrt.aio import await_shielded, reaper
from podrt.host import procfs

log = logging.getLogger(__name__)

KILL_GRACE = 1.0  # SIGTERM -> SIGKILL
PIPE_GRACE = 1.0  # exit -> pipes closed (then the group is killed)
PIPE_LIMIT = 2**16
READ_SIZE = 2**16
RUNNERS = 64  # children run at once (a dozen per pod cycle, in sequence): 10 concurrent cycles never queue

_runners: ThreadPoolExecutor | None = None


def kill_group(pgid: int, sig: int) -> bool:
    """Signal a process group we created; False when it is already empty."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def group_has_members(pgid: int) -> bool:
    """Whether any live process is still in group `pgid`: whether someone may
    still hold its leader's pipes (a zombie, the unreaped leader too, holds none).
    An empty group is not signalled: once its leader is reaped its ID is free for reuse."""
    return any(st.pgrp == pgid and st.state != "Z" for _, st in procfs.scan())


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


class _Stop:
    """A cancel from the loop reaching a child's thread: an eventfd its poll
    watches, made and closed by that thread; set() under the lock, so a late
    cancel never writes to a closed (or reused) descriptor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._set = False

    def open(self) -> int:
        with self._lock:
            self._fd = os.eventfd(int(self._set), os.EFD_CLOEXEC | os.EFD_NONBLOCK)  # readable at once if set already
            return self._fd

    def set(self) -> None:
        with self._lock:
            self._set = True
            if self._fd is not None:
                os.eventfd_write(self._fd, 1)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _Life:
    """One child's life on the calling thread: one poll over its stdin (while
    there is input to write), stdout, stderr, its pidfd and the stop fd, the
    waits bounded by deadlines. Its exit status is read as soon as the pidfd
    says it exited; the reap comes a moment after the call (aio/reaper.py), and
    until then the zombie leader keeps its group's ID ours."""

    def __init__(self, argv: Sequence[str], stdin: bytes | None, env: Mapping[str, str] | None, cwd: str | None,
                 limit: int, stop: int | None) -> None:
        self.child = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
        self.pid = self.child.pid
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except OSError:  # out of descriptors: the child must not outlive the call
            kill_group(self.pid, signal.SIGKILL)
            with self.child:  # its pipes closed, it reaped
                raise
        self.limit = limit
        self.exited = self.stopped = self.unreaped = False
        self.code: int | None = None
        self.poll = select.poll()
        self.poll.register(self.pidfd, select.POLLIN)
        self.stop = stop
        if stop is not None:
            self.poll.register(stop, select.POLLIN)
        assert self.child.stdout is not None and self.child.stderr is not None
        self.kept = {self.child.stdout.fileno(): bytearray(), self.child.stderr.fileno(): bytearray()}
        self.open = set(self.kept)
        for fd in self.kept:
            os.set_blocking(fd, False)
            self.poll.register(fd, select.POLLIN)
        self.input = memoryview(stdin or b"")
        self.stdin = -1
        if self.child.stdin is not None:
            self.stdin = self.child.stdin.fileno()
            os.set_blocking(self.stdin, False)
            self.poll.register(self.stdin, select.POLLOUT)
            self._write()

    def pump(self, seconds: float, done: Callable[[], bool]) -> bool:
        """Move the child's data until `done()` or `seconds` have passed; whether done."""
        deadline = time.monotonic() + seconds
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for fd, _ in self.poll.poll(math.ceil(left * 1000)):
                if fd == self.pidfd:
                    self.poll.unregister(fd)
                    self._exited()
                elif fd in self.open:
                    self._read(fd)
                elif fd == self.stop:
                    self.poll.unregister(fd)
                    self.stopped = True
                else:
                    self._write()
        return True

    def _exited(self) -> None:
        """Its exit status, leaving the zombie to the reaper (aio/reaper.py); Popen is
        told the code, so it never reaps the pid itself (then maybe someone else's)."""
        code = reaper.exit_status(self.pidfd)
        self.unreaped = code is not None
        self.code = self.child.returncode = code if code is not None else self.child.wait()
        self.exited = True

    def piped(self) -> bool:
        return not self.open

    def _read(self, fd: int) -> None:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            self.poll.unregister(fd)
            self.open.discard(fd)
        elif len(kept := self.kept[fd]) < self.limit:
            kept += chunk[: self.limit - len(kept)]

    def _write(self) -> None:
        """Write what the pipe takes; at the end, or if the child stopped reading, close it (EOF)."""
        try:
            while self.input:
                self.input = self.input[os.write(self.stdin, self.input):]
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.poll.unregister(self.stdin)
        assert self.child.stdin is not None
        self.child.stdin.close()

    def close(self) -> None:
        """Close what is ours. A child not seen to exit (stuck after SIGKILL, or
        an error here) gets SIGKILL, safely (unreaped, it holds its group's ID),
        and is left to Popen, which reaps it later."""
        if not self.exited:
            kill_group(self.pid, signal.SIGKILL)
        if self.unreaped:
            reaper.reap_later(self.pidfd)
        else:
            os.close(self.pidfd)
        for pipe in (self.child.stdin, self.child.stdout, self.child.stderr):
            if pipe is not None:
                pipe.close()


def _live(argv: Sequence[str], *, timeout: float, stdin: bytes | None, env: Mapping[str, str] | None,
          cwd: str | None, limit: int, stop: _Stop | None) -> tuple[int, bytes, bytes]:
    """`run`'s child from start to reaping, on the calling thread; `stop` set is a cancel."""
    stop_fd = stop.open() if stop is not None else None
    try:
        life = _Life(argv, stdin, env, cwd, limit, stop_fd)
        try:
            return _end(life, argv, timeout)
        finally:
            life.close()
    finally:
        if stop is not None:
            stop.close()


def _end(life: _Life, argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
    """Wait for the exit (or end the group), then for the pipes; see the module doc."""
    why: str | None = None
    timed_out = not life.pump(timeout, lambda: life.exited or life.stopped)
    if timed_out:
        why = f"still running after its {timeout:g}s timeout"
    elif not life.exited:
        why = "cancelled"
    if why is not None:
        log.warning("%s: %s; killing its process group", _describe(argv), why)
        kill_group(life.pid, signal.SIGTERM)
        if not life.pump(KILL_GRACE, lambda: life.exited):
            kill_group(life.pid, signal.SIGKILL)
            life.pump(KILL_GRACE, lambda: life.exited)
    if not life.pump(PIPE_GRACE, life.piped):
        holders = group_has_members(life.pid)
        if holders:
            log.warning("%s: processes it left hold its output open; killing them", _describe(argv))
            kill_group(life.pid, signal.SIGKILL)
        if not (holders and life.pump(PIPE_GRACE, life.piped)):
            log.warning("%s: a process outside its group holds its output open; not ours to kill, closing the pipes",
                        _describe(argv))  # what was read is kept
    if timed_out:
        raise TimeoutError(f"{argv[0]} timed out after {timeout:g}s")
    out, err = life.kept.values()
    return life.code or 0, bytes(out), bytes(err)


async def run(argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
              env: Mapping[str, str] | None = None, cwd: str | None = None,
              max_output: int | None = None) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of a child. TimeoutError after `timeout` s,
    CancelledError on cancellation; either only once the child has exited and
    its group was signalled. `max_output`: keep at most this many bytes of
    each stream (the rest is read and dropped, so the child never blocks)."""
    global _runners
    if _runners is None:
        _runners = ThreadPoolExecutor(RUNNERS, thread_name_prefix="podrt-run")
    stop = _Stop()
    life = _runners.submit(_live, argv, timeout=timeout, stdin=stdin, env=env, cwd=cwd,
                           limit=max_output if max_output is not None else sys.maxsize, stop=stop)
    try:
        return await asyncio.wrap_future(life)
    except asyncio.CancelledError:  # not yet started: never will be; else the thread ends the child
        stop.set()
        with contextlib.suppress(Exception):  # the caller left: its child's end is all that matters
            await await_shielded(asyncio.wrap_future(life))
        raise


def run_sync(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """`run` for the few blocking callers (`podrt check`, the start-up probe of
    oom.py): the same life, on the caller's thread. Output is decoded text."""
    code, out, err = _live(argv, timeout=timeout, stdin=None, env=env, cwd=None, limit=sys.maxsize, stop=None)
    return code, out.decode(errors="replace"), err.decode(errors="replace")

"""The daemon's event loop: asyncio's, with children started off the loop's thread.

Every runc, conmon, CNI plugin and pin holder the daemon starts went through
asyncio's subprocess_exec, which on Python 3.11 runs subprocess.Popen on the
loop's thread (its Python set-up, then vfork, waiting until the child has
exec'd) and starts one thread per child to wait for it (Thread.start waits
until that thread runs). Both waits are on the scheduler: with 10 pod cycles
on 2 cores the loop stood still 4-40 ms per child while runc and conmon had
the CPUs, and children were half of its long callbacks (issue 20).

Here Popen runs on a small pool of spawner threads (CPython lets go of the GIL
around vfork, so the loop runs meanwhile), and the child's exit is watched on
the loop itself through a pidfd (Linux 5.3), as Python 3.12 does: no thread
per child; its exit status is read there without reaping it, and the reap
comes a moment later (aio/reaper.py). The rest is asyncio's own subprocess
transport, adopted with the child already started, so callers see the same
Process, pipes and exit.
Where pidfd_open is missing, children start as asyncio does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import subprocess
import sys
from asyncio import unix_events
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from podrt.aio import await_shielded, reaper

log = logging.getLogger(__name__)

# A thread that wants the GIL (the loop's, back from any system call) waits this long
# before the thread holding it must let go (Python's default: 5 ms); worker threads
# run Python too (a child's Popen set-up, a record's encoding)
SWITCH_INTERVAL = 0.001
SPAWNERS = 4  # children started at once; each waits (GIL released) while its child execs


def _pidfd_works() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
        return True
    except (AttributeError, OSError):
        return False


class _AdoptedTransport(unix_events._UnixSubprocessTransport):  # type: ignore[name-defined]
    """asyncio's subprocess transport around a child a spawner thread started."""

    def _start(self, args: Any, shell: bool, stdin: Any, stdout: Any, stderr: Any, bufsize: int,
               **kwargs: Any) -> None:
        self._proc = kwargs["started"]


class DaemonLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop whose subprocess_exec starts the child on a spawner thread."""

    def __init__(self) -> None:
        super().__init__()
        self._spawners: ThreadPoolExecutor | None = None
        self._pidfd = _pidfd_works()

    async def _make_subprocess_transport(self, protocol: Any, args: Any, shell: bool, stdin: Any, stdout: Any,
                                         stderr: Any, bufsize: int, extra: Any = None,
                                         **kwargs: Any) -> asyncio.SubprocessTransport:
        if not self._pidfd:
            return await super()._make_subprocess_transport(  # type: ignore[misc]
                protocol, args, shell, stdin, stdout, stderr, bufsize, extra=extra, **kwargs)
        if self._spawners is None:
            self._spawners = ThreadPoolExecutor(SPAWNERS, thread_name_prefix="podrt-spawn")
        start = functools.partial(subprocess.Popen, args, shell=shell, stdin=stdin, stdout=stdout, stderr=stderr,
                                  universal_newlines=False, bufsize=bufsize, **kwargs)
        started = self.run_in_executor(self._spawners, start)
        cancelled = await await_shielded(started)  # once started, the child is ours to end: never orphaned
        child: subprocess.Popen[bytes] = started.result()  # type: ignore[assignment]  # bytes: no text mode
        pidfd = os.pidfd_open(child.pid)
        waiter = self.create_future()
        transport = _AdoptedTransport(self, protocol, args, shell, stdin, stdout, stderr, bufsize,
                                      waiter=waiter, extra=extra, started=child)
        self._add_reader(pidfd, self._reap, child, pidfd, transport)  # type: ignore[attr-defined]
        try:
            if cancelled:
                raise asyncio.CancelledError
            await waiter
        except BaseException:
            transport.close()  # kills the child
            await transport._wait()
            raise
        return transport

    def _reap(self, child: subprocess.Popen[bytes], pidfd: int, transport: _AdoptedTransport) -> None:
        """The child exited (its pidfd is readable): its exit status, read
        without reaping it, to the transport; the reap comes a moment later,
        on the reaper's thread (aio/reaper.py: reaping at once cost a CNI
        bridge plugin 13-160 ms of kernel CPU under 10 concurrent pod cycles)."""
        self._remove_reader(pidfd)  # type: ignore[attr-defined]
        code = reaper.exit_status(pidfd)
        if code is not None:
            reaper.reap_later(pidfd)
            transport._process_exited(code)
            return
        os.close(pidfd)  # a Popen.poll reaped it first (send_signal polls): it kept the code, under Popen's lock
        assert self._spawners is not None  # made with the child
        reaped = self.run_in_executor(self._spawners, child.wait)
        reaped.add_done_callback(lambda done: transport._process_exited(done.result()))

    def close(self) -> None:
        super().close()
        if self._spawners is not None:
            self._spawners.shutdown(wait=False)
            self._spawners = None


def run(main: Any) -> Any:
    """asyncio.run on a DaemonLoop, with the GIL handed on every SWITCH_INTERVAL."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    with asyncio.Runner(loop_factory=DaemonLoop) as runner:
        return runner.run(main)

"""A debug detector of blocking calls on the event loop's thread.

A blocking call on the loop (an fsync, a lock wait, a sleep, a child waited
for, a file read) stalls every RPC for its length; under load that is the
loop lag the benchmarks measure. Timing (asyncio's slow_callback_duration)
sees only the slow ones, and not every time; this sees each call, every time:
it wraps the blocking functions by name and listens to the interpreter's
"open", "os.listdir" and "os.scandir" audit events, and reports any made on
the loop's thread while the loop runs (logged at ERROR with the stack, and
counted). Debug only (`[podrt.debug] detect_blocking`, for the tests): the
audit hook stays in the process once added (Python cannot remove one), so it
goes quiet when disarmed rather than away.

Opens and listings allowed on the loop (ALLOWED_OPENS, ALLOWED_LISTINGS) are
of a few bytes or entries that the kernel answers from memory; each is
justified where it is listed. Metadata calls (stat, mkdir, unlink, rename) are
not watched.

It also times each loop callback's CPU (the thread's, so neither preemption nor
a wait for the GIL counts) and reports one over LONG_CALLBACK_CPU: CPU-heavy
work stalls the loop as a blocking call does, and no name list finds it (a
zombie's reap took 10-74 ms of kernel time in waitpid, issue 20).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import re
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

REPORT = "blocking call on the event loop"

# (module, attribute) of each call that blocks its thread for an unbounded or disk-bound time
WRAPPED: tuple[tuple[Any, str], ...] = (
    (os, "fsync"), (os, "fdatasync"), (os, "sync"), (fcntl, "flock"), (fcntl, "lockf"), (time, "sleep"),
    (subprocess, "run"), (subprocess, "call"), (subprocess, "check_call"), (subprocess, "check_output"),
    (subprocess.Popen, "wait"), (subprocess.Popen, "communicate"),
)

# Opens of kernel files that are fine on the loop: each is a read (or write) of
# a few bytes that the kernel answers from memory, never waiting on a disk or a
# lock held elsewhere, and cheaper than the thread hop (~50-100 us) it would take.
ALLOWED_OPENS: tuple[re.Pattern[str], ...] = (
    # one process's one-line stat, status, name and argv (is a pid still running, is it our conmon),
    # and its ID maps, written once as one short line (a new user namespace)
    re.compile(r"/proc/(self|\d+)/(stat|status|comm|cmdline|uid_map|gid_map|setgroups)"),
)
# Listings fine on the loop: sysfs and cgroupfs directories are kernel objects listed from memory,
# a dozen entries each here (the cgroup hierarchies, the huge page sizes). /proc's pid list is not:
# it grows with the host's processes.
ALLOWED_LISTINGS: tuple[re.Pattern[str], ...] = (re.compile(r"/sys/(fs/cgroup|kernel/mm/hugepages)/?"),)

# A callback's CPU on the loop's thread beyond which it is reported: the lag
# target is 5 ms at p99 under load (issue 20), and a single callback of this
# much is a stall no scheduling hides
LONG_CALLBACK_CPU = 0.020


class BlockingDetector:
    """Reports blocking calls made on `loop`'s thread while it runs; see the module doc."""

    def __init__(self, on_report: Callable[[str, str], None] | None = None) -> None:
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = -1
        self._saved: list[tuple[Any, str, Any]] = []
        self._inside = threading.local()  # re-entry guard: the report itself opens source files
        self._on_report = on_report or self._log

    @property
    def armed(self) -> bool:
        return self._loop is not None

    def arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch `loop`, whose thread must be the caller's."""
        if self._loop is not None:
            return
        self._loop, self._thread = loop, threading.get_ident()
        for owner, name in WRAPPED:
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._wrap(original, f"{getattr(owner, '__name__', owner)}.{name}"))
        run = asyncio.events.Handle._run
        self._saved.append((asyncio.events.Handle, "_run", run))
        asyncio.events.Handle._run = self._timed(run)  # type: ignore[method-assign,assignment]
        _install_audit_hook()
        _DETECTORS.append(self)

    def disarm(self) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()
        if self in _DETECTORS:
            _DETECTORS.remove(self)
        self._loop, self._thread = None, -1

    @contextmanager
    def armed_on(self, loop: asyncio.AbstractEventLoop) -> Iterator[BlockingDetector]:
        self.arm(loop)
        try:
            yield self
        finally:
            self.disarm()

    def _on_loop(self) -> bool:
        loop = self._loop
        return (loop is not None and threading.get_ident() == self._thread and loop.is_running()
                and not getattr(self._inside, "active", False))

    def _wrap(self, original: Any, what: str) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self._on_loop():
                return original(*args, **kwargs)
            self._report(what)
            self._inside.active = True  # one report per call: not subprocess.run's own Popen.wait too
            try:
                return original(*args, **kwargs)
            finally:
                self._inside.active = False
        return wrapper

    def _timed(self, run: Callable[[asyncio.Handle], None]) -> Callable[[asyncio.Handle], None]:
        """asyncio's Handle._run, reporting a callback on the loop that used more than LONG_CALLBACK_CPU."""
        def timed(handle: asyncio.Handle) -> None:
            if threading.get_ident() != self._thread:
                return run(handle)
            started = time.thread_time()
            try:
                return run(handle)
            finally:
                used = time.thread_time() - started
                if used > LONG_CALLBACK_CPU and self._on_loop():
                    what, stack = _describe(handle)
                    self._report(f"a callback used {used * 1000:.0f} ms of the loop's CPU: {what}", stack)
        return timed

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._on_loop():
            return
        if event == "open":
            path = args[0]
            if isinstance(path, int) or path is None:  # an fd already open (os.fdopen, a pipe)
                return
            path = os.fsdecode(path)
            if path.endswith((".py", ".pyc")) or any(p.fullmatch(path) for p in ALLOWED_OPENS):
                return  # Python's own: a late import, a traceback's source lines (linecache): once per process
            self._inside.active = True
            try:
                st = os.stat(path)
            except OSError:
                return  # it fails anyway, or creates a file (reported by its write's fsync if durable)
            finally:
                self._inside.active = False
            if stat.S_ISREG(st.st_mode):
                self._report(f"open({path!r})")
        elif event in ("os.listdir", "os.scandir"):
            path = args[0]
            if isinstance(path, (str, bytes)) and any(p.fullmatch(os.fsdecode(path)) for p in ALLOWED_LISTINGS):
                return
            self._report(f"{event}({path!r})")

    def _report(self, what: str, stack: str | None = None) -> None:
        self._inside.active = True
        try:
            self.count += 1
            self._on_report(what, _stack() if stack is None else stack)
        finally:
            self._inside.active = False

    @staticmethod
    def _log(what: str, stack: str) -> None:
        log.error("%s: %s\n%s", REPORT, what, stack.rstrip())


def _stack() -> str:
    """The calling task's frames: from the loop's callback (asyncio's Handle._run) to the call, not this module's."""
    frames = traceback.extract_stack()
    start = max((i + 1 for i, f in enumerate(frames) if f.filename.endswith(f"asyncio{os.sep}events.py")), default=0)
    return "".join(traceback.format_list([f for f in frames[start:] if f.filename != __file__]))


def _describe(handle: asyncio.Handle) -> tuple[str, str]:
    """A callback by what it ran, and a stack: a task's step by the task's name
    and the frames where it waits now (the work was just before them)."""
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return repr(handle), ""
    frames = []
    awaited: Any = task.get_coro()
    while awaited is not None and (frame := getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)):
        frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    stack = "".join(traceback.format_list(traceback.StackSummary.extract((f, f.f_lineno) for f in frames)))
    return f"a step of task {task.get_name()!r}" + ("" if frames else " (its last)"), stack


_DETECTORS: list[BlockingDetector] = []
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook's exception would fail the audited call: none may leave."""
    if event not in ("open", "os.listdir", "os.scandir"):
        return
    for detector in _DETECTORS:
        try:
            detector.audit(event, args)
        except Exception:  # a bug here must not break the daemon it watches
            log.exception("blocking-call detector failed on %s%r", event, args)


def _install_audit_hook() -> None:
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True

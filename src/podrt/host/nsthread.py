"""Work done inside a pod's namespaces by a throwaway thread of the daemon.

The network, IPC and UTS namespaces are per thread: a thread may setns(2)
into them, or unshare(2) new ones, while the rest of the daemon stays where
it is. The thread is made for the one job and ends with it, so no thread that
serves the daemon ever changes namespace, and nothing forks. (A user or mount
namespace cannot be entered so: setns refuses them to a threaded process.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from podrt.host.libc import error, libc

T = TypeVar("T")

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
FLAGS = {"uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC, "net": CLONE_NEWNET}  # /proc/<pid>/ns/<kind> names


def flags_of(kinds: Sequence[str]) -> int:
    """unshare(2)'s flags for these namespace kinds ("net", "ipc", "uts")."""
    out = 0
    for kind in kinds:
        out |= FLAGS[kind]
    return out


def _enter(kind: str, path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, FLAGS[kind]) != 0:
            raise error(f"setns into the {kind} namespace at {path}")
    finally:
        os.close(fd)


def entering(job: Callable[[], T], *, enter: Sequence[tuple[str, str]] = (), new: Sequence[str] = ()) -> Callable[[], T]:
    """`job`, first joining each (kind, pinned path) of `enter`, then making new
    namespaces of the kinds `new` names: for a thread of its own (it stays in
    them), as run_in or aio.finish_in_own_thread run it."""

    def run() -> T:
        for kind, path in enter:
            _enter(kind, path)
        if new and libc.unshare(flags_of(new)) != 0:
            raise error(f"unshare of new {', '.join(new)} namespaces")
        return job()

    return run


def run_in(job: Callable[[], T], *, enter: Sequence[tuple[str, str]] = (), new: Sequence[str] = ()) -> T:
    """`job`'s result, run `entering` those namespaces by a new thread that
    then ends. Blocking: call it from a worker thread. The job's exception is raised here."""
    done: dict[str, Any] = {}
    work = entering(job, enter=enter, new=new)

    def run() -> None:
        try:
            done["result"] = work()
        except BaseException as exc:  # handed to the caller
            done["error"] = exc

    thread = threading.Thread(target=run, name="podrt-ns", daemon=True)
    thread.start()
    thread.join()  # the thread, in the pod's namespaces, ends here
    if "error" in done:
        raise done["error"]
    return done["result"]

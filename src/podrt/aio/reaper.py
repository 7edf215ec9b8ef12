"""Children reaped a moment after they exit, off every caller's path.

Reaping a child (wait4) releases it, and the kernel then drops the child's
/proc entries (proc_flush_pid). A Go CNI plugin that entered a pod's netns
exits with threads still dropping theirs; a reap landing in that window spins
in the kernel (shrink_dcache_parent retrying over dentries another task is
freeing) until they are done. Under 10 concurrent pod cycles on 2 cores,
reaping the bridge plugin cost 13 ms of CPU a call on average and up to
160 ms: 2 of the daemon's 7 CPU seconds, spent on a core nothing else could
have meanwhile (the kernel does not preempt there), the event loop's thread
included (issue 20). Reaped REAP_DELAY later, the same reaps cost 0.05 s in all.

So the exit status is read without reaping (waitid WNOWAIT), the caller goes
on at once, and one reaper thread reaps REAP_DELAY later, through the child's
pidfd: exactly that child, never a later process that reused its pid. Until
then the zombie keeps its pid and its process group's ID, so neither can be
reused while a caller might still signal them.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time

REAP_DELAY = 0.02  # s from the exit to the reap: the exiting threads' own /proc clean-up is done by then

_lock = threading.Condition()
_due: collections.deque[tuple[float, int]] = collections.deque()  # (when, pidfd), in order: one delay for all
_worker: threading.Thread | None = None


def exit_status(pidfd: int) -> int | None:
    """The exit code of an exited child, as Popen.returncode has it (-N: killed
    by signal N), leaving it unreaped; None if it was reaped already, or where
    waitid takes no pidfd (before Linux 5.4): the caller then reaps it at once."""
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT)
    except OSError:  # ChildProcessError: reaped already; EINVAL: no P_PIDFD
        return None
    assert info is not None  # no WNOHANG: the call waits for the exit
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def reap_later(pidfd: int) -> None:
    """Reap the exited child behind `pidfd` after REAP_DELAY, then close the pidfd (ours from now on)."""
    global _worker
    with _lock:
        _due.append((time.monotonic() + REAP_DELAY, pidfd))
        if _worker is None:
            _worker = threading.Thread(target=_reap_due, name="podrt-reaper", daemon=True)
            _worker.start()
        _lock.notify()


def _reap(pidfd: int) -> None:
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:
        pass  # reaped already (a Popen.poll got there first)
    finally:
        os.close(pidfd)


def _reap_due() -> None:
    while True:
        with _lock:
            while not _due or (wait := _due[0][0] - time.monotonic()) > 0:
                _lock.wait(wait if _due else None)
            _, pidfd = _due.popleft()
        _reap(pidfd)


@atexit.register
def reap_all_now() -> None:
    """At exit: what is still waiting, reaped now (the thread dies with the process)."""
    with _lock:
        while _due:
            _reap(_due.popleft()[1])

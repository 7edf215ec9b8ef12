"""The event loop's thread ahead of the daemon's children for the CPU.

Every RPC waits for the one loop thread; the runc, conmon and CNI plugin
processes the daemon starts only wait for it in turn. Under 10 concurrent pod
cycles on 2 cores the loop's thread spent a third of its time ready to run
but waiting for a CPU they held (its run delay, /proc/<pid>/task/<tid>/schedstat),
and that wait was most of the loop's lag (issue 20). containerd and CRI-O
are Go, whose goroutines move to another OS thread when one is preempted;
here a preempted loop thread stops everything.

So the loop's thread runs at `[podrt] loop_nice` (default -20: at -10 it
still waited 0.9-1.3 s for a CPU over 100 such cycles, and the loop's lag p99
was 4-5.3 ms; at -20 0.4-0.8 s and 3.0-4.0 ms), marked
SCHED_RESET_ON_FORK: every thread and process it starts begins at nice 0
again, so no child, and no container under it, inherits the priority (the
spawner threads that start children are such threads). Where the kernel
groups tasks by session (autogroup, when the daemon's cpu cgroup is the root
one), children in sessions of their own compete as whole groups and a
thread's nice counts only within its own group: the daemon then also sets its
session's autogroup nice, when the session is its own (a service manager's
daemon leads its session). Lowering a nice value needs CAP_SYS_NICE; without
it the daemon warns and runs at its normal priority. 0 leaves it all as is.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

AUTOGROUP = Path("/proc/self/autogroup")


def prioritize_loop_thread(nice: int) -> None:
    """Run the calling (loop) thread at `nice`, its threads and children at 0; see the module doc."""
    if nice == 0:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # this thread only, on Linux
    except OSError as exc:
        log.warning("cannot run the event loop at nice %d (%s); it runs at normal priority", nice, exc.strerror)
        return
    if os.getsid(0) != os.getpid() or not AUTOGROUP.exists():
        return  # a session shared with whoever started us: its autogroup is not ours to raise
    try:
        AUTOGROUP.write_text(str(nice))
    except OSError as exc:
        log.warning("cannot set the daemon's autogroup nice to %d (%s)", nice, exc.strerror)

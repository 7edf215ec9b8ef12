"""What /proc says about processes (proc(5)): which pids exist, and per pid
the stat fields podrt decides on, comm, cmdline and cgroup.

The one reader of these files. A process can exit between being listed and
being read, so every per-pid reader answers None for a process that is gone
(or whose file cannot be parsed) instead of raising.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import attrs

from podrt.host.nsthread import run_in


@attrs.frozen
class Stat:
    """Fields of /proc/<pid>/stat: state (R, S, D, Z, X, ...), parent pid, process group."""

    state: str
    ppid: int
    pgrp: int


def pids() -> list[int]:
    """Every pid /proc lists now."""
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def stat(pid: int) -> Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # comm, in parentheses, may hold spaces and ')'
    try:
        return Stat(fields[0], int(fields[1]), int(fields[2]))
    except (IndexError, ValueError):
        return None


def scan() -> Iterator[tuple[int, Stat]]:
    """(pid, stat) of each process, read lazily: a caller looking for one may stop early."""
    for pid in pids():
        if (st := stat(pid)) is not None:
            yield pid, st


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def cmdline(pid: int) -> list[bytes] | None:
    """The argv, split at NULs (the last element is the empty string after the final NUL)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def cgroup(pid: int) -> str | None:
    """/proc/<pid>/cgroup as text: one hierarchy:controllers:path line per hierarchy."""
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None


def pid_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (an unreaped orphan counts as gone)."""
    st = stat(pid)
    return st is not None and st.state not in ("Z", "X")


@attrs.frozen
class NetDev:
    """One interface's counters in /proc/<pid>/net/dev (the netns the process is in)."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[NetDev]:
    """Two header lines, then `name: <8 receive columns> <8 transmit columns>`."""
    out = []
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        cols = rest.split()
        if len(cols) >= 16 and all(c.isdigit() for c in cols[:16]):
            n = [int(c) for c in cols[:16]]
            out.append(NetDev(name.strip(), n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11]))
    return out


def net_dev(pid: int, netns: str) -> list[NetDev] | None:
    """The interfaces of the network namespace pinned at `netns`, read through
    `pid` (a process in it: no setns, no netlink); with no pid (a pod without
    an infra process), by a thread that joins the netns (host/nsthread.py).
    None if `pid` is gone or in another namespace (its pid reused), or the
    netns is gone."""
    try:
        if pid <= 0:
            return run_in(lambda: parse_net_dev(Path("/proc/thread-self/net/dev").read_text()), enter=[("net", netns)])
        ours, theirs = os.stat(netns), os.stat(f"/proc/{pid}/ns/net")
        if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino):
            return None
        return parse_net_dev(Path(f"/proc/{pid}/net/dev").read_text())
    except OSError:
        return None


def open_files(pid: int) -> tuple[int, int]:
    """(open file descriptors, of which sockets) of a process; (0, 0) once it is gone."""
    fds = sockets = 0
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0, 0
    for name in names:
        fds += 1
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
        except OSError:  # closed meanwhile
            fds -= 1
    return fds, sockets

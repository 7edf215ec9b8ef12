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

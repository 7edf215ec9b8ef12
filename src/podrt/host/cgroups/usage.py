"""What a cgroup says of its processes, in one shape for both hierarchies.

The fields are the ones the kubelet's CRI stats and cAdvisor's metrics are made
of (CPU time and throttling, memory with its working set, swap, OOM events,
processes, block I/O, huge pages, pressure). Each hierarchy has its reader
(cgroups/v1.py with cgroupspy, cgroups/v2.py podrt's own); cgroups/reader.py
picks the host's.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class PressureLine:
    """One line of a v2 *.pressure file: the share of time tasks stalled."""

    avg10: float = 0.0
    avg60: float = 0.0
    avg300: float = 0.0
    total_us: int = 0


@attrs.frozen
class Pressure:
    some: PressureLine = PressureLine()
    full: PressureLine = PressureLine()


@attrs.frozen
class DeviceIo:
    """One block device's I/O counters (v2 io.stat, v1 blkio.throttle.*_recursive)."""

    major: int
    minor: int
    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0


@attrs.frozen
class Usage:
    cpu_ns: int = 0  # cumulative CPU time
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    cpu_periods: int = 0  # CFS enforcement periods, and those in which the quota ran out
    cpu_throttled_periods: int = 0
    cpu_throttled_ns: int = 0
    memory_bytes: int = 0  # usage, page cache included
    memory_max_bytes: int = 0  # the usage's high-water mark (v1 max_usage_in_bytes, v2 memory.peak; 0: not kept)
    working_set_bytes: int = 0  # usage less inactive file pages (what eviction watches)
    rss_bytes: int = 0  # anonymous memory
    cache_bytes: int = 0  # file pages
    mapped_file_bytes: int = 0  # file pages mapped into processes
    page_faults: int = 0
    major_page_faults: int = 0
    limit_bytes: int | None = None  # None: no limit
    limit_hits: int = 0  # v1 memory.failcnt, v2 memory.events "max"
    oom_events: int = 0  # v1 has no such counter: its OOM kills stand in
    oom_kills: int = 0
    swap_bytes: int | None = None  # None: swap is not accounted on this host
    swap_limit_bytes: int | None = None
    processes: int = 0  # pids.current: tasks (threads included), as runc reports them
    processes_limit: int | None = None  # pids.max; None: no limit
    io_read_bytes: int = 0
    io_write_bytes: int = 0
    io_reads: int = 0
    io_writes: int = 0
    io_devices: tuple[DeviceIo, ...] = ()  # the same, per device (a pod's total leaves them out)
    hugetlb_bytes: tuple[tuple[str, int], ...] = ()  # ("2MB", bytes in use), per page size
    cpu_pressure: Pressure | None = None  # v2 with PSI only
    memory_pressure: Pressure | None = None
    io_pressure: Pressure | None = None


def io_totals(devices: tuple[DeviceIo, ...]) -> tuple[int, int, int, int]:
    """(read bytes, written bytes, reads, writes) summed over every device."""
    return (sum(d.read_bytes for d in devices), sum(d.write_bytes for d in devices),
            sum(d.reads for d in devices), sum(d.writes for d in devices))


COUNTERS = tuple(f.name for f in attrs.fields(Usage) if type(f.default) is int)  # the fields that add up


def total(parts: list[Usage]) -> Usage | None:
    """Several cgroups as one (a pod whose cgroups share podrt's default parent):
    counters add up, the largest limit stands for the set, and pressure (a share
    of time, not a sum) is unknown."""
    if not parts:
        return None
    counters = {name: sum(getattr(u, name) for u in parts) for name in COUNTERS}
    pages: dict[str, int] = {}
    for u in parts:
        for size, used in u.hugetlb_bytes:
            pages[size] = pages.get(size, 0) + used
    limits = [u.limit_bytes for u in parts if u.limit_bytes is not None]
    swaps = [u.swap_bytes for u in parts if u.swap_bytes is not None]
    return attrs.evolve(Usage(), **counters, hugetlb_bytes=tuple(sorted(pages.items())),
                        limit_bytes=max(limits) if len(limits) == len(parts) else None,
                        swap_bytes=sum(swaps) if len(swaps) == len(parts) else None)

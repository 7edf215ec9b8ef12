"""The cgroup v1 reader: cgroupspy for the controllers it models (cpu,
cpuacct, memory), and the files it does not model read directly: pids.current
(cgroupspy has no pids controller), blkio's throttle counters (its blkio
reader keeps one column of the per-device lines, and CFQ's own counters are
empty on kernels without CFQ) and hugetlb's usage (no hugetlb controller).
"""

from __future__ import annotations

import os
from pathlib import Path

from cgroupspy.nodes import Node  # type: ignore[import-untyped]

from podrt.host.cgroups.usage import Usage

UNLIMITED = 1 << 62  # v1 shows "no limit" as a page-rounded 2^63-1
USER_HZ = os.sysconf("SC_CLK_TCK")  # cpuacct.stat counts in these ticks


def _node(root: Path, controller: str, path: str) -> Node:
    node = Node(controller.encode(), parent=Node(str(root).encode()))
    for part in path.strip("/").split("/"):
        if part:
            node = Node(part.encode(), parent=node)
    return node


def _int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _blkio(d: Path) -> tuple[int, int, int, int]:
    """(read bytes, written bytes, reads, writes) from `<dev> Read <n>` lines, every device."""
    sums = [0, 0, 0, 0]
    for n, name in ((0, "io_service_bytes"), (2, "io_serviced")):
        try:
            text = (d / f"blkio.throttle.{name}_recursive").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if len(words) == 3 and words[1] in ("Read", "Write"):
                sums[n + (words[1] == "Write")] += int(words[2])
    return sums[0], sums[1], sums[2], sums[3]


def _hugetlb(d: Path) -> tuple[tuple[str, int], ...]:
    return tuple((f.name.split(".")[1], _int_file(f) or 0) for f in sorted(d.glob("hugetlb.*.usage_in_bytes")))


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= UNLIMITED else value


def read(path: str, root: Path) -> Usage | None:
    rel = path.strip("/")
    if not (root / "memory" / rel).is_dir():
        return None
    try:
        memory = _node(root, "memory", path).controller
        stat = memory.stat
        used = memory.usage_in_bytes
        acct = _node(root, "cpuacct", path).controller
        ticks = acct.acct_stat
        throttling = _node(root, "cpu", path).controller.stat
        limit = _limit(memory.limit_in_bytes)
        swap = swap_limit = None
        if (root / "memory" / rel / "memory.memsw.usage_in_bytes").exists():
            swap = max(0, memory.memsw_usage_in_bytes - used)
            both = _limit(memory.memsw_limit_in_bytes)
            swap_limit = both - limit if both is not None and limit is not None else None
        oom_kills = int(memory.oom_control.get("oom_kill", 0))
        processes = _int_file(root / "pids" / rel / "pids.current")
        io = _blkio(root / "blkio" / rel)
        return Usage(
            cpu_ns=acct.usage,
            cpu_user_ns=ticks.get("user", 0) * 1_000_000_000 // USER_HZ,
            cpu_system_ns=ticks.get("system", 0) * 1_000_000_000 // USER_HZ,
            cpu_periods=throttling.get("nr_periods", 0),
            cpu_throttled_periods=throttling.get("nr_throttled", 0),
            cpu_throttled_ns=throttling.get("throttled_time", 0),
            memory_bytes=used,
            working_set_bytes=max(0, used - stat.get("total_inactive_file", 0)),
            rss_bytes=stat.get("total_rss", 0),
            cache_bytes=stat.get("total_cache", 0),
            page_faults=stat.get("total_pgfault", 0),
            major_page_faults=stat.get("total_pgmajfault", 0),
            limit_bytes=limit,
            limit_hits=memory.failcnt,
            oom_events=oom_kills,
            oom_kills=oom_kills,
            swap_bytes=swap,
            swap_limit_bytes=swap_limit,
            processes=processes if processes is not None else len(memory.tasks),
            io_read_bytes=io[0], io_write_bytes=io[1], io_reads=io[2], io_writes=io[3],
            hugetlb_bytes=_hugetlb(root / "hugetlb" / rel),
        )
    except (OSError, ValueError, AttributeError):  # gone while read
        return None


def oom_kills(path: str, root: Path) -> int:
    try:
        return int(_node(root, "memory", path).controller.oom_control.get("oom_kill", 0))
    except (OSError, ValueError, AttributeError):  # gone, or a kernel without the counter
        return 0

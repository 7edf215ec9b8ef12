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

from podrt.host.cgroups.usage import DeviceIo, Usage, io_totals

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


def blkio_devices(service_bytes: str, serviced: str) -> tuple[DeviceIo, ...]:
    """Per device, from the `<major>:<minor> Read|Write <n>` lines of
    blkio.throttle.io_service_bytes_recursive and io_serviced_recursive."""
    found: dict[tuple[int, int], list[int]] = {}
    for base, text in ((0, service_bytes), (2, serviced)):
        for line in text.splitlines():
            words = line.split()
            major, _, minor = words[0].partition(":") if words else ("", "", "")
            if len(words) == 3 and words[1] in ("Read", "Write") and major.isdigit() and minor.isdigit() and words[2].isdigit():
                found.setdefault((int(major), int(minor)), [0, 0, 0, 0])[base + (words[1] == "Write")] += int(words[2])
    return tuple(DeviceIo(major, minor, *counts) for (major, minor), counts in found.items())


def _blkio(d: Path) -> tuple[DeviceIo, ...]:
    texts = []
    for name in ("io_service_bytes", "io_serviced"):
        try:
            texts.append((d / f"blkio.throttle.{name}_recursive").read_text())
        except OSError:
            texts.append("")
    return blkio_devices(texts[0], texts[1])


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
        devices = _blkio(root / "blkio" / rel)
        io = io_totals(devices)
        return Usage(
            cpu_ns=acct.usage,
            cpu_user_ns=ticks.get("user", 0) * 1_000_000_000 // USER_HZ,
            cpu_system_ns=ticks.get("system", 0) * 1_000_000_000 // USER_HZ,
            cpu_periods=throttling.get("nr_periods", 0),
            cpu_throttled_periods=throttling.get("nr_throttled", 0),
            cpu_throttled_ns=throttling.get("throttled_time", 0),
            memory_bytes=used,
            memory_max_bytes=memory.max_usage_in_bytes,
            working_set_bytes=max(0, used - stat.get("total_inactive_file", 0)),
            rss_bytes=stat.get("total_rss", 0),
            cache_bytes=stat.get("total_cache", 0),
            mapped_file_bytes=stat.get("total_mapped_file", 0),
            page_faults=stat.get("total_pgfault", 0),
            major_page_faults=stat.get("total_pgmajfault", 0),
            limit_bytes=limit,
            limit_hits=memory.failcnt,
            oom_events=oom_kills,
            oom_kills=oom_kills,
            swap_bytes=swap,
            swap_limit_bytes=swap_limit,
            processes=processes if processes is not None else len(memory.tasks),
            processes_limit=_int_file(root / "pids" / rel / "pids.max"),
            io_read_bytes=io[0], io_write_bytes=io[1], io_reads=io[2], io_writes=io[3], io_devices=devices,
            hugetlb_bytes=_hugetlb(root / "hugetlb" / rel),
        )
    except (OSError, ValueError, AttributeError):  # gone while read
        return None


def oom_kills(path: str, root: Path) -> int:
    try:
        return int(_node(root, "memory", path).controller.oom_control.get("oom_kill", 0))
    except (OSError, ValueError, AttributeError):  # gone, or a kernel without the counter
        return 0

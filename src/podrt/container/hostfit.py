"""What a container request may name on this host: online CPUs, memory
nodes, huge page sizes. CreateContainer and UpdateContainerResources check
against these before runc sees the values (runc's own refusal names a cgroup
file, not the field the client sent)."""

from __future__ import annotations

import functools
import os
import re

_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
MAX_LIST_ID = 1 << 16  # no host has more CPUs or nodes; bounds the set a list can expand to


def id_list(text: str) -> frozenset[int]:
    """The IDs of a kernel list ("0-3,8,10-11"); ValueError names what is wrong."""
    ids: set[int] = set()
    for part in text.split(","):
        match = _RANGE.fullmatch(part)
        if match is None:
            raise ValueError(f"{part!r} is not a number or a range like 0-3")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ValueError(f"range {part} ends before it starts")
        if high >= MAX_LIST_ID:
            raise ValueError(f"{high} is larger than any CPU or node number")
        ids.update(range(low, high + 1))
    return frozenset(ids)


def _online(path: str, fallback: frozenset[int]) -> frozenset[int]:
    try:
        with open(path) as f:
            return id_list(f.read().strip())
    except (OSError, ValueError):
        return fallback


def online_cpus() -> frozenset[int]:
    """Read at each check: CPUs go on- and offline at run time."""
    return _online("/sys/devices/system/cpu/online", frozenset(range(os.cpu_count() or 1)))


def online_nodes() -> frozenset[int]:
    """Memory (NUMA) nodes; a kernel without NUMA has node 0 only."""
    return _online("/sys/devices/system/node/online", frozenset({0}))


@functools.cache
def hugepage_sizes() -> frozenset[str]:
    """The host's huge page sizes in the kubelet's form ("2MB", "1GB")."""
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        return frozenset()
    return frozenset(page_size(int(n.removeprefix("hugepages-").removesuffix("kB")))
                     for n in names if n.startswith("hugepages-") and n.endswith("kB") and n[10:-2].isdigit())


def page_size(kib: int) -> str:
    for unit, scale in (("GB", 1 << 20), ("MB", 1 << 10)):
        if kib % scale == 0:
            return f"{kib // scale}{unit}"
    return f"{kib}KB"

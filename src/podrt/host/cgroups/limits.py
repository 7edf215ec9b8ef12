"""Writing limits into a cgroup podrt does not run a container in: a pod's
cgroup (UpdatePodSandboxResources), which no `runc update` reaches.

The values are CRI's (runc's) units, converted to the hierarchy's files as
runc converts them (v2: shares to cpu.weight, quota and period to cpu.max,
memory+swap to memory.swap.max). Nothing is best effort here: every file a
limit needs must be in the cgroup before anything is written (a controller
missing or not enabled for it, swap not accounted, a page size without
hugetlb files: refused, naming the limit), a memory limit below what the
cgroup uses now is refused rather than handed to the kernel (v1 would try
to reclaim and fail with EBUSY, v2 would OOM-kill), and a write the kernel
refuses puts back the files already written, so the cgroup is left as it was.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path

import attrs

from podrt.host.cgroups import hierarchy
from podrt.host.cgroups.hierarchy import CGROUP_ROOT

V1_UNLIMITED = "-1"  # what v1's limit files take for "none"


@attrs.frozen
class Limits:
    """A cgroup's new limits; a zero or empty value leaves that limit as it is."""

    cpu_shares: int = 0
    cpu_quota: int = 0  # µs per period; -1: no quota
    cpu_period: int = 0  # µs
    memory: int = 0  # bytes
    memory_swap: int = 0  # memory + swap, bytes; -1: unlimited swap
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepages: tuple[tuple[str, int], ...] = ()  # ("2MB", bytes)
    unified: Mapping[str, str] = attrs.field(factory=dict)  # v2 interface files, written as given

    def empty(self) -> bool:
        return self == Limits()


class LimitRefused(Exception):
    """A limit the cgroup cannot take. `limit` names it as a Limits field
    ("memory", "hugepages.2MB", "unified.memory.high"); `invalid`: the kernel
    called the value itself invalid (EINVAL, ERANGE), else the cgroup's state
    is the reason (a file missing, usage above the limit, a child's cpuset)."""

    def __init__(self, limit: str, message: str, *, invalid: bool = False) -> None:
        super().__init__(message)
        self.limit, self.invalid = limit, invalid


@attrs.frozen
class _Write:
    limit: str
    path: Path
    value: str


def cpu_weight(shares: int) -> int:
    """runc's conversion of CPU shares (2..262144) to a v2 weight (1..10000)."""
    return max(1, 1 + (shares - 2) * 9999 // 262142)


def _read(path: Path) -> str:
    return path.read_text().strip()


def _memory_now(d: Path, v2: bool) -> tuple[int, int]:
    """(bytes in use, the limit now; no limit reads as v1's huge number or v2's "max")."""
    limit = _read(d / ("memory.max" if v2 else "memory.limit_in_bytes"))
    return (int(_read(d / ("memory.current" if v2 else "memory.usage_in_bytes"))),
            1 << 63 if limit == "max" else int(limit))


def _v2_writes(d: Path, lim: Limits) -> list[_Write]:
    out = []
    if lim.cpu_shares:
        out.append(_Write("cpu_shares", d / "cpu.weight", str(cpu_weight(lim.cpu_shares))))
    if lim.cpu_quota or lim.cpu_period:
        quota = "max" if lim.cpu_quota == -1 else str(lim.cpu_quota) if lim.cpu_quota else None
        if lim.cpu_period:  # cpu.max takes "<quota> <period>": a period alone keeps the quota it has
            quota = quota or (_read(d / "cpu.max").split()[0] if (d / "cpu.max").exists() else "max")
            out.append(_Write("cpu_period" if not lim.cpu_quota else "cpu_quota", d / "cpu.max", f"{quota} {lim.cpu_period}"))
        else:
            out.append(_Write("cpu_quota", d / "cpu.max", str(quota)))
    if lim.memory:
        out.append(_Write("memory", d / "memory.max", str(lim.memory)))
    if lim.memory_swap:  # v2 limits swap alone: memory+swap less memory
        swap = "max" if lim.memory_swap == -1 else str(lim.memory_swap - lim.memory)
        out.append(_Write("memory_swap", d / "memory.swap.max", swap))
    out += _cpuset_writes(d, lim)
    out += [_Write(f"hugepages.{size}", d / f"hugetlb.{size}.max", str(limit)) for size, limit in lim.hugepages]
    out += [_Write(f"unified.{key}", d / key, value) for key, value in lim.unified.items()]
    return out


def _cpuset_writes(d: Path, lim: Limits) -> list[_Write]:
    return [_Write(name, d / f"cpuset.{name.split('_')[1]}", value)
            for name, value in (("cpuset_cpus", lim.cpuset_cpus), ("cpuset_mems", lim.cpuset_mems)) if value]


def _v1_writes(root: Path, rel: str, lim: Limits) -> list[_Write]:
    cpu, memory = root / "cpu" / rel, root / "memory" / rel
    out = []
    if lim.cpu_shares:
        out.append(_Write("cpu_shares", cpu / "cpu.shares", str(lim.cpu_shares)))
    if lim.cpu_period:
        out.append(_Write("cpu_period", cpu / "cpu.cfs_period_us", str(lim.cpu_period)))
    if lim.cpu_quota:
        out.append(_Write("cpu_quota", cpu / "cpu.cfs_quota_us", str(lim.cpu_quota)))
    if lim.memory or lim.memory_swap:
        out += _v1_memory(memory, lim)
    out += _cpuset_writes(root / "cpuset" / rel, lim)
    out += [_Write(f"hugepages.{size}", root / "hugetlb" / rel / f"hugetlb.{size}.limit_in_bytes", str(limit))
            for size, limit in lim.hugepages]
    if lim.unified:
        key = next(iter(lim.unified))
        raise LimitRefused(f"unified.{key}", "unified limits are cgroup v2 files, and this host has cgroup v1")
    return out


def _v1_memory(d: Path, lim: Limits) -> list[_Write]:
    """memory.limit_in_bytes must never exceed memory.memsw.limit_in_bytes:
    the one that grows first goes first. Without a swap limit asked for, memsw
    is raised to the new memory limit only where it would fall below it."""
    memsw = d / "memory.memsw.limit_in_bytes"
    swap = lim.memory_swap
    if not swap and lim.memory and memsw.exists() and int(_read(memsw)) < lim.memory:
        swap = lim.memory
    mem = [_Write("memory", d / "memory.limit_in_bytes", str(lim.memory))] if lim.memory else []
    if not swap:
        return mem
    both = [_Write("memory_swap", memsw, V1_UNLIMITED if swap == -1 else str(swap))]
    current = int(_read(memsw)) if memsw.exists() else 0
    grows = swap == -1 or swap > current
    return both + mem if grows else mem + both


def plan(cgroup: str, lim: Limits, root: Path = CGROUP_ROOT) -> list[tuple[str, Path, str]]:
    """(limit, file, value) of each write, in order; LimitRefused before
    anything is written when a file is missing or memory is below use."""
    v2 = hierarchy.unified(root)
    rel = cgroup.strip("/")
    writes = _v2_writes(root / rel, lim) if v2 else _v1_writes(root, rel, lim)
    for w in writes:
        if not w.path.is_file():
            raise LimitRefused(w.limit, f"{_where(w.path, root)} is missing: {_why_missing(w, root, v2)}")
    if lim.memory:  # lowered below use, that is; the limit it has already (the kubelet's write) stands
        used, now = _memory_now(root / rel if v2 else root / "memory" / rel, v2)
        if lim.memory < min(used, now):
            raise LimitRefused("memory", f"{lim.memory} bytes is below what the cgroup uses now ({used} bytes): "
                                         f"not lowered, as the kernel would have to reclaim or OOM-kill to meet it")
    return [(w.limit, w.path, w.value) for w in writes]


def _where(path: Path, root: Path) -> str:
    return "/" + str(path.relative_to(root))


def _why_missing(w: _Write, root: Path, v2: bool) -> str:
    controller = w.path.name.split(".", 1)[0]
    if not v2 and not (root / controller).is_dir():
        return f"this host mounts no {controller} controller"
    if not w.path.parent.is_dir():
        return "the cgroup is gone"
    if w.limit == "memory_swap":
        return "this host does not account swap"
    if v2:
        return f"the {controller} controller is not enabled for this cgroup (its parent's cgroup.subtree_control)"
    return f"this host's {controller} controller has no such file"


def apply(cgroup: str, lim: Limits, root: Path = CGROUP_ROOT) -> None:
    """Write `lim` into `cgroup` (a directory below each hierarchy). Blocking:
    run it in a thread. On a refusal the files already written get their old
    values back."""
    done: list[tuple[Path, str]] = []
    try:
        for limit, path, value in plan(cgroup, lim, root):
            old = _read(path)
            try:
                path.write_text(value)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                hierarchical = limit in ("cpu_quota", "cpu_period") and path.name.startswith("cpu.cfs")
                if hierarchical:  # v1's EINVAL there is a child's quota above the new one
                    reason += " (on cgroup v1 no child's CPU quota may exceed its parent's)"
                raise LimitRefused(limit, f"{_where(path, root)}: the kernel refused {value!r}: {reason}",
                                   invalid=exc.errno in (errno.EINVAL, errno.ERANGE) and not hierarchical) from None
            done.append((path, old))
    except BaseException:
        for path, old in reversed(done):
            try:
                path.write_text(old)
            except OSError:  # best effort: the refusal says what was asked; the rest stands as it was
                pass
        raise

"""Which cgroup hierarchy this host runs, and what it offers.

Detected once per process: a host does not change hierarchy under a running
daemon. v1 "legacy" has one mount per controller; "hybrid" adds a controller-less
v2 mount at /sys/fs/cgroup/unified (systemd's layout, and these CI hosts');
v2 "unified" has one tree whose root lists its controllers in cgroup.controllers.
Hybrid behaves as v1 for every limit and every counter podrt reads.
"""

from __future__ import annotations

import enum
import functools
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Hierarchy(enum.Enum):
    LEGACY = "v1"
    HYBRID = "v1 (hybrid)"
    UNIFIED = "v2"


def detect(root: Path = CGROUP_ROOT) -> Hierarchy:
    if (root / "cgroup.controllers").exists():
        return Hierarchy.UNIFIED
    return Hierarchy.HYBRID if (root / "unified" / "cgroup.controllers").exists() else Hierarchy.LEGACY


@functools.cache
def mode(root: Path = CGROUP_ROOT) -> Hierarchy:
    """detect(), once per tree."""
    return detect(root)


def unified(root: Path = CGROUP_ROOT) -> bool:
    return mode(root) is Hierarchy.UNIFIED


def hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """Every tree runc may create a cgroup in: v1's controllers (the named systemd
    one and hybrid's 'unified' one included), or the v2 root alone."""
    if unified(root):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())


def available(controller: str, root: Path = CGROUP_ROOT) -> bool:
    """Whether the kernel offers `controller` to podrt's cgroups: a mounted v1
    hierarchy, or a name in v2's root cgroup.controllers."""
    if unified(root):
        return controller in _words(root / "cgroup.controllers")
    return (root / controller).is_dir()


def enabled_below(cgroup: str, root: Path = CGROUP_ROOT) -> set[str]:
    """v2: the controllers `cgroup` hands to its children (cgroup.subtree_control)."""
    return _words(root / cgroup.strip("/") / "cgroup.subtree_control")


def offered_to(cgroup: str, root: Path = CGROUP_ROOT) -> set[str]:
    """v2: the controllers `cgroup` may enable for its children (its cgroup.controllers)."""
    return _words(root / cgroup.strip("/") / "cgroup.controllers")


def own_cgroup(pid: str = "self") -> str:
    """The v2 path of a process's cgroup ("/" for the root), from /proc/<pid>/cgroup."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return "/"


_swap_answers: dict[Path, bool] = {}  # per tree, once a cgroup with memory files was seen


def swap_accounting(root: Path = CGROUP_ROOT) -> bool:
    """Whether a container's swap can be limited. v1: the memory controller has
    memsw files (swapaccount=1). v2: memory.swap.max sits beside memory.max in
    every cgroup with memory enabled (unless the kernel runs without swap
    accounting), and nowhere at the root; so look at a cgroup that has
    memory.max: podrt's own, or a child of the root (a pod's parent, which runc
    gives memory as it starts the pod's infra: a workload container, the first
    to have a memory limit, always finds one)."""
    if not unified(root):
        return (root / "memory" / "memory.memsw.limit_in_bytes").exists()
    if root in _swap_answers:
        return _swap_answers[root]
    try:
        own = root / own_cgroup().strip("/")
    except OSError:
        own = root
    for cg in [own, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if cg != root and (cg / "memory.max").exists():
            _swap_answers[root] = (cg / "memory.swap.max").exists()
            return _swap_answers[root]
    return False


def _words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()

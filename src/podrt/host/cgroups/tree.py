"""Making and removing the cgroups podrt owns (conmon's; the pod's, runc's
leftovers; podrt's default parent), in every hierarchy the host has.

Removal is children first: a cgroup directory can only go once it is empty of
processes and of child cgroups (on v2 that is the only way; on v1 runc or a
container may have nested cgroups too).
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from podrt.host.cgroups.hierarchy import CGROUP_ROOT, hierarchies
from podrt.host.cgroups.paths import fs_path

CONMON_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")


def exists(path: str, root: Path = CGROUP_ROOT) -> bool:
    return any((h / path.lstrip("/")).is_dir() for h in hierarchies(root))


def create(path: str, names: tuple[str, ...] = CONMON_CONTROLLERS, root: Path = CGROUP_ROOT) -> list[str]:
    """Create `path` in the given v1 controllers, or in the v2 tree; returns the
    cgroup.procs files to write a pid into. On v2 no controller is enabled for
    it: conmon's cgroup is a leaf for accounting, and the no-internal-process
    rule forbids processes only in cgroups that hand controllers down."""
    procs = []
    for h in hierarchies(root):
        if h != root and not set(h.name.split(",")) & set(names):  # "cpu,cpuacct" where comounted
            continue
        d = h / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        procs.append(str(d / "cgroup.procs"))
    return procs


def _rmtree(top: Path) -> None:
    """rmdir `top` and the cgroups below it, deepest first (a cgroup's
    interface files are not files: only directories are removed)."""
    for dirpath, dirnames, _ in os.walk(top, topdown=False):
        for name in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, name))
            except FileNotFoundError:  # gone meanwhile (runc, a concurrent undo)
                pass
    os.rmdir(top)


def remove(path: str, *, prune_parent: str | None = None, root: Path = CGROUP_ROOT) -> None:
    """Remove `path` (and its children) in every hierarchy, idempotently, then
    `prune_parent` if it is empty.

    A cgroup that still has processes cannot be removed (EBUSY): raised, so the
    undo is retried later; a non-empty shared parent is simply kept.
    """
    busy = []
    for h in hierarchies(root):
        target = h / fs_path(path).lstrip("/")
        try:
            _rmtree(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
            busy.append(str(target))
        if prune_parent:
            try:
                os.rmdir(h / prune_parent.lstrip("/"))
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY):
                    raise
    if busy:
        raise OSError(errno.EBUSY, f"cgroup still in use: {', '.join(busy)}")


def kill_procs(path: str, root: Path = CGROUP_ROOT) -> int:
    """SIGKILL every process left in `path` (a container's own cgroup, after
    its runtime lost track of it: runc cut down mid-create leaves its init
    there); the number signalled."""
    pids: set[int] = set()
    for h in hierarchies(root):
        for procs in (h / fs_path(path).lstrip("/")).glob("**/cgroup.procs"):
            try:
                pids.update(int(line) for line in procs.read_text().split())
            except (OSError, ValueError):  # gone meanwhile
                continue
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)

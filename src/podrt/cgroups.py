"""Cgroup paths for pods and containers, as CRI-O names them, removal of what
podrt made, and what a container's memory cgroup says about an OOM kill.

cgroupfs: `<parent>/podrt-<id>` (parent must not be a systemd slice);
systemd:  `<parent>.slice:podrt:<id>` (parent must be a slice). runc creates the
container's cgroup; podrt creates conmon's (`podrt-conmon-<id>`) and removes both,
plus the default parent when it is left empty.
"""

from __future__ import annotations

import errno
import os
import posixpath
from pathlib import Path

import attrs
from cgroupspy.nodes import Node

from podrt.errors import InvalidArgument

CGROUP_ROOT = Path("/sys/fs/cgroup")
DEFAULT_CGROUPFS_PARENT = "/podrt"
DEFAULT_SYSTEMD_PARENT = "system.slice"
CONMON_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")


def _clean_parent(parent: str) -> str:
    if any(part == ".." for part in parent.split("/")):
        raise InvalidArgument(f"cgroup parent {parent!r} must not contain '..'")
    return parent


def sandbox_cgroup(manager: str, parent: str, sandbox_id: str) -> tuple[str, str]:
    """(parent used, runc cgroupsPath) for a sandbox, with CRI-O's refusals."""
    parent = _clean_parent(parent)
    if manager == "systemd":
        parent = parent or DEFAULT_SYSTEMD_PARENT
        if not posixpath.basename(parent).endswith(".slice"):
            raise InvalidArgument(f"podrt configured with systemd cgroup manager, but did not receive slice as parent: {parent}")
        return parent, f"{posixpath.basename(parent)}:podrt:{sandbox_id}"
    parent = parent or DEFAULT_CGROUPFS_PARENT
    if posixpath.basename(parent).endswith(".slice"):
        raise InvalidArgument(f"podrt configured with cgroupfs cgroup manager, but received systemd slice as parent: {parent}")
    if not parent.startswith("/"):
        parent = "/" + parent
    return parent, posixpath.join(parent, f"podrt-{sandbox_id}")


def conmon_cgroup(parent: str, sandbox_id: str) -> str:
    return posixpath.join(parent, f"podrt-conmon-{sandbox_id}")


def controllers() -> list[Path]:
    """Every hierarchy runc may create the pod's cgroup in (v1 controllers, the
    named systemd one and the hybrid v2 'unified' one), or the v2 root."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink())


def exists(path: str) -> bool:
    return any((ctl / path.lstrip("/")).is_dir() for ctl in controllers())


def create(path: str, names: tuple[str, ...] = CONMON_CONTROLLERS) -> list[str]:
    """Create `path` in the given v1 controllers; returns the cgroup.procs files."""
    procs = []
    for ctl in controllers():
        if ctl != CGROUP_ROOT and ctl.name not in names:
            continue
        d = ctl / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        procs.append(str(d / "cgroup.procs"))
    return procs


def remove(path: str, *, prune_parent: str | None = None) -> None:
    """rmdir `path` in every hierarchy (idempotent), then `prune_parent` if empty.

    A cgroup that still has processes cannot be removed (EBUSY): raised, so the
    undo is retried later; a non-empty shared parent is simply kept.
    """
    busy = []
    for ctl in controllers():
        for target, must in ((path, True), (prune_parent, False)):
            if not target:
                continue
            try:
                os.rmdir(ctl / target.lstrip("/"))
            except FileNotFoundError:
                pass
            except OSError as exc:
                if must and exc.errno == errno.EBUSY:
                    busy.append(str(ctl / target.lstrip("/")))
                elif exc.errno not in (errno.ENOTEMPTY, errno.EBUSY):
                    raise
    if busy:
        raise OSError(errno.EBUSY, f"cgroup still in use: {', '.join(busy)}")


def fs_path(cgroups_path: str) -> str:
    """The directory (below a hierarchy) of a runc cgroupsPath: as it is for
    cgroupfs, `<slice path>/<prefix>-<id>.scope` for systemd's "slice:prefix:id"."""
    if ":" not in cgroups_path:
        return cgroups_path
    slice_name, prefix, name = cgroups_path.split(":", 2)
    parts = slice_name.removesuffix(".slice").split("-")  # a-b.slice lives in a.slice/a-b.slice
    nested = "/".join("-".join(parts[: n + 1]) + ".slice" for n in range(len(parts)) if parts[n])
    return f"/{nested}/{prefix}-{name}.scope"


@attrs.frozen
class Usage:
    """What a cgroup (v1) says of its processes, as the kubelet's stats want it."""

    cpu_ns: int  # cumulative CPU time
    memory_bytes: int  # usage, page cache included
    working_set_bytes: int  # usage less inactive file pages (what eviction watches)
    rss_bytes: int
    page_faults: int
    major_page_faults: int
    limit_bytes: int  # the kernel's "unlimited" is a huge number
    processes: int


def _node(controller: str, path: str) -> Node:
    node = Node(controller.encode(), parent=Node(str(CGROUP_ROOT).encode()))
    for part in fs_path(path).strip("/").split("/"):
        node = Node(part.encode(), parent=node)
    return node


def usage(cgroups_path: str) -> Usage | None:
    """Read with cgroupspy from the cpuacct and memory hierarchies; None when
    the cgroup is gone (the container exited and runc removed it) or on v2."""
    try:
        memory = _node("memory", cgroups_path).controller
        stat = memory.stat
        used = memory.usage_in_bytes
        return Usage(
            cpu_ns=_node("cpuacct", cgroups_path).controller.usage,
            memory_bytes=used,
            working_set_bytes=max(0, used - stat.get("total_inactive_file", 0)),
            rss_bytes=stat.get("total_rss", 0),
            page_faults=stat.get("total_pgfault", 0),
            major_page_faults=stat.get("total_pgmajfault", 0),
            limit_bytes=memory.limit_in_bytes,
            processes=len(memory.tasks))
    except (OSError, ValueError, AttributeError):
        return None


def oom_killed(cgroups_path: str) -> bool:
    """Whether the kernel's OOM killer killed a process in this cgroup. On
    cgroup v1 cgroupspy reads memory.oom_control (its oom_kill counter,
    kernel 4.13+); cgroupspy knows no v2, where memory.events says it."""
    path = fs_path(cgroups_path).lstrip("/")
    try:
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            events = (CGROUP_ROOT / path / "memory.events").read_text().split()
            return int(dict(zip(events[::2], events[1::2])).get("oom_kill", "0")) > 0
        return int(_node("memory", cgroups_path).controller.oom_control.get("oom_kill", 0)) > 0
    except (OSError, ValueError, AttributeError):  # gone, or a kernel without the counter
        return False

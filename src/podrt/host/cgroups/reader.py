"""Read a cgroup with the reader of the hierarchy it lives in."""

from __future__ import annotations

from pathlib import Path

from podrt.host.cgroups import hierarchy, v1, v2
from podrt.host.cgroups.hierarchy import CGROUP_ROOT
from podrt.host.cgroups.paths import fs_path
from podrt.host.cgroups.usage import Usage


def read(cgroups_path: str, root: Path = CGROUP_ROOT) -> Usage | None:
    """The usage of a runc cgroupsPath (or a cgroup parent); None when the cgroup
    is gone (the container exited and runc removed it). Blocking: call in a thread."""
    return (v2 if hierarchy.unified(root) else v1).read(fs_path(cgroups_path), root)


def oom_killed(cgroups_path: str, root: Path = CGROUP_ROOT) -> bool:
    """Whether the kernel's OOM killer killed a process in this cgroup (v2's
    memory.events, v1's memory.oom_control, kernel 4.13+); False once it is gone."""
    return (v2 if hierarchy.unified(root) else v1).oom_kills(fs_path(cgroups_path), root) > 0


def procs(cgroups_path: str, root: Path = CGROUP_ROOT) -> list[int]:
    """The pids in a cgroup (its cgroup.procs; v1: the pids hierarchy's, else
    the memory one's); [] once it is gone. Blocking."""
    rel = fs_path(cgroups_path).strip("/")
    dirs = [root / rel] if hierarchy.unified(root) else [root / "pids" / rel, root / "memory" / rel]
    for d in dirs:
        try:
            return [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            continue
    return []

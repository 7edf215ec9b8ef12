"""Cgroup names for pods, containers and conmon, as CRI-O names them.

cgroupfs: `<parent>/podrt-<id>` (parent must not be a systemd slice);
systemd:  `<parent>.slice:podrt:<id>` (parent must be a slice). The same names
on v1 and v2: only the directories they resolve to differ in number (one per v1
hierarchy, one in all on v2).
"""

from __future__ import annotations

import posixpath

from podrt.errors import InvalidArgument

DEFAULT_CGROUPFS_PARENT = "/podrt"
DEFAULT_SYSTEMD_PARENT = "system.slice"


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


def slice_dir(slice_name: str) -> str:
    """Where systemd keeps a slice: `a-b.slice` lives in `a.slice/a-b.slice`."""
    parts = posixpath.basename(slice_name).removesuffix(".slice").split("-")
    return "/" + "/".join("-".join(parts[: n + 1]) + ".slice" for n in range(len(parts)) if parts[n])


def fs_path(cgroups_path: str) -> str:
    """The directory (below a hierarchy) of a runc cgroupsPath: as it is for
    cgroupfs, `<slice path>/<prefix>-<id>.scope` for systemd's "slice:prefix:id"."""
    if ":" not in cgroups_path:
        return cgroups_path
    slice_name, prefix, name = cgroups_path.split(":", 2)
    return f"{slice_dir(slice_name)}/{prefix}-{name}.scope"


def parent_dir(parent: str) -> str:
    """The directory of a pod's cgroup parent (a cgroupfs path or a slice)."""
    return slice_dir(parent) if parent.endswith(".slice") else "/" + parent.strip("/")


def shared_parent(parent: str) -> bool:
    """podrt's defaults hold every pod that names no parent: not one pod's own."""
    return parent in ("", DEFAULT_CGROUPFS_PARENT, DEFAULT_SYSTEMD_PARENT)

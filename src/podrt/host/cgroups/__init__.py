"""The cgroup floor, one face for cgroup v1 (legacy or hybrid) and v2:

- hierarchy: which one this host runs and what it offers (controllers, swap);
- paths: the names of pods', containers' and conmon's cgroups (cgroupfs, systemd);
- tree: making and removing the cgroups podrt owns;
- usage, v1, v2, reader: what a cgroup says of its processes, read the host's way;
- limits: writing limits into a cgroup no runc update reaches (a pod's).
"""

from podrt.host.cgroups.hierarchy import CGROUP_ROOT, Hierarchy, available, mode, swap_accounting, unified
from podrt.host.cgroups.limits import LimitRefused, Limits
from podrt.host.cgroups.limits import apply as apply_limits
from podrt.host.cgroups.paths import (
                                 DEFAULT_CGROUPFS_PARENT,
                                 DEFAULT_SYSTEMD_PARENT,
                                 conmon_cgroup,
                                 fs_path,
                                 parent_dir,
                                 sandbox_cgroup,
                                 shared_parent,
)
from podrt.host.cgroups.reader import oom_killed, procs
from podrt.host.cgroups.reader import read as read_usage
from podrt.host.cgroups.tree import create, exists, kill_procs, remove
from podrt.host.cgroups.usage import DeviceIo, Pressure, PressureLine, Usage, total

__all__ = [
    "CGROUP_ROOT", "DEFAULT_CGROUPFS_PARENT", "DEFAULT_SYSTEMD_PARENT", "DeviceIo", "Hierarchy", "LimitRefused", "Limits", "Pressure",
    "PressureLine", "Usage", "apply_limits", "available", "conmon_cgroup", "create", "exists", "fs_path", "kill_procs", "mode",
    "oom_killed", "parent_dir", "procs", "read_usage",
    "remove", "sandbox_cgroup", "shared_parent", "swap_accounting", "total", "unified",
]

"""OCI runtime specs (config.json) for runc, from OCI-level inputs.

One builder for every process podrt runs in a container: the pod's infra
(sandbox/infra_spec.py) and, later, workload containers each turn their own
request into a SpecInput. Defaults are runc's `runc spec` and CRI-O's: a
small capability set, masked and read-only kernel paths, no new privileges,
all lifted for privileged processes. Knows nothing of pods; testable without
root (privileged capabilities read the host's bounding set).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

OCI_VERSION = "1.0.2"

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Every Linux capability, in kernel order (bit 0 .. 40, CAP_LAST_CAP of 5.9+),
# for privileged pods. runc 1.1 knows all of them.
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

# CRI-O's default_capabilities: what an unprivileged container gets.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
)

# runc spec's defaults and the kubelet's (which adds powercap: energy counters
# are a side channel): kernel interfaces that leak host data or let a
# container poke the host. Privileged pods see them unmasked.
MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

BIND_RO = ("ro", "bind", "nodev", "nosuid", "noexec")


@attrs.frozen
class Namespace:
    type: str  # "pid", "network", "ipc", "uts", "mount", ...
    path: str = ""  # join this one (a pod's netns, another container's); "" makes a new one


@attrs.frozen
class DeviceNode:
    """A device node to create in the container (linux.devices) and allow in its
    device cgroup with `access` (linux.resources.devices)."""

    path: str  # in the container
    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int = 0o666  # permission bits only
    uid: int = 0
    gid: int = 0
    access: str = "rwm"


@attrs.frozen
class SpecInput:
    """Everything a spec is built from; each field is OCI-level."""

    rootfs: str
    args: tuple[str, ...]
    namespaces: tuple[Namespace, ...]
    mounts: tuple[dict[str, Any], ...]  # in order, parents before children (runc mounts in list order)
    cgroups_path: str
    readonly_rootfs: bool = False
    env: tuple[str, ...] = (DEFAULT_PATH,)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    privileged: bool = False  # every capability the host has, no masked paths, no seccomp, all devices
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES  # for an unprivileged process
    no_new_privileges: bool = True
    terminal: bool = False  # a pty on the process's stdio (runc gets conmon's console socket)
    hostname: str = ""  # needs a UTS namespace of its own
    resources: Mapping[str, Any] = attrs.field(factory=dict)  # linux.resources besides devices
    devices: tuple[DeviceNode, ...] = ()
    sysctls: Mapping[str, str] = attrs.field(factory=dict)
    seccomp: dict[str, Any] | None = None
    selinux_label: str = ""
    oom_score_adj: int | None = None  # None: inherited
    masked_paths: tuple[str, ...] | None = None  # None: MASKED_PATHS (privileged: none either way)
    readonly_paths: tuple[str, ...] | None = None  # None: READONLY_PATHS (privileged: none either way)
    apparmor_profile: str = ""  # "" leaves the process as runc starts it
    rootfs_propagation: str = ""  # linux.rootfsPropagation; "" is runc's default (rslave)
    # a user namespace's (container ID, host ID, length) ranges: runc 1.1 wants them even when it joins one by path
    uid_mappings: tuple[tuple[int, int, int], ...] = ()
    gid_mappings: tuple[tuple[int, int, int], ...] = ()
    annotations: Mapping[str, str] = attrs.field(factory=dict)


def build_spec(inp: SpecInput) -> dict[str, Any]:
    """The config.json for runc to run `inp`."""
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(inp),
        "root": {"path": inp.rootfs, "readonly": inp.readonly_rootfs},
        "mounts": [dict(m) for m in inp.mounts],
        "linux": _linux(inp),
        "annotations": dict(inp.annotations),
    }
    if inp.hostname:
        spec["hostname"] = inp.hostname
    return spec


def _process(inp: SpecInput) -> dict[str, Any]:
    user: dict[str, Any] = {"uid": inp.uid, "gid": inp.gid}
    if inp.additional_gids:
        user["additionalGids"] = list(inp.additional_gids)
    process: dict[str, Any] = {
        "terminal": inp.terminal,
        "user": user,
        "args": list(inp.args),
        "env": list(inp.env),
        "cwd": inp.cwd,
        "capabilities": _capabilities(inp),
        "noNewPrivileges": inp.no_new_privileges,
    }
    if inp.oom_score_adj is not None:
        process["oomScoreAdj"] = inp.oom_score_adj
    if inp.selinux_label:
        process["selinuxLabel"] = inp.selinux_label
    if inp.apparmor_profile:
        process["apparmorProfile"] = inp.apparmor_profile
    return process


@functools.cache
def host_capabilities() -> frozenset[str]:
    """The capabilities in podrt's own bounding set. A privileged process gets these, not
    all: runc fails ("unable to apply caps") on one the host withholds (this host
    lacks CAP_SYS_RESOURCE), as containerd also limits privileged to what it has."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return frozenset(c for bit, c in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)
    return frozenset(ALL_CAPABILITIES)


def _capabilities(inp: SpecInput) -> dict[str, list[str]]:
    """No inheritable/ambient sets: exec'd programs must not keep capabilities
    they were not given by file capabilities."""
    if inp.privileged:
        held = host_capabilities()
        caps = [c for c in ALL_CAPABILITIES if c in held]
    else:
        caps = list(inp.capabilities)
    return {"bounding": caps, "effective": list(caps), "permitted": list(caps)}


def standard_mounts(*, own_netns: bool) -> list[dict[str, Any]]:
    """/proc, /dev, /dev/pts, /dev/mqueue, /sys and /sys/fs/cgroup, as runc spec has them."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        _sys_mount(own_netns),
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]


def bind(source: str, destination: str, options: tuple[str, ...] = BIND_RO) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": source, "options": list(options)}


def _sys_mount(own_netns: bool) -> dict[str, Any]:
    """A fresh sysfs shows the network devices of the mounting process's netns
    and the kernel refuses it without a netns of one's own (as CRI-O does, a
    process on the host network gets the host's /sys bound read-only instead)."""
    if not own_netns:
        return bind("/sys", "/sys", ("nosuid", "noexec", "nodev", "ro", "rbind"))
    return {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}


def _linux(inp: SpecInput) -> dict[str, Any]:
    linux: dict[str, Any] = {
        "namespaces": [{"type": ns.type, "path": ns.path} if ns.path else {"type": ns.type} for ns in inp.namespaces],
        "cgroupsPath": inp.cgroups_path,
        "resources": {"devices": _device_rules(inp), **inp.resources},
    }
    if inp.devices:
        linux["devices"] = [device_entry(d) for d in inp.devices]
    if inp.sysctls:
        linux["sysctl"] = dict(inp.sysctls)
    if inp.seccomp is not None and not inp.privileged:  # a privileged process is unconfined
        linux["seccomp"] = inp.seccomp
    if inp.rootfs_propagation:
        linux["rootfsPropagation"] = inp.rootfs_propagation
    for key, ranges in (("uidMappings", inp.uid_mappings), ("gidMappings", inp.gid_mappings)):
        if ranges:
            linux[key] = [{"containerID": c, "hostID": h, "size": n} for c, h, n in ranges]
    if not inp.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS if inp.masked_paths is None else inp.masked_paths)
        linux["readonlyPaths"] = list(READONLY_PATHS if inp.readonly_paths is None else inp.readonly_paths)
    return linux


def _device_rules(inp: SpecInput) -> list[dict[str, Any]]:
    """Deny all (runc itself always allows null, zero, full, tty, random and
    urandom) then allow each device node; a privileged process may use every device."""
    return [{"allow": inp.privileged, "access": "rwm"}] + [device_rule(d) for d in inp.devices]


def device_rule(d: DeviceNode) -> dict[str, Any]:
    """The device cgroup rule that lets the container use `d` (linux.resources.devices)."""
    return {"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": d.access}


def device_entry(d: DeviceNode) -> dict[str, Any]:
    """`d` as runc creates it in the container (linux.devices)."""
    return {"path": d.path, "type": d.type, "major": d.major, "minor": d.minor, "fileMode": d.file_mode,
            "uid": d.uid, "gid": d.gid}

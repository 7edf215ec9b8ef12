"""The OCI runtime spec (config.json) of a pod sandbox's infra container.

Modelled on what CRI-O generates for its infra container and on runc's
`runc spec` defaults, for runc 1.1: a read-only rootfs, a small capability
set, the pod's namespaces (the network one joined by path, since podrt
creates the netns before the infra container), and nothing the pause process
does not need. A function of the InfraPlan (and, for privileged pods, of the
host's capability bounding set), testable without root.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from podrt.sandbox.model import InfraPlan

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

# runc spec's defaults: kernel interfaces that leak host data or let a
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
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

_BIND_RO = ["ro", "bind", "nodev", "nosuid", "noexec"]


def build_infra_spec(plan: InfraPlan) -> dict[str, Any]:
    """The config.json for runc to run `plan`'s infra container.

    Raises ValueError when the plan is inconsistent (a pod network namespace
    without a netns path to join).
    """
    cfg = plan.config
    if not cfg.host_network and plan.netns_path is None:
        raise ValueError(f"sandbox {plan.sandbox_id}: pod network namespace needs a netns_path")
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process(plan),
        "root": {"path": plan.rootfs, "readonly": True},
        "mounts": _mounts(plan),
        "linux": _linux(plan),
        "annotations": dict(plan.annotations),
    }
    # Host-network pods share the host's UTS namespace (as in CRI-O), and
    # runc refuses a hostname without a UTS namespace of its own.
    if not cfg.host_network and plan.hostname:
        spec["hostname"] = plan.hostname
    return spec


def _process(plan: InfraPlan) -> dict[str, Any]:
    cfg = plan.config
    user: dict[str, Any] = {
        "uid": cfg.run_as_user if cfg.run_as_user is not None else 0,
        "gid": cfg.run_as_group if cfg.run_as_group is not None else 0,
    }
    if cfg.supplemental_groups:
        user["additionalGids"] = list(cfg.supplemental_groups)
    process: dict[str, Any] = {
        "terminal": False,
        "user": user,
        "args": list(plan.process_args),
        "env": [DEFAULT_PATH],
        "cwd": "/",
        "capabilities": _capabilities(cfg.privileged),
        # Privileged pods may need setuid binaries to gain privileges.
        "noNewPrivileges": not cfg.privileged,
    }
    if plan.oom_score_adj is not None:
        process["oomScoreAdj"] = plan.oom_score_adj
    if plan.selinux_label:
        process["selinuxLabel"] = plan.selinux_label
    return process


@functools.cache
def host_capabilities() -> frozenset[str]:
    """The capabilities in podrt's own bounding set. A privileged pod gets these, not
    all: runc fails ("unable to apply caps") on one the host withholds (this host
    lacks CAP_SYS_RESOURCE), as containerd also limits privileged to what it has."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return frozenset(c for bit, c in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)
    return frozenset(ALL_CAPABILITIES)


def _capabilities(privileged: bool) -> dict[str, list[str]]:
    """No inheritable/ambient sets: exec'd programs must not keep capabilities
    they were not given by file capabilities."""
    if privileged:
        held = host_capabilities()
        caps = [c for c in ALL_CAPABILITIES if c in held]
    else:
        caps = list(DEFAULT_CAPABILITIES)
    return {"bounding": caps, "effective": list(caps), "permitted": list(caps)}


def _mounts(plan: InfraPlan) -> list[dict[str, Any]]:
    """Parents before children (runc mounts in list order)."""
    cfg = plan.config
    mounts: list[dict[str, Any]] = [
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
        _sys_mount(cfg.host_network),
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        # The pod's shm tmpfs (made by an earlier step so it outlives the infra
        # process and can be shared by the pod's containers), or the host's
        # /dev/shm when the pod shares the host IPC namespace.
        {
            "destination": "/dev/shm",
            "type": "bind",
            "source": plan.shm_path if plan.shm_path is not None else "/dev/shm",
            "options": ["rw", "bind"],
        },
        {"destination": "/etc/hostname", "type": "bind", "source": plan.hostname_file, "options": list(_BIND_RO)},
    ]
    if plan.resolv_conf is not None:
        mounts.append(
            {"destination": "/etc/resolv.conf", "type": "bind", "source": plan.resolv_conf, "options": list(_BIND_RO)}
        )
    return mounts


def _sys_mount(host_network: bool) -> dict[str, Any]:
    """A fresh sysfs shows the network devices of the mounting process's netns
    and the kernel refuses it without a netns of one's own (as CRI-O does,
    host-network pods get the host's /sys bound read-only instead)."""
    if host_network:
        return {
            "destination": "/sys",
            "type": "bind",
            "source": "/sys",
            "options": ["nosuid", "noexec", "nodev", "ro", "rbind"],
        }
    return {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}


def _namespaces(plan: InfraPlan) -> list[dict[str, str]]:
    """No user namespace (pods run with host ids) and no cgroup namespace
    (runc 1.1 on cgroup v1 shows the container's cgroups through its cgroup
    mount without one)."""
    cfg = plan.config
    namespaces: list[dict[str, str]] = []
    if not cfg.host_pid:
        namespaces.append({"type": "pid"})
    if not cfg.host_network:
        assert plan.netns_path is not None  # checked by build_infra_spec
        namespaces.append({"type": "network", "path": plan.netns_path})
    if not cfg.host_ipc:
        namespaces.append({"type": "ipc"})
    if not cfg.host_network:
        namespaces.append({"type": "uts"})
    namespaces.append({"type": "mount"})
    return namespaces


def _resources(plan: InfraPlan) -> dict[str, Any]:
    """The infra process needs no device nodes beyond runc's defaults
    (null, zero, full, tty, random, urandom, which runc always allows)."""
    return {
        "devices": [{"allow": plan.config.privileged, "access": "rwm"}],
        "cpu": {"shares": plan.cpu_shares},
    }


def _linux(plan: InfraPlan) -> dict[str, Any]:
    privileged = plan.config.privileged
    linux: dict[str, Any] = {
        "namespaces": _namespaces(plan),
        "cgroupsPath": plan.cgroups_path,
        "resources": _resources(plan),
    }
    if plan.sysctls:
        linux["sysctl"] = dict(plan.sysctls)
    # A privileged pod is unconfined whatever profile the plan carries.
    if plan.seccomp is not None and not privileged:
        linux["seccomp"] = plan.seccomp
    if not privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
    return linux

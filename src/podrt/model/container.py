"""podrt's own container types. cri/container_convert.py converts CRI
messages to and from these; managers and steps never see protobuf classes."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs

from podrt.model.sandbox import NsMode, UserNamespace
from podrt.security.seccomp import ProfileType
from podrt.security.selinux import SelinuxOptions

MAX_ID = 2**31 - 1  # runc (and Kubernetes' validation) take uids and gids up to 2^31-1
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() takes "²", which int() refuses


def numeric_id(text: str) -> int | None:
    """A uid or gid written as a number (an image's User, a passwd row), or None."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


class Propagation(str, enum.Enum):
    PRIVATE = "private"
    HOST_TO_CONTAINER = "rslave"
    BIDIRECTIONAL = "rshared"


class GroupsPolicy(str, enum.Enum):
    """CRI's SupplementalGroupsPolicy."""

    MERGE = "merge"  # the request's groups plus the user's in the image's /etc/group
    STRICT = "strict"  # the request's groups only


@attrs.frozen
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False
    propagation: Propagation = Propagation.PRIVATE
    selinux_relabel: bool = False  # accepted; nothing to do where SELinux is off
    image: str = ""  # an image volume: this image's content, not host_path
    image_sub_path: str = ""  # of the image, relative
    recursive_read_only: bool = False  # submounts read-only too (`rro`): needs readonly and PRIVATE


@attrs.frozen
class Device:
    """A host device node (or a directory of them) to create in the container."""

    container_path: str
    host_path: str
    permissions: str = "rwm"  # the cgroup access: some of r, w, m


@attrs.frozen
class HugepageLimit:
    page_size: str  # the kubelet's form: "2MB", "1GB", "64KB"
    limit: int  # bytes


@attrs.frozen
class Resources:
    cpu_shares: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    memory_limit: int = 0  # bytes; 0 = none
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    memory_swap_limit: int = 0  # memory + swap, bytes; 0 = as memory_limit (no swap), -1 = unlimited
    oom_score_adj: int = 0  # a process setting (not for `runc update`), kept here as CRI has it
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    unified: Mapping[str, str] = attrs.field(factory=dict)  # cgroup v2 files, e.g. {"memory.high": "..."}


@attrs.frozen
class ContainerUser:
    """The ids the container's process runs with, as resolved at creation (ContainerStatus.user)."""

    uid: int
    gid: int
    supplemental_groups: tuple[int, ...] = ()


def spec_user(spec: Mapping[str, Any]) -> ContainerUser:
    """The ids a built OCI spec runs its process with (ContainerStatus.user)."""
    user = spec["process"]["user"]
    return ContainerUser(user["uid"], user["gid"], tuple(user.get("additionalGids", ())))


@attrs.frozen
class ContainerConfig:
    """Everything CreateContainer asks for, validated by container.validate."""

    name: str
    attempt: int = 0
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    # fully qualified CDI devices: config.CDI_devices, then the cdi.k8s.io/ annotations' (oci/cdi)
    cdi_devices: tuple[str, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    log_path: str = ""  # relative to the pod's log directory
    privileged: bool = False
    readonly_rootfs: bool = False
    no_new_privs: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_username: str = ""
    supplemental_groups: tuple[int, ...] = ()
    groups_policy: GroupsPolicy = GroupsPolicy.MERGE
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    seccomp: ProfileType = ProfileType.UNCONFINED
    seccomp_localhost_ref: str = ""
    selinux: SelinuxOptions | None = None
    apparmor: ProfileType = ProfileType.RUNTIME_DEFAULT  # only LOCALHOST names a profile (podrt/apparmor.py)
    apparmor_localhost_ref: str = ""  # the profile's name
    masked_paths: tuple[str, ...] = ()  # () = the defaults (oci.spec.MASKED_PATHS)
    readonly_paths: tuple[str, ...] = ()  # () = the defaults (oci.spec.READONLY_PATHS)
    resources: Resources = Resources()
    # its own PID namespace (CONTAINER), the pod's (POD), the host's (NODE) or
    # that of another container of the pod (TARGET, pid_target_id)
    pid_mode: NsMode = NsMode.CONTAINER
    pid_target_id: str = ""
    userns: UserNamespace | None = None  # namespace_options.userns_options as sent: the pod's, or None
    # the process's stdio as conmon holds it: a pipe kept for attach (stdin),
    # closed after the first attach ends (stdin_once), or a pty (tty)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    # StopContainer's signal as the request names it ("SIGUSR1", "SIGRTMIN+3"; oci/signals.py);
    # "": the image's StopSignal, else SIGTERM (the one in effect is ContainerState.stop_signal)
    stop_signal: str = ""


class ContainerStatus(str, enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"

"""podrt's own container types. cri/container_convert.py converts CRI
messages to and from these; managers and steps never see protobuf classes."""

from __future__ import annotations

import enum
from typing import Mapping

import attrs

from podrt.oci.seccomp import ProfileType
from podrt.sandbox.model import NsMode
from podrt.selinux import SelinuxOptions


class Propagation(str, enum.Enum):
    PRIVATE = "private"
    HOST_TO_CONTAINER = "rslave"
    BIDIRECTIONAL = "rshared"


@attrs.frozen
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False
    propagation: Propagation = Propagation.PRIVATE


@attrs.frozen
class Resources:
    cpu_shares: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    memory_limit: int = 0  # bytes; 0 = none
    cpuset_cpus: str = ""
    cpuset_mems: str = ""


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
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    seccomp: ProfileType = ProfileType.UNCONFINED
    seccomp_localhost_ref: str = ""
    selinux: SelinuxOptions | None = None
    resources: Resources = Resources()
    pid_mode: NsMode = NsMode.CONTAINER  # its own PID namespace, or the pod's (POD)
    stdin: bool = False
    tty: bool = False


class ContainerStatus(str, enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"

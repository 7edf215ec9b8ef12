"""podrt's own pod sandbox types. cri/ converts CRI messages to and from these;
managers and steps never see generated protobuf classes."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from podrt.security.seccomp import ProfileType  # noqa: F401  the pod's seccomp field is of the OCI-level kind
from podrt.security.selinux import SelinuxOptions  # noqa: F401  likewise its SELinux options


class NsMode(str, enum.Enum):
    """Namespace sharing, as CRI's NamespaceMode."""

    POD = "pod"
    CONTAINER = "container"
    NODE = "node"
    TARGET = "target"


@attrs.frozen
class PortMapping:
    protocol: str  # "tcp" | "udp" | "sctp"
    container_port: int
    host_port: int
    host_ip: str = ""


@attrs.frozen
class DnsConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@attrs.frozen
class NamespaceOptions:
    network: NsMode = NsMode.POD
    pid: NsMode = NsMode.POD
    ipc: NsMode = NsMode.POD


@attrs.frozen
class IdMapping:
    """One range of a user namespace's uid_map or gid_map (CRI's IDMapping)."""

    container_id: int
    host_id: int
    length: int

    def line(self) -> str:
        """As /proc/<pid>/uid_map takes it."""
        return f"{self.container_id} {self.host_id} {self.length}\n"


@attrs.frozen
class UserNamespace:
    """CRI's UserNamespace: NODE, the host's user namespace (no mappings); POD, one
    of the pod's own with these mappings (validated: one range each, container ID 0)."""

    mode: NsMode = NsMode.NODE
    uids: tuple[IdMapping, ...] = ()
    gids: tuple[IdMapping, ...] = ()

    @property
    def root(self) -> tuple[int, int]:
        """The host uid and gid of the pod's root (container ID 0)."""
        return self.uids[0].host_id, self.gids[0].host_id


@attrs.frozen
class SeccompProfile:
    type: ProfileType = ProfileType.UNCONFINED  # CRI's default when the kubelet sends nothing
    localhost_ref: str = ""


@attrs.frozen
class SandboxConfig:
    """Everything RunPodSandbox asks for, validated by sandbox.validate."""

    name: str
    uid: str
    namespace: str
    attempt: int = 0
    hostname: str = ""
    log_directory: str = ""
    dns: DnsConfig | None = None
    port_mappings: tuple[PortMapping, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    cgroup_parent: str = ""
    sysctls: Mapping[str, str] = attrs.field(factory=dict)
    namespaces: NamespaceOptions = NamespaceOptions()
    privileged: bool = False
    seccomp: SeccompProfile = SeccompProfile()
    selinux: SelinuxOptions | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    runtime_handler: str = ""
    userns: UserNamespace = UserNamespace()  # namespace_options.userns_options

    @property
    def own_userns(self) -> bool:
        """Whether the pod runs in a user namespace of its own (mode POD)."""
        return self.userns.mode == NsMode.POD

    @property
    def host_network(self) -> bool:
        return self.namespaces.network == NsMode.NODE

    @property
    def host_ipc(self) -> bool:
        return self.namespaces.ipc == NsMode.NODE

    @property
    def host_pid(self) -> bool:
        return self.namespaces.pid == NsMode.NODE

    def needs_infra(self, drop_infra: bool) -> bool:
        """Whether the pod gets an infra process: as CRI-O, only as the init of a
        PID namespace its containers share, unless infras are kept for all
        (podrt.runtime.drop_infra_ctr false)."""
        return not drop_infra or self.namespaces.pid == NsMode.POD


@attrs.frozen
class InfraPlan:
    """What the OCI spec of a sandbox's infra container is built from: the
    request plus every path and value the earlier steps decided."""

    sandbox_id: str
    config: SandboxConfig
    rootfs: str  # absolute path of the (read-only) infra rootfs
    process_args: tuple[str, ...]  # e.g. ("/catatonit", "-P")
    hostname: str  # "" for host network (no UTS namespace)
    hostname_file: str  # bind-mounted read-only at /etc/hostname
    resolv_conf: str | None  # bind-mounted read-only at /etc/resolv.conf, None = none
    shm_path: str | None  # tmpfs to bind at /dev/shm; None with host IPC (host /dev/shm)
    netns_path: str | None  # None with host network
    cgroups_path: str  # runc cgroupsPath ("/parent/podrt-<id>" or "slice:podrt:<id>")
    oom_score_adj: int | None  # None: leave as inherited (clamped hosts)
    cpu_shares: int
    sysctls: Mapping[str, str]  # validated; applied through linux.sysctl
    seccomp: dict | None  # the OCI linux.seccomp object, None for none
    annotations: Mapping[str, str]  # OCI annotations (CRI metadata as podrt keys)
    selinux_label: str = ""  # process label; "" when SELinux is off
    userns_path: str | None = None  # the pod's own user namespace, pinned; None: the node's
    ipc_path: str | None = None  # where podrt pins its IPC and UTS namespaces (a pod without an infra process)
    uts_path: str | None = None

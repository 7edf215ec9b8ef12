"""What RunPodSandbox's steps share: daemon-level dependencies and the pod being built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs

from podrt.config import Config
from podrt.host.idmap import IdmapSupport
from podrt.images.pause import PauseImage
from podrt.model.sandbox import SandboxConfig
from podrt.network.cni import CniInvoker
from podrt.network.cniconf import CniLookup, CniNetwork
from podrt.oci.runtime import OciRuntime
from podrt.rollback import StepRecord
from podrt.state.idindex import IdIndex
from podrt.state.names import NameRegistry
from podrt.steps.context import DaemonPaths, LayerIdmap, RootfsSource

IP_ANNOTATION = "io.podrt.ip"  # the infra spec's: the pod's IPs, set by SaveState once CNI has answered


@attrs.define
class SandboxDeps(DaemonPaths):
    """Daemon-level services; steps are built with these, so undo works after a restart."""

    config: Config
    names: NameRegistry
    ids: IdIndex
    cni: CniInvoker
    find_network: Callable[[], CniLookup]
    runtimes: dict[str, OciRuntime]
    pause_image: Callable[[], Awaitable[PauseImage]]  # resolved (pulled if need be) per creation
    oom_score_adj: int  # the configured value, clamped where the host cannot lower it
    # the infra's OCI spec from the pod and what earlier steps decided (sandbox.infra_spec.infra_spec):
    # the pod's rules (sysctls, seccomp, annotations) are the manager's, handed down to the InfraSpec step
    build_spec: Callable[[SandboxContext, SandboxDeps], dict[str, Any]]
    idmap: IdmapSupport  # whether pods may have user namespaces here (tried once)

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / sandbox_id

    def run_dir(self, sandbox_id: str) -> Path:
        return self.runroot / "sandboxes" / sandbox_id

    def ns_pin_dir(self, kind: str) -> Path:
        """Where pods' IPC or UTS namespaces ("ipc", "uts") are pinned (PodNamespaces)."""
        return self.runroot / f"{kind}ns"

    def ns_pin(self, kind: str, sandbox_id: str) -> Path:
        return self.ns_pin_dir(kind) / sandbox_id

    def own_log_dir(self, sandbox_id: str) -> Path:
        """podrt's log dir for a pod whose request names none (crictl's); the kubelet always names one."""
        return Path(self.config.log_dir) / sandbox_id


@attrs.define
class SandboxContext:
    """The pod under construction; each step reads what earlier ones decided."""

    id: str
    config: SandboxConfig
    runtime_handler: str
    created_at: int  # ns since the epoch
    pod_name: str
    infra_name: str
    log_directory: str = ""
    pause: PauseImage | None = None  # resolved before the transaction
    rootfs: str = ""  # the infra's root (Rootfs step)
    hostname: str = ""
    shm_path: str | None = None
    resolv_conf: str | None = None
    hostname_file: str = ""
    cgroup_parent: str = ""
    cgroups_path: str = ""
    conmon_cgroup: str = ""
    conmon_cgroup_procs: list[str] = attrs.field(factory=list)
    netns_path: str | None = None
    userns_path: str | None = None  # the pod's own user namespace, pinned (PodUserns)
    ipc_path: str | None = None  # its IPC and UTS namespaces, pinned (PodNamespaces; None: the infra's or the host's)
    uts_path: str | None = None
    sysctls: dict[str, str] = attrs.field(factory=dict)  # the pod's, validated, with the configured defaults
    network: CniNetwork | None = None  # looked up once, before the transaction
    spec_files: list[str] = attrs.field(factory=list)
    ips: list[str] = attrs.field(factory=list)
    spec: dict[str, Any] = attrs.field(factory=dict)
    infra_pid: int = 0
    conmon_pid: int = 0
    completed: list[StepRecord] = attrs.field(factory=list)  # the transaction's live records
    state: Any = None  # the SandboxState the last step saved

    @property
    def reserved_names(self) -> list[str]:
        return [self.pod_name, self.infra_name]

    def rootfs_source(self, deps: SandboxDeps) -> RootfsSource:
        """The pause image: its builtin layer as it is, or an overlay per pod."""
        assert self.pause is not None, "resolved before the transaction"
        ids = LayerIdmap(self.userns_path, deps.idmap_dir(self.id) / "rootfs", self.config.userns.root) if self.userns_path else None
        return RootfsSource(self.pause.image_id, self.pause.reference, self.pause.rootfs, self.pause.lowers,
                            deps.sandbox_dir(self.id) / "rootfs", ids)

    @property
    def infra_log_path(self) -> str:
        return str(Path(self.log_directory) / f"{self.id}.log")

"""What podrt keeps of each pod and container: frozen records, so a read can
never change one; a change is a new record, swapped in by `StateStore.update`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from podrt.model.container import ContainerConfig, ContainerUser, Resources
from podrt.model.sandbox import SandboxConfig
from podrt.rollback import StepRecord


@attrs.frozen
class PlanStep:
    """One committed step of a creation: what its undo needs. A pod's or
    container's steps, in order, are its teardown plan."""

    kind: str  # the step registry's key: which undo runs
    name: str  # unique within the transaction (a shared phase is renamed per user)
    data: dict[str, Any]

    @classmethod
    def of(cls, record: StepRecord) -> PlanStep:
        return cls(kind=record.kind, name=record.name, data=record.data)

    def undo_record(self) -> StepRecord:
        """As rollback.teardown takes it."""
        return StepRecord(self.name, self.kind, self.data)


def plan_of(completed: Iterable[StepRecord]) -> tuple[PlanStep, ...]:
    """A committed transaction's records as a teardown plan."""
    return tuple(PlanStep.of(r) for r in completed)


@attrs.frozen
class SandboxState:
    """A created sandbox: what ListPodSandbox/PodSandboxStatus show and stop/remove use."""

    id: str
    config: SandboxConfig
    runtime_handler: str
    created_at: int
    pod_name: str
    infra_name: str
    log_directory: str
    hostname: str
    shm_path: str | None
    resolv_conf: str | None
    hostname_file: str
    cgroup_parent: str
    cgroups_path: str
    conmon_cgroup: str
    netns_path: str | None
    ips: list[str]
    infra_pid: int
    conmon_pid: int
    steps: tuple[PlanStep, ...]
    stopped: bool = False
    unclaimed: bool = False  # made for a client that left; removed unless a retry claims it
    userns_path: str | None = None  # its own user namespace, pinned (None: the node's)
    # its IPC and UTS namespaces where podrt pinned them (a pod without an infra process);
    # None: its infra's (/proc/<infra_pid>/ns/...), or the host's
    ipc_path: str | None = None
    uts_path: str | None = None
    # UpdatePodSandboxResources' last request (None: none came): the pod's limits are their sum
    overhead: Resources | None = None
    resources: Resources | None = None


# A field with this metadata is known only while the daemon runs: never written.
IN_MEMORY = {"persisted": False}


@attrs.frozen
class ContainerState:
    """A created container: the request, what creation decided, its teardown
    plan, and what happened since (start, exit)."""

    id: str
    sandbox_id: str
    name: str  # the reserved k8s_... name
    config: ContainerConfig
    image_id: str
    image_ref: str  # the image as the request named it
    runtime_handler: str
    log_path: str  # absolute
    stop_signal: str
    created_at: int  # ns since the epoch
    steps: tuple[PlanStep, ...]
    cgroups_path: str = ""  # runc's cgroupsPath, where an OOM kill is counted
    pid: int = 0
    conmon_pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    user: ContainerUser | None = None  # the ids its process runs with
    saved_exit: bool = attrs.field(default=False, metadata=IN_MEMORY)  # the exit is in the file and was announced
    lost: bool = attrs.field(default=False, metadata=IN_MEMORY)  # its conmon is gone while it runs: exit and logs unknowable

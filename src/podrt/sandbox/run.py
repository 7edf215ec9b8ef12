"""RunPodSandbox: a transaction of steps in a task the daemon owns; the RPC
only waits on it. If the client gives up (deadline, reset), the creation
still finishes and the pod is kept for the kubelet's retry with the same name
(claims.py). A retry while it runs waits on the same creation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import attrs

from podrt.aio.tasks import TaskOwner
from podrt.errors import SHUTTING_DOWN, DeadlineExceeded, FailedPrecondition, Unavailable
from podrt.model.sandbox import SandboxConfig
from podrt.oci import features
from podrt.rollback import FaultPlan, Transaction, TxObserver
from podrt.sandbox import naming
from podrt.sandbox.claims import Claims
from podrt.sandbox.status import SandboxStatuses
from podrt.sandbox.validate import check_request, pod_sysctls
from podrt.state.journal import Journal
from podrt.state.records import SandboxState
from podrt.state.registry import Registry
from podrt.steps.base import DepsStep
from podrt.steps.names import IndexId, ReserveNames
from podrt.steps.rootfs import Rootfs
from podrt.steps.sandbox.cgroups import CgroupParent
from podrt.steps.sandbox.cni import CniAdd
from podrt.steps.sandbox.context import SandboxContext, SandboxDeps
from podrt.steps.sandbox.files import HostFiles
from podrt.steps.sandbox.netns import NetNamespace
from podrt.steps.sandbox.podns import PodNamespaces, pinned_kinds
from podrt.steps.sandbox.runtime import InfraStart
from podrt.steps.sandbox.shm import ShmMount
from podrt.steps.sandbox.spec import InfraSpec
from podrt.steps.sandbox.state import SaveState
from podrt.steps.sandbox.storage import Storage
from podrt.steps.sandbox.userns import PodUserns

log = logging.getLogger(__name__)

# In order; an inner tuple is a phase whose steps need nothing from each
# other: they run side by side after one journal write for all (a write is
# ~2 ms of fsyncs). CNI ADD (~30 ms, the longest pole) needs only the netns,
# so the netns is made in the first such phase and the spec, the pinned IPC
# and UTS namespaces or the infra start run beside the ADD, like CRI-O's
# network setup beside the infra. The infra runs the spec: with an infra,
# the spec is a phase of its own before them (SPEC_FIRST).
STEP_ORDER: tuple[type[DepsStep] | tuple[type[DepsStep], ...], ...] = (
    ReserveNames, IndexId, Storage, PodUserns, (Rootfs, ShmMount, HostFiles, CgroupParent, NetNamespace),
    (InfraSpec, CniAdd, InfraStart, PodNamespaces), SaveState,
)
SPEC_FIRST = {InfraStart: InfraSpec}  # a step -> the one of its phase it needs done first


def userns_refusal(problem: str, root: str) -> str:
    """FailedPrecondition's message for a pod with a user namespace where ID-mapped mounts fail."""
    return (f"pods with a user namespace (userns_options mode POD) need ID-mapped mounts, which fail on this host: "
            f"{problem}. They need Linux >= 5.19 and podrt's root ({root}) on a filesystem that takes them "
            "(ext4, xfs, btrfs; tmpfs from Linux 6.3); podrt.runtime.userns_without_idmap is \"refuse\"")


def _group(entry: type[DepsStep] | tuple[type[DepsStep], ...]) -> tuple[type[DepsStep], ...]:
    return entry if isinstance(entry, tuple) else (entry,)


STEP_CLASSES: tuple[type[DepsStep], ...] = tuple(cls for entry in STEP_ORDER for cls in _group(entry))


@attrs.define
class Creation:
    """One in-flight RunPodSandbox, shared by the request and its retries."""

    task: asyncio.Task[str]
    delivered: bool = False
    waiters: int = 0
    kept_for_retry: bool = False


class SandboxRunner:
    def __init__(self, deps: SandboxDeps, table: Registry[SandboxState], statuses: SandboxStatuses, claims: Claims, *,
                 remove: Callable[[str], Awaitable[None]], journal: Journal, faults: FaultPlan | None,
                 observer: TxObserver | None, tasks: TaskOwner) -> None:
        self.deps, self._table, self._statuses, self._claims, self._remove = deps, table, statuses, claims, remove
        self._journal, self._faults, self._observer, self._tasks = journal, faults, observer, tasks
        self._creating: dict[str, Creation] = {}  # pod name -> its creation in flight

    async def run(self, cfg: SandboxConfig) -> str:
        check_request(cfg, self.deps.config)
        if cfg.own_userns and (problem := await self._userns_problem(cfg)) is not None:
            raise FailedPrecondition(problem)
        name = naming.pod_name(cfg)
        creation = self._creating.get(name)
        if creation is None:  # from here to the registration below: no await
            owner = self.deps.names.owner(name)
            known = owner if owner is not None and owner in self._table else None
            if known is not None and known not in self._claims.expiring and self._statuses.view(known).ready:
                self._claims.claim(known)
                return known  # the kubelet's retry of a request that already succeeded
            task = self._tasks.spawn(self._create(cfg, name, stale=known), name=f"RunPodSandbox {name}")
            creation = self._creating[name] = Creation(task)
            task.add_done_callback(lambda _t: self._created(name))
        return await self._wait(creation)

    async def _userns_problem(self, cfg: SandboxConfig) -> str | None:
        """Why the pod's handler or this host cannot give it a user namespace of its own; None: they can."""
        handler = cfg.runtime_handler or self.deps.config.runtime.default_runtime
        runtime = self.deps.config.runtime_handler(handler).runtime_path  # a known one: check_request
        if not (await asyncio.to_thread(features.detect, runtime)).userns:
            return (f"runtime handler {handler!r} ({runtime}) cannot run pods in a user namespace: "
                    "`features` lists no user namespace (it has no features document, or lacks them)")
        problem = await self.deps.idmap.problem()
        return None if problem is None else userns_refusal(problem, self.deps.config.root)

    async def _wait(self, creation: Creation) -> str:
        creation.waiters += 1
        try:
            timeout = self.deps.config.runtime.create_wait_timeout
            done, _ = await asyncio.wait({creation.task}, timeout=timeout)
            if not done:
                raise DeadlineExceeded(f"pod sandbox creation still running after {timeout:.0f}s; retry later")
            if creation.task.cancelled():  # cut at shutdown, and rolled back
                raise Unavailable(f"pod sandbox creation was cut and rolled back: {SHUTTING_DOWN}")
            sandbox_id = creation.task.result()
            creation.delivered = True
            return sandbox_id
        finally:
            creation.waiters -= 1
            self._keep_if_unclaimed(creation)

    def _created(self, name: str) -> None:
        self._keep_if_unclaimed(self._creating.pop(name))

    def _keep_if_unclaimed(self, creation: Creation) -> None:
        """A pod made for callers that all went away is kept a while for their retry."""
        task = creation.task
        if not task.done() or task.cancelled() or task.exception() is not None:
            return
        if creation.delivered or creation.waiters or creation.kept_for_retry:
            return
        creation.kept_for_retry = True
        sandbox_id = task.result()
        self._claims.mark_unclaimed(sandbox_id, True)
        log.info("sandbox %s created for a client that left; kept %.0fs for a retry",
                 sandbox_id, self.deps.config.runtime.sandbox_claim_timeout)
        self._claims.arm(sandbox_id)

    def _steps(self, cfg: SandboxConfig) -> list[DepsStep | list[DepsStep]]:
        skip: set[type[DepsStep]] = set()
        if cfg.host_ipc:
            skip.add(ShmMount)
        if not cfg.own_userns:
            skip.add(PodUserns)
        if cfg.host_network:
            skip |= {NetNamespace, CniAdd}
        if cfg.needs_infra(self.deps.config.runtime.drop_infra_ctr):
            skip.add(PodNamespaces)
        else:
            skip.add(InfraStart)
            if not pinned_kinds(cfg):  # host IPC and network: nothing of its own to pin
                skip.add(PodNamespaces)
        plan: list[DepsStep | list[DepsStep]] = []
        for entry in STEP_ORDER:
            classes = [cls for cls in _group(entry) if cls not in skip]
            first = [SPEC_FIRST[cls] for cls in classes if cls in SPEC_FIRST and SPEC_FIRST[cls] in classes]
            for phase in (first, [cls for cls in classes if cls not in first]):
                group: list[DepsStep] = [cls(self.deps) for cls in phase]
                if group:
                    plan.append(group if len(group) > 1 else group[0])
        return plan

    async def _create(self, cfg: SandboxConfig, name: str, stale: str | None) -> str:
        network = None
        if not cfg.host_network:  # in the owned task: a client leaving meanwhile does not cut it
            lookup = await asyncio.to_thread(self.deps.find_network)  # lists and reads the CNI config dir
            if lookup.network is None:
                raise FailedPrecondition(f"network plugin not ready: {lookup.message}")
            network = lookup.network
        if stale is not None:  # a dead pod holds the name (CRI-O: stop and remove it, then go on)
            log.info("removing sandbox %s (not ready) to reuse its name %s", stale, name)
            await self._remove(stale)
        pause = await self.deps.pause_image()
        sandbox_id = naming.new_id()
        ctx = SandboxContext(
            id=sandbox_id,
            config=cfg,
            runtime_handler=cfg.runtime_handler or self.deps.config.runtime.default_runtime,
            created_at=time.time_ns(),
            pod_name=name,
            infra_name=naming.infra_name(cfg),
            log_directory=cfg.log_directory or str(self.deps.own_log_dir(sandbox_id)),
            network=network,
            pause=pause,
            sysctls=pod_sysctls(cfg, self.deps.config),
        )
        tx = Transaction("RunPodSandbox", self._steps(cfg), tx_id=sandbox_id, journal=self._journal,
                         faults=self._faults, observer=self._observer, log=log)
        ctx.completed = tx.completed
        await tx.run(ctx)
        assert ctx.state is not None  # the last step saved it
        self._table.add(sandbox_id, ctx.state)
        self._statuses.set_alive(sandbox_id, True)
        return sandbox_id

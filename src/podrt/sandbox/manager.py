"""Pod sandboxes: create (a transaction of steps), stop, remove, look up, restore.

RunPodSandbox runs in a task the daemon owns; the RPC only waits on it. If the
client gives up (deadline, reset), the creation still finishes and the pod is
kept for the kubelet's retry with the same name; unclaimed, it is removed after
`sandbox_claim_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import attrs

from podrt.aio import finish_in_thread
from podrt.aio.tasks import TaskOwner
from podrt.errors import SHUTTING_DOWN, DeadlineExceeded, FailedPrecondition, NotFound, Unavailable
from podrt.model.sandbox import SandboxConfig
from podrt.network import links
from podrt.network.cniconf import CniNetwork
from podrt.rollback import FaultPlan, Journal, StepRegistry, Transaction, TxObserver, teardown
from podrt.sandbox import naming
from podrt.sandbox.orphans import release_orphans
from podrt.sandbox.store import SandboxState, load_all
from podrt.sandbox.validate import check_request
from podrt.steps.base import SandboxStep
from podrt.steps.names import IndexId, ReserveNames
from podrt.steps.rootfs import Rootfs
from podrt.steps.sandbox.cgroups import CgroupParent
from podrt.steps.sandbox.cni import CniAdd
from podrt.steps.sandbox.context import SandboxContext, SandboxDeps
from podrt.steps.sandbox.files import HostFiles
from podrt.steps.sandbox.netns import NetNamespace
from podrt.steps.sandbox.runtime import InfraStart
from podrt.steps.sandbox.shm import ShmMount
from podrt.steps.sandbox.spec import InfraSpec
from podrt.steps.sandbox.state import SaveState
from podrt.steps.sandbox.storage import Storage

log = logging.getLogger(__name__)

# In order; CNI ADD and the infra start need only the netns and the spec, so they
# run side by side (each ~20-40 ms), like CRI-O's network setup beside the infra.
STEP_ORDER: tuple[type[SandboxStep] | tuple[type[SandboxStep], ...], ...] = (
    ReserveNames, IndexId, Storage, Rootfs, ShmMount, HostFiles, CgroupParent, NetNamespace, InfraSpec, (CniAdd, InfraStart), SaveState,
)


def _group(entry: type[SandboxStep] | tuple[type[SandboxStep], ...]) -> tuple[type[SandboxStep], ...]:
    return entry if isinstance(entry, tuple) else (entry,)


STEP_CLASSES: tuple[type[SandboxStep], ...] = tuple(cls for entry in STEP_ORDER for cls in _group(entry))
_STOP_PHASE = {cls.kind: cls.stop_phase for cls in STEP_CLASSES}


async def _nothing(_sandbox_id: str) -> None:
    return None


# Undone last by RemovePodSandbox, and only once all else is gone: while they
# stand, a failed removal can be retried by ID and the name stays taken.
RELEASED_LAST = frozenset({Storage.kind, IndexId.kind, ReserveNames.kind})


@attrs.define
class Creation:
    """One in-flight RunPodSandbox, shared by the request and its retries."""

    task: asyncio.Task[str]
    delivered: bool = False
    waiters: int = 0
    kept_for_retry: bool = False


@attrs.frozen
class SandboxView:
    state: SandboxState
    ready: bool


class SandboxManager:
    def __init__(self, deps: SandboxDeps, *, registry: StepRegistry, journal: Journal, faults: FaultPlan | None,
                 observer: TxObserver | None, tasks: TaskOwner) -> None:
        self.deps = deps
        self._registry = registry
        self._journal, self._faults, self._observer, self._tasks = journal, faults, observer, tasks
        self._sandboxes: dict[str, SandboxState] = {}
        self._alive: dict[str, bool] = {}
        self._creating: dict[str, Creation] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._claim_timers: dict[str, asyncio.TimerHandle] = {}
        self._expiring: set[str] = set()
        self._closed = False
        # the pod's containers stop before it, and go before it (set by the daemon)
        self.stop_containers: Callable[[str], Awaitable[None]] = _nothing
        self.remove_containers: Callable[[str], Awaitable[None]] = _nothing
        for cls in STEP_CLASSES:  # the undos a crash replay or a teardown may need
            registry.register(cls.kind, lambda cls=cls: cls(self.deps))

    # ---- create -------------------------------------------------------------

    async def run(self, cfg: SandboxConfig) -> str:
        check_request(cfg, self.deps.config)
        network = None
        if not cfg.host_network:
            lookup = self.deps.find_network()
            if lookup.network is None:
                raise FailedPrecondition(f"network plugin not ready: {lookup.message}")
            network = lookup.network
        name = naming.pod_name(cfg)
        creation = self._creating.get(name)
        if creation is None:  # from here to the registration below: no await
            owner = self.deps.names.owner(name)
            known = owner is not None and owner in self._sandboxes
            if known and owner not in self._expiring and self.view(owner).ready:
                self._claim(owner)
                return owner  # the kubelet's retry of a request that already succeeded
            task = self._tasks.spawn(self._create(cfg, name, network, stale=owner if known else None),
                                     name=f"RunPodSandbox {name}")
            creation = self._creating[name] = Creation(task)
            task.add_done_callback(lambda _t, name=name: self._created(name))
        return await self._wait(creation)

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
        self._mark_unclaimed(sandbox_id, True)
        log.info("sandbox %s created for a client that left; kept %.0fs for a retry",
                 sandbox_id, self.deps.config.runtime.sandbox_claim_timeout)
        self._arm_claim_timer(sandbox_id)

    def _mark_unclaimed(self, sandbox_id: str, unclaimed: bool) -> None:
        """Persisted, so a restart re-arms the claim timer. Written inline (a few
        ms, only for abandoned creations and their claims): this also runs while
        the daemon shuts down, when no new task may be started to do it."""
        state = self._sandboxes.get(sandbox_id)
        if state is None or state.unclaimed == unclaimed:
            return
        state.unclaimed = unclaimed
        try:
            state.save()
        except OSError as exc:
            log.warning("cannot record the claim state of sandbox %s: %s", sandbox_id, exc)

    def _arm_claim_timer(self, sandbox_id: str) -> None:
        if self._closed:  # shutting down: the flag on disk re-arms it at the next start
            return
        timeout = self.deps.config.runtime.sandbox_claim_timeout
        self._claim_timers[sandbox_id] = asyncio.get_running_loop().call_later(timeout, self._expire, sandbox_id)

    def _disarm(self, sandbox_id: str) -> None:
        timer = self._claim_timers.pop(sandbox_id, None)
        if timer is not None:
            timer.cancel()

    def _claim(self, sandbox_id: str) -> None:
        """A retry took the pod: it is the kubelet's now."""
        self._disarm(sandbox_id)
        self._mark_unclaimed(sandbox_id, False)

    def _expire(self, sandbox_id: str) -> None:
        self._claim_timers.pop(sandbox_id, None)
        log.warning("sandbox %s was never claimed by a retry; removing it", sandbox_id)
        self._expiring.add(sandbox_id)  # from now on a retry gets a new pod
        try:
            self._tasks.spawn(self._remove_expired(sandbox_id), name=f"expire {sandbox_id}")
        except Unavailable:
            self._expiring.discard(sandbox_id)  # shutting down: restored (and judged) at next start

    async def _remove_expired(self, sandbox_id: str) -> None:
        try:
            await self.remove(sandbox_id)
        except Exception:
            log.exception("removing unclaimed sandbox %s failed; the kubelet or a restart will retry", sandbox_id)
        finally:
            self._expiring.discard(sandbox_id)

    def close(self) -> None:
        """At shutdown: unclaimed pods stay marked so; the next start re-arms their timers."""
        self._closed = True
        for timer in self._claim_timers.values():
            timer.cancel()
        self._claim_timers.clear()

    def _steps(self, cfg: SandboxConfig) -> list[SandboxStep | list[SandboxStep]]:
        skip: set[type[SandboxStep]] = set()
        if cfg.host_ipc:
            skip.add(ShmMount)
        if cfg.host_network:
            skip |= {NetNamespace, CniAdd}
        plan: list[SandboxStep | list[SandboxStep]] = []
        for entry in STEP_ORDER:
            group = [cls(self.deps) for cls in _group(entry) if cls not in skip]
            if group:
                plan.append(group if len(group) > 1 else group[0])
        return plan

    async def _create(self, cfg: SandboxConfig, name: str, network: CniNetwork | None, stale: str | None) -> str:
        if stale is not None:  # a dead pod holds the name (CRI-O: stop and remove it, then go on)
            log.info("removing sandbox %s (not ready) to reuse its name %s", stale, name)
            await self.remove(stale)
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
        )
        tx = Transaction("RunPodSandbox", self._steps(cfg), tx_id=sandbox_id, journal=self._journal,
                         faults=self._faults, observer=self._observer, log=log)
        ctx.completed = tx.completed
        await tx.run(ctx)
        assert ctx.state is not None  # the last step saved it
        self._sandboxes[sandbox_id] = ctx.state
        self._alive[sandbox_id] = True
        return sandbox_id

    # ---- look up -------------------------------------------------------------

    def resolve(self, id_prefix: str) -> str:
        return self.deps.ids.get(id_prefix)

    def _exit_file(self, sandbox_id: str) -> Path:
        return self.deps.run_dir(sandbox_id) / "exits" / sandbox_id

    def known(self, sandbox_id: str) -> bool:
        return sandbox_id in self._sandboxes

    def view(self, sandbox_id: str) -> SandboxView:
        state = self._sandboxes.get(sandbox_id)
        if state is None:
            raise NotFound(f"pod sandbox {sandbox_id} not found")
        ready = not state.stopped and self._alive.get(sandbox_id, False) and not self._exit_file(sandbox_id).exists()
        return SandboxView(state, ready)

    def forward_netns(self, id_prefix: str) -> tuple[str, str]:
        """(full ID, netns path) of a ready pod, for PortForward; the path is
        "" for a pod on the host's network, whose localhost is the host's."""
        sandbox_id = self.resolve(id_prefix)
        view = self.view(sandbox_id)
        if not view.ready:
            raise FailedPrecondition(f"pod sandbox {sandbox_id} is not ready: no port forwarding into it")
        return sandbox_id, view.state.netns_path or ""

    def matching_ids(self, prefix: str) -> list[str]:
        return self.deps.ids.matching(prefix)

    async def inspect(self, view: SandboxView) -> dict[str, object]:
        """PodSandboxStatus' verbose info: the OCI spec and runc's view of the infra."""
        spec_path = self.deps.sandbox_dir(view.state.id) / "config.json"
        runtime = self.deps.runtimes.get(view.state.runtime_handler)
        spec = await asyncio.to_thread(spec_path.read_text) if spec_path.exists() else None
        info: dict[str, object] = {
            "runtimeSpec": json.loads(spec) if spec else None,
            "runtimeState": await runtime.state(view.state.id) if runtime else None,
            "pid": view.state.infra_pid,
            "netnsPath": view.state.netns_path,
            "ips": view.state.ips,
        }
        if view.state.netns_path and not view.state.stopped:
            try:
                found = await asyncio.to_thread(links.interfaces, view.state.netns_path)
                info["interfaces"] = [attrs.asdict(i) for i in found]
            except Exception as exc:  # best effort (pyroute2's NetlinkError is no OSError): the status is answered
                info["interfaces"] = {"error": str(exc)}
        return info

    def list(self, match: Callable[[SandboxView], bool] = lambda _v: True, ids: Iterable[str] | None = None) -> list[SandboxView]:
        chosen = self._sandboxes if ids is None else [i for i in ids if i in self._sandboxes]
        views = (self.view(i) for i in chosen)
        return [v for v in views if match(v)]

    def usage_dirs(self) -> list[Path]:
        """The pods' writable layers (overlay uppers), for ImageFsInfo."""
        return [self.deps.sandbox_dir(i) / "rootfs" / "upper" for i in self._sandboxes]

    def image_users(self, image_id: str) -> list[str]:
        """The pods whose infra runs from `image_id` (their Rootfs record names it)."""
        return [f"pod sandbox {state.id} ({state.pod_name})" for state in self._sandboxes.values()
                if any(r[1] == Rootfs.kind and r[2].get("image") == image_id for r in state.records)]

    # ---- stop / remove -------------------------------------------------------------

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def _records(self, state: SandboxState, *, stop_phase: bool) -> list[list[object]]:
        return [r for r in state.records if _STOP_PHASE.get(str(r[1])) == stop_phase]

    async def _teardown(self, sandbox_id: str, records: list[list[object]], what: str) -> None:
        failures = await teardown(records, self._registry, log=log)
        if failures:
            detail = "; ".join(f"{f.step}: {f.error}" for f in failures)
            raise RuntimeError(f"{what} of pod sandbox {sandbox_id} incomplete: {detail}")

    async def stop(self, id_prefix: str) -> None:
        """Idempotent; an unknown ID succeeds (the kubelet relies on it)."""
        try:
            sandbox_id = self.resolve(id_prefix)
        except NotFound:
            return
        await self.stop_containers(sandbox_id)
        async with self._lock(sandbox_id):
            state = self._sandboxes.get(sandbox_id)
            if state is None or state.stopped:
                return
            await self._teardown(sandbox_id, self._records(state, stop_phase=True), "stop")
            state.stopped = True
            self._alive[sandbox_id] = False
            await finish_in_thread(state.save)

    async def remove(self, id_prefix: str) -> None:
        try:
            sandbox_id = self.resolve(id_prefix)
        except NotFound:
            return
        self._disarm(sandbox_id)
        await self.remove_containers(sandbox_id)
        await self.stop(sandbox_id)
        async with self._lock(sandbox_id):
            state = self._sandboxes.get(sandbox_id)
            if state is None:
                return
            records = self._records(state, stop_phase=False)
            await self._teardown(sandbox_id, [r for r in records if r[1] not in RELEASED_LAST], "remove")
            await self._teardown(sandbox_id, [r for r in records if r[1] in RELEASED_LAST], "remove")
            self._sandboxes.pop(sandbox_id, None)
            self._alive.pop(sandbox_id, None)
        self._locks.pop(sandbox_id, None)

    # ---- restart -------------------------------------------------------------

    async def restore(self, containers: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Rebuild names, IDs and sandboxes from disk; check which infras still run.
        `containers`: their IDs, so their runc state is not taken for an orphan's."""
        sandboxes, bad = load_all(self.deps.root / "sandboxes")
        for path, problem in bad:
            log.error("cannot restore sandbox from %s: %s", path, problem)
        for state in sandboxes:
            for name in (state.pod_name, state.infra_name):
                self.deps.names.reserve(name, state.id)
            self.deps.ids.add(state.id)
            self._sandboxes[state.id] = state
            alive = False
            if not state.stopped:
                runtime = self.deps.runtimes.get(state.runtime_handler)
                info = await runtime.state(state.id) if runtime else None
                alive = bool(info) and info.get("status") == "running"
            self._alive[state.id] = alive
            if state.unclaimed:
                self._arm_claim_timer(state.id)
            log.info("restored sandbox %s (%s%s)", state.id, "ready" if alive else "not ready",
                     ", unclaimed" if state.unclaimed else "")
        await release_orphans(self.deps, set(self._sandboxes) | set(containers))

    def __len__(self) -> int:
        return len(self._sandboxes)


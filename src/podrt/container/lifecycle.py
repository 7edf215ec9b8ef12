"""StartContainer, StopContainer, RemoveContainer, UpdateContainerResources,
ReopenContainerLog, and the containers' part of StopPodSandbox and
RemovePodSandbox. Each runs under the container's lock; those that need the
runc container wait for its create, which runs after CreateContainer
answered (runtime_create.py), and a removal cuts it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from podrt.aio.tasks import TaskOwner
from podrt.container.create import ContainerCreator, steps
from podrt.container.events import EventBus, EventType
from podrt.container.exits import ExitWatcher
from podrt.container.removals import Removals
from podrt.container.runtime_create import RuntimeCreates, not_made, start_refusal
from podrt.container.spec import oci_resources
from podrt.container.status import ContainerStatuses, unknown_exit
from podrt.container.validate import check_host_fit
from podrt.errors import FailedPrecondition, Unavailable
from podrt.model.container import ContainerStatus, Resources
from podrt.model.sandbox import NsMode
from podrt.oci import attach, conmon
from podrt.oci.runtime import OciRuntime, RuntimeRefused
from podrt.state.records import ContainerState, PlanStep
from podrt.state.registry import undo_records
from podrt.state.store import StateStore
from podrt.steps.base import runtime_for
from podrt.steps.container.context import ContainerDeps
from podrt.steps.container.create import ContainerCreate, refusal
from podrt.steps.container.storage import ContainerStorage
from podrt.steps.names import IndexId, ReserveNames

log = logging.getLogger(__name__)

# Undone last by a teardown: while they stand, a failed one can be tried again (the dirs hold its removing.json).
RELEASED_LAST = frozenset({ContainerStorage.kind, IndexId.kind, ReserveNames.kind})
# Undone by RemoveContainer before it answers (in memory): the name may be taken again at once, as with containerd.
RELEASED_AT_ONCE = frozenset({IndexId.kind, ReserveNames.kind})
REOPEN_WAIT = 5.0  # for conmon to open the new log file


class ContainerLifecycle:
    def __init__(self, deps: ContainerDeps, table: StateStore[ContainerState], statuses: ContainerStatuses, *,
                 exits: ExitWatcher, creator: ContainerCreator, creates: RuntimeCreates, events: EventBus,
                 forget: Callable[[str], None], tasks: TaskOwner) -> None:
        self.deps, self._table, self._statuses, self._creates = deps, table, statuses, creates
        self._exits, self._creator, self._events = exits, creator, events
        self._forget = forget  # what else keeps a removed container's ID (its CPU rate)
        self._undo_steps = steps(deps)  # teardown with the containers' own services
        self.removals = Removals(table, self.undo_plan, self.teardown_plan, tasks)

    def _runtime(self, state: ContainerState) -> OciRuntime:
        return runtime_for(self.deps.runtimes, state.runtime_handler)

    async def start(self, id_prefix: str) -> None:
        container_id = self._table.resolve(id_prefix)
        async with self._table.lock(container_id):
            await self._creates.settled(container_id)
            state = self._table.get(container_id)
            if (refused := start_refusal(state)) is not None:
                raise refused
            status = self._statuses.status(state)
            if status != ContainerStatus.CREATED:
                raise FailedPrecondition(f"container {container_id} is {status.value}, not created: it cannot be started")
            if not state.pid:  # its create was cut at shutdown
                raise not_made(container_id)
            try:
                await self._runtime(state).start(container_id)
            except RuntimeRefused as exc:
                raise FailedPrecondition(refusal(exc)) from None
            await self._table.update(container_id, lambda s: attrs.evolve(s, started_at=time.time_ns()))
        self._events.publish(container_id, state.sandbox_id, EventType.STARTED)

    async def stop(self, id_prefix: str, timeout: float) -> None:
        """Idempotent; an unknown ID succeeds (the kubelet relies on it)."""
        if (container_id := self._table.known_id(id_prefix)) is None:
            return
        async with self._table.lock(container_id):
            await self._creates.settled(container_id)
            if (state := self._table.find(container_id)) is not None:
                await self._stop(state, timeout)

    async def _stop(self, state: ContainerState, timeout: float) -> None:
        if self._statuses.status(state) != ContainerStatus.EXITED:  # else its init is gone: nothing to signal
            await self._runtime(state).stop(state.id, timeout=timeout, stop_signal=state.stop_signal,
                                            exit_dir=self.deps.exit_dir, pids=(state.pid, state.conmon_pid),
                                            own_pidns=state.config.pid_mode == NsMode.CONTAINER)
        never_started = state.started_at == 0 and state.exit_code is None  # killed where it waited
        if never_started:
            await self._table.update(state.id, lambda s: attrs.evolve(s, started_at=s.created_at), durable=False)
        await self._exits.save(state.id)  # written with the start above
        state = self._table.get(state.id)
        if state.lost:  # killed without its conmon: no exit file comes
            await self._table.update(state.id, unknown_exit)
            self._events.publish(state.id, state.sandbox_id, EventType.STOPPED)
        elif never_started and not state.saved_exit:  # no exit yet: the start above, written alone
            await self._table.update(state.id, lambda s: s)

    async def remove(self, id_prefix: str) -> None:
        """Idempotent; a running container is stopped forcibly first. Answers
        once the container is retired durably and its name and ID are free:
        the rest of its teardown runs after the answer (removals.py)."""
        if (container_id := self._table.known_id(id_prefix)) is None:
            return
        async with self._table.lock(container_id):
            await self._creates.cancel(container_id)
            if (state := self._table.find(container_id)) is None:
                return
            state = attrs.evolve(state, steps=self.teardown_plan(state))  # by its status, while it is known
            await self._table.retire(container_id)
            await undo_records([s for s in state.steps if s.kind in RELEASED_AT_ONCE], self._undo_steps,
                               what=f"removal of container {container_id}", log=log)
            self.removals.begin(state)
        self._table.drop_lock(container_id)
        self._forget(container_id)
        self._statuses.exits.pop(container_id, None)
        self._events.publish(container_id, state.sandbox_id, EventType.DELETED)

    def teardown_plan(self, state: ContainerState) -> tuple[PlanStep, ...]:
        """Removal undoes the creation, but the log file stays: it is the
        kubelet's (`kubectl logs --previous`, its own rotation and removal),
        as CRI-O and containerd leave it. A rolled back creation removes it."""
        said: dict[str, dict[str, object]] = {ContainerStorage.kind: {"log_file": ""}}
        if self._statuses.status(state) == ContainerStatus.EXITED:  # conmon wrote the exit: nothing runs to stop
            said[ContainerCreate.kind] = {"exited": True}
        return tuple(attrs.evolve(s, data={**s.data, **said[s.kind]}) if s.kind in said else s for s in state.steps)

    async def teardown(self, state: ContainerState) -> None:
        """What its creation made, undone (an orphan's at restore, a removal cut by a restart)."""
        await self.undo_plan(attrs.evolve(state, steps=self.teardown_plan(state)))

    async def undo_plan(self, state: ContainerState) -> None:
        """Its plan's undos as they are: a removal's (`teardown_plan`) in the background."""
        await undo_records(state.steps, self._undo_steps, what=f"removal of container {state.id}", log=log,
                           released_last=RELEASED_LAST)

    async def stop_pod(self, sandbox_id: str, timeout: float = 0.0) -> None:
        """StopPodSandbox: its containers stop first, forcibly, as containerd
        does: the kubelet has given each its grace period with StopContainer."""
        await self._creator.close_pod(sandbox_id)
        try:
            for state in [s for s in self._table.values() if s.sandbox_id == sandbox_id]:
                await self.stop(state.id, timeout)
        except BaseException:
            self._creator.reopen_pod(sandbox_id)  # the pod is not stopped: it may get containers again
            raise

    async def remove_pod(self, sandbox_id: str) -> None:
        """RemovePodSandbox: its containers go first, their teardowns finished."""
        await self._creator.close_pod(sandbox_id)
        for state in [s for s in self._table.values() if s.sandbox_id == sandbox_id]:
            await self.remove(state.id)
        await self.removals.settle_pod(sandbox_id)

    async def update_resources(self, id_prefix: str, resources: Resources) -> None:
        """`runc update` of a created or running container; ContainerStatus shows the new values."""
        container_id = self._table.resolve(id_prefix)
        async with self._table.lock(container_id):
            await self._creates.settled(container_id)
            state = self._table.get(container_id)
            status = self._statuses.status(state)
            if status not in (ContainerStatus.CREATED, ContainerStatus.RUNNING):
                raise FailedPrecondition(f"container {container_id} is {status.value}: its resources cannot change")
            check_host_fit("linux", resources)
            try:
                await self._runtime(state).update(
                    container_id, oci_resources(resources), work_dir=self.deps.run_dir(container_id))
            except RuntimeRefused as exc:
                raise FailedPrecondition(f"the OCI runtime refused the new resources: {exc}") from None
            kept = attrs.evolve(resources, oom_score_adj=state.config.resources.oom_score_adj)  # a process setting runc does not update
            await self._table.update(container_id, lambda s: attrs.evolve(s, config=attrs.evolve(s.config, resources=kept)))

    async def reopen_log(self, id_prefix: str) -> None:
        """After the kubelet rotated the log away: conmon opens a new file at
        the log path (message 2 on its ctl fifo in the bundle, as CRI-O sends)."""
        container_id = self._table.resolve(id_prefix)
        state = self._table.get(container_id)
        status = self._statuses.status(state)
        if status != ContainerStatus.RUNNING:  # CRI: no new log file for a container that is not running
            raise FailedPrecondition(f"container {container_id} is {status.value}, not running: its log is not reopened")
        try:
            await asyncio.to_thread(attach.write_ctl, self.deps.run_dir(container_id), attach.CTL_REOPEN_LOG)
        except conmon.ConmonError as exc:
            raise Unavailable(str(exc)) from None
        log_path = Path(state.log_path)
        deadline = time.monotonic() + REOPEN_WAIT
        while not log_path.exists():
            if time.monotonic() > deadline:
                raise Unavailable(f"conmon of container {container_id} did not reopen {log_path}")
            await asyncio.sleep(0.01)

"""StopPodSandbox and RemovePodSandbox: the pod's containers first (the
container manager's, set by the daemon), then its steps' undo: the stop
phases at stop, the rest at removal, the name and ID last of all."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs

from podrt.rollback import StepRegistry
from podrt.sandbox.claims import Claims
from podrt.sandbox.run import STEP_CLASSES
from podrt.sandbox.status import SandboxStatuses
from podrt.state.records import PlanStep, SandboxState
from podrt.state.registry import undo_records
from podrt.state.store import StateStore
from podrt.steps.names import IndexId, ReserveNames
from podrt.steps.sandbox.netns import NetNamespace
from podrt.steps.sandbox.storage import Storage
from podrt.steps.sandbox.userns import PodUserns

log = logging.getLogger(__name__)

_STOP_PHASE = {cls.kind: cls.stop_phase for cls in STEP_CLASSES}

# Undone last by RemovePodSandbox, and only once all else is gone: while they
# stand, a failed removal can be retried by ID and the name stays taken.
RELEASED_LAST = frozenset({Storage.kind, IndexId.kind, ReserveNames.kind})


# Released by StopPodSandbox after the pod's other stop steps, which run side
# by side (CNI DEL ~30 ms beside the pins, the shm and the infra's stop): the
# namespaces they are in (CNI DEL enters the netns; the netns is the userns's).
STOPPED_AFTER = (NetNamespace.kind, PodUserns.kind)


async def _nothing(_sandbox_id: str) -> None:
    return None


class SandboxLifecycle:
    def __init__(self, table: StateStore[SandboxState], statuses: SandboxStatuses, claims: Claims, *,
                 registry: StepRegistry) -> None:
        self._table, self._statuses, self._claims, self._registry = table, statuses, claims, registry
        # the pod's containers stop before it, and go before it (set by the daemon)
        self.stop_containers: Callable[[str], Awaitable[None]] = _nothing
        self.remove_containers: Callable[[str], Awaitable[None]] = _nothing

    @staticmethod
    def _plan(state: SandboxState, *, stop_phase: bool) -> list[PlanStep]:
        return [s for s in state.steps if _STOP_PHASE.get(s.kind) == stop_phase]

    async def stop(self, id_prefix: str) -> None:
        """Idempotent; an unknown ID succeeds (the kubelet relies on it)."""
        if (sandbox_id := self._table.known_id(id_prefix)) is None:
            return
        await self.stop_containers(sandbox_id)
        async with self._table.lock(sandbox_id):
            state = self._table.find(sandbox_id)
            if state is None or state.stopped:
                return
            await undo_records(self._plan(state, stop_phase=True), self._registry, what=f"stop of pod sandbox {sandbox_id}",
                               log=log, side_by_side=True, undone_after=STOPPED_AFTER)
            self._statuses.set_alive(sandbox_id, False)
            await self._table.update(sandbox_id, lambda s: attrs.evolve(s, stopped=True))

    async def remove(self, id_prefix: str) -> None:
        if (sandbox_id := self._table.known_id(id_prefix)) is None:
            return
        self._claims.disarm(sandbox_id)
        await self.remove_containers(sandbox_id)
        await self.stop(sandbox_id)
        async with self._table.lock(sandbox_id):
            state = self._table.find(sandbox_id)
            if state is None:
                return
            await undo_records(self._plan(state, stop_phase=False), self._registry,
                               what=f"remove of pod sandbox {sandbox_id}", log=log, released_last=RELEASED_LAST)
            self._table.pop(sandbox_id)
            self._statuses.forget(sandbox_id)
        self._table.drop_lock(sandbox_id)

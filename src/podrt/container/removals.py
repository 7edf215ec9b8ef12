"""RemoveContainer's teardown, after the answer. The removal answers once the
container's record is retired durably (StateStore.retire: its state.json
renamed to removing.json) and its name and ID are released: from then on no
call sees it. What it holds on the host (its runc container and conmon, its
overlay, dirs and cgroup) is undone here, in a task the daemon owns, as
containerd's RemoveContainer answers before its shim is gone. A crash or a
shutdown that cuts it leaves removing.json, from which the next start
finishes it (`finish_retired`); a teardown that fails is tried again by the
removal of its pod, which waits for its containers' teardowns (and fails
while one does), and its image counts as used till it is done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import attrs

from podrt.aio.tasks import TaskOwner
from podrt.state.records import ContainerState, PlanStep
from podrt.state.store import RETIRED_FILE, StateStore

log = logging.getLogger(__name__)


class Removals:
    def __init__(self, table: StateStore[ContainerState], undo: Callable[[ContainerState], Awaitable[None]],
                 plan: Callable[[ContainerState], tuple[PlanStep, ...]], tasks: TaskOwner) -> None:
        """`undo`: a plan's undos as they are; `plan`: a container's teardown plan (lifecycle.py)."""
        self._table, self._teardown, self._plan, self._tasks = table, undo, plan, tasks
        self._running: dict[str, tuple[ContainerState, asyncio.Task[None]]] = {}
        self._failed: dict[str, ContainerState] = {}  # tried again by their pod's removal

    def begin(self, state: ContainerState) -> None:
        """The teardown of a retired container, in a task of the daemon's."""
        if self._tasks.closed:  # shutting down: the next start finishes it
            self._failed[state.id] = state
            return
        task = self._tasks.spawn(self._run(state), name=f"teardown {state.id}")
        self._running[state.id] = (state, task)

    async def _run(self, state: ContainerState) -> None:
        try:
            await self._teardown(state)
        except Exception as exc:  # its pod's removal tries again; its removing.json stays for a restart
            log.warning("teardown of removed container %s failed (its pod's removal tries again): %s", state.id, exc)
            self._failed[state.id] = state
        finally:
            self._running.pop(state.id, None)

    def pending(self, sandbox_id: str | None = None) -> list[ContainerState]:
        """Removed containers whose teardown runs or failed (of one pod, or all)."""
        states = [s for s, _ in self._running.values()] + list(self._failed.values())
        return [s for s in states if sandbox_id is None or s.sandbox_id == sandbox_id]

    async def settle_pod(self, sandbox_id: str) -> None:
        """For RemovePodSandbox: its containers' teardowns have finished, the
        failed ones tried once more; raises (RuntimeError, as the removal would
        have) while one leaves something behind."""
        if running := [t for s, t in self._running.values() if s.sandbox_id == sandbox_id]:
            await asyncio.wait(running)
        for state in [s for s in self._failed.values() if s.sandbox_id == sandbox_id]:
            await self._teardown(state)
            self._failed.pop(state.id, None)

    async def finish_retired(self) -> None:
        """At start, before anything is restored: the teardowns a crash or a
        shutdown cut, from their removing.json (their names and IDs were never
        taken again). One that fails stays for the next start, and is said."""
        states, unreadable = await asyncio.to_thread(self._table.read_all, RETIRED_FILE)
        for path, problem in unreadable:
            log.error("cannot finish the removal of the container in %s: %s", path, problem)
        for state in [attrs.evolve(s, steps=self._plan(s)) for s in states]:
            try:
                await self._teardown(state)
                log.info("finished the removal of container %s, cut by the last shutdown or crash", state.id)
            except Exception as exc:  # its pod's removal tries again
                log.error("cannot finish the removal of container %s: %s", state.id, exc)
                self._failed[state.id] = state

"""Exits as they happen: an inotify watch on conmon's exit dir records each
exit in the container's state.json and tells GetContainerEvents subscribers.
A container's exit is recorded once, under its lock."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import attrs

from podrt.container.events import EventBus, EventType
from podrt.container.status import ContainerStatuses
from podrt.host.inotify import DirWatch
from podrt.state.records import ContainerState
from podrt.state.store import StateStore
from podrt.steps.container.context import ContainerDeps

log = logging.getLogger(__name__)


class ExitWatcher:
    def __init__(self, deps: ContainerDeps, table: StateStore[ContainerState], statuses: ContainerStatuses,
                 events: EventBus) -> None:
        self.deps, self._table, self._statuses, self._events = deps, table, statuses, events
        self._watch: DirWatch | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """From start (after restore) to close; then one pass over the exit
        dir for exits that came while podrt was down or before the watch,
        read here (blocking: podrt does not serve yet), so that no status
        shows such a container running while their records are written."""
        self.deps.exit_dir.mkdir(parents=True, exist_ok=True)
        self._watch = DirWatch(self.deps.exit_dir, self._written)
        self._watch.start()
        for cid, state in self._table.items():
            if not state.saved_exit and state.exit_code is None:
                self._statuses.read_exit(cid)
        self._written(None)

    def _written(self, container_id: str | None) -> None:
        """DirWatch's callback; None: look at every container not yet exited."""
        ids = [container_id] if container_id is not None else [
            i for i, s in self._table.items() if not s.saved_exit]
        for cid in ids:
            if cid in self._table:
                task = asyncio.get_running_loop().create_task(self._record(cid), name=f"exit-{cid}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _record(self, container_id: str) -> None:
        if container_id in self._table:  # else removed meanwhile: no lock to make
            async with self._table.lock(container_id):
                if container_id in self._table:
                    await self.save(container_id)
        if container_id not in self._table:
            self._statuses.exits.pop(container_id, None)

    async def save(self, container_id: str) -> None:
        """Once per container (under its lock): the exit into state.json, and the STOPPED event."""
        state = self._table.get(container_id)
        if state.saved_exit:
            return
        fields: dict[str, Any] | None = {}
        if state.exit_code is None:  # conmon's file, read once, in a thread (the views show it meanwhile)
            fields = self._statuses.exits.get(container_id) or await asyncio.to_thread(
                self._statuses.read_exit, container_id)
        if fields is None:
            return

        def exited(s: ContainerState) -> ContainerState:
            return attrs.evolve(s, saved_exit=True, **(fields or {}))

        try:
            state = await self._table.update(container_id, exited)
        except OSError as exc:  # conmon's file still says it at the next start
            log.warning("cannot save the exit of container %s: %s", state.id, exc)
            state = await self._table.update(container_id, exited, durable=False)
        finally:
            self._statuses.exits.pop(container_id, None)
        log.info("container %s exited with %s (%s)", state.id, state.exit_code, state.reason)
        self._events.publish(state.id, state.sandbox_id, EventType.STOPPED)

    async def close(self) -> None:
        """The watch stops; recorded exits are saved (or read again from conmon's files at the next start)."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

"""After a restart: the containers saved on disk come back (names, IDs;
exits read lazily), those of pods that are gone are torn down, and each one's
monitor is checked: a conmon that is gone writes no exit file. A container
whose runc create (made after CreateContainer answered, runtime_create.py)
was not recorded is adopted from its live conmon, or its create is made
again: a created container stays a real runc container across a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import attrs

from podrt.container.runtime_create import RuntimeCreates, failed
from podrt.container.status import ContainerStatuses, exit_written, unknown_exit
from podrt.oci import conmon
from podrt.state.records import ContainerState
from podrt.state.store import StateStore
from podrt.steps.base import runtime_for
from podrt.steps.container.context import ContainerDeps
from podrt.steps.container.create import ContainerCreate, deferred_create

log = logging.getLogger(__name__)


class ContainerRecovery:
    def __init__(self, deps: ContainerDeps, table: StateStore[ContainerState], statuses: ContainerStatuses, *,
                 teardown: Callable[[ContainerState], Awaitable[None]], creates: RuntimeCreates) -> None:
        self.deps, self._table, self._statuses, self._teardown = deps, table, statuses, teardown
        self._creates = creates

    async def restore(self, states: list[ContainerState], known_pods: set[str]) -> None:
        """Containers of known pods come back (names, IDs; exits read lazily);
        those of pods that are gone are torn down."""
        for state in states:
            if state.sandbox_id not in known_pods:
                log.warning("container %s belongs to no pod; removing it", state.id)
                try:
                    await self._teardown(state)
                except Exception as exc:
                    log.error("cannot remove orphaned container %s: %s", state.id, exc)
                continue
            self.deps.names.reserve(state.name, state.id)
            self.deps.ids.add(state.id)
            self._table.add(state.id, state)
            if not await self.remake(state):
                await self.check_monitor(self._table.get(state.id))
            log.info("restored container %s (%s)", state.id, self._statuses.status(self._table.get(state.id)).value)

    async def remake(self, state: ContainerState) -> bool:
        """A container whose runc create ran after its commit and left no pid
        in its record (none is saved before the start): adopted when its conmon
        lives (check_monitor then reads a start podrt did not record), else
        what the cut create left is removed and the create made again, in the
        background (True). Before the exit watch starts: the removal's exit
        file is no exit of the container's."""
        step = deferred_create(state)
        if step is None or state.pid or state.started_at or state.exit_code is not None or exit_written(state, self.deps):
            return False
        persist = self.deps.run_dir(state.id) / "conmon"
        conmon_pid = conmon.read_pidfile(persist / conmon.CONMON_PIDFILE)
        pid = conmon.read_pidfile(persist / conmon.CONTAINER_PIDFILE)
        if conmon_pid and pid and conmon.monitors(conmon_pid, state.id):
            await self._table.update(state.id, lambda s: attrs.evolve(s, pid=pid, conmon_pid=conmon_pid), durable=False)
            log.info("container %s: adopted the runc container its create made before the restart", state.id)
            return False
        try:
            await ContainerCreate(self.deps).undo(step.data)
        except Exception as exc:  # said at StartContainer; its removal tries again
            log.error("container %s: cannot remove what its cut runc create left: %s", state.id, exc)
            message = f"its runc create was cut by a restart and what it left cannot be removed: {exc}"
            await self._table.update(state.id, lambda s: failed(s, message))
            return True
        log.info("container %s: its runc create was cut by the restart; making it again", state.id)
        self._creates.begin(self._table.get(state.id))
        return True

    async def check_monitor(self, state: ContainerState) -> None:
        """At restore, a container without an exit file whose conmon is gone (a
        reboot, a kill) will never get one. Still running under runc: UNKNOWN
        (the kubelet stops it and makes a new one, as with containerd); else it
        exited unseen, with code 255 as CRI-O says. A start that podrt did not
        live to record is read from runc's state. An exit in conmon's file is
        the exit watcher's to record, at its first pass."""
        if state.exit_code is not None or exit_written(state, self.deps):
            return
        monitored = bool(state.conmon_pid) and conmon.monitors(state.conmon_pid, state.id)
        if monitored and state.started_at:
            return
        try:
            info = await runtime_for(self.deps.runtimes, state.runtime_handler).state(state.id)
        except Exception as exc:  # an unknown handler, a runc failure: said, and treated as gone
            log.warning("cannot read the runtime state of container %s: %s", state.id, exc)
            info = None
        status = info.get("status") if info else None
        if exit_written(state, self.deps):  # conmon wrote it and left while we looked
            return
        if monitored:
            if status in ("running", "stopped"):  # when exactly is lost; that it started is not
                await self._table.update(state.id, lambda s: attrs.evolve(s, started_at=time.time_ns()))
            return
        if status in ("running", "paused", "created"):
            await self._table.update(state.id, lambda s: attrs.evolve(s, lost=True), durable=False)
            log.warning("container %s runs, but its conmon is gone: state unknown", state.id)
            return
        await self._table.update(state.id, unknown_exit)

"""The runc containers of CreateContainer, made after the RPC answered.

CreateContainer commits once the container's rootfs, spec and state record
are ready (a few ms); `runc create` under conmon (30-50 ms) then runs in a
task the daemon owns, as containerd makes its shim's task only at
StartContainer. Whatever needs the runc container waits for that task first
(`settled`): StartContainer, StopContainer, UpdateContainerResources;
RemoveContainer cancels it (`cancel`: the create undoes itself) before its
teardown. Exec, attach, checkpoint and log reopening want a running
container, which only a settled create can be.

A create that fails leaves nothing of runc's (OciRuntime.create is all or
nothing) and the container EXITED, reason StartError and the runtime's
message, which StartContainer answers with FAILED_PRECONDITION. One cut at
shutdown leaves it CREATED without a pid: the next start makes it again
(recovery.py), as it does after a crash, from the create's undo in the
state record's plan.
"""

from __future__ import annotations

import asyncio
import logging
import time

import attrs

from podrt.aio import await_shielded, finish_in_thread
from podrt.aio.tasks import TaskOwner
from podrt.container.events import EventBus, EventType
from podrt.errors import SHUTTING_DOWN, FailedPrecondition, Unavailable
from podrt.oci.runtime import OciRuntimeError, RuntimeRefused
from podrt.state.records import ContainerState
from podrt.state.store import StateStore
from podrt.steps.container.context import ContainerDeps
from podrt.steps.container.create import create_in_runtime, refusal
from podrt.steps.container.state import make_durable

log = logging.getLogger(__name__)

START_ERROR = "StartError"  # containerd's reason for a container whose task could not be made
START_ERROR_EXIT = 128  # and its exit code


def failure_message(exc: BaseException) -> str:
    """What the client is told: runc's refusal of the request as such, or the runtime's failure."""
    if isinstance(exc, RuntimeRefused):
        return refusal(exc)
    if isinstance(exc, (OciRuntimeError, OSError)):
        return f"the OCI runtime could not create the container: {exc}"
    return f"the OCI runtime could not create the container: {type(exc).__name__}: {exc}"


def failed(state: ContainerState, message: str) -> ContainerState:
    """The container whose runc create failed: exited before it started, with the runtime's message."""
    return attrs.evolve(state, exit_code=START_ERROR_EXIT, reason=START_ERROR, message=message,
                        finished_at=time.time_ns(), saved_exit=True, lost=False)


def start_refusal(state: ContainerState) -> FailedPrecondition | None:
    """StartContainer's answer for a container whose runc create failed; None for any other."""
    if state.reason != START_ERROR or state.exit_code != START_ERROR_EXIT or state.started_at:
        return None
    return FailedPrecondition(f"container {state.id} could not be created: {state.message}")


class RuntimeCreates:
    def __init__(self, deps: ContainerDeps, table: StateStore[ContainerState], events: EventBus,
                 tasks: TaskOwner) -> None:
        self.deps, self._table, self._events, self._tasks = deps, table, events, tasks
        self._running: dict[str, asyncio.Task[None]] = {}

    def begin(self, state: ContainerState) -> None:
        """`runc create` of a saved container, in a task of the daemon's."""
        task = self._tasks.spawn(self._create(state), name=f"runc create {state.id}")
        self._running[state.id] = task
        task.add_done_callback(lambda t: self._running.pop(state.id) if self._running.get(state.id) is t else None)

    def running(self, container_id: str) -> bool:
        return container_id in self._running

    async def settled(self, container_id: str) -> None:
        """After the container's runc create, if one runs; a cancelled caller does not cut it."""
        if (task := self._running.get(container_id)) is not None:
            await asyncio.wait({task})

    async def cancel(self, container_id: str) -> None:
        """Cut the container's runc create, if one runs, and wait for its clean-up."""
        if (task := self._running.get(container_id)) is not None:
            task.cancel()
            await asyncio.wait({task})

    async def _create(self, state: ContainerState) -> None:
        # the record and spec synced beside the create (steps/container/state.py), not before it: StartContainer
        # waits for both, and what runc makes is under the runroot, gone at the reboot a power loss brings
        durable = asyncio.ensure_future(finish_in_thread(make_durable, self.deps.container_dir(state.id)))
        try:
            try:
                made = await create_in_runtime(self.deps, state)
            finally:
                await await_shielded(durable)
            durable.result()  # a failed sync fails the create (a runc container made goes with the removal's delete)
        except Exception as exc:  # asyncio.CancelledError: cut by a removal or at shutdown, left CREATED
            said = isinstance(exc, (OciRuntimeError, OSError))
            log.warning("runc create of container %s failed: %s", state.id, exc, exc_info=None if said else exc)
            await self._failed(state.id, failure_message(exc))
            return
        await self._table.update(state.id, lambda s: attrs.evolve(s, pid=made.pid, conmon_pid=made.conmon_pid),
                                 durable=False)  # saved with the start; recovery adopts it from conmon's files

    async def _failed(self, container_id: str, message: str) -> None:
        try:
            state = await self._table.update(container_id, lambda s: failed(s, message))
        except OSError as exc:  # said at StartContainer all the same; a restart makes it again
            log.warning("cannot save the failed create of container %s: %s", container_id, exc)
            state = await self._table.update(container_id, lambda s: failed(s, message), durable=False)
        self._events.publish(container_id, state.sandbox_id, EventType.STOPPED)


def not_made(container_id: str) -> Unavailable:
    """StartContainer of a container whose create was cut at shutdown and not made again yet."""
    return Unavailable(f"the runc container of {container_id} is not made yet: {SHUTTING_DOWN}")

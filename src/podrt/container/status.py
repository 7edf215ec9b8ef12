"""ContainerStatus and ListContainers: a container's status derived from
its state and conmon's exit file, its view, its verbose info.

The exit file stays until the container is removed. The daemon's views never
read it on the event loop: the exit watcher reads it in a thread as soon as
inotify says it is there (and every one at start, before podrt serves), and
the views show that exit (ContainerStatuses.exits) until the watcher has
recorded it; a status read changes nothing. The module's functions that read
the file are for that reader, start-up and tests."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from podrt.host import cgroups
from podrt.model.container import ContainerStatus
from podrt.oci import exitfile
from podrt.security import apparmor
from podrt.security.seccomp import ProfileType
from podrt.state.records import ContainerState
from podrt.state.registry import Registry
from podrt.steps.container.context import ContainerDeps
from podrt.steps.spec_files import spec_text

UNKNOWN_EXIT = 255  # an exit nobody saw (CRI-O's)
_PROCESS_STATUS = {ContainerStatus.CREATED: "created", ContainerStatus.RUNNING: "running",
                   ContainerStatus.EXITED: "stopped", ContainerStatus.UNKNOWN: "unknown"}  # runc's words


@attrs.frozen
class ContainerView:
    state: ContainerState
    status: ContainerStatus


def derive(state: ContainerState, deps: ContainerDeps) -> ContainerStatus:
    """Blocking: from the state, and the exit file when it has appeared."""
    return status_of(current(state, deps))


def status_of(state: ContainerState) -> ContainerStatus:
    if state.exit_code is not None:
        return ContainerStatus.EXITED
    if state.lost:
        return ContainerStatus.UNKNOWN
    return ContainerStatus.RUNNING if state.started_at else ContainerStatus.CREATED


def current(state: ContainerState, deps: ContainerDeps) -> ContainerState:
    """Blocking: the state as it is now, with the exit in conmon's file when
    the watcher has not recorded it yet. A read: nothing is stored."""
    if state.exit_code is not None or state.lost:
        return state
    return with_exit(state, deps) or state


def exit_written(state: ContainerState, deps: ContainerDeps) -> bool:
    """Whether conmon's exit file is there (a stat; no OOM check)."""
    return exitfile.read(deps.exit_dir, state.id) is not None


def exit_fields(state: ContainerState, deps: ContainerDeps) -> dict[str, Any] | None:
    """The exit conmon's file holds, as the state's fields; None while there is none."""
    found = exitfile.read(deps.exit_dir, state.id)
    if found is None:
        return None
    code = found.code if found.code is not None else -1
    reason = "Completed" if code == 0 else "OOMKilled" if oom_killed(state, deps) else "Error"
    return {"exit_code": code, "finished_at": found.finished_at, "reason": reason,
            "started_at": state.started_at or state.created_at}


def with_exit(state: ContainerState, deps: ContainerDeps) -> ContainerState | None:
    """The state with the exit conmon's file holds; None while there is none."""
    fields = exit_fields(state, deps)
    return None if fields is None else attrs.evolve(state, **fields)


def oom_killed(state: ContainerState, deps: ContainerDeps) -> bool:
    """conmon's marker in its persist dir, else the cgroup's own counter
    (which a systemd scope loses once it is empty)."""
    return (deps.run_dir(state.id) / "conmon" / "oom").exists() or cgroups.oom_killed(state.cgroups_path)


def unknown_exit(state: ContainerState) -> ContainerState:
    """An exit nobody saw (its conmon is gone): code 255, as CRI-O says. Nothing to announce."""
    return attrs.evolve(
        state, exit_code=UNKNOWN_EXIT, finished_at=time.time_ns(), reason="ContainerStatusUnknown",
        message="the container's conmon is gone (podrt or the host restarted) and its exit was not recorded",
        started_at=state.started_at or state.created_at, lost=False, saved_exit=True)


class ContainerStatuses:
    """Views of the containers in the registry, one at a time or listed, from
    memory: the state, and the exits read but not yet recorded (`exits`)."""

    def __init__(self, deps: ContainerDeps, table: Registry[ContainerState]) -> None:
        self.deps, self._table = deps, table
        self.exits: dict[str, dict[str, Any]] = {}  # ID -> exit_fields, from the read until the record

    def read_exit(self, container_id: str) -> dict[str, Any] | None:
        """Blocking (a file, maybe a cgroup counter): the exit conmon wrote, kept
        in `exits` for the views until the watcher records it (and drops it)."""
        fields = exit_fields(self._table.get(container_id), self.deps)
        if fields is not None:
            self.exits[container_id] = fields
        return fields

    def _current(self, state: ContainerState) -> ContainerState:
        if state.exit_code is not None or state.lost or (fields := self.exits.get(state.id)) is None:
            return state
        return attrs.evolve(state, **fields)

    def status(self, state: ContainerState) -> ContainerStatus:
        return status_of(self._current(state))

    def view(self, container_id: str) -> ContainerView:
        state = self._current(self._table.get(container_id))
        return ContainerView(state, status_of(state))

    def list(self, match: Callable[[ContainerView], bool] = lambda _v: True,
             ids: Iterable[str] | None = None) -> builtins.list[ContainerView]:
        return self._table.views(self.view, match, ids)

    def list_version(self) -> int:
        """Changes with every container created, changed or removed (cri/listindex.py)."""
        return self._table.version

    def unrecorded_exits(self) -> builtins.list[ContainerView]:
        """Views of the containers whose exit was read but is not in their
        state yet (the watcher is on its way): from memory, `exits`."""
        return [self.view(i) for i in list(self.exits) if i in self._table]

    async def inspect(self, view: ContainerView) -> dict[str, object]:
        """ContainerStatus' verbose info, which critest asks at every status:
        the OCI spec as written, what podrt knows of the process (runc is not
        asked), and what was asked for but not applied on this host."""
        state = view.state
        spec = await spec_text(self.deps.container_dir(state.id) / "config.json")
        process = {"id": state.id, "pid": state.pid, "status": _PROCESS_STATUS[view.status]}
        info: dict[str, object] = {"sandboxID": state.sandbox_id, "pid": state.pid, "conmonPid": state.conmon_pid,
                                   "runtimeSpec": spec, "runtimeState": process}
        if state.config.cdi_devices:
            info["cdiDevices"] = list(state.config.cdi_devices)  # as applied at creation (runtimeSpec shows the edits)
        if state.config.apparmor == ProfileType.LOCALHOST and not apparmor.enabled():
            info["apparmor"] = "not supported: AppArmor is not enabled on this host; the profile is not applied"
        return info

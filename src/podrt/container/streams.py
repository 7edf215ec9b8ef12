"""ExecSync, and the targets of Exec and Attach: the streaming server
(podrt/streaming) calls open_exec, open_attach and resize_tty per session."""

from __future__ import annotations

import json
import logging

from podrt.container.status import ContainerStatuses
from podrt.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from podrt.model.container import ContainerStatus
from podrt.oci import attach, conmon, execproc
from podrt.oci.runtime import ExecTimeout
from podrt.state.records import ContainerState
from podrt.state.registry import Registry
from podrt.steps.base import runtime_for
from podrt.steps.container.context import ContainerDeps
from podrt.steps.spec_files import spec_text

log = logging.getLogger(__name__)

NO_TIMEOUT = 365 * 24 * 3600.0  # ExecSync's timeout 0


class ContainerStreams:
    def __init__(self, deps: ContainerDeps, table: Registry[ContainerState], statuses: ContainerStatuses) -> None:
        self.deps, self._table, self._statuses = deps, table, statuses

    async def exec_sync(self, id_prefix: str, cmd: tuple[str, ...], timeout: float) -> tuple[int, bytes, bytes]:
        """(exit code, stdout, stderr) of `cmd` run in the container as its own
        process runs (env, user, cwd, capabilities); timeout 0 means none."""
        container_id = self._table.resolve(id_prefix)
        self._table.get(container_id)
        if not cmd:
            raise InvalidArgument("ExecSync needs a command")
        state, process = await self._exec_process(container_id, cmd, tty=False)
        runtime = runtime_for(self.deps.runtimes, state.runtime_handler)
        try:
            result = await runtime.exec_sync(container_id, process, timeout=timeout or NO_TIMEOUT,
                                             max_output=self.deps.config.runtime.exec_sync_max_output,
                                             work_dir=self.deps.run_dir(container_id))
        except ExecTimeout:
            raise DeadlineExceeded(f"command {cmd[0]!r} in container {container_id} timed out after {timeout:g}s "
                                   "(killed, with what it started)") from None
        return result.returncode, result.stdout, result.stderr

    def stream_target(self, id_prefix: str, *, stdin: bool = False, tty: bool | None = None) -> str:
        """The full ID of a running container, for the Exec and Attach RPCs to
        refuse up front what the session would refuse later. `tty`, for attach:
        it must be how the container was created, as must stdin if asked."""
        container_id = self._table.resolve(id_prefix)
        state = self._table.get(container_id)
        status = self._statuses.status(state)
        if status != ContainerStatus.RUNNING:
            raise FailedPrecondition(f"container {container_id} is {status.value}, not running")
        if tty is not None:
            if stdin and not state.config.stdin:
                raise InvalidArgument(f"container {container_id} was created without stdin: attach with stdin=false")
            if tty != state.config.tty:
                raise InvalidArgument(f"container {container_id} was created with tty={str(state.config.tty).lower()}: "
                                      "attach with the same tty")
        return container_id

    async def open_exec(self, container_id: str, cmd: tuple[str, ...], *, tty: bool, stdin: bool,
                        stderr: bool) -> execproc.ExecProcess:
        """`runc exec` of `cmd` as the container's own process runs (env, user, cwd, capabilities)."""
        state, process = await self._exec_process(container_id, cmd, tty=tty)
        try:
            return await runtime_for(self.deps.runtimes, state.runtime_handler).start_exec(
                container_id, process, stdin=stdin, stderr=stderr and not tty, work_dir=self.deps.run_dir(container_id))
        except OSError as exc:
            raise Unavailable(f"exec in container {container_id}: {exc.strerror or exc}") from None

    async def _exec_process(self, container_id: str, cmd: tuple[str, ...], *,
                            tty: bool) -> tuple[ContainerState, dict[str, object]]:
        """A running container and the OCI process that runs `cmd` in it as its own process runs."""
        state = self._table.get(self.stream_target(container_id))
        text = await spec_text(self.deps.container_dir(container_id) / "config.json")  # from memory when recent
        if text is None:  # removed since the check
            raise NotFound(f"container {container_id} not found")
        spec = json.loads(text)
        return state, {**spec["process"], "args": list(cmd), "terminal": tty}

    async def open_attach(self, container_id: str) -> attach.AttachSocket:
        """A connection to the container's stdio through its conmon."""
        self.stream_target(container_id)
        try:
            return await attach.open_attach(self.deps.run_dir(container_id))
        except conmon.ConmonError as exc:
            raise Unavailable(f"attach to container {container_id}: {exc}") from None

    def resize_tty(self, container_id: str, width: int, height: int) -> None:
        """The container's pty (created with tty), through conmon's control fifo; ignored once conmon is gone."""
        try:
            attach.resize(self.deps.run_dir(container_id), width, height)
        except conmon.ConmonError as exc:
            log.debug("resize of container %s: %s", container_id, exc)

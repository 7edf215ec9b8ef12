"""Containers: create (a transaction of steps), start, stop, remove, status,
list, restore. cri/ calls this; it knows no gRPC.

A container's state lives in memory and in its state.json; its exit is
read from the exit file conmon writes (`<runroot>/exits/<id>`) the first
time someone looks after it appears, and then kept in the state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import attrs

from podrt import cgroups
from podrt.aio import finish_in_thread
from podrt.container.context import ContainerContext, ContainerDeps
from podrt.container.model import ContainerConfig, ContainerStatus, Resources
from podrt.container.spec import oci_resources
from podrt.container.store import ContainerState, load_all
from podrt.container.validate import check_pod_ready, check_request
from podrt.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from podrt.images.manager import ImageManager
from podrt.oci import conmon
from podrt.oci.runtime import ExecTimeout, OciRuntime
from podrt.rollback import FaultPlan, Journal, StepRegistry, Transaction, TxObserver, teardown
from podrt.sandbox import naming
from podrt.sandbox.manager import SandboxManager
from podrt.sandbox.model import SandboxConfig
from podrt.steps.base import DepsStep, runtime_for
from podrt.steps.container.create import ContainerCreate
from podrt.steps.container.spec import ContainerSpec
from podrt.steps.container.state import ContainerSaveState
from podrt.steps.container.storage import ContainerStorage
from podrt.steps.names import IndexId, ReserveNames
from podrt.steps.rootfs import Rootfs

log = logging.getLogger(__name__)

STEP_ORDER: tuple[type[DepsStep], ...] = (
    ReserveNames, IndexId, ContainerStorage, Rootfs, ContainerSpec, ContainerCreate, ContainerSaveState,
)
OWN_KINDS = (ContainerStorage, ContainerSpec, ContainerCreate, ContainerSaveState)  # the shared ones are the pods'
RELEASED_LAST = frozenset({ContainerStorage.kind, IndexId.kind, ReserveNames.kind})
NO_TIMEOUT = 365 * 24 * 3600.0  # ExecSync's timeout 0
REOPEN_WAIT = 5.0  # for conmon to open the new log file


def _steps(deps: ContainerDeps) -> list[DepsStep]:
    """The shared phases get names of their own here (a fault point names one
    transaction's step); records keep the kind, which teardown goes by."""
    steps = [cls(deps) for cls in STEP_ORDER]
    for step in steps:
        if not step.kind.startswith("ctr-"):
            step.name = f"ctr-{step.kind}"
    return steps


STEP_NAMES = [step.name for step in _steps(None)]


@attrs.frozen
class ContainerView:
    state: ContainerState
    status: ContainerStatus


def container_name(cfg: ContainerConfig, pod: SandboxConfig) -> str:
    return f"k8s_{cfg.name}_{pod.name}_{pod.namespace}_{pod.uid}_{cfg.attempt}"


class ContainerManager:
    def __init__(self, deps: ContainerDeps, *, sandboxes: SandboxManager, images: ImageManager, registry: StepRegistry,
                 journal: Journal, faults: FaultPlan | None, observer: TxObserver | None) -> None:
        self.deps, self.sandboxes, self.images = deps, sandboxes, images
        self._journal, self._faults, self._observer = journal, faults, observer
        self._containers: dict[str, ContainerState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._undo_steps = _steps(deps)  # teardown with the containers' own services
        for cls in OWN_KINDS:  # crash replay of the journaled ones
            registry.register(cls.kind, lambda cls=cls: cls(self.deps))

    # ---- create -------------------------------------------------------------

    async def create(self, sandbox_id: str, cfg: ContainerConfig) -> str:
        pod = self.sandboxes.view(self.sandboxes.resolve(sandbox_id))
        check_pod_ready(pod.state, pod.ready)
        check_request(cfg, pod.state)
        record = self.images.find(cfg.image)
        if record is None or not self.images.whole(record):
            raise NotFound(f"image {cfg.image} not found in the image store; pull it first")
        image = self.images.view(record)
        inner = image.config.get("config")
        stop_signal = str(inner.get("StopSignal") or "SIGTERM") if isinstance(inner, dict) else "SIGTERM"
        container_id = naming.new_id()
        log_name = cfg.log_path or f"{cfg.name}_{cfg.attempt}.log"  # the kubelet always names one
        ctx = ContainerContext(
            id=container_id, config=cfg, sandbox=pod.state, name=container_name(cfg, pod.state.config),
            image=image, image_ref=cfg.image,
            lowers=tuple(self.images.store.lower_link(c) for c in reversed(record.layers)),
            created_at=time.time_ns(), log_path=str(Path(pod.state.log_directory) / log_name), stop_signal=stop_signal)
        tx = Transaction("CreateContainer", _steps(self.deps), tx_id=container_id,
                         journal=self._journal, faults=self._faults, observer=self._observer, log=log)
        ctx.completed = tx.completed
        await tx.run(ctx)
        assert ctx.state is not None  # the last step saved it
        self._containers[container_id] = ctx.state
        return container_id

    # ---- start / stop / remove ----------------------------------------------

    def resolve(self, id_prefix: str) -> str:
        return self.deps.ids.get(id_prefix)

    def _lock(self, container_id: str) -> asyncio.Lock:
        return self._locks.setdefault(container_id, asyncio.Lock())

    def _state(self, container_id: str) -> ContainerState:
        state = self._containers.get(container_id)
        if state is None:
            raise NotFound(f"container {container_id} not found")
        return state

    async def start(self, id_prefix: str) -> None:
        container_id = self.resolve(id_prefix)
        async with self._lock(container_id):
            state = self._state(container_id)
            status = self._status(state)
            if status != ContainerStatus.CREATED:
                raise FailedPrecondition(f"container {container_id} is {status.value}, not created: it cannot be started")
            await self._runtime(state).start(container_id)
            state.started_at = time.time_ns()
            await finish_in_thread(state.save)

    def _runtime(self, state: ContainerState) -> OciRuntime:
        return runtime_for(self.deps.runtimes, state.runtime_handler)

    def _known(self, id_prefix: str) -> str | None:
        """The full ID, or None for an unknown one: stop and remove succeed on those (the kubelet relies on it)."""
        try:
            return self.resolve(id_prefix)
        except NotFound:
            return None

    async def stop(self, id_prefix: str, timeout: float) -> None:
        """Idempotent."""
        if (container_id := self._known(id_prefix)) is None:
            return
        async with self._lock(container_id):
            if (state := self._containers.get(container_id)) is not None:
                await self._stop(state, timeout)

    async def _stop(self, state: ContainerState, timeout: float) -> None:
        runtime = self._runtime(state)
        await runtime.stop(state.id, timeout=timeout, stop_signal=state.stop_signal, exit_dir=self.deps.exit_dir)
        if state.started_at == 0 and state.exit_code is None:  # never started: killed where it waited
            state.started_at = state.created_at
        self._status(state)
        await finish_in_thread(state.save)

    async def remove(self, id_prefix: str) -> None:
        """Idempotent; a running container is stopped forcibly first."""
        if (container_id := self._known(id_prefix)) is None:
            return
        async with self._lock(container_id):
            if (state := self._containers.get(container_id)) is None:
                return
            await self._teardown(state)
            self._containers.pop(container_id, None)
        self._locks.pop(container_id, None)

    async def _teardown(self, state: ContainerState) -> None:
        records = state.records
        for part in ([r for r in records if r[1] not in RELEASED_LAST], [r for r in records if r[1] in RELEASED_LAST]):
            failures = await teardown(part, self._undo_steps, log=log)
            if failures:
                detail = "; ".join(f"{f.step}: {f.error}" for f in failures)
                raise RuntimeError(f"removal of container {state.id} incomplete: {detail}")

    async def exec_sync(self, id_prefix: str, cmd: tuple[str, ...], timeout: float) -> tuple[int, bytes, bytes]:
        """(exit code, stdout, stderr) of `cmd` run in the container as its own
        process runs (env, user, cwd, capabilities); timeout 0 means none."""
        container_id = self.resolve(id_prefix)
        state = self._state(container_id)
        if not cmd:
            raise InvalidArgument("ExecSync needs a command")
        status = self._status(state)
        if status != ContainerStatus.RUNNING:
            raise FailedPrecondition(f"container {container_id} is {status.value}, not running")
        spec = json.loads(await asyncio.to_thread((self.deps.container_dir(container_id) / "config.json").read_bytes))
        process = {**spec["process"], "args": list(cmd), "terminal": False}
        runtime = self._runtime(state)
        try:
            result = await runtime.exec_sync(container_id, process, timeout=timeout or NO_TIMEOUT,
                                             max_output=self.deps.config.runtime.exec_sync_max_output,
                                             work_dir=self.deps.run_dir(container_id))
        except ExecTimeout:
            raise DeadlineExceeded(f"command {cmd[0]!r} in container {container_id} timed out after {timeout:g}s "
                                   "(killed, with what it started)") from None
        return result.returncode, result.stdout, result.stderr

    async def update_resources(self, id_prefix: str, resources: Resources) -> None:
        """`runc update` of a created or running container; ContainerStatus shows the new values."""
        container_id = self.resolve(id_prefix)
        async with self._lock(container_id):
            state = self._state(container_id)
            status = self._status(state)
            if status not in (ContainerStatus.CREATED, ContainerStatus.RUNNING):
                raise FailedPrecondition(f"container {container_id} is {status.value}: its resources cannot change")
            await self._runtime(state).update(
                container_id, oci_resources(resources), work_dir=self.deps.run_dir(container_id))
            state.config = attrs.evolve(state.config, resources=resources)
            await finish_in_thread(state.save)

    async def reopen_log(self, id_prefix: str) -> None:
        """After the kubelet rotated the log away: conmon opens a new file at
        the log path (message 2 on its ctl fifo in the bundle, as CRI-O sends)."""
        container_id = self.resolve(id_prefix)
        state = self._state(container_id)
        status = self._status(state)
        if status != ContainerStatus.RUNNING:  # CRI: no new log file for a container that is not running
            raise FailedPrecondition(f"container {container_id} is {status.value}, not running: its log is not reopened")
        try:
            await asyncio.to_thread(conmon.reopen_log, self.deps.run_dir(container_id))
        except conmon.ConmonError as exc:
            raise Unavailable(str(exc)) from None
        log_path = Path(state.log_path)
        deadline = time.monotonic() + REOPEN_WAIT
        while not log_path.exists():
            if time.monotonic() > deadline:
                raise Unavailable(f"conmon of container {container_id} did not reopen {log_path}")
            await asyncio.sleep(0.01)

    async def stop_pod(self, sandbox_id: str, timeout: float = 0.0) -> None:
        """StopPodSandbox: its containers stop first, forcibly, as containerd
        does: the kubelet has given each its grace period with StopContainer."""
        for state in [s for s in self._containers.values() if s.sandbox_id == sandbox_id]:
            await self.stop(state.id, timeout)

    async def remove_pod(self, sandbox_id: str) -> None:
        """RemovePodSandbox: its containers go first."""
        for state in [s for s in self._containers.values() if s.sandbox_id == sandbox_id]:
            await self.remove(state.id)

    # ---- status / list --------------------------------------------------------

    def _status(self, state: ContainerState, exited: set[str] | None = None) -> ContainerStatus:
        """From the state, and the exit file when it has appeared (recorded
        then). `exited`: the IDs with an exit file, when the caller listed them."""
        if state.exit_code is not None:
            return ContainerStatus.EXITED
        if exited is not None and state.id not in exited:
            return ContainerStatus.RUNNING if state.started_at else ContainerStatus.CREATED
        exit_file = self.deps.exit_dir / state.id
        try:
            text = exit_file.read_text().strip()
            finished = exit_file.stat().st_mtime_ns
        except FileNotFoundError:
            return ContainerStatus.RUNNING if state.started_at else ContainerStatus.CREATED
        code = int(text) if text.lstrip("-").isdigit() else -1
        state.exit_code, state.finished_at = code, finished
        state.reason = "Completed" if code == 0 else "OOMKilled" if self._oom_killed(state) else "Error"
        if not state.started_at:
            state.started_at = state.created_at
        try:
            state.save()  # small, and once per container
        except OSError as exc:
            log.warning("cannot record the exit of container %s: %s", state.id, exc)
        return ContainerStatus.EXITED

    def _oom_killed(self, state: ContainerState) -> bool:
        """conmon's marker in its persist dir, else the cgroup's own counter
        (which a systemd scope loses once it is empty)."""
        return (self.deps.run_dir(state.id) / "conmon" / "oom").exists() or cgroups.oom_killed(state.cgroups_path)

    def view(self, container_id: str, exited: set[str] | None = None) -> ContainerView:
        state = self._state(container_id)
        return ContainerView(state, self._status(state, exited))

    def list(self, match: Callable[[ContainerView], bool] = lambda _v: True,
             ids: Iterable[str] | None = None) -> list[ContainerView]:
        chosen = self._containers if ids is None else [i for i in ids if i in self._containers]
        try:
            exited = set(os.listdir(self.deps.exit_dir))  # one listing, not a file per container
        except FileNotFoundError:
            exited = set()
        views = (self.view(i, exited) for i in chosen)
        return [v for v in views if match(v)]

    def matching_ids(self, prefix: str) -> list[str]:
        return self.deps.ids.matching(prefix)

    def image_users(self, image_id: str) -> list[str]:
        return [f"container {s.id} ({s.name})" for s in self._containers.values() if s.image_id == image_id]

    def usage_dirs(self) -> list[Path]:
        """Their writable layers, for ImageFsInfo."""
        return [self.deps.container_dir(i) / "rootfs" / "upper" for i in self._containers]

    # ---- restart -------------------------------------------------------------

    @staticmethod
    def saved(root: Path) -> tuple[list[ContainerState], list[tuple[Path, str]]]:
        return load_all(root / "containers")

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
            self._containers[state.id] = state
            log.info("restored container %s (%s)", state.id, self._status(state).value)

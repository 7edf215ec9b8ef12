"""Containers: create (a transaction of steps), start, stop, remove, status,
list, restore. cri/ calls this; it knows no gRPC.

A container's state lives in memory and in its state.json. Its exit is the
file conmon writes (`<runroot>/exits/<id>`): an inotify watch on that dir
records it as it happens (and tells GetContainerEvents subscribers); a
status read that finds the file first records it too. The file stays until
the container is removed, so an exit while podrt was down is read at start.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from podrt.aio import finish_in_thread
from podrt.container import stats
from podrt.container.events import EventBus, EventType
from podrt.container.spec import oci_resources
from podrt.container.store import ContainerState, load_all
from podrt.container.validate import check_host_fit, check_pod_ready, check_request, log_name
from podrt.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from podrt.host import cgroups
from podrt.host.inotify import DirWatch
from podrt.images.manager import ImageManager
from podrt.images.store import ImageRecord
from podrt.model.container import ContainerConfig, ContainerStatus, Resources
from podrt.model.sandbox import NsMode, SandboxConfig
from podrt.oci import attach, conmon, execproc
from podrt.oci.runtime import ExecTimeout, OciRuntime, RuntimeRefused
from podrt.rollback import FaultPlan, Journal, StepRegistry, Transaction, TxObserver, teardown
from podrt.sandbox import naming
from podrt.sandbox.manager import SandboxManager, SandboxView
from podrt.security import apparmor
from podrt.security.seccomp import ProfileType
from podrt.steps.base import DepsStep, runtime_for
from podrt.steps.container.context import ContainerContext, ContainerDeps, VolumeSource
from podrt.steps.container.create import ContainerCreate, refusal
from podrt.steps.container.spec import ContainerSpec
from podrt.steps.container.state import ContainerSaveState
from podrt.steps.container.storage import ContainerStorage
from podrt.steps.container.volumes import ImageVolumes
from podrt.steps.names import IndexId, ReserveNames
from podrt.steps.rootfs import Rootfs

log = logging.getLogger(__name__)

STEP_ORDER: tuple[type[DepsStep], ...] = (
    ReserveNames, IndexId, ContainerStorage, Rootfs, ImageVolumes, ContainerSpec, ContainerCreate, ContainerSaveState,
)
OWN_KINDS = (ContainerStorage, ImageVolumes, ContainerSpec, ContainerCreate, ContainerSaveState)  # the shared ones are the pods'
RELEASED_LAST = frozenset({ContainerStorage.kind, IndexId.kind, ReserveNames.kind})
NO_TIMEOUT = 365 * 24 * 3600.0  # ExecSync's timeout 0
REOPEN_WAIT = 5.0  # for conmon to open the new log file
UNKNOWN_EXIT = 255  # an exit nobody saw (CRI-O's)


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
                 journal: Journal, faults: FaultPlan | None, observer: TxObserver | None, events: EventBus) -> None:
        self.deps, self.sandboxes, self.images, self.events = deps, sandboxes, images, events
        self._watch: DirWatch | None = None
        self._creating: dict[str, list[asyncio.Future[None]]] = {}  # pod ID -> its creations in flight
        self._closing: set[str] = set()  # pods being stopped or removed: no new containers
        self._pending_images: collections.Counter[str] = collections.Counter()  # images of creations in flight
        self._rates = stats.CpuRates()
        self._exit_tasks: set[asyncio.Task[None]] = set()
        self._journal, self._faults, self._observer = journal, faults, observer
        self._containers: dict[str, ContainerState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._undo_steps = _steps(deps)  # teardown with the containers' own services
        for cls in OWN_KINDS:  # crash replay of the journaled ones
            registry.register(cls.kind, lambda cls=cls: cls(self.deps))

    # ---- create -------------------------------------------------------------

    async def create(self, sandbox_id: str, cfg: ContainerConfig) -> str:
        pod = self.sandboxes.view(self.sandboxes.resolve(sandbox_id))
        check_pod_ready(pod.state, pod.ready and pod.state.id not in self._closing)
        check_request(cfg, pod.state)
        record = self._image(cfg.image, "image")
        volumes = tuple(self._volume(n, m.image) for n, m in enumerate(cfg.mounts) if m.image)
        used = [record.id, *(v.image_id for v in volumes)]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._creating.setdefault(pod.state.id, []).append(done)
        self._pending_images.update(used)
        try:
            return await self._create(pod, cfg, record, volumes)
        finally:
            done.set_result(None)
            self._creating[pod.state.id].remove(done)
            if not self._creating[pod.state.id]:
                del self._creating[pod.state.id]
            self._pending_images.subtract(used)
            self._pending_images += collections.Counter()  # drops the zeros

    def _image(self, ref: str, what: str) -> ImageRecord:
        record = self.images.find(ref)
        if record is None or not self.images.whole(record):
            raise NotFound(f"{what} {ref} not found in the image store; pull it first")
        return record

    def _volume(self, index: int, ref: str) -> VolumeSource:
        record = self._image(ref, f"image volume (mounts[{index}])")
        return VolumeSource(index, record.id, ref, self._lowers(record))

    def _lowers(self, record: ImageRecord) -> tuple[str, ...]:
        return tuple(self.images.store.lower_link(c) for c in reversed(record.layers))

    async def _create(self, pod: SandboxView, cfg: ContainerConfig, record: ImageRecord,
                      volumes: tuple[VolumeSource, ...]) -> str:
        image = self.images.view(record)
        inner = image.config.get("config")
        stop_signal = str(inner.get("StopSignal") or "SIGTERM") if isinstance(inner, dict) else "SIGTERM"
        container_id = naming.new_id()
        ctx = ContainerContext(
            id=container_id, config=cfg, sandbox=pod.state, name=container_name(cfg, pod.state.config),
            image=image, image_ref=cfg.image,
            lowers=self._lowers(record), volumes=volumes,
            created_at=time.time_ns(), log_path=str(Path(pod.state.log_directory) / log_name(cfg)), stop_signal=stop_signal,
            target_pid=self._target_pid(cfg, pod.state.id) if cfg.pid_mode == NsMode.TARGET else 0)
        tx = Transaction("CreateContainer", _steps(self.deps), tx_id=container_id,
                         journal=self._journal, faults=self._faults, observer=self._observer, log=log)
        ctx.completed = tx.completed
        await tx.run(ctx)
        assert ctx.state is not None  # the last step saved it
        self._containers[container_id] = ctx.state
        self.events.publish(container_id, pod.state.id, EventType.CREATED)
        return container_id

    def _target_pid(self, cfg: ContainerConfig, sandbox_id: str) -> int:
        """The init pid of the running container of the same pod whose PID namespace a TARGET container joins."""
        where = "config.linux.security_context.namespace_options.target_id"
        if not cfg.pid_target_id:
            raise InvalidArgument(f"{where} must name a container for pid mode TARGET")
        target = self._state(self.resolve(cfg.pid_target_id))
        if target.sandbox_id != sandbox_id:
            raise InvalidArgument(f"{where}: container {target.id} is in another pod")
        status = self._status(target)
        if status != ContainerStatus.RUNNING or not target.pid:
            raise FailedPrecondition(f"{where}: container {target.id} is {status.value}, not running")
        return target.pid

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
            try:
                await self._runtime(state).start(container_id)
            except RuntimeRefused as exc:
                raise FailedPrecondition(refusal(exc)) from None
            state.started_at = time.time_ns()
            await finish_in_thread(state.save)
        self.events.publish(container_id, state.sandbox_id, EventType.STARTED)

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
        await self._save_exit(state)
        if state.lost:  # killed without its conmon: no exit file comes
            self._unknown_exit(state)
            await finish_in_thread(state.save)
            self.events.publish(state.id, state.sandbox_id, EventType.STOPPED)
        elif not state.saved_exit:  # no exit yet (a start recorded above)
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
        self._rates.forget(container_id)
        self.events.publish(container_id, state.sandbox_id, EventType.DELETED)

    async def _teardown(self, state: ContainerState) -> None:
        """Removal undoes the creation, but the log file stays: it is the
        kubelet's (`kubectl logs --previous`, its own rotation and removal),
        as CRI-O and containerd leave it. A rolled back creation removes it."""
        records = [(r[0], r[1], {**r[2], "log_file": ""}) if r[1] == ContainerStorage.kind else r for r in state.records]
        for part in ([r for r in records if r[1] not in RELEASED_LAST], [r for r in records if r[1] in RELEASED_LAST]):
            failures = await teardown(part, self._undo_steps, log=log)
            if failures:
                detail = "; ".join(f"{f.step}: {f.error}" for f in failures)
                raise RuntimeError(f"removal of container {state.id} incomplete: {detail}")

    async def exec_sync(self, id_prefix: str, cmd: tuple[str, ...], timeout: float) -> tuple[int, bytes, bytes]:
        """(exit code, stdout, stderr) of `cmd` run in the container as its own
        process runs (env, user, cwd, capabilities); timeout 0 means none."""
        container_id = self.resolve(id_prefix)
        self._state(container_id)
        if not cmd:
            raise InvalidArgument("ExecSync needs a command")
        state, process = await self._exec_process(container_id, cmd, tty=False)
        runtime = self._runtime(state)
        try:
            result = await runtime.exec_sync(container_id, process, timeout=timeout or NO_TIMEOUT,
                                             max_output=self.deps.config.runtime.exec_sync_max_output,
                                             work_dir=self.deps.run_dir(container_id))
        except ExecTimeout:
            raise DeadlineExceeded(f"command {cmd[0]!r} in container {container_id} timed out after {timeout:g}s "
                                   "(killed, with what it started)") from None
        return result.returncode, result.stdout, result.stderr

    # ---- streaming (the server in podrt/streaming calls these per session) ----------

    def stream_target(self, id_prefix: str, *, stdin: bool = False, tty: bool | None = None) -> str:
        """The full ID of a running container, for the Exec and Attach RPCs to
        refuse up front what the session would refuse later. `tty`, for attach:
        it must be how the container was created, as must stdin if asked."""
        container_id = self.resolve(id_prefix)
        state = self._state(container_id)
        status = self._status(state)
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
            return await self._runtime(state).start_exec(container_id, process, stdin=stdin, stderr=stderr and not tty,
                                                         work_dir=self.deps.run_dir(container_id))
        except OSError as exc:
            raise Unavailable(f"exec in container {container_id}: {exc.strerror or exc}") from None

    async def _exec_process(self, container_id: str, cmd: tuple[str, ...], *,
                            tty: bool) -> tuple[ContainerState, dict[str, object]]:
        """A running container and the OCI process that runs `cmd` in it as its own process runs."""
        state = self._state(self.stream_target(container_id))
        try:
            spec = json.loads(await asyncio.to_thread((self.deps.container_dir(container_id) / "config.json").read_bytes))
        except FileNotFoundError:  # removed since the check
            raise NotFound(f"container {container_id} not found") from None
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

    async def update_resources(self, id_prefix: str, resources: Resources) -> None:
        """`runc update` of a created or running container; ContainerStatus shows the new values."""
        container_id = self.resolve(id_prefix)
        async with self._lock(container_id):
            state = self._state(container_id)
            status = self._status(state)
            if status not in (ContainerStatus.CREATED, ContainerStatus.RUNNING):
                raise FailedPrecondition(f"container {container_id} is {status.value}: its resources cannot change")
            check_host_fit("linux", resources)
            try:
                await self._runtime(state).update(
                    container_id, oci_resources(resources), work_dir=self.deps.run_dir(container_id))
            except RuntimeRefused as exc:
                raise FailedPrecondition(f"the OCI runtime refused the new resources: {exc}") from None
            kept = attrs.evolve(resources, oom_score_adj=state.config.resources.oom_score_adj)  # a process setting runc does not update
            state.config = attrs.evolve(state.config, resources=kept)
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
            await asyncio.to_thread(attach.write_ctl, self.deps.run_dir(container_id), attach.CTL_REOPEN_LOG)
        except conmon.ConmonError as exc:
            raise Unavailable(str(exc)) from None
        log_path = Path(state.log_path)
        deadline = time.monotonic() + REOPEN_WAIT
        while not log_path.exists():
            if time.monotonic() > deadline:
                raise Unavailable(f"conmon of container {container_id} did not reopen {log_path}")
            await asyncio.sleep(0.01)

    async def _close_pod(self, sandbox_id: str) -> None:
        """From now on the pod gets no new container, and the creations in
        flight finish (or unwind) before its containers are stopped or removed:
        none is left behind in a pod that is gone."""
        self._closing = {i for i in self._closing if self.sandboxes.known(i)} | {sandbox_id}
        if pending := self._creating.get(sandbox_id):
            await asyncio.wait(list(pending))

    async def stop_pod(self, sandbox_id: str, timeout: float = 0.0) -> None:
        """StopPodSandbox: its containers stop first, forcibly, as containerd
        does: the kubelet has given each its grace period with StopContainer."""
        await self._close_pod(sandbox_id)
        try:
            for state in [s for s in self._containers.values() if s.sandbox_id == sandbox_id]:
                await self.stop(state.id, timeout)
        except BaseException:
            self._closing.discard(sandbox_id)  # the pod is not stopped: it may get containers again
            raise

    async def remove_pod(self, sandbox_id: str) -> None:
        """RemovePodSandbox: its containers go first."""
        await self._close_pod(sandbox_id)
        for state in [s for s in self._containers.values() if s.sandbox_id == sandbox_id]:
            await self.remove(state.id)

    # ---- status / list --------------------------------------------------------

    def _status(self, state: ContainerState, exited: set[str] | None = None) -> ContainerStatus:
        """From the state, and the exit file when it has appeared (recorded
        then). `exited`: the IDs with an exit file, when the caller listed them."""
        if state.exit_code is not None:
            return ContainerStatus.EXITED
        if state.lost:
            return ContainerStatus.UNKNOWN
        if exited is not None and state.id not in exited:
            return ContainerStatus.RUNNING if state.started_at else ContainerStatus.CREATED
        if self._read_exit(state):
            return ContainerStatus.EXITED
        return ContainerStatus.RUNNING if state.started_at else ContainerStatus.CREATED

    def _read_exit(self, state: ContainerState) -> bool:
        """Take the exit from conmon's file into the state (in memory: the
        watcher saves it); False while there is none. The file is small and on the runroot's tmpfs."""
        exit_file = self.deps.exit_dir / state.id
        try:
            text = exit_file.read_text().strip()
            finished = exit_file.stat().st_mtime_ns
        except FileNotFoundError:
            return False
        code = int(text) if text.lstrip("-").isdigit() else -1
        state.exit_code, state.finished_at = code, finished
        state.reason = "Completed" if code == 0 else "OOMKilled" if self._oom_killed(state) else "Error"
        if not state.started_at:
            state.started_at = state.created_at
        return True

    # ---- exits as they happen -------------------------------------------------

    def watch_exits(self) -> None:
        """From start (after restore) to close; then one pass over the exit
        dir for exits that came while podrt was down or before the watch."""
        self.deps.exit_dir.mkdir(parents=True, exist_ok=True)
        self._watch = DirWatch(self.deps.exit_dir, self._exit_written)
        self._watch.start()
        self._exit_written(None)

    def _exit_written(self, container_id: str | None) -> None:
        """DirWatch's callback; None: look at every container not yet exited."""
        ids = [container_id] if container_id is not None else [
            i for i, s in self._containers.items() if not s.saved_exit]
        for cid in ids:
            if cid in self._containers:
                task = asyncio.get_running_loop().create_task(self._record_exit(cid), name=f"exit-{cid}")
                self._exit_tasks.add(task)
                task.add_done_callback(self._exit_tasks.discard)

    async def _record_exit(self, container_id: str) -> None:
        if container_id not in self._containers:  # removed meanwhile: no lock to make
            return
        async with self._lock(container_id):
            if (state := self._containers.get(container_id)) is not None:
                await self._save_exit(state)

    async def _save_exit(self, state: ContainerState) -> None:
        """Once per container (under its lock): the exit into state.json, and the STOPPED event."""
        if state.saved_exit or (state.exit_code is None and not self._read_exit(state)):
            return
        try:
            await finish_in_thread(state.save)
        except OSError as exc:  # conmon's file still says it at the next start
            log.warning("cannot save the exit of container %s: %s", state.id, exc)
        state.saved_exit = True
        log.info("container %s exited with %s (%s)", state.id, state.exit_code, state.reason)
        self.events.publish(state.id, state.sandbox_id, EventType.STOPPED)

    async def close(self) -> None:
        """At shutdown: event streams end, the watch stops; recorded exits are
        saved (or read again from conmon's files at the next start)."""
        self.events.close()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._exit_tasks:
            _, pending = await asyncio.wait(set(self._exit_tasks), timeout=5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _oom_killed(self, state: ContainerState) -> bool:
        """conmon's marker in its persist dir, else the cgroup's own counter
        (which a systemd scope loses once it is empty)."""
        return (self.deps.run_dir(state.id) / "conmon" / "oom").exists() or cgroups.oom_killed(state.cgroups_path)

    def view(self, container_id: str, exited: set[str] | None = None) -> ContainerView:
        state = self._state(container_id)
        return ContainerView(state, self._status(state, exited))

    async def inspect(self, view: ContainerView) -> dict[str, object]:
        """ContainerStatus' verbose info: the OCI spec, runc's view, and what
        was asked for but not applied on this host."""
        state = view.state
        spec_path = self.deps.container_dir(state.id) / "config.json"
        spec = await asyncio.to_thread(spec_path.read_text) if spec_path.exists() else None
        try:
            runtime_state = await self._runtime(state).state(state.id)
        except Exception as exc:  # verbose info is best effort; the status itself is answered
            runtime_state = {"error": str(exc)}
        info: dict[str, object] = {"sandboxID": state.sandbox_id, "pid": state.pid, "conmonPid": state.conmon_pid,
                                   "runtimeSpec": json.loads(spec) if spec else None, "runtimeState": runtime_state}
        if state.config.apparmor == ProfileType.LOCALHOST and not apparmor.enabled():
            info["apparmor"] = "not supported: AppArmor is not enabled on this host; the profile is not applied"
        return info

    def list(self, match: Callable[[ContainerView], bool] = lambda _v: True,
             ids: Iterable[str] | None = None) -> list[ContainerView]:
        chosen = self._containers if ids is None else [i for i in ids if i in self._containers]
        try:
            exited = set(os.listdir(self.deps.exit_dir))  # one listing, not a file per container
        except FileNotFoundError:
            exited = set()
        views = (self.view(i, exited) for i in chosen)
        return [v for v in views if match(v)]

    # ---- stats ----------------------------------------------------------------

    async def stats(self, views: Iterable[ContainerView]) -> list[tuple[ContainerView, stats.Sample]]:
        """Usage of each container (cgroup and writable layer), read in one worker thread."""
        views = list(views)
        samples = await asyncio.to_thread(lambda: [
            stats.read(v.state.id, v.state.cgroups_path, self.deps.container_dir(v.state.id) / "rootfs" / "upper")
            for v in views])
        return [(v, attrs.evolve(x, nano_cores=self._rates.rate(x.container_id, x.at, x.cgroup)))
                for v, x in zip(views, samples)]

    async def pod_stats(self, pods: Iterable[SandboxView]) -> list[tuple[SandboxView, stats.PodSample, list[tuple[ContainerView, stats.Sample]]]]:
        """Each pod's usage (stats.pod_usage) and its network interfaces."""
        out = []
        for pod in pods:
            mine = await self.stats(self.list(lambda v, pod_id=pod.state.id: v.state.sandbox_id == pod_id))
            cgroup = None if pod.state.stopped else (pod.state.cgroup_parent, pod.state.cgroups_path)
            netns = "" if pod.state.stopped else pod.state.netns_path
            sample = await asyncio.to_thread(stats.pod_sample, pod.state.id, cgroup, netns, [s for _, s in mine])
            sample = attrs.evolve(sample, nano_cores=self._rates.rate(f"pod:{pod.state.id}", sample.at, sample.cgroup))
            out.append((pod, sample, mine))
        return out

    def known(self, container_id: str) -> bool:
        return container_id in self._containers

    def __len__(self) -> int:
        return len(self._containers)

    def matching_ids(self, prefix: str) -> list[str]:
        return self.deps.ids.matching(prefix)

    def image_users(self, image_id: str) -> list[str]:
        users = [f"container {s.id} ({s.name})" for s in self._containers.values()
                 if s.image_id == image_id or any(r[1] == ImageVolumes.kind and image_id in r[2]["images"] for r in s.records)]
        if self._pending_images[image_id]:
            users.append(f"{self._pending_images[image_id]} container creation(s) in flight")
        return users

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
            await self._check_monitor(state)
            log.info("restored container %s (%s)", state.id, self._status(state).value)

    async def _check_monitor(self, state: ContainerState) -> None:
        """At restore, a container without an exit file whose conmon is gone (a
        reboot, a kill) will never get one. Still running under runc: UNKNOWN
        (the kubelet stops it and makes a new one, as with containerd); else it
        exited unseen, with code 255 as CRI-O says. A start that podrt did not
        live to record is read from runc's state."""
        if state.exit_code is not None or self._read_exit(state):
            return
        monitored = bool(state.conmon_pid) and conmon.monitors(state.conmon_pid, state.id)
        if monitored and state.started_at:
            return
        try:
            info = await self._runtime(state).state(state.id)
        except Exception as exc:  # an unknown handler, a runc failure: said, and treated as gone
            log.warning("cannot read the runtime state of container %s: %s", state.id, exc)
            info = None
        status = info.get("status") if info else None
        if self._read_exit(state):  # conmon wrote it and left while we looked
            return
        if monitored:
            if status in ("running", "stopped"):
                state.started_at = time.time_ns()  # when exactly is lost; that it started is not
                await finish_in_thread(state.save)
            return
        if status in ("running", "paused", "created"):
            state.lost = True
            log.warning("container %s runs, but its conmon is gone: state unknown", state.id)
            return
        self._unknown_exit(state)
        await finish_in_thread(state.save)

    def _unknown_exit(self, state: ContainerState) -> None:
        state.exit_code, state.finished_at = UNKNOWN_EXIT, time.time_ns()
        state.reason = "ContainerStatusUnknown"
        state.message = "the container's conmon is gone (podrt or the host restarted) and its exit was not recorded"
        state.started_at = state.started_at or state.created_at
        state.lost, state.saved_exit = False, True  # saved by the caller; nothing to announce

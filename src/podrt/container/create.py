"""CreateContainer: a transaction of steps, in a pod that is ready and not
closing. A pod being stopped or removed gets no new container, and waits
for the creations in flight in it to finish (or unwind) first. The runc
container is made once the container is saved, after the answer
(runtime_create.py)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from pathlib import Path

from podrt.container.events import EventBus, EventType
from podrt.container.runtime_create import RuntimeCreates
from podrt.container.status import ContainerStatuses
from podrt.container.validate import check_handler_has_rro, check_pod_ready, check_request, log_name
from podrt.errors import FailedPrecondition, InvalidArgument, NotFound
from podrt.images.manager import ImageManager
from podrt.images.store import ImageRecord
from podrt.model.container import ContainerConfig, ContainerStatus
from podrt.model.sandbox import NsMode, SandboxConfig
from podrt.oci import signals
from podrt.rollback import FaultPlan, Transaction, TxObserver
from podrt.sandbox import naming
from podrt.sandbox.manager import SandboxManager, SandboxView
from podrt.state.journal import Journal
from podrt.state.records import ContainerState
from podrt.state.registry import Registry
from podrt.state.store import STATE_FILE
from podrt.steps.base import DepsStep
from podrt.steps.container.context import ContainerContext, ContainerDeps, VolumeSource
from podrt.steps.container.create import ContainerCreate
from podrt.steps.container.idmap import IdmapBinds
from podrt.steps.container.spec import ContainerSpec
from podrt.steps.container.state import ContainerSaveState
from podrt.steps.container.storage import ContainerStorage
from podrt.steps.container.volumes import ImageVolumes
from podrt.steps.names import IndexId, ReserveNames
from podrt.steps.rootfs import Rootfs

log = logging.getLogger(__name__)

STEP_ORDER: tuple[type[DepsStep], ...] = (
    ReserveNames, IndexId, ContainerStorage, Rootfs, ImageVolumes, IdmapBinds, ContainerSpec, ContainerCreate,
    ContainerSaveState,
)
RECORDED_AHEAD = frozenset({Rootfs, ImageVolumes, IdmapBinds})
OWN_KINDS = (ContainerStorage, ImageVolumes, IdmapBinds, ContainerSpec, ContainerCreate, ContainerSaveState)  # the shared ones are the pods'


def steps(deps: ContainerDeps | None, skip: frozenset[type[DepsStep]] = frozenset()) -> list[DepsStep]:
    """The shared phases get names of their own here (a fault point names one
    transaction's step); records keep the kind, which teardown goes by.
    `skip`: phases with nothing to do for this container (as RunPodSandbox
    skips them): each journaled one would cost a journal write."""
    made = [cls(deps) for cls in STEP_ORDER if cls not in skip]
    for step in made:
        if not step.kind.startswith("ctr-"):
            step.name = f"ctr-{step.kind}"
        # a container's dirs, overlay and volumes are named by its ID and image, known before any phase
        # runs: their intents share the storage phase's journal write (rollback.Step.record_ahead)
        step.record_ahead = type(step) in RECORDED_AHEAD
    return made


STEP_NAMES = [step.name for step in steps(None)]


def container_name(cfg: ContainerConfig, pod: SandboxConfig) -> str:
    return f"k8s_{cfg.name}_{pod.name}_{pod.namespace}_{pod.uid}_{cfg.attempt}"


def image_stop_signal(image_config: object) -> str:
    """The image's StopSignal however written ("TERM", "15"), as podrt names it;
    SIGTERM when it has none, or one that names no signal (logged)."""
    given = image_config.get("StopSignal") if isinstance(image_config, dict) else None
    if not given:
        return "SIGTERM"
    name = signals.canonical(str(given))
    if name is None:
        log.warning("the image's StopSignal %r names no signal: SIGTERM stops the container", str(given)[:50])
    return name or "SIGTERM"


class ContainerCreator:
    def __init__(self, deps: ContainerDeps, table: Registry[ContainerState], statuses: ContainerStatuses, *,
                 sandboxes: SandboxManager, images: ImageManager, events: EventBus, creates: RuntimeCreates,
                 journal: Journal, faults: FaultPlan | None, observer: TxObserver | None) -> None:
        self.deps, self._table, self._statuses, self._creates = deps, table, statuses, creates
        self._sandboxes, self._images, self._events = sandboxes, images, events
        self._journal, self._faults, self._observer = journal, faults, observer
        self._creating: dict[str, list[asyncio.Future[None]]] = {}  # pod ID -> its creations in flight
        self._closing: set[str] = set()  # pods being stopped or removed: no new containers
        self._pending_images: collections.Counter[str] = collections.Counter()  # images of creations in flight

    async def create(self, sandbox_id: str, cfg: ContainerConfig) -> str:
        pod = self._sandboxes.view(self._sandboxes.resolve(sandbox_id))
        check_pod_ready(pod.state, pod.ready and pod.state.id not in self._closing)
        check_request(cfg, pod.state)
        if any(m.recursive_read_only for m in cfg.mounts):
            await asyncio.to_thread(check_handler_has_rro, cfg, pod.state.runtime_handler, self.deps.config)
        record, lowers = await self._image(cfg.image, "image")
        volumes = tuple([await self._volume(n, m.image) for n, m in enumerate(cfg.mounts) if m.image])
        used = [record.id, *(v.image_id for v in volumes)]
        if gone := [i for i in used if not self._images.available(i)]:  # a RemoveImage while we looked
            raise NotFound(f"image {gone[0]} was removed; pull it again")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._creating.setdefault(pod.state.id, []).append(done)
        self._pending_images.update(used)
        try:
            return await self._create(pod, cfg, record, lowers, volumes)
        finally:
            done.set_result(None)
            self._creating[pod.state.id].remove(done)
            if not self._creating[pod.state.id]:
                del self._creating[pod.state.id]
            self._pending_images.subtract(used)
            self._pending_images += collections.Counter()  # drops the zeros

    async def _image(self, ref: str, what: str) -> tuple[ImageRecord, tuple[str, ...]]:
        """The image and its layers' links, top first (as found in a thread, or known since)."""
        record = await self._images.find(ref)
        lowers = self._images.layer_links(record) if record is not None else None
        if record is None or lowers is None:  # a layer missing too
            raise NotFound(f"{what} {ref} not found in the image store; pull it first")
        return record, lowers

    async def _volume(self, index: int, ref: str) -> VolumeSource:
        record, lowers = await self._image(ref, f"image volume (mounts[{index}])")
        return VolumeSource(index, record.id, ref, lowers)

    async def _create(self, pod: SandboxView, cfg: ContainerConfig, record: ImageRecord, lowers: tuple[str, ...],
                      volumes: tuple[VolumeSource, ...]) -> str:
        image = self._images.view(record)
        stop_signal = cfg.stop_signal or image_stop_signal(image.config.get("config"))
        container_id = naming.new_id()
        ctx = ContainerContext(
            id=container_id, config=cfg, sandbox=pod.state, name=container_name(cfg, pod.state.config),
            image=image, image_ref=cfg.image,
            lowers=lowers, volumes=volumes,
            created_at=time.time_ns(), log_path=str(Path(pod.state.log_directory) / log_name(cfg)), stop_signal=stop_signal,
            target_pid=self._target_pid(cfg, pod.state.id) if cfg.pid_mode == NsMode.TARGET else 0)
        idle: set[type[DepsStep]] = {ImageVolumes} if not volumes else set()
        if not pod.state.userns_path:  # no ID-mapped clones of host paths to make
            idle.add(IdmapBinds)
        tx = Transaction("CreateContainer", steps(self.deps, frozenset(idle)), tx_id=container_id,
                         journal=self._journal, faults=self._faults, observer=self._observer, log=log,
                         commit_file=str(self.deps.container_dir(container_id) / STATE_FILE))
        ctx.completed = tx.completed
        await tx.run(ctx)
        assert ctx.state is not None  # the last step saved it
        self._table.add(container_id, ctx.state)
        self._creates.begin(ctx.state)
        self._events.publish(container_id, pod.state.id, EventType.CREATED)
        return container_id

    def _target_pid(self, cfg: ContainerConfig, sandbox_id: str) -> int:
        """The init pid of the running container of the same pod whose PID namespace a TARGET container joins."""
        where = "config.linux.security_context.namespace_options.target_id"
        if not cfg.pid_target_id:
            raise InvalidArgument(f"{where} must name a container for pid mode TARGET")
        target = self._table.get(self._table.resolve(cfg.pid_target_id))
        if target.sandbox_id != sandbox_id:
            raise InvalidArgument(f"{where}: container {target.id} is in another pod")
        status = self._statuses.status(target)
        if status != ContainerStatus.RUNNING or not target.pid:
            raise FailedPrecondition(f"{where}: container {target.id} is {status.value}, not running")
        return target.pid

    async def close_pod(self, sandbox_id: str) -> None:
        """From now on the pod gets no new container, and the creations in
        flight finish (or unwind) before its containers are stopped or removed:
        none is left behind in a pod that is gone."""
        self._closing = {i for i in self._closing if self._sandboxes.known(i)} | {sandbox_id}
        if pending := self._creating.get(sandbox_id):
            await asyncio.wait(list(pending))

    def reopen_pod(self, sandbox_id: str) -> None:
        """The pod was not stopped after all: it may get containers again."""
        self._closing.discard(sandbox_id)

    def pending_users(self, image_id: str) -> list[str]:
        """The creations in flight that use `image_id`, for RemoveImage's refusal."""
        if self._pending_images[image_id]:
            return [f"{self._pending_images[image_id]} container creation(s) in flight"]
        return []

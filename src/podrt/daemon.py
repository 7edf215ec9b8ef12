"""Wiring: config -> managers -> gRPC server; start-up recovery and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from podrt.aio.blocking import BlockingDetector
from podrt.aio.priority import prioritize_loop_thread
from podrt.aio.tasks import TaskOwner
from podrt.api.warm import start_warming
from podrt.config import Config
from podrt.container.events import EVENT_QUEUE, EventBus
from podrt.container.manager import ContainerManager
from podrt.container.spec import build_container_spec
from podrt.cri import hooks
from podrt.cri.image import ImageService
from podrt.cri.runtime import RuntimeService
from podrt.errors import FailedPrecondition, StartError
from podrt.host.fsutil import usage
from podrt.host.idmap import IdmapSupport
from podrt.host.oom import effective_oom_score_adj
from podrt.images.manager import ImageManager
from podrt.images.pause import PauseImage, PauseSource
from podrt.network.cni import CniInvoker
from podrt.network.cniconf import network_finder
from podrt.node.check import required_binaries
from podrt.node.metrics import Metrics
from podrt.node.status import RuntimeStatusManager
from podrt.oci.runtime import OciRuntime
from podrt.rollback import FaultPlan, StepRegistry
from podrt.sandbox.infra_spec import infra_spec
from podrt.sandbox.manager import SandboxManager
from podrt.server import CriServer, listen_unix, remove_socket
from podrt.state.idindex import IdIndex
from podrt.state.journal import Journal
from podrt.state.names import NameRegistry
from podrt.steps.container.context import ContainerDeps
from podrt.steps.sandbox.context import SandboxDeps
from podrt.streaming.server import StreamServer

log = logging.getLogger(__name__)

CUT_ANSWER_WAIT = 2.0


@contextlib.contextmanager
def start_phase(what: str) -> Iterator[None]:
    """A host error while starting ends the daemon with one line saying what and
    where (cli prints PodrtError messages), not with a traceback."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in what else ""
        raise StartError(f"{what}: {exc.strerror or exc}{where}") from None


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.tasks = TaskOwner()
        self.root = Path(config.root)
        self.runroot = Path(config.runroot)
        with start_phase(f"cannot create the state directory {self.root}"):
            self.journal = Journal(self.root / "journal")
        self.steps = StepRegistry()
        self.faults = FaultPlan.parse(list(config.debug.fault_points))
        if config.debug.fault_points:
            log.warning("debug fault points armed: %s", ", ".join(config.debug.fault_points))
        find_network = network_finder(config)
        idmap = IdmapSupport(self.root)  # tried once, when a pod with a user namespace or Status first asks
        self.status = RuntimeStatusManager(config, find_network, idmap=idmap)
        rt = config.runtime
        self.deps = SandboxDeps(
            config=config,
            names=NameRegistry(),
            ids=IdIndex(),
            cni=CniInvoker(list(config.network.plugin_dirs), self.root / "cni-cache",
                           timeout=config.network.plugin_timeout),
            find_network=find_network,
            runtimes={
                name: OciRuntime(h.runtime_path, h.runtime_root, rt.conmon, handler_name=name)
                for name, h in rt.runtimes.items()
            },
            pause_image=self._pause_image,
            oom_score_adj=effective_oom_score_adj(rt.infra_oom_score_adj),
            build_spec=infra_spec,
            idmap=idmap,
        )
        self.sandboxes = SandboxManager(self.deps, registry=self.steps, journal=self.journal, faults=self.faults,
                                        observer=self.metrics, tasks=self.tasks)
        self.images = ImageManager(config, self.deps.images_dir)
        self.pause = PauseSource(self.images, config.image)
        self.containers = ContainerManager(
            ContainerDeps(config=config, names=self.deps.names, ids=IdIndex(), runtimes=self.deps.runtimes,
                          build_spec=build_container_spec),
            sandboxes=self.sandboxes, images=self.images, registry=self.steps, journal=self.journal,
            faults=self.faults, observer=self.metrics,
            events=EventBus(EVENT_QUEUE, on_drop=self.metrics.container_events_dropped.inc), tasks=self.tasks)
        self.sandboxes.lifecycle.stop_containers = self.containers.lifecycle.stop_pod
        self.sandboxes.lifecycle.remove_containers = self.containers.lifecycle.remove_pod
        self.images.users = lambda image_id: self.sandboxes.image_users(image_id) + self.containers.image_users(image_id)
        self.streams = StreamServer(config.api, self.containers.streams, self.metrics, config.debug.stream_token_ttl)
        chunk = min(config.api.list_chunk_size, config.api.max_msg_size)  # a Stream* list's messages
        self.server = CriServer(
            [RuntimeService(self.status, self.sandboxes, self.containers, self.streams, chunk),
             ImageService(self.images, self._writable_usage, chunk)],
            max_msg_size=config.api.max_msg_size,
        )
        hooks.install(self.server, self.metrics)
        self._lock: IO[str] | None = None
        self._lag_probe: asyncio.Task[None] | None = None
        self.blocking = BlockingDetector()

    async def _writable_usage(self) -> tuple[Path, int, int]:
        """The writable layers of pods and containers, all under the root."""
        dirs = self.sandboxes.usage_dirs() + self.containers.usage_dirs()
        return (self.root, *await asyncio.to_thread(usage, dirs))

    async def _pause_image(self) -> PauseImage:
        return await self.pause.get()

    @property
    def socket_path(self) -> Path:
        return Path(self.config.api.listen)

    def _take_lock(self) -> None:
        """One daemon per root: two would unwind each other's journals."""
        lock_path = self.root / "podrt.lock"
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FailedPrecondition(f"another podrt is running with root {self.config.root} (lock {lock_path} is held)") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    async def start(self) -> None:
        started = time.perf_counter()
        prioritize_loop_thread(self.config.loop_nice)  # before the daemon starts any thread or child
        start_warming()
        for directory in (self.root, self.runroot):
            with start_phase(f"cannot create the state directory {directory}"):
                directory.mkdir(parents=True, exist_ok=True, mode=0o711)
        missing = [f"{r.name}: {r.detail}" for r in required_binaries(self.config) if not r.ok]
        if missing:
            raise FailedPrecondition(f"host not ready ({'; '.join(missing)}); `podrt check` says how to fix it")
        with start_phase(f"cannot take the lock in {self.root}"):
            self._take_lock()
        try:
            with start_phase(f"cannot open the image store in {self.images.store.dir}"):
                await self.images.start()
            with start_phase(f"cannot prepare the pause image {self.pause.reference} in {self.deps.images_dir}"):
                await self.pause.start()
            with start_phase("cannot recover the state left by the previous run"):
                report = await self.journal.replay(self.steps, log)
                if report.transactions:
                    log.warning("unwound %d interrupted transaction(s) from the journal", len(report.transactions))
                await self.containers.lifecycle.removals.finish_retired()  # removals a crash or shutdown cut
                containers, unreadable = self.containers.saved()
                for path, problem in unreadable:
                    log.error("cannot restore container from %s: %s", path, problem)
                await self.sandboxes.restore(containers={c.id for c in containers})
                await self.containers.restore(containers, known_pods={v.state.id for v in self.sandboxes.list()})
                self.containers.watch_exits()
            with start_phase(f"cannot serve streaming on {self.config.api.stream_address}:{self.config.api.stream_port}"):
                await self.streams.start()
            with start_phase(f"cannot listen on {self.socket_path}"):
                await listen_unix(self.server, self.socket_path, self.config.api.socket_mode_int)
            if self.config.metrics.enable_metrics:
                with start_phase("cannot serve metrics"):
                    self.metrics.serve(self.config.metrics.metrics_host, self.config.metrics.metrics_port)
                self._lag_probe = asyncio.get_running_loop().create_task(self.metrics.probe_loop_lag(), name="loop-lag")
        except BaseException:
            await self.streams.close()
            await self.containers.close()
            await self.images.close()
            self._release_lock()
            raise
        gc.freeze()  # what start-up made lives as long as the daemon: full collections need not walk it again
        if self.config.debug.detect_blocking:  # from here on: start-up's own blocking work is over
            log.warning("debug: reporting blocking calls on the event loop")
            self.blocking.arm(asyncio.get_running_loop())
        log.info("podrt serving on %s (ready in %.0f ms)", self.socket_path, (time.perf_counter() - started) * 1000)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: no new calls; running ones answer within the grace period;
        then owned work gets what is left of it, and the rest is cut and unwound."""
        grace = self.config.api.shutdown_grace if grace is None else grace
        deadline = asyncio.get_running_loop().time() + grace
        log.info("shutting down: no new calls; running calls get up to %.0fs to answer", grace)
        if self.blocking.armed:  # shutdown may block (an exit watcher's last pass, update_now)
            self.blocking.disarm()
            log.warning("debug: %d blocking call(s) on the event loop were reported", self.blocking.count)
        self.server.stop_accepting()
        self.sandboxes.close()
        self.containers.events.close()  # event streams end now, so the server can go idle
        await self.streams.close()  # exec'd processes are killed, attaches detached: nothing outlives its client
        cut = await self.server.wait_idle(grace)
        if cut:
            log.warning("%d call(s) still running after the %.0fs grace period are cut", cut, grace)
        await self.tasks.drain(max(0.0, deadline - asyncio.get_running_loop().time()))
        if cut:  # calls whose work was cut now answer UNAVAILABLE; give them a moment to send it
            await self.server.wait_idle(CUT_ANSWER_WAIT)
        self.server.close()
        await self.server.wait_closed()
        remove_socket(self.socket_path)
        await self.containers.close()
        await self.images.close()
        if self._lag_probe is not None:
            self._lag_probe.cancel()
        self.metrics.close()
        self._release_lock()
        log.info("stopped")

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def serve_until_signal(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()

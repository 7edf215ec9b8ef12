"""Containers: what cri/ calls, wired from one module per RPC group (as
CRI-O's server/ and containerd's internal/cri/server keep them):

- create.py: CreateContainer (a transaction of steps); runtime_create.py: its
  runc container, made after the answer, which what needs it waits for
- lifecycle.py: start, stop, remove, update resources, reopen log; a pod's stop and removal;
  removals.py: a removed container's teardown, after the answer
- streams.py: ExecSync, the targets of Exec and Attach, the streaming sessions' calls
- status.py: status derivation from conmon's exit file, views, ContainerStatus' verbose info
- exits.py: the exit watcher; stats.py: usage; metrics.py: the readings of
  ListPodSandboxMetrics; recovery.py: restore after a restart
- checkpoint.py: CheckpointContainer (cri/ calls `checkpoints` directly)

A container's state lives in memory (one StateStore, shared by these parts)
and in its state.json. This module knows no gRPC.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from pathlib import Path

from podrt.aio.tasks import TaskOwner
from podrt.container.checkpoint import ContainerCheckpoints
from podrt.container.create import OWN_KINDS, ContainerCreator
from podrt.container.events import EventBus
from podrt.container.exits import ExitWatcher
from podrt.container.lifecycle import ContainerLifecycle
from podrt.container.metrics import PodMetrics
from podrt.container.recovery import ContainerRecovery
from podrt.container.runtime_create import RuntimeCreates
from podrt.container.stats import ContainerUsage, PodSample, Sample
from podrt.container.status import ContainerStatuses, ContainerView
from podrt.container.streams import ContainerStreams
from podrt.images.manager import ImageManager
from podrt.model.container import ContainerConfig, Resources
from podrt.rollback import FaultPlan, StepRegistry, TxObserver
from podrt.sandbox.manager import SandboxManager, SandboxView
from podrt.state.format import CONTAINER_FORMAT
from podrt.state.journal import Journal
from podrt.state.records import ContainerState
from podrt.state.store import StateStore
from podrt.steps.base import DepsStep
from podrt.steps.container.context import ContainerDeps
from podrt.steps.container.volumes import ImageVolumes

__all__ = ["ContainerManager", "ContainerView"]


def uses_image(state: ContainerState, image_id: str) -> bool:
    """The container runs from `image_id` or mounts it as a volume."""
    return state.image_id == image_id or any(p.kind == ImageVolumes.kind and image_id in p.data["images"] for p in state.steps)


class ContainerManager:
    def __init__(self, deps: ContainerDeps, *, sandboxes: SandboxManager, images: ImageManager, registry: StepRegistry,
                 journal: Journal, faults: FaultPlan | None, observer: TxObserver | None, events: EventBus,
                 tasks: TaskOwner) -> None:
        self.deps, self.events = deps, events
        self._table = StateStore(deps.ids, "container", deps.containers_dir, CONTAINER_FORMAT)
        self.statuses = ContainerStatuses(deps, self._table)
        self.usage = ContainerUsage(deps, self.statuses)
        self.metrics = PodMetrics(deps, self.statuses)  # ListPodSandboxMetrics' readings (cri/metrics.py)
        self.exits = ExitWatcher(deps, self._table, self.statuses, events)
        self.creates = RuntimeCreates(deps, self._table, events, tasks)
        self.creator = ContainerCreator(deps, self._table, self.statuses, sandboxes=sandboxes, images=images,
                                        events=events, creates=self.creates, journal=journal.volatile(), faults=faults,
                                        observer=observer)
        self.lifecycle = ContainerLifecycle(deps, self._table, self.statuses, exits=self.exits, creator=self.creator,
                                            creates=self.creates, events=events, forget=self.usage.forget,
                                            tasks=tasks)
        self.streams = ContainerStreams(deps, self._table, self.statuses)
        self.recovery = ContainerRecovery(deps, self._table, self.statuses, teardown=self.lifecycle.teardown,
                                          creates=self.creates)
        self.checkpoints = ContainerCheckpoints(deps, self._table, self.statuses, sandboxes)
        for cls in OWN_KINDS:  # crash replay of the journaled ones
            registry.register(cls.kind, self._undo_factory(cls))

    def _undo_factory(self, cls: type[DepsStep]) -> Callable[[], DepsStep]:
        return lambda: cls(self.deps)

    # ---- the RPCs ------------------------------------------------------------

    async def create(self, sandbox_id: str, cfg: ContainerConfig) -> str:
        return await self.creator.create(sandbox_id, cfg)

    async def start(self, id_prefix: str) -> None:
        await self.lifecycle.start(id_prefix)

    async def stop(self, id_prefix: str, timeout: float) -> None:
        await self.lifecycle.stop(id_prefix, timeout)

    async def remove(self, id_prefix: str) -> None:
        await self.lifecycle.remove(id_prefix)

    async def update_resources(self, id_prefix: str, resources: Resources) -> None:
        await self.lifecycle.update_resources(id_prefix, resources)

    async def reopen_log(self, id_prefix: str) -> None:
        await self.lifecycle.reopen_log(id_prefix)

    async def exec_sync(self, id_prefix: str, cmd: tuple[str, ...], timeout: float) -> tuple[int, bytes, bytes]:
        return await self.streams.exec_sync(id_prefix, cmd, timeout)

    def stream_target(self, id_prefix: str, *, stdin: bool = False, tty: bool | None = None) -> str:
        return self.streams.stream_target(id_prefix, stdin=stdin, tty=tty)

    def view(self, container_id: str) -> ContainerView:
        return self.statuses.view(container_id)

    def list(self, match: Callable[[ContainerView], bool] = lambda _v: True,
             ids: Iterable[str] | None = None) -> builtins.list[ContainerView]:
        return self.statuses.list(match, ids)

    async def inspect(self, view: ContainerView) -> dict[str, object]:
        return await self.statuses.inspect(view)

    async def stats(self, views: Iterable[ContainerView]) -> builtins.list[tuple[ContainerView, Sample]]:
        return await self.usage.stats(views)

    async def pod_stats(self, pods: Iterable[SandboxView]
                        ) -> builtins.list[tuple[SandboxView, PodSample, builtins.list[tuple[ContainerView, Sample]]]]:
        return await self.usage.pod_stats(pods)

    # ---- look up -------------------------------------------------------------

    def resolve(self, id_prefix: str) -> str:
        return self._table.resolve(id_prefix)

    def matching_ids(self, prefix: str) -> builtins.list[str]:
        return self._table.matching_ids(prefix)

    def known(self, container_id: str) -> bool:
        return container_id in self._table

    def __len__(self) -> int:
        return len(self._table)

    def image_users(self, image_id: str) -> builtins.list[str]:
        """What keeps RemoveImage from removing `image_id`: containers from it or with it as a volume, creations in flight."""
        users = [f"container {s.id} ({s.name})" for s in self._table.values() if uses_image(s, image_id)]
        removed = [f"removed container {s.id} ({s.name}), its teardown under way"
                   for s in self.lifecycle.removals.pending() if uses_image(s, image_id)]
        return users + removed + self.creator.pending_users(image_id)

    def usage_dirs(self) -> builtins.list[Path]:
        """Their writable layers, for ImageFsInfo."""
        return [self.deps.container_dir(i) / "rootfs" / "upper" for i in self._table]

    # ---- the daemon's start and stop ---------------------------------------------

    def saved(self) -> tuple[builtins.list[ContainerState], builtins.list[tuple[Path, str]]]:
        """At start: the containers on disk, and (path, problem) of unreadable ones."""
        return self._table.read_all()

    async def restore(self, states: builtins.list[ContainerState], known_pods: set[str]) -> None:
        await self.recovery.restore(states, known_pods)
        await self.checkpoints.recover(states)

    def watch_exits(self) -> None:
        self.exits.start()

    async def close(self) -> None:
        """At shutdown: event streams end, the watch stops; recorded exits are
        saved (or read again from conmon's files at the next start)."""
        self.events.close()
        await self.exits.close()

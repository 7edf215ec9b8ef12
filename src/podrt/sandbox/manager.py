"""Pod sandboxes: what cri/ calls, wired from one module per RPC group:

- run.py: RunPodSandbox (a transaction of steps in a task the daemon owns)
- claims.py: pods kept for a retry when their caller left, removed unclaimed
- lifecycle.py: StopPodSandbox, RemovePodSandbox
- status.py: views (ready or not), verbose info, PortForward's netns
- resources.py: UpdatePodSandboxResources (cri/ calls its `resources` directly)
- recovery.py: restore after a restart

A pod's state lives in memory (one StateStore, shared by these parts) and in
its state.json. This module knows no gRPC.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from pathlib import Path

from podrt.aio.tasks import TaskOwner
from podrt.model.sandbox import SandboxConfig
from podrt.rollback import FaultPlan, StepRegistry, TxObserver
from podrt.sandbox import recovery
from podrt.sandbox.claims import Claims
from podrt.sandbox.lifecycle import SandboxLifecycle
from podrt.sandbox.resources import PodResources
from podrt.sandbox.run import STEP_CLASSES, SandboxRunner
from podrt.sandbox.status import SandboxStatuses, SandboxView
from podrt.state.format import SANDBOX_FORMAT
from podrt.state.journal import Journal
from podrt.state.store import StateStore
from podrt.steps.base import DepsStep
from podrt.steps.rootfs import Rootfs
from podrt.steps.sandbox.context import SandboxDeps

__all__ = ["SandboxManager", "SandboxView"]


class SandboxManager:
    def __init__(self, deps: SandboxDeps, *, registry: StepRegistry, journal: Journal, faults: FaultPlan | None,
                 observer: TxObserver | None, tasks: TaskOwner) -> None:
        self.deps = deps
        self._table = StateStore(deps.ids, "pod sandbox", deps.root / "sandboxes", SANDBOX_FORMAT)
        self.statuses = SandboxStatuses(deps, self._table)
        self.claims = Claims(deps, self._table, tasks, remove=self.remove)
        self.resources = PodResources(self._table)
        self.lifecycle = SandboxLifecycle(self._table, self.statuses, self.claims, registry=registry)
        self.runner = SandboxRunner(deps, self._table, self.statuses, self.claims, remove=self.remove,
                                    journal=journal, faults=faults, observer=observer, tasks=tasks)
        for cls in STEP_CLASSES:  # the undos a crash replay or a teardown may need
            registry.register(cls.kind, self._undo_factory(cls))

    def _undo_factory(self, cls: type[DepsStep]) -> Callable[[], DepsStep]:
        return lambda: cls(self.deps)

    # ---- the RPCs ------------------------------------------------------------

    async def run(self, cfg: SandboxConfig) -> str:
        return await self.runner.run(cfg)

    async def stop(self, id_prefix: str) -> None:
        await self.lifecycle.stop(id_prefix)

    async def remove(self, id_prefix: str) -> None:
        await self.lifecycle.remove(id_prefix)

    def view(self, sandbox_id: str) -> SandboxView:
        return self.statuses.view(sandbox_id)

    def list(self, match: Callable[[SandboxView], bool] = lambda _v: True,
             ids: Iterable[str] | None = None) -> builtins.list[SandboxView]:
        return self.statuses.list(match, ids)

    async def inspect(self, view: SandboxView) -> dict[str, object]:
        return await self.statuses.inspect(view)

    def forward_netns(self, id_prefix: str) -> tuple[str, str]:
        return self.statuses.forward_netns(id_prefix)

    # ---- look up -------------------------------------------------------------

    def resolve(self, id_prefix: str) -> str:
        return self._table.resolve(id_prefix)

    def matching_ids(self, prefix: str) -> builtins.list[str]:
        return self._table.matching_ids(prefix)

    def known(self, sandbox_id: str) -> bool:
        return sandbox_id in self._table

    def __len__(self) -> int:
        return len(self._table)

    def usage_dirs(self) -> builtins.list[Path]:
        """The pods' writable layers (overlay uppers), for ImageFsInfo."""
        return [self.deps.sandbox_dir(i) / "rootfs" / "upper" for i in self._table]

    def image_users(self, image_id: str) -> builtins.list[str]:
        """The pods whose infra runs from `image_id` (their Rootfs record names it)."""
        return [f"pod sandbox {state.id} ({state.pod_name})" for state in self._table.values()
                if any(s.kind == Rootfs.kind and s.data.get("image") == image_id for s in state.steps)]

    # ---- the daemon's start and stop ---------------------------------------------

    async def restore(self, containers: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Rebuild names, IDs and sandboxes from disk; check which infras still run.
        `containers`: their IDs, so their runc state is not taken for an orphan's."""
        await recovery.restore(self.deps, self._table, self.statuses, self.claims, containers)

    def close(self) -> None:
        """At shutdown: unclaimed pods stay marked so; the next start re-arms their timers."""
        self.claims.close()
        self.statuses.close()

"""The pod's cgroup paths, and conmon's own cgroup beside it."""

from __future__ import annotations

import asyncio
import errno
import time
from typing import Any

from podrt.aio import finish_in_thread
from podrt.host import cgroups
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext

BUSY_WAIT = 5.0


def _remove(path: str, prune_parent: str | None) -> None:
    """Blocking: an rmdir in every hierarchy (the kernel frees the cgroup's state)."""
    cgroups.remove(path, prune_parent=prune_parent)


class CgroupParent(SandboxStep):
    kind = "cgroup"

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        manager = self.deps.config.runtime.cgroup_manager
        parent, path = cgroups.sandbox_cgroup(manager, ctx.config.cgroup_parent, ctx.id)
        data: dict[str, Any] = {"parent": parent, "path": path, "conmon": "", "remove": []}
        if manager == "cgroupfs":  # with systemd, systemd owns the tree: nothing to make or remove
            conmon = cgroups.conmon_cgroup(parent, ctx.id)
            # podrt's default parent, or one runc is about to create for us: removed when
            # empty. A parent that exists already (the kubelet's) is left alone.
            ours = parent == cgroups.DEFAULT_CGROUPFS_PARENT or not cgroups.exists(parent)
            prune = parent if ours else None
            data.update(conmon=conmon, remove=[path, conmon], prune_parent=prune)
        return data

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        ctx.cgroup_parent, ctx.cgroups_path, ctx.conmon_cgroup = data["parent"], data["path"], data["conmon"]
        if ctx.conmon_cgroup:
            try:
                ctx.conmon_cgroup_procs = await finish_in_thread(cgroups.create, ctx.conmon_cgroup)
            except BaseException:
                await self.undo(data)
                raise

    async def undo(self, data: dict[str, Any]) -> None:
        deadline = time.monotonic() + BUSY_WAIT  # conmon exits just after its container
        for path in data["remove"]:
            while True:
                try:
                    await finish_in_thread(_remove, path, data.get("prune_parent"))
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.02)

"""The pod's cgroup paths, and conmon's own cgroup beside it."""

from __future__ import annotations

import asyncio
import errno
import time
from typing import Any

from podrt import cgroups
from podrt.sandbox.context import SandboxContext
from podrt.steps.base import SandboxStep


BUSY_WAIT = 5.0


class CgroupParent(SandboxStep):
    kind = "cgroup"

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        manager = self.deps.config.runtime.cgroup_manager
        parent, path = cgroups.sandbox_cgroup(manager, ctx.config.cgroup_parent, ctx.id)
        ctx.cgroup_parent, ctx.cgroups_path = parent, path
        if manager == "systemd":  # systemd owns the tree; nothing for podrt to make or remove
            return {"manager": manager, "remove": []}
        ctx.conmon_cgroup = cgroups.conmon_cgroup(parent, ctx.id)
        prune = parent if parent == cgroups.DEFAULT_CGROUPFS_PARENT else None
        return {"manager": manager, "remove": [path, ctx.conmon_cgroup], "prune_parent": prune}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        if ctx.conmon_cgroup:
            try:
                cgroups.create(ctx.conmon_cgroup)
            except BaseException:
                await self.undo(data)
                raise

    async def undo(self, data: dict[str, Any]) -> None:
        deadline = time.monotonic() + BUSY_WAIT  # conmon exits just after its container
        for path in data["remove"]:
            while True:
                try:
                    cgroups.remove(path, prune_parent=data.get("prune_parent"))
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.02)

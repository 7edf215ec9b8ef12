"""The pod's network namespace, pinned under podrt's netns dir (skipped for host network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.network.netns import create_netns, remove_netns
from podrt.sandbox.context import SandboxContext
from podrt.steps.base import SandboxStep


class NetNamespace(SandboxStep):
    kind = "netns"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"path": str(Path(self.deps.config.network.netns_dir) / ctx.id)}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        path = Path(data["path"])
        await create_netns(path.parent, path.name)
        ctx.netns_path = str(path)

    async def undo(self, data: dict[str, Any]) -> None:
        await remove_netns(Path(data["path"]))

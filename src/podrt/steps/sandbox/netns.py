"""The pod's network namespace, pinned under podrt's netns dir, with its
loopback up (skipped for host network). podrt brings lo up itself
(network/links.py), so pod networks need no loopback plugin. A pod with a
user namespace gets a netns that namespace owns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.network.netns import create_netns, remove_netns
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext


class NetNamespace(SandboxStep):
    kind = "netns"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"path": str(Path(self.deps.config.network.netns_dir) / ctx.id)}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        path = Path(data["path"])
        await create_netns(path.parent, path.name, Path(ctx.userns_path) if ctx.userns_path else None)  # lo up in it
        ctx.netns_path = str(path)

    async def undo(self, data: dict[str, Any]) -> None:
        await remove_netns(Path(data["path"]))

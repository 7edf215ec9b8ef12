"""The pod's own user namespace (userns_options mode POD), pinned under
podrt's userns dir with the pod's uid and gid maps (host/nspin.py); skipped
for pods in the node's. Its processes run in it (runc joins it by path), its
netns is made in it (NetNamespace), its files are ID-mapped into it (Rootfs).
Released at StopPodSandbox, as the netns is: nothing of the pod runs after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.host.nspin import create_userns, remove_pin
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext


class PodUserns(SandboxStep):
    kind = "userns"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"path": str(Path(self.deps.config.runtime.userns_dir) / ctx.id)}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        u = ctx.config.userns
        await create_userns(Path(data["path"]), "".join(m.line() for m in u.uids), "".join(m.line() for m in u.gids))
        ctx.userns_path = data["path"]

    async def undo(self, data: dict[str, Any]) -> None:
        await remove_pin(Path(data["path"]))

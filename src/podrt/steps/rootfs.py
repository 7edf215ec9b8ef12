"""The infra container's root: the builtin pause image's layer as it is, or
an overlay of a pulled pause image's layers with a writable upper of the
pod's own. The record names the image, so an image a pod runs from is not
removed under it (SandboxManager.image_users)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from podrt import mounts, overlay
from podrt.errors import FailedPrecondition
from podrt.sandbox.context import SandboxContext
from podrt.steps.base import SandboxStep


class Rootfs(SandboxStep):
    kind = "rootfs"

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        assert ctx.pause is not None, "resolved before the transaction"
        shared = ctx.pause.rootfs is not None
        return {"image": ctx.pause.image_id, "dir": None if shared else str(self.deps.sandbox_dir(ctx.id) / "rootfs")}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        assert ctx.pause is not None
        if data["dir"] is None:
            ctx.rootfs = str(ctx.pause.rootfs)
            return
        base = Path(data["dir"])
        try:
            for part in ("upper", "work", "merged"):
                (base / part).mkdir(parents=True, mode=0o700)
            await overlay.mount(self.deps.images_dir, ctx.pause.lowers, base / "upper", base / "work", base / "merged")
        except overlay.TooManyLayers as exc:
            await self.undo(data)
            raise FailedPrecondition(f"pause image {ctx.pause.reference}: {exc}") from None
        except BaseException:
            await self.undo(data)
            raise
        ctx.rootfs = str(base / "merged")

    async def undo(self, data: dict[str, Any]) -> None:
        if data.get("dir") is None:
            return
        base = Path(data["dir"])
        while mounts.umount(str(base / "merged")):  # lazy, and again for anything stacked on it
            pass
        if base.exists():
            shutil.rmtree(base)

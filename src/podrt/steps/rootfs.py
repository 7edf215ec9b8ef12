"""A container's root (a pod's infra or a workload container): an overlay of
its image's layers with a writable upper of its own, or, for the builtin
pause image, its layer as it is. The record names the image, so an image
something runs from is not removed under it (the managers' image_users)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from podrt import mounts, overlay
from podrt.errors import FailedPrecondition
from podrt.steps.base import DepsStep


class Rootfs(DepsStep):
    kind = "rootfs"

    def record(self, ctx: Any) -> dict[str, Any]:
        source = ctx.rootfs_source(self.deps)
        return {"image": source.image_id, "dir": None if source.shared is not None else str(source.dir)}

    async def do(self, ctx: Any, data: dict[str, Any]) -> None:
        source = ctx.rootfs_source(self.deps)
        if data["dir"] is None:
            ctx.rootfs = str(source.shared)
            return
        base = Path(data["dir"])
        try:
            base.mkdir(parents=True, mode=0o700)
            for part, mode in (("upper", 0o755), ("work", 0o700), ("merged", 0o755)):
                (base / part).mkdir(mode=mode)  # the upper's mode is the root's: 0700 would lock out non-root users
            await overlay.mount(self.deps.images_dir, source.lowers, base / "upper", base / "work", base / "merged")
        except overlay.TooManyLayers as exc:
            await self.undo(data)
            raise FailedPrecondition(f"image {source.image_name}: {exc}") from None
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

"""The pod's /dev/shm: a tmpfs in the run dir (skipped with host IPC)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from podrt.host import mounts
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext


class ShmMount(SandboxStep):
    kind = "shm"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"path": str(self.deps.run_dir(ctx.id) / "shm")}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        path = data["path"]
        Path(path).mkdir(mode=0o1777)
        try:
            size = self.deps.config.runtime.shm_size_bytes
            mounts.mount("shm", path, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC, f"mode=1777,size={size}")
        except BaseException:
            os.rmdir(path)
            raise
        ctx.shm_path = path

    async def undo(self, data: dict[str, Any]) -> None:
        mounts.umount(data["path"])
        try:
            os.rmdir(data["path"])
        except FileNotFoundError:
            pass

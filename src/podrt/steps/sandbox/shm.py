"""The pod's /dev/shm: a tmpfs in the run dir (skipped with host IPC), its
root owned by the pod's root where the pod has a user namespace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.host import mounts
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import SandboxContext


class ShmMount(SandboxStep):
    kind = "shm"
    stop_phase = True
    blocking = True  # a mkdir and a mount: in a worker thread

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"path": str(self.deps.run_dir(ctx.id) / "shm")}

    def do_blocking(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        path = data["path"]
        Path(path).mkdir(mode=0o1777)
        try:
            options = f"mode=1777,size={self.deps.config.runtime.shm_size_bytes}"
            if ctx.config.own_userns:  # the pod's root owns it, as it sees it
                options += ",uid={},gid={}".format(*ctx.config.userns.root)
            mounts.mount("shm", path, "tmpfs", mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC, options)
        except BaseException:
            os.rmdir(path)
            raise
        ctx.shm_path = path

    async def undo(self, data: dict[str, Any]) -> None:
        await finish_in_thread(_remove, data["path"])  # an umount: off the event loop


def _remove(path: str) -> None:
    mounts.umount(path)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass

"""The container's OCI spec, written to its bundle (run dir) and state dir."""

from __future__ import annotations

import os
from typing import Any

from podrt.aio import finish_in_thread
from podrt.container.context import ContainerContext
from podrt.container.spec import build_container_spec
from podrt.steps.base import DepsStep
from podrt.steps.sandbox.spec import write_spec


class ContainerSpec(DepsStep):
    kind = "ctr-spec"
    journaled = False  # files in the container's dirs: the storage undo removes them

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        return {"files": [str(self.deps.run_dir(ctx.id) / "config.json"), str(self.deps.container_dir(ctx.id) / "config.json")]}

    async def do(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        ctx.spec = await finish_in_thread(build_container_spec, ctx, self.deps.config)  # reads the image's /etc/passwd
        try:
            await finish_in_thread(write_spec, data["files"], ctx.spec)
        except BaseException:
            await self.undo(data)
            raise

    async def undo(self, data: dict[str, Any]) -> None:
        for f in data["files"]:
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass

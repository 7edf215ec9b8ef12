"""The container's OCI spec, written to its bundle (run dir) and state dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.steps.container.context import ContainerContext, ContainerDeps
from podrt.steps.spec_files import WriteSpec, write_spec


class ContainerSpec(WriteSpec[ContainerContext, ContainerDeps]):
    kind = "ctr-spec"

    def files(self, ctx: ContainerContext) -> list[str]:
        return [str(self.deps.run_dir(ctx.id) / "config.json"), str(self.deps.container_dir(ctx.id) / "config.json")]

    async def build(self, ctx: ContainerContext) -> dict[str, Any]:
        return await finish_in_thread(self.deps.build_spec, ctx, self.deps.config)  # reads the image's /etc/passwd

    async def do(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        """Built and written in one trip to a worker thread (each trip costs
        a few tenths of a ms on CreateContainer's path)."""
        try:
            ctx.spec = await finish_in_thread(self._build_and_write, ctx, data["files"])
        except BaseException:
            await self.undo(data)
            raise

    async def undo(self, data: dict[str, Any]) -> None:
        """WriteSpec's removal, in a thread: a removal's teardown makes no unlink on the loop."""
        await finish_in_thread(_remove, data["files"])

    def _build_and_write(self, ctx: ContainerContext, files: list[str]) -> dict[str, Any]:
        spec = self.deps.build_spec(ctx, self.deps.config)
        write_spec(files, spec)
        return spec


def _remove(files: list[str]) -> None:
    for f in files:
        Path(f).unlink(missing_ok=True)

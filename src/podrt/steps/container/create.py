"""`runc create` under a new conmon (CreateContainer); StartContainer runs `runc start` later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.container.context import ContainerContext
from podrt.oci.runtime import Stdio
from podrt.steps.base import DepsStep

CREATE_TIMEOUT = 60.0


class ContainerCreate(DepsStep):
    kind = "ctr-create"

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        run = self.deps.run_dir(ctx.id)
        return {"id": ctx.id, "handler": ctx.runtime_handler, "socket_dir": str(run),
                "exit_file": str(self.deps.exit_dir / ctx.id)}

    async def do(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        run = self.deps.run_dir(ctx.id)
        proc = await self.runtime(data["handler"]).create(
            ctx.id, run, log_path=Path(ctx.log_path), exit_dir=self.deps.exit_dir, persist_dir=run / "conmon",
            socket_dir=run, stdio=Stdio(ctx.config.stdin, ctx.config.stdin_once, ctx.config.tty), timeout=CREATE_TIMEOUT)
        ctx.pid, ctx.conmon_pid = proc.pid, proc.conmon_pid

    async def undo(self, data: dict[str, Any]) -> None:
        runtime = self.runtime(data["handler"])
        await runtime.stop(data["id"], timeout=0)  # a rollback or a removal: no grace
        await runtime.delete(data["id"], socket_dir=Path(data["socket_dir"]))
        Path(data["exit_file"]).unlink(missing_ok=True)

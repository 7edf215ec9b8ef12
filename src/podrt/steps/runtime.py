"""Start the infra container under conmon with the pod's OCI runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt import cgroups
from podrt.sandbox.context import SandboxContext
from podrt.steps.base import SandboxStep

STOP_TIMEOUT = 10.0
CREATE_TIMEOUT = 60.0


class InfraStart(SandboxStep):
    kind = "infra"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"id": ctx.id, "handler": ctx.runtime_handler, "stop_signal": self.deps.pause.stop_signal}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        runtime = self.deps.runtimes[ctx.runtime_handler]
        run = self.deps.run_dir(ctx.id)
        procs = cgroups.create(ctx.conmon_cgroup) if ctx.conmon_cgroup else []
        proc = await runtime.create(
            ctx.id,
            run,
            log_path=Path(ctx.infra_log_path),
            exit_dir=run / "exits",
            persist_dir=run / "conmon",
            socket_dir=run,
            conmon_cgroup_procs=[Path(p) for p in procs],
            timeout=CREATE_TIMEOUT,
        )
        try:
            await runtime.start(ctx.id)
        except BaseException:
            await self.undo(data)
            raise
        ctx.infra_pid, ctx.conmon_pid = proc.pid, proc.conmon_pid
        data.update(pid=proc.pid, conmon_pid=proc.conmon_pid)

    async def undo(self, data: dict[str, Any]) -> None:
        runtime = self.deps.runtimes[data["handler"]]
        await runtime.stop(data["id"], timeout=STOP_TIMEOUT, stop_signal=data["stop_signal"])
        await runtime.delete(data["id"])

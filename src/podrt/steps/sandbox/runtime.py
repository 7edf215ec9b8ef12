"""Start the infra container under conmon with the pod's OCI runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.errors import InvalidArgument
from podrt.oci.runtime import OciRuntimeError
from podrt.sandbox.context import SandboxContext
from podrt.steps.base import SandboxStep

SYSCTL_REFUSED = "write /proc/sys/"  # runc's words when the kernel rejects a sysctl
STOP_TIMEOUT = 10.0
CREATE_TIMEOUT = 60.0


class InfraStart(SandboxStep):
    kind = "infra"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"id": ctx.id, "handler": ctx.runtime_handler, "stop_signal": ctx.pause.stop_signal if ctx.pause else "SIGTERM"}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        runtime = self.runtime(ctx.runtime_handler)
        run = self.deps.run_dir(ctx.id)
        try:
            proc = await runtime.create(
                ctx.id,
                run,
                log_path=Path(ctx.infra_log_path),
                exit_dir=run / "exits",
                persist_dir=run / "conmon",
                socket_dir=run,
                conmon_cgroup_procs=[Path(p) for p in ctx.conmon_cgroup_procs],
                timeout=CREATE_TIMEOUT,
            )
        except OciRuntimeError as exc:
            if SYSCTL_REFUSED in str(exc):  # the request's value, which only the kernel can judge
                raise InvalidArgument(f"a sysctl value was refused by the kernel: {exc}") from None
            raise
        try:
            await runtime.start(ctx.id)
        except BaseException:
            await self.undo(data)
            raise
        ctx.infra_pid, ctx.conmon_pid = proc.pid, proc.conmon_pid
        data.update(pid=proc.pid, conmon_pid=proc.conmon_pid)

    async def undo(self, data: dict[str, Any]) -> None:
        runtime = self.runtime(data["handler"])
        await runtime.stop(data["id"], timeout=STOP_TIMEOUT, stop_signal=data["stop_signal"])
        await runtime.delete(data["id"])

"""Start the infra container under conmon with the pod's OCI runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.oci.runtime import RuntimeRefused
from podrt.steps.base import SandboxStep, runtime_for
from podrt.steps.sandbox.context import SandboxContext

SYSCTL_WORDS = ("/proc/sys/", "sysctl")  # runc's when it or the kernel rejects a sysctl
STOP_TIMEOUT = 10.0
CREATE_TIMEOUT = 60.0


def sysctl_refused(detail: str) -> InvalidArgument:
    """A sysctl only the kernel (or runc) can judge is the request's value."""
    return InvalidArgument(f"a sysctl was refused by the kernel or the runtime: {detail}")


def _refused(exc: RuntimeRefused) -> InvalidArgument | FailedPrecondition:
    """runc's refusal of the infra: a sysctl only runc or the kernel can judge
    is the request's value (InvalidArgument); anything else (a seccomp profile
    or cgroup parent runc cannot apply) the pod as configured (FailedPrecondition)."""
    if any(word in str(exc) for word in SYSCTL_WORDS):
        return sysctl_refused(str(exc))
    return FailedPrecondition(f"the OCI runtime refused the pod's infra container as configured: {exc}")


class InfraStart(SandboxStep):
    kind = "infra"
    stop_phase = True

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"id": ctx.id, "handler": ctx.runtime_handler, "stop_signal": ctx.pause.stop_signal if ctx.pause else "SIGTERM"}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        runtime = runtime_for(self.deps.runtimes, ctx.runtime_handler)
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
        except RuntimeRefused as exc:
            raise _refused(exc) from None
        try:
            await runtime.start(ctx.id)
        except BaseException as exc:
            await self.undo(data)
            if isinstance(exc, RuntimeRefused):
                raise _refused(exc) from None
            raise
        ctx.infra_pid, ctx.conmon_pid = proc.pid, proc.conmon_pid
        data.update(pid=proc.pid, conmon_pid=proc.conmon_pid)

    async def undo(self, data: dict[str, Any]) -> None:
        runtime = runtime_for(self.deps.runtimes, data["handler"])
        await runtime.stop(data["id"], timeout=STOP_TIMEOUT, stop_signal=data["stop_signal"],
                           pids=(data.get("pid", 0), data.get("conmon_pid", 0)))
        await runtime.delete(data["id"])

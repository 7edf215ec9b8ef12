"""`runc create` under a new conmon (CreateContainer); StartContainer runs `runc start` later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.errors import FailedPrecondition
from podrt.oci.runtime import RuntimeRefused, Stdio, remove_cgroup
from podrt.steps.base import ContainerStep, runtime_for
from podrt.steps.container.context import ContainerContext

CREATE_TIMEOUT = 60.0


def refusal(exc: RuntimeRefused) -> str:
    """The client's message for runc's refusal of a container: the request
    asked for what this image or host cannot do (FailedPrecondition, as the
    kubelet shows it in CreateContainerError / RunContainerError)."""
    return f"the OCI runtime refused the container as configured: {exc}"


class ContainerCreate(ContainerStep):
    kind = "ctr-create"

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        run = self.deps.run_dir(ctx.id)
        return {"id": ctx.id, "handler": ctx.runtime_handler, "socket_dir": str(run),
                "exit_file": str(self.deps.exit_dir / ctx.id), "cgroup": ctx.spec.get("linux", {}).get("cgroupsPath", "")}

    async def do(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        run = self.deps.run_dir(ctx.id)
        try:
            proc = await runtime_for(self.deps.runtimes, data["handler"]).create(
                ctx.id, run, log_path=Path(ctx.log_path), exit_dir=self.deps.exit_dir, persist_dir=run / "conmon",
                socket_dir=run, stdio=Stdio(ctx.config.stdin, ctx.config.stdin_once, ctx.config.tty), timeout=CREATE_TIMEOUT)
        except RuntimeRefused as exc:
            raise FailedPrecondition(refusal(exc)) from None
        ctx.pid, ctx.conmon_pid = proc.pid, proc.conmon_pid

    async def undo(self, data: dict[str, Any]) -> None:
        runtime = runtime_for(self.deps.runtimes, data["handler"])
        exit_file = Path(data["exit_file"])
        # a rollback or a removal: no grace; conmon's exit file is awaited, or it comes after its removal below
        await runtime.stop(data["id"], timeout=0, exit_dir=exit_file.parent)
        await runtime.delete(data["id"], socket_dir=Path(data["socket_dir"]))
        exit_file.unlink(missing_ok=True)
        if cgroup := data.get("cgroup"):  # runc cut down mid-create (a client's deadline) has no state to delete by
            await remove_cgroup(cgroup)

"""The container's runc container: `runc create` under a new conmon
(`create_in_runtime`); StartContainer runs `runc start` later.

`runc create` is not run inside CreateContainer's transaction: it costs
30-50 ms (runc's init, its namespaces, mounts and cgroup) against the few
ms of the rest, so it runs after the commit, in a task the daemon owns
(container/runtime_create.py), and StartContainer waits for it, as
containerd makes its shim's task at StartContainer. The step stays in the
transaction for its undo: its record, which says it was deferred, goes into
the container's teardown plan in the state record, written before the
create runs, so a rollback, a removal or a restart's teardown removes
whatever of the runc container was made, and recovery knows to make it
again (or adopt it) after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.oci.runtime import ContainerProcess, RuntimeRefused, Stdio, remove_cgroup
from podrt.state.records import ContainerState, PlanStep
from podrt.steps.base import ContainerStep, runtime_for
from podrt.steps.container.context import ContainerContext, ContainerDeps

CREATE_TIMEOUT = 60.0


def refusal(exc: RuntimeRefused) -> str:
    """The client's message for runc's refusal of a container: the request
    asked for what this image or host cannot do (FailedPrecondition, as the
    kubelet shows it in CreateContainerError / RunContainerError)."""
    return f"the OCI runtime refused the container as configured: {exc}"


async def create_in_runtime(deps: ContainerDeps, state: ContainerState) -> ContainerProcess:
    """`runc create` of a saved container under a new conmon; all or nothing
    (OciRuntime.create): RuntimeRefused, OciRuntimeError or OSError leave no
    conmon, runc state or cgroup behind."""
    run = deps.run_dir(state.id)
    cfg = state.config
    return await runtime_for(deps.runtimes, state.runtime_handler).create(
        state.id, run, log_path=Path(state.log_path), exit_dir=deps.exit_dir, persist_dir=run / "conmon",
        socket_dir=run, stdio=Stdio(cfg.stdin, cfg.stdin_once, cfg.tty), timeout=CREATE_TIMEOUT)


def deferred_create(state: ContainerState) -> PlanStep | None:
    """The plan step of a container whose runc create runs after its commit;
    None for one created in runc inside the transaction (records of an older podrt)."""
    return next((s for s in state.steps if s.kind == ContainerCreate.kind and s.data.get("deferred")), None)


class ContainerCreate(ContainerStep):
    kind = "ctr-create"
    # its do() makes nothing; its record reaches the disk in the state record, before the create runs
    journaled = False
    blocking = True  # nothing to do: it stays in the creation's one trip to a worker thread

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        run = self.deps.run_dir(ctx.id)
        return {"id": ctx.id, "handler": ctx.runtime_handler, "socket_dir": str(run),
                "exit_file": str(self.deps.exit_dir / ctx.id), "cgroup": ctx.spec.get("linux", {}).get("cgroupsPath", ""),
                "deferred": True}

    def do_blocking(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        """Nothing yet: the create runs once the container is saved (see the module's docstring)."""

    async def undo(self, data: dict[str, Any]) -> None:
        """`exited` (added by the removal of a container whose exit is recorded):
        nothing to stop, so no `runc state` to ask first (~6 ms)."""
        runtime = runtime_for(self.deps.runtimes, data["handler"])
        exit_file = Path(data["exit_file"])
        if not data.get("exited"):
            # a rollback or a removal: no grace; conmon's exit file is awaited, or it comes after its removal below
            await runtime.stop(data["id"], timeout=0, exit_dir=exit_file.parent)
        await runtime.delete(data["id"], socket_dir=Path(data["socket_dir"]), files=(exit_file,))
        if cgroup := data.get("cgroup"):  # runc cut down mid-create (a client's deadline) has no state to delete by
            await remove_cgroup(cgroup)

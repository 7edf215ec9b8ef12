"""Persist the container (and its teardown plan) last: from here on it survives restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.host.fsutil import fsync_dir
from podrt.model.container import spec_user
from podrt.state.format import CONTAINER_FORMAT
from podrt.state.records import ContainerState, plan_of
from podrt.state.store import STATE_FILE, write_record
from podrt.steps.base import ContainerStep
from podrt.steps.container.context import ContainerContext


class ContainerSaveState(ContainerStep):
    kind = "ctr-state"
    journaled = False  # a file in the container's dir: the storage undo removes it

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        return {"path": str(self.deps.container_dir(ctx.id) / STATE_FILE)}

    async def do(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        state = ContainerState(
            id=ctx.id, sandbox_id=ctx.sandbox.id, name=ctx.name, config=ctx.config, image_id=ctx.image.record.id,
            image_ref=ctx.image_ref, runtime_handler=ctx.runtime_handler, log_path=ctx.log_path,
            stop_signal=ctx.stop_signal, created_at=ctx.created_at,
            steps=plan_of(ctx.completed), cgroups_path=ctx.spec["linux"]["cgroupsPath"], pid=ctx.pid,
            conmon_pid=ctx.conmon_pid, user=spec_user(ctx.spec))
        await finish_in_thread(write_record, Path(data["path"]), CONTAINER_FORMAT, state)
        ctx.state = state

    async def undo(self, data: dict[str, Any]) -> None:
        """Durably: the state file is the creation's commit file (state.journal), so
        a crash later in the rollback must not find it and take the creation for committed."""
        await finish_in_thread(_unlink_durably, Path(data["path"]))


def _unlink_durably(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)

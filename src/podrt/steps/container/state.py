"""Persist the container (and its teardown plan) last: from here on it survives restarts.

The record and the spec copy are written without fsyncs (3 of them, ~0.6 ms on
these disks): `make_durable` syncs them after the answer, beside the runc
create (runtime_create.py), which StartContainer waits for too. A crash of the
daemon alone loses nothing (the page cache holds them); a power loss before the
sync ends whatever runc made (under the runroot) and leaves the record whole,
missing, or empty (the rename reached the disk, the data did not): an empty one
is a creation that never committed, swept as one without a record (sandbox/orphans.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.host.fsutil import fsync_dir, fsync_path
from podrt.model.container import spec_user
from podrt.state.format import CONTAINER_FORMAT
from podrt.state.records import ContainerState, plan_of
from podrt.state.store import STATE_FILE, write_record
from podrt.steps.base import ContainerStep
from podrt.steps.container.context import ContainerContext
from podrt.steps.spec_files import SPEC_COPY


class ContainerSaveState(ContainerStep):
    kind = "ctr-state"
    journaled = False  # a file in the container's dir: the storage undo removes it
    blocking = True  # in the creation's one trip to a worker thread

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        return {"path": str(self.deps.container_dir(ctx.id) / STATE_FILE)}

    def do_blocking(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        state = ContainerState(
            id=ctx.id, sandbox_id=ctx.sandbox.id, name=ctx.name, config=ctx.config, image_id=ctx.image.record.id,
            image_ref=ctx.image_ref, runtime_handler=ctx.runtime_handler, log_path=ctx.log_path,
            stop_signal=ctx.stop_signal, created_at=ctx.created_at,
            steps=plan_of(ctx.completed), cgroups_path=ctx.spec["linux"]["cgroupsPath"], pid=ctx.pid,
            conmon_pid=ctx.conmon_pid, user=spec_user(ctx.spec))
        write_record(Path(data["path"]), CONTAINER_FORMAT, state, durable=False)
        ctx.state = state

    async def undo(self, data: dict[str, Any]) -> None:
        """Durably: the state file is the creation's commit file (state.journal), so
        a crash later in the rollback must not find it and take the creation for committed."""
        await finish_in_thread(_unlink_durably, Path(data["path"]))


def make_durable(container_dir: Path) -> None:
    """Blocking: the saved container's record and spec copy on the disk, and their names in its dir."""
    for path in (container_dir / STATE_FILE, container_dir / SPEC_COPY, container_dir):
        fsync_path(path)


def _unlink_durably(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)

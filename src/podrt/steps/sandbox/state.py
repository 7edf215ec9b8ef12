"""Persist the sandbox (and its teardown plan) last: from here on it survives restarts."""

from __future__ import annotations

import os
from typing import Any

from podrt.aio import finish_in_thread
from podrt.sandbox.store import STATE_FILE, save_state
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import IP_ANNOTATION, SandboxContext
from podrt.steps.spec_files import write_spec


class SaveState(SandboxStep):
    kind = "state"
    journaled = False  # a file in the sandbox dir: the storage undo removes it

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"path": str(self.deps.sandbox_dir(ctx.id) / STATE_FILE)}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        if ctx.ips:  # CNI ran beside the infra start, after the spec was written
            ctx.spec["annotations"][IP_ANNOTATION] = ",".join(ctx.ips)
            await finish_in_thread(write_spec, ctx.spec_files, ctx.spec)
        ctx.state = await finish_in_thread(save_state, ctx, data["path"])

    async def undo(self, data: dict[str, Any]) -> None:
        try:
            os.unlink(data["path"])
        except FileNotFoundError:
            pass

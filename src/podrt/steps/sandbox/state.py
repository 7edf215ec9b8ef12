"""Persist the sandbox (and its teardown plan) last: from here on it survives restarts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.state.format import SANDBOX_FORMAT
from podrt.state.records import SandboxState, plan_of
from podrt.state.store import STATE_FILE, write_record
from podrt.steps.base import SandboxStep
from podrt.steps.sandbox.context import IP_ANNOTATION, SandboxContext
from podrt.steps.spec_files import write_spec


def sandbox_record(ctx: SandboxContext) -> SandboxState:
    """The pod as created: the request, every decision of the steps, and their records."""
    return SandboxState(
        id=ctx.id, config=ctx.config, runtime_handler=ctx.runtime_handler, created_at=ctx.created_at,
        pod_name=ctx.pod_name, infra_name=ctx.infra_name, log_directory=ctx.log_directory, hostname=ctx.hostname,
        shm_path=ctx.shm_path, resolv_conf=ctx.resolv_conf, hostname_file=ctx.hostname_file,
        cgroup_parent=ctx.cgroup_parent, cgroups_path=ctx.cgroups_path, conmon_cgroup=ctx.conmon_cgroup,
        netns_path=ctx.netns_path, ips=list(ctx.ips), infra_pid=ctx.infra_pid, conmon_pid=ctx.conmon_pid,
        steps=plan_of(ctx.completed), userns_path=ctx.userns_path,
        ipc_path=ctx.ipc_path, uts_path=ctx.uts_path)


class SaveState(SandboxStep):
    kind = "state"
    journaled = False  # a file in the sandbox dir: the storage undo removes it

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {"path": str(self.deps.sandbox_dir(ctx.id) / STATE_FILE)}

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        if ctx.ips:  # CNI ran beside the infra start, after the spec was written
            ctx.spec["annotations"][IP_ANNOTATION] = ",".join(ctx.ips)
        state = sandbox_record(ctx)
        await finish_in_thread(_write, ctx.spec_files if ctx.ips else [], ctx.spec, Path(data["path"]), state)
        ctx.state = state

    async def undo(self, data: dict[str, Any]) -> None:
        try:
            os.unlink(data["path"])
        except FileNotFoundError:
            pass


def _write(spec_files: list[str], spec: dict[str, Any], path: Path, state: SandboxState) -> None:
    """The spec again (with the IPs), then the record that commits it: one worker trip."""
    if spec_files:
        write_spec(spec_files, spec)
    write_record(path, SANDBOX_FORMAT, state)

"""The infra container's OCI spec, written to the bundle (run dir) and the state dir."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from podrt.aio import finish_in_thread
from podrt.errors import InvalidArgument
from podrt.fsutil import atomic_write
from podrt.sandbox.annotations import sandbox_annotations
from podrt.sandbox.infra_spec import build_infra_spec
from podrt.sandbox.context import SandboxContext
from podrt.sandbox.model import InfraPlan
from podrt.sandbox.validate import pod_sysctls, seccomp_profile
from podrt.selinux import process_label
from podrt.steps.base import SandboxStep


def write_spec(files: list[str], spec: dict[str, Any]) -> None:
    payload = json.dumps(spec, indent=1).encode()
    for f in files:
        atomic_write(Path(f), payload)


class InfraSpec(SandboxStep):
    kind = "spec"
    journaled = False  # files in the sandbox dirs: the storage undo removes them

    def record(self, ctx: SandboxContext) -> dict[str, Any]:
        return {
            "files": [
                str(self.deps.run_dir(ctx.id) / "config.json"),
                str(self.deps.sandbox_dir(ctx.id) / "config.json"),
            ]
        }

    def plan(self, ctx: SandboxContext) -> InfraPlan:
        cfg, rt, pause = ctx.config, self.deps.config.runtime, ctx.pause
        assert pause is not None and ctx.rootfs, "the Rootfs step ran first"
        try:
            seccomp = seccomp_profile(cfg, self.deps.config)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        return InfraPlan(
            sandbox_id=ctx.id,
            config=cfg,
            rootfs=ctx.rootfs,
            process_args=pause.command,
            hostname="" if cfg.host_network else ctx.hostname,
            hostname_file=ctx.hostname_file,
            resolv_conf=ctx.resolv_conf,
            shm_path=ctx.shm_path,
            netns_path=ctx.netns_path,
            cgroups_path=ctx.cgroups_path,
            oom_score_adj=self.deps.oom_score_adj,
            cpu_shares=rt.infra_cpu_shares,
            sysctls=pod_sysctls(cfg, self.deps.config),
            seccomp=seccomp,
            annotations=sandbox_annotations(ctx, pause.stop_signal),
            selinux_label=process_label(cfg.selinux, shares_host=cfg.host_pid or cfg.host_ipc),
        )

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:
        ctx.spec = build_infra_spec(self.plan(ctx))
        ctx.spec_files = data["files"]
        try:
            await finish_in_thread(write_spec, data["files"], ctx.spec)
        except BaseException:
            await self.undo(data)
            raise

    async def undo(self, data: dict[str, Any]) -> None:
        for f in data["files"]:
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass

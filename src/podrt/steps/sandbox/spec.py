"""The infra container's OCI spec (InfraPlan from the pod's request and what
earlier steps decided), written by the shared WriteSpec phase."""

from __future__ import annotations

from typing import Any

from podrt.errors import InvalidArgument
from podrt.sandbox.annotations import sandbox_annotations
from podrt.sandbox.context import SandboxContext
from podrt.sandbox.infra_spec import build_infra_spec
from podrt.sandbox.model import InfraPlan
from podrt.sandbox.validate import pod_sysctls, seccomp_profile
from podrt.security.selinux import process_label
from podrt.steps.spec_files import WriteSpec


class InfraSpec(WriteSpec):
    kind = "spec"

    def files(self, ctx: SandboxContext) -> list[str]:
        return [str(self.deps.run_dir(ctx.id) / "config.json"), str(self.deps.sandbox_dir(ctx.id) / "config.json")]

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

    async def build(self, ctx: SandboxContext) -> dict[str, Any]:
        ctx.spec_files = self.files(ctx)  # rewritten with the pod's IPs by the last step
        return build_infra_spec(self.plan(ctx))

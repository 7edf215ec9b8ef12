"""The infra container's OCI spec, built by the manager's builder (SandboxDeps.build_spec)
and written by the shared WriteSpec phase."""

from __future__ import annotations

from typing import Any

from podrt.steps.sandbox.context import SandboxContext, SandboxDeps
from podrt.steps.spec_files import WriteSpec


class InfraSpec(WriteSpec[SandboxContext, SandboxDeps]):
    kind = "spec"

    def files(self, ctx: SandboxContext) -> list[str]:
        return [str(self.deps.run_dir(ctx.id) / "config.json"), str(self.deps.sandbox_dir(ctx.id) / "config.json")]

    def build(self, ctx: SandboxContext) -> dict[str, Any]:
        ctx.spec_files = self.files(ctx)  # rewritten with the pod's IPs by the last step
        return self.deps.build_spec(ctx, self.deps)

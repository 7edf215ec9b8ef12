"""The container's OCI spec, written to its bundle (run dir) and state dir."""

from __future__ import annotations

from typing import Any

from podrt.steps.container.context import ContainerContext, ContainerDeps
from podrt.steps.spec_files import WriteSpec


class ContainerSpec(WriteSpec[ContainerContext, ContainerDeps]):
    kind = "ctr-spec"
    build_in_thread = True  # the builder reads the image's /etc/passwd

    def files(self, ctx: ContainerContext) -> list[str]:
        return [str(self.deps.run_dir(ctx.id) / "config.json"), str(self.deps.container_dir(ctx.id) / "config.json")]

    def build(self, ctx: ContainerContext) -> dict[str, Any]:
        return self.deps.build_spec(ctx, self.deps.config)

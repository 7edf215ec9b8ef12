"""The container's OCI spec, written to its bundle (run dir) and state dir."""

from __future__ import annotations

from typing import Any

from podrt.steps.container.context import ContainerContext, ContainerDeps
from podrt.steps.spec_files import SPEC_COPY, WriteSpec


class ContainerSpec(WriteSpec[ContainerContext, ContainerDeps]):
    kind = "ctr-spec"
    synced = False  # with the record, after the answer (steps/container/state.py)

    def files(self, ctx: ContainerContext) -> list[str]:
        return [str(self.deps.run_dir(ctx.id) / SPEC_COPY), str(self.deps.container_dir(ctx.id) / SPEC_COPY)]

    def build(self, ctx: ContainerContext) -> dict[str, Any]:
        return self.deps.build_spec(ctx, self.deps.config)

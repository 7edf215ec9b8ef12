"""The base of podrt's sandbox steps: built with the daemon's dependencies."""

from __future__ import annotations

from typing import Any, ClassVar

from podrt.rollback import Step
from podrt.sandbox.context import SandboxContext, SandboxDeps


class SandboxStep(Step):
    """A step whose undo needs only its recorded data and the daemon's deps."""

    stop_phase: ClassVar[bool] = False  # undone by StopPodSandbox too

    def __init__(self, deps: SandboxDeps) -> None:
        self.deps = deps

    async def do(self, ctx: SandboxContext, data: dict[str, Any]) -> None:  # type: ignore[override]
        raise NotImplementedError

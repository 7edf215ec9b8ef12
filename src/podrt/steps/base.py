"""The base of podrt's sandbox steps: built with the daemon's dependencies."""

from __future__ import annotations

from typing import ClassVar

from podrt.rollback import Step
from podrt.sandbox.context import SandboxDeps


class SandboxStep(Step):
    """A step whose undo needs only its recorded data and the daemon's deps."""

    stop_phase: ClassVar[bool] = False  # undone by StopPodSandbox too

    def __init__(self, deps: SandboxDeps) -> None:
        self.deps = deps


"""The bases of podrt's steps: built with the daemon's services (deps)."""

from __future__ import annotations

from typing import Any, ClassVar

from podrt.rollback import Step


class DepsStep(Step):
    """A step whose undo needs only its recorded data and the daemon's
    services. `deps` is SandboxDeps or ContainerDeps: a shared phase uses
    only what both have (names, ids, images_dir)."""

    def __init__(self, deps: Any) -> None:
        self.deps = deps


class SandboxStep(DepsStep):
    stop_phase: ClassVar[bool] = False  # undone by StopPodSandbox too

"""The bases of podrt's steps: built with the daemon's services (deps)."""

from __future__ import annotations

from typing import Any, ClassVar

from podrt.errors import FailedPrecondition
from podrt.oci.runtime import OciRuntime
from podrt.rollback import Step


class DepsStep(Step):
    """A step whose undo needs only its recorded data and the daemon's
    services. `deps` is SandboxDeps or ContainerDeps: a shared phase uses
    only what both have (names, ids, images_dir)."""

    stop_phase: ClassVar[bool] = False  # a pod's: undone by StopPodSandbox too

    def __init__(self, deps: Any) -> None:
        self.deps = deps

    def runtime(self, handler: str) -> OciRuntime:
        return runtime_for(self.deps.runtimes, handler)


def runtime_for(runtimes: dict[str, OciRuntime], handler: str) -> OciRuntime:
    try:
        return runtimes[handler]
    except KeyError:
        raise FailedPrecondition(f"runtime handler {handler!r} is no longer configured; "
                                 "add it back to stop and remove what runs on it") from None


class SandboxStep(DepsStep):
    """One of RunPodSandbox's own phases (deps: SandboxDeps)."""

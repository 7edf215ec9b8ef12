"""The bases of podrt's steps: built with the daemon's services (deps), typed by the
context they build (Step[Ctx]) and the deps they use."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from podrt.errors import FailedPrecondition
from podrt.oci.runtime import OciRuntime
from podrt.rollback import Ctx, Step
from podrt.steps.container.context import ContainerContext, ContainerDeps
from podrt.steps.sandbox.context import SandboxContext, SandboxDeps

# contravariant: a step that needs only what both deps have (names, ids, images_dir) is
# built with either, and a step of Step[A] runs on any context that is an A
Deps = TypeVar("Deps", contravariant=True)


class DepsStep(Step[Ctx], Generic[Ctx, Deps]):
    """A step whose undo needs only its recorded data and the daemon's
    services. `deps` is SandboxDeps or ContainerDeps: a shared phase is typed
    by what both have (steps/context.py's protocols)."""

    stop_phase: ClassVar[bool] = False  # a pod's: undone by StopPodSandbox too

    def __init__(self, deps: Deps) -> None:
        self.deps = deps


def runtime_for(runtimes: dict[str, OciRuntime], handler: str) -> OciRuntime:
    try:
        return runtimes[handler]
    except KeyError:
        raise FailedPrecondition(f"runtime handler {handler!r} is no longer configured; "
                                 "add it back to stop and remove what runs on it") from None


SandboxStep = DepsStep[SandboxContext, SandboxDeps]  # one of RunPodSandbox's own phases
ContainerStep = DepsStep[ContainerContext, ContainerDeps]  # one of CreateContainer's own phases

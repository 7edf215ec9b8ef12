"""CreateContainer's manager logic, with the host steps faked (the name
and ID steps are the real ones): two creates of one name race and one wins;
a failed creation gives its name and ID back; a pod being stopped gets no new
container and waits for those in flight; images in use by a creation in flight
are reported as used."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import attrs
import pytest

from podrt.container import create
from podrt.container.create import ContainerCreator
from podrt.container.events import EventBus, EventType
from podrt.container.status import ContainerStatuses
from podrt.errors import AlreadyExists, FailedPrecondition, NotFound
from podrt.images.manager import ImageView
from podrt.model.container import ContainerConfig
from podrt.sandbox.status import SandboxView
from podrt.state.records import ContainerState
from podrt.steps.base import DepsStep
from podrt.steps.container.context import ContainerContext, ContainerDeps
from podrt.steps.names import IndexId, ReserveNames
from tests.unit.test_container_status import make_deps, make_state, make_store
from tests.unit.test_sandbox_run import make_sandbox

APP = ContainerConfig(name="app", image="busybox")


@attrs.frozen
class FakeRecord:
    id: str
    layers: tuple[str, ...] = ("sha256:l1",)


class FakeImages:
    def __init__(self) -> None:
        self.store = self
        self.known = {"busybox": FakeRecord("img-busybox")}

    async def find(self, ref: str) -> FakeRecord | None:
        return self.known.get(ref)

    def available(self, image_id: str) -> bool:
        return any(r.id == image_id for r in self.known.values())

    def layer_links(self, record: FakeRecord) -> tuple[str, ...]:
        return tuple(f"l/{layer}" for layer in reversed(record.layers))

    def view(self, record: FakeRecord) -> ImageView:
        return ImageView(record, {"config": {"StopSignal": "SIGINT"}})  # type: ignore[arg-type]


class FakeSandboxes:
    def __init__(self, view: SandboxView) -> None:
        self.pod = view

    def resolve(self, _prefix: str) -> str:
        return self.pod.state.id

    def view(self, _sandbox_id: str) -> SandboxView:
        return self.pod

    def known(self, _sandbox_id: str) -> bool:
        return True


class Gate(DepsStep):
    """Stands for the host steps: waits for the test, then saves the state (or fails)."""

    kind = "ctr-test-gate"
    journaled = False
    opened: asyncio.Event
    fail: bool = False

    def record(self, ctx: ContainerContext) -> dict[str, Any]:
        return {"id": ctx.id}

    async def do(self, ctx: ContainerContext, data: dict[str, Any]) -> None:
        await self.opened.wait()
        if self.fail:
            raise OSError("no space left on device")
        ctx.state = make_state(self.deps, ctx.id, name=ctx.name, stop_signal=ctx.stop_signal)

    async def undo(self, data: dict[str, Any]) -> None:
        return None


class FakeCreates:
    """runtime_create.RuntimeCreates: the runc creates begun after the commits."""

    def __init__(self) -> None:
        self.begun: list[str] = []

    def begin(self, state: ContainerState) -> None:
        self.begun.append(state.id)


class Harness:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.deps: ContainerDeps = make_deps(tmp_path)
        Gate.opened, Gate.fail = asyncio.Event(), False
        monkeypatch.setattr(create, "steps", lambda deps, _skip: [ReserveNames(deps), IndexId(deps), Gate(deps)])
        self.table = make_store(self.deps)
        self.events = EventBus(limit=100)
        self.published: list[tuple[str, EventType]] = []
        self.events.publish = lambda cid, _pod, kind: self.published.append((cid, kind))  # type: ignore[method-assign]
        pod = attrs.evolve(make_sandbox(tmp_path / "sandboxes", "p1"), log_directory=str(tmp_path / "logs"))
        self.creator = ContainerCreator(
            self.deps, self.table, ContainerStatuses(self.deps, self.table),
            sandboxes=FakeSandboxes(SandboxView(pod, ready=True)), images=FakeImages(),  # type: ignore[arg-type]
            events=self.events, creates=FakeCreates(), journal=None, faults=None, observer=None)  # type: ignore[arg-type]


async def test_two_creates_of_one_name_one_wins_the_other_is_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    first = asyncio.create_task(h.creator.create("p1", APP))
    await asyncio.sleep(0.01)  # the first holds the name, waiting on its host steps
    with pytest.raises(AlreadyExists, match="k8s_app_.*is reserved"):
        await h.creator.create("p1", APP)
    Gate.opened.set()
    winner = await first
    assert h.deps.names.owner(create.container_name(APP, h.creator._sandboxes.pod.state.config)) == winner
    assert list(h.table) == [winner] and len(h.deps.ids) == 1
    assert h.published == [(winner, EventType.CREATED)]
    assert h.creator._creates.begun == [winner]  # its runc create, after the commit  # type: ignore[attr-defined]
    assert h.table.get(winner).stop_signal == "SIGINT"  # the image's


async def test_a_failed_creation_gives_its_name_and_id_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    Gate.opened.set()
    Gate.fail = True
    with pytest.raises(OSError, match="no space"):
        await h.creator.create("p1", APP)
    assert len(h.deps.names) == 0 and len(h.deps.ids) == 0 and len(h.table) == 0
    assert h.creator._creates.begun == []  # type: ignore[attr-defined]
    assert h.creator.pending_users("img-busybox") == [] and not h.creator._creating
    Gate.fail = False
    assert await h.creator.create("p1", APP) in h.table  # the name is free again


async def test_a_closing_pod_waits_for_creations_in_flight_and_gets_no_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    creating = asyncio.create_task(h.creator.create("p1", APP))
    await asyncio.sleep(0.01)
    assert h.creator.pending_users("img-busybox") == ["1 container creation(s) in flight"]
    closing = asyncio.create_task(h.creator.close_pod("p1"))
    await asyncio.sleep(0.01)
    assert not closing.done()
    with pytest.raises(FailedPrecondition, match="not ready"):
        await h.creator.create("p1", attrs.evolve(APP, name="other"))
    Gate.opened.set()
    await closing
    assert creating.done() and await creating in h.table
    assert h.creator.pending_users("img-busybox") == []
    h.creator.reopen_pod("p1")  # its stop failed: it may get containers again
    assert await h.creator.create("p1", attrs.evolve(APP, name="other")) in h.table


async def test_an_image_not_in_the_store_is_not_found_before_anything_is_reserved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    with pytest.raises(NotFound, match="image nginx not found"):
        await h.creator.create("p1", attrs.evolve(APP, image="nginx"))
    assert len(h.deps.names) == 0 and not h.creator._creating

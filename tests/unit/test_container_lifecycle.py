"""Stop, remove and exits, with runc and the pod faked: an exit is saved and
announced once however many paths see it; a stop of a container whose conmon
is gone records the unknown exit itself; a container stopped before it
started counts its creation as its start; unknown IDs stop and remove
quietly; a pod's stop that fails lets the pod get containers again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from podrt.aio.tasks import TaskOwner
from podrt.container import status
from podrt.container.events import EventType
from podrt.container.exits import ExitWatcher
from podrt.container.lifecycle import ContainerLifecycle
from podrt.container.runtime_create import RuntimeCreates
from podrt.container.status import ContainerStatuses
from podrt.errors import FailedPrecondition
from podrt.model.container import ContainerStatus
from podrt.state.format import CONTAINER_FORMAT
from podrt.state.records import ContainerState, PlanStep
from podrt.state.store import RETIRED_FILE, STATE_FILE, write_record
from tests.unit.test_container_status import make_deps, make_state, make_store, write_exit


class FakeRuntime:
    """runc stop: conmon writes the exit file unless it is gone; or runc fails."""

    def __init__(self, deps: Any) -> None:
        self.deps, self.fail, self.conmon_gone = deps, False, False
        self.stopped: list[tuple[str, float, str]] = []

    async def stop(self, container_id: str, *, timeout: float, stop_signal: str = "SIGTERM", exit_dir: Path,
                   pids: tuple[int, int] | None = None, own_pidns: bool = False) -> None:
        if self.fail:
            raise OSError("runc: permission denied")
        self.stopped.append((container_id, timeout, stop_signal))
        if not self.conmon_gone:
            write_exit(self.deps, container_id, "143")

    async def delete(self, container_id: str, *, socket_dir: Path, files: Sequence[Path] = ()) -> None:
        self.stopped.append((container_id, -1, "delete"))
        for path in files:
            path.unlink(missing_ok=True)


class FakeCreator:
    def __init__(self) -> None:
        self.closed: list[str] = []
        self.reopened: list[str] = []

    async def close_pod(self, sandbox_id: str) -> None:
        self.closed.append(sandbox_id)

    def reopen_pod(self, sandbox_id: str) -> None:
        self.reopened.append(sandbox_id)


class Harness:
    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(status.cgroups, "oom_killed", lambda _path: False)
        self.deps = make_deps(tmp_path)
        self.runc = FakeRuntime(self.deps)
        self.deps.runtimes["runc"] = self.runc  # type: ignore[assignment]
        self.table = make_store(self.deps)
        self.published: list[tuple[str, EventType]] = []
        events: Any = type("Events", (), {"publish": lambda _s, cid, _pod, kind: self.published.append((cid, kind))})()
        self.statuses = statuses = ContainerStatuses(self.deps, self.table)
        self.exits = ExitWatcher(self.deps, self.table, statuses, events)
        self.creator = FakeCreator()
        self.tasks = TaskOwner()
        self.life = ContainerLifecycle(self.deps, self.table, statuses,
                                       exits=self.exits, creator=self.creator, events=events,  # type: ignore[arg-type]
                                       creates=RuntimeCreates(self.deps, self.table, events, self.tasks),
                                       forget=lambda _cid: None, tasks=self.tasks)

    def add(self, container_id: str, **fields: Any) -> ContainerState:
        state = make_state(self.deps, container_id, **fields)
        self.deps.ids.add(container_id)
        self.deps.names.reserve(state.name, container_id)
        write_record(self.table.path(container_id), CONTAINER_FORMAT, state)
        self.table.add(container_id, state)
        return state

    def saved(self, container_id: str) -> dict[str, Any]:
        return json.loads(self.table.path(container_id).read_bytes())


async def test_an_exit_is_saved_and_announced_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.add("c1", started_at=2_000)
    write_exit(h.deps, "c1", "0")
    h.exits._written("c1")
    h.exits._written(None)  # the pass over the dir after the watch started sees it too
    await asyncio.gather(*h.exits._tasks)
    await h.life.stop("c1", 10)  # and a stop after it
    assert h.published == [("c1", EventType.STOPPED)]
    assert h.saved("c1")["exit_code"] == 0 and h.table.get("c1").saved_exit
    assert h.runc.stopped == []  # an exited container's init is gone: nothing to signal, no runc call


async def test_a_stop_records_the_exit_conmon_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.add("c1", started_at=2_000, stop_signal="SIGINT")
    await h.life.stop("c", 5)
    assert h.runc.stopped == [("c1", 5, "SIGINT")]
    state = h.table.get("c1")
    assert (state.exit_code, state.reason, h.saved("c1")["exit_code"]) == (143, "Error", 143)
    assert h.published == [("c1", EventType.STOPPED)]


async def test_a_stop_without_conmon_records_the_unknown_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.runc.conmon_gone = True
    h.add("c1", started_at=2_000, lost=True)
    await h.life.stop("c1", 0)
    state = h.table.get("c1")
    assert (state.exit_code, state.reason, state.lost) == (status.UNKNOWN_EXIT, "ContainerStatusUnknown", False)
    assert h.saved("c1")["exit_code"] == status.UNKNOWN_EXIT
    assert h.published == [("c1", EventType.STOPPED)]
    await h.life.stop("c1", 0)
    assert h.published == [("c1", EventType.STOPPED)]  # once


async def test_a_container_stopped_before_its_start_counts_its_creation_as_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.runc.conmon_gone = True  # runc killed it where it waited; no exit file (yet)
    h.add("c1")
    await h.life.stop("c1", 0)
    state = h.table.get("c1")
    assert state.started_at == state.created_at and state.exit_code is None
    assert h.saved("c1")["started_at"] == state.created_at  # saved though no exit came yet
    assert h.published == []


async def test_unknown_ids_stop_and_remove_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    await h.life.stop("nope", 1)
    await h.life.remove("nope")
    assert h.runc.stopped == [] and h.published == []


async def test_a_pods_failed_stop_lets_it_get_containers_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.add("c1", started_at=2_000)
    h.add("other", started_at=2_000, sandbox_id="p2")
    await h.life.stop_pod("p1")
    assert h.creator.closed == ["p1"] and h.creator.reopened == []
    assert [c for c, _t, _s in h.runc.stopped] == ["c1"]  # only the pod's own
    h.runc.fail = True
    h.add("c2", started_at=2_000)
    with pytest.raises(OSError, match="permission denied"):
        await h.life.stop_pod("p1")
    assert h.creator.reopened == ["p1"]


async def test_start_refuses_a_container_that_is_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.add("c1", started_at=2_000)
    with pytest.raises(FailedPrecondition, match="is running, not created"):
        await h.life.start("c1")
    write_exit(h.deps, "c1", "0")
    h.statuses.read_exit("c1")  # the exit watcher's read, on inotify's word
    with pytest.raises(FailedPrecondition, match="is exited, not created"):
        await h.life.start("c1")
    assert h.statuses.view("c1").status == ContainerStatus.EXITED


@pytest.mark.parametrize("exited", [True, False])
async def test_a_removal_stops_only_what_has_not_exited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        exited: bool) -> None:
    """A container whose exit conmon wrote has nothing to stop: its removal
    asks runc for the delete alone (no `runc state` first)."""
    h = Harness(tmp_path, monkeypatch)
    data = {"id": "c1", "handler": "runc", "socket_dir": str(h.deps.run_dir("c1")),
            "exit_file": str(h.deps.exit_dir / "c1"), "cgroup": "", "deferred": True}
    h.add("c1", started_at=2_000, pid=7, steps=(PlanStep("ctr-create", "ctr-create", data),))
    if exited:
        write_exit(h.deps, "c1", "0")
        h.statuses.read_exit("c1")  # the exit watcher's read, on inotify's word
    await h.life.remove("c1")
    await h.life.removals.settle_pod("p1")  # its teardown, after the answer
    assert h.runc.stopped == ([] if exited else [("c1", 0, "SIGTERM")]) + [("c1", -1, "delete")]
    assert "c1" not in h.table and not (h.deps.exit_dir / "c1").exists()


def create_step(h: Harness, container_id: str) -> PlanStep:
    data = {"id": container_id, "handler": "runc", "socket_dir": str(h.deps.run_dir(container_id)),
            "exit_file": str(h.deps.exit_dir / container_id), "cgroup": "", "deferred": True}
    return PlanStep("ctr-create", "ctr-create", data)


def plan(h: Harness, container_id: str) -> tuple[PlanStep, ...]:
    """Its runc container, then its dirs, name and ID, as a creation records them."""
    storage = {"dirs": [str(h.deps.container_dir(container_id)), str(h.deps.run_dir(container_id))], "log_file": ""}
    return (PlanStep("names", "ctr-names", {"id": container_id, "names": [f"k8s_{container_id}"]}),
            PlanStep("id", "ctr-id", {"id": container_id}), PlanStep("ctr-storage", "ctr-storage", storage),
            create_step(h, container_id))


async def test_a_removal_answers_before_its_teardown_and_frees_name_and_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once RemoveContainer answered, no call sees the container, its name can
    be taken again, and its record is retired on disk; runc's delete and the
    dirs' removal come after, and its pod's removal waits for them."""
    h = Harness(tmp_path, monkeypatch)
    write_exit(h.deps, "c1", "0")
    state = h.add("c1", started_at=2_000, pid=7, steps=plan(h, "c1"))
    h.statuses.read_exit("c1")
    release = asyncio.Event()
    real_delete = h.runc.delete

    async def slow_delete(container_id: str, *, socket_dir: Path, files: Sequence[Path] = ()) -> None:
        await release.wait()
        await real_delete(container_id, socket_dir=socket_dir, files=files)

    h.runc.delete = slow_delete  # type: ignore[method-assign]
    await asyncio.wait_for(h.life.remove("c1"), 5)  # not waiting for the delete
    assert "c1" not in h.table and h.deps.ids.matching("c") == [] and state.name not in h.deps.names
    assert h.published == [("c1", EventType.DELETED)]
    retired = h.deps.container_dir("c1") / RETIRED_FILE
    assert retired.exists() and not (h.deps.container_dir("c1") / STATE_FILE).exists()
    assert [s.id for s in h.life.removals.pending("p1")] == ["c1"] and h.life.removals.pending("p2") == []
    await h.life.remove("c1")  # again: nothing to do
    settled = asyncio.ensure_future(h.life.removals.settle_pod("p1"))
    await asyncio.sleep(0.01)
    assert not settled.done() and h.runc.stopped == []  # the pod's removal waits for the teardown
    release.set()
    await settled
    assert h.runc.stopped == [("c1", -1, "delete")]
    assert not h.deps.container_dir("c1").exists() and h.life.removals.pending() == []


async def test_a_failed_teardown_is_tried_again_by_the_pods_removal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, monkeypatch)
    h.add("c1", started_at=2_000, pid=7, steps=plan(h, "c1"))
    h.runc.fail = True  # runc stop fails: the container still runs
    await h.life.remove("c1")
    await asyncio.gather(*h.tasks._tasks)
    assert [s.id for s in h.life.removals.pending("p1")] == ["c1"]
    assert (h.deps.container_dir("c1") / RETIRED_FILE).exists()  # a restart would try again too
    with pytest.raises(RuntimeError, match="removal of container c1 incomplete"):
        await h.life.removals.settle_pod("p1")
    h.runc.fail = False
    await h.life.removals.settle_pod("p1")
    assert h.life.removals.pending() == [] and not h.deps.container_dir("c1").exists()
    assert h.runc.stopped == [("c1", 0, "SIGTERM"), ("c1", -1, "delete")]


async def test_a_start_finishes_the_teardowns_a_crash_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon that died after a removal answered left removing.json: the
    next one tears the container down from it before it restores anything,
    and restores nothing of it."""
    h = Harness(tmp_path, monkeypatch)
    h.add("c1", started_at=2_000, pid=7, steps=plan(h, "c1"))
    h.add("c2", started_at=2_000, pid=8, steps=plan(h, "c2"))
    await h.table.retire("c1")  # what RemoveContainer writes before it answers; then the crash
    again = Harness(tmp_path, monkeypatch)
    await again.life.removals.finish_retired()
    assert again.runc.stopped == [("c1", 0, "SIGTERM"), ("c1", -1, "delete")]
    assert not h.deps.container_dir("c1").exists() and again.life.removals.pending() == []
    states, bad = again.table.read_all()
    assert [s.id for s in states] == ["c2"] and bad == []

"""Restart recovery's decisions, with fakes of runc and of the conmon check:
an exit file settles it; a live conmon keeps the container (and a start podrt
did not record is read from runc); without its conmon, a container runc still
runs is unknown, and one that is gone exited unseen (255, saved)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podrt.aio.tasks import TaskOwner
from podrt.container import recovery, status
from podrt.container.events import EventBus
from podrt.container.recovery import ContainerRecovery
from podrt.container.runtime_create import RuntimeCreates
from podrt.container.status import ContainerStatuses
from podrt.model.container import ContainerStatus
from podrt.state.format import CONTAINER_FORMAT
from podrt.state.records import ContainerState, PlanStep
from podrt.state.store import write_record
from podrt.steps.container.context import ContainerDeps
from tests.unit.test_container_status import CREATED_AT, make_deps, make_state, make_store, write_exit


class FakeRuntime:
    """runc's `state`: a status, None (runc does not know it), or a failure; `during` runs while asked."""

    def __init__(self, answer: str | None | Exception, during: Any = None) -> None:
        self.answer, self.during, self.asked = answer, during, 0

    async def state(self, _container_id: str) -> dict[str, Any] | None:
        self.asked += 1
        if self.during is not None:
            self.during()
        if isinstance(self.answer, Exception):
            raise self.answer
        return None if self.answer is None else {"status": self.answer}


def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: FakeRuntime, *,
          conmon_alive: bool) -> tuple[ContainerDeps, ContainerRecovery, list[str]]:
    monkeypatch.setattr(status.cgroups, "oom_killed", lambda _path: False)
    monkeypatch.setattr(recovery.conmon, "monitors", lambda pid, _cid: conmon_alive and pid == 42)
    deps = make_deps(tmp_path)
    deps.runtimes["runc"] = runtime  # type: ignore[assignment]
    table = make_store(deps)
    torn: list[str] = []

    async def teardown(state: ContainerState) -> None:
        torn.append(state.id)

    creates = RuntimeCreates(deps, table, EventBus(limit=10), TaskOwner())
    return deps, ContainerRecovery(deps, table, ContainerStatuses(deps, table), teardown=teardown, creates=creates), torn


def saved_doc(rec: ContainerRecovery, state: ContainerState) -> dict[str, Any]:
    return json.loads(rec._table.path(state.id).read_bytes())


async def check(rec: ContainerRecovery, state: ContainerState) -> ContainerState:
    """check_monitor of a restored container: its record after."""
    rec._table.add(state.id, state)
    await rec.check_monitor(state)
    return rec._table.get(state.id)


async def test_an_exit_file_settles_it_without_asking_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runc = FakeRuntime("running")
    deps, rec, _ = setup(tmp_path, monkeypatch, runc, conmon_alive=False)
    state = make_state(deps, conmon_pid=42, started_at=2_000)
    write_exit(deps, "c1", "2")
    after = await check(rec, state)
    assert after is state and runc.asked == 0  # the exit watcher's first pass records it
    now = status.current(after, deps)
    assert (now.exit_code, now.reason, now.lost) == (2, "Error", False)


async def test_a_live_conmon_of_a_started_container_keeps_it_running(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    runc = FakeRuntime(None)
    deps, rec, _ = setup(tmp_path, monkeypatch, runc, conmon_alive=True)
    state = await check(rec, make_state(deps, conmon_pid=42, started_at=2_000))
    assert runc.asked == 0
    assert status.derive(state, deps) == ContainerStatus.RUNNING


@pytest.mark.parametrize(("runc_says", "started"), [("running", True), ("stopped", True), ("created", False)])
async def test_a_start_podrt_did_not_record_is_read_from_runc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              runc_says: str, started: bool) -> None:
    deps, rec, _ = setup(tmp_path, monkeypatch, FakeRuntime(runc_says), conmon_alive=True)
    state = await check(rec, make_state(deps, conmon_pid=42))
    assert bool(state.started_at) == started
    assert rec._table.path(state.id).exists() == started  # saved only when it changed
    assert state.exit_code is None and not state.lost


@pytest.mark.parametrize("runc_says", ["running", "paused", "created"])
async def test_without_its_conmon_a_container_runc_still_runs_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                         runc_says: str) -> None:
    deps, rec, _ = setup(tmp_path, monkeypatch, FakeRuntime(runc_says), conmon_alive=False)
    state = await check(rec, make_state(deps, conmon_pid=42, started_at=2_000))
    assert state.lost and state.exit_code is None
    assert status.derive(state, deps) == ContainerStatus.UNKNOWN
    assert not rec._table.path(state.id).exists()  # nothing to save: lost is known only in memory


@pytest.mark.parametrize("runc_says", ["stopped", None, OSError("runc broke")])
async def test_without_its_conmon_a_gone_container_exited_unseen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 runc_says: str | None | Exception) -> None:
    deps, rec, _ = setup(tmp_path, monkeypatch, FakeRuntime(runc_says), conmon_alive=False)
    state = await check(rec, make_state(deps, conmon_pid=0))
    assert (state.exit_code, state.reason, state.started_at) == (status.UNKNOWN_EXIT, "ContainerStatusUnknown", CREATED_AT)
    assert state.saved_exit  # nothing to announce
    assert saved_doc(rec, state)["exit_code"] == status.UNKNOWN_EXIT


async def test_a_pid_taken_by_another_process_is_no_conmon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deps, rec, _ = setup(tmp_path, monkeypatch, FakeRuntime("stopped"), conmon_alive=True)
    state = await check(rec, make_state(deps, conmon_pid=43, started_at=2_000))  # the fake conmon check knows only pid 42
    assert state.exit_code == status.UNKNOWN_EXIT


async def test_an_exit_written_while_runc_was_asked_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runc = FakeRuntime("stopped")
    deps, rec, _ = setup(tmp_path, monkeypatch, runc, conmon_alive=False)
    runc.during = lambda: write_exit(deps, "c1", "0")  # conmon wrote it and left while podrt looked
    state = await check(rec, make_state(deps, conmon_pid=42, started_at=2_000))
    assert state.exit_code is None and not rec._table.path(state.id).exists()  # no unknown exit: the watcher records it
    now = status.current(state, deps)
    assert (now.exit_code, now.reason, runc.asked) == (0, "Completed", 1)


async def test_restore_keeps_the_containers_of_known_pods_and_tears_down_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deps, rec, torn = setup(tmp_path, monkeypatch, FakeRuntime("running"), conmon_alive=True)
    kept = make_state(deps, "k1", conmon_pid=42, started_at=2_000)
    orphan = make_state(deps, "o1", conmon_pid=42, started_at=2_000, sandbox_id="gone")
    await rec.restore([kept, orphan], known_pods={"p1"})
    assert torn == ["o1"]
    assert deps.names.owner("k8s_k1") == "k1" and "k8s_o1" not in deps.names
    assert deps.ids.get("k", "container") == "k1"
    assert "k1" in rec._table and "o1" not in rec._table


async def test_restore_goes_on_when_an_orphans_teardown_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deps, rec, _ = setup(tmp_path, monkeypatch, FakeRuntime("running"), conmon_alive=True)

    async def failing(_state: ContainerState) -> None:
        raise RuntimeError("umount busy")

    rec._teardown = failing
    orphan = make_state(deps, "o1", sandbox_id="gone")
    await rec.restore([orphan, make_state(deps, "k1", conmon_pid=42, started_at=2_000)], known_pods={"p1"})
    assert list(rec._table) == ["k1"]


def test_saved_reads_the_state_files_under_the_root(tmp_path: Path) -> None:
    deps = make_deps(tmp_path)
    state = make_state(deps, "c1", started_at=2_000)
    write_record(deps.container_dir("c1") / "state.json", CONTAINER_FORMAT, state)
    (deps.container_dir("bad")).mkdir(parents=True)
    (deps.container_dir("bad") / "state.json").write_text("{")
    states, bad = make_store(deps).read_all()
    assert states == [state] and [p.parent.name for p, _ in bad] == ["bad"]


def deferred(deps: ContainerDeps, **fields: Any) -> ContainerState:
    """A container saved by CreateContainer before its runc create ran (no pid yet)."""
    data = {"id": "c1", "handler": "runc", "socket_dir": str(deps.run_dir("c1")),
            "exit_file": str(deps.exit_dir / "c1"), "cgroup": "", "deferred": True}
    return make_state(deps, steps=(PlanStep("ctr-create", "ctr-create", data),), **fields)


def remake_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, conmon_alive: bool,
                 undo_fails: bool = False) -> tuple[ContainerDeps, ContainerRecovery, list[str]]:
    """`done`: what recovery did: "undo" (of the cut create), "begin" (the create made again)."""
    deps, rec, _ = setup(tmp_path, monkeypatch, FakeRuntime(None), conmon_alive=conmon_alive)
    done: list[str] = []

    async def undo(_self: Any, data: dict[str, Any]) -> None:
        done.append("undo")
        if undo_fails:
            raise OSError("cgroup busy")

    monkeypatch.setattr(recovery.ContainerCreate, "undo", undo)
    monkeypatch.setattr(rec._creates, "begin", lambda state: done.append("begin"))
    persist = deps.run_dir("c1") / "conmon"
    persist.mkdir(parents=True)
    (persist / "conmon.pid").write_text("42")
    (persist / "pidfile").write_text("4242")
    return deps, rec, done


async def test_a_create_done_before_the_restart_is_adopted_from_its_conmon(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    deps, rec, done = remake_setup(tmp_path, monkeypatch, conmon_alive=True)
    await rec.restore([deferred(deps)], known_pods={"p1"})
    state = rec._table.get("c1")
    assert (state.pid, state.conmon_pid, done) == (4242, 42, [])
    assert status.derive(state, deps) == ContainerStatus.CREATED  # runc says `created`: no start to record


async def test_a_create_cut_by_the_restart_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deps, rec, done = remake_setup(tmp_path, monkeypatch, conmon_alive=False)
    await rec.restore([deferred(deps)], known_pods={"p1"})
    assert done == ["undo", "begin"]  # what it left goes first
    state = rec._table.get("c1")
    assert state.pid == 0 and status.derive(state, deps) == ContainerStatus.CREATED


async def test_a_cut_create_whose_leftovers_stay_is_a_start_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deps, rec, done = remake_setup(tmp_path, monkeypatch, conmon_alive=False, undo_fails=True)
    await rec.restore([deferred(deps)], known_pods={"p1"})
    state = rec._table.get("c1")
    assert done == ["undo"] and (state.exit_code, state.reason) == (128, "StartError")
    assert "cgroup busy" in state.message and saved_doc(rec, state)["reason"] == "StartError"


@pytest.mark.parametrize("fields", [{"pid": 7}, {"started_at": 2_000}, {"exit_code": 0}])
async def test_a_container_past_its_create_is_not_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             fields: dict[str, Any]) -> None:
    deps, rec, done = remake_setup(tmp_path, monkeypatch, conmon_alive=False)
    await rec.restore([deferred(deps, **fields)], known_pods={"p1"})
    assert done == []

"""A container's status from its state and conmon's exit file, without a
daemon: created, running, exited (code, time, reason: Completed, Error,
OOMKilled), unknown once its conmon is gone; a listing of the exit dir is
trusted over a read per container; the one exit-file reader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from podrt.config import Config
from podrt.container import status
from podrt.container.status import ContainerStatuses
from podrt.errors import NotFound
from podrt.model.container import ContainerConfig, ContainerStatus
from podrt.oci import exitfile
from podrt.state.format import CONTAINER_FORMAT
from podrt.state.idindex import IdIndex
from podrt.state.names import NameRegistry
from podrt.state.records import ContainerState
from podrt.state.store import StateStore
from podrt.steps.container.context import ContainerDeps

CREATED_AT = 1_000


def _no_spec(_ctx: object, _config: object) -> dict[str, Any]:
    raise AssertionError("no spec is built here")


def make_deps(tmp_path: Path) -> ContainerDeps:
    config = Config(root=str(tmp_path / "root"), runroot=str(tmp_path / "run"))
    deps = ContainerDeps(config=config, names=NameRegistry(), ids=IdIndex(), runtimes={}, build_spec=_no_spec)
    deps.exit_dir.mkdir(parents=True, exist_ok=True)
    return deps


def make_store(deps: ContainerDeps) -> StateStore[ContainerState]:
    return StateStore(deps.ids, "container", deps.root / "containers", CONTAINER_FORMAT)


def make_state(deps: ContainerDeps, container_id: str = "c1", **fields: object) -> ContainerState:
    deps.container_dir(container_id).mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = dict(id=container_id, sandbox_id="p1", name=f"k8s_{container_id}",
                                config=ContainerConfig(name="app"), image_id="img", image_ref="busybox",
                                runtime_handler="runc", log_path="/dev/null", stop_signal="SIGTERM",
                                created_at=CREATED_AT, steps=())
    return ContainerState(**{**made, **fields})


def write_exit(deps: ContainerDeps, container_id: str, text: str, mtime_ns: int = 5_000_000_000) -> None:
    path = deps.exit_dir / container_id
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def deps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ContainerDeps:
    monkeypatch.setattr(status.cgroups, "oom_killed", lambda _path: False)  # no host cgroup is read
    return make_deps(tmp_path)


def test_created_then_running_while_there_is_no_exit_file(deps: ContainerDeps) -> None:
    state = make_state(deps)
    assert status.derive(state, deps) == ContainerStatus.CREATED
    state = attrs.evolve(state, started_at=2_000)
    assert status.derive(state, deps) == ContainerStatus.RUNNING
    assert status.current(state, deps) is state


@pytest.mark.parametrize(("text", "code", "reason"), [("0", 0, "Completed"), ("1\n", 1, "Error"),
                                                      ("-1", -1, "Error"), ("garbage", -1, "Error")])
def test_the_exit_file_gives_code_time_and_reason(deps: ContainerDeps, text: str, code: int, reason: str) -> None:
    state = make_state(deps, started_at=2_000)
    write_exit(deps, "c1", text, mtime_ns=7_000_000_000)
    assert status.derive(state, deps) == ContainerStatus.EXITED
    now = status.current(state, deps)
    assert (now.exit_code, now.finished_at, now.reason) == (code, 7_000_000_000, reason)
    assert now.started_at == 2_000
    assert not now.saved_exit  # the watcher records it
    assert state.exit_code is None and state == make_state(deps, started_at=2_000)  # a read changes nothing


def test_an_exit_without_a_recorded_start_counts_the_creation_as_its_start(deps: ContainerDeps) -> None:
    state = make_state(deps)
    write_exit(deps, "c1", "137")
    assert status.derive(state, deps) == ContainerStatus.EXITED
    assert status.current(state, deps).started_at == CREATED_AT and state.started_at == 0


def test_oom_killed_by_conmons_marker_or_the_cgroups_counter(deps: ContainerDeps, monkeypatch: pytest.MonkeyPatch) -> None:
    marked, counted, neither = (make_state(deps, i, started_at=2_000, cgroups_path=f"/{i}") for i in ("m", "c", "n"))
    for s in (marked, counted, neither):
        write_exit(deps, s.id, "137")
    (deps.run_dir("m") / "conmon").mkdir(parents=True)
    (deps.run_dir("m") / "conmon" / "oom").touch()
    monkeypatch.setattr(status.cgroups, "oom_killed", lambda path: path == "/c")
    assert [status.derive(s, deps) for s in (marked, counted, neither)] == [ContainerStatus.EXITED] * 3
    assert [status.current(s, deps).reason for s in (marked, counted, neither)] == ["OOMKilled", "OOMKilled", "Error"]


def test_a_zero_exit_is_completed_even_with_an_oom_marker(deps: ContainerDeps) -> None:
    state = make_state(deps, started_at=2_000)
    (deps.run_dir("c1") / "conmon").mkdir(parents=True)
    (deps.run_dir("c1") / "conmon" / "oom").touch()
    write_exit(deps, "c1", "0")
    assert status.current(state, deps).reason == "Completed"


def test_a_recorded_exit_wins_over_the_file_and_lost_is_unknown(deps: ContainerDeps) -> None:
    exited = make_state(deps, "e", started_at=2_000, exit_code=3, finished_at=9, reason="Error")
    write_exit(deps, "e", "0")
    assert status.derive(exited, deps) == ContainerStatus.EXITED
    assert status.current(exited, deps) is exited
    lost = make_state(deps, "l", started_at=2_000, lost=True)
    assert status.derive(lost, deps) == ContainerStatus.UNKNOWN


def test_the_views_show_an_exit_once_read_and_never_read_a_file(deps: ContainerDeps) -> None:
    table = make_store(deps)
    table.add("c1", make_state(deps, started_at=2_000))
    statuses = ContainerStatuses(deps, table)
    write_exit(deps, "c1", "0")
    assert statuses.view("c1").status == ContainerStatus.RUNNING  # the watcher has not read it yet
    assert statuses.read_exit("c1") is not None  # the watcher's read, in a thread
    assert statuses.view("c1").status == ContainerStatus.EXITED and statuses.view("c1").state.exit_code == 0
    assert table.get("c1").exit_code is None  # the view's; the watcher records it


def test_unknown_exit_is_255_with_its_reason_and_nothing_to_announce(deps: ContainerDeps) -> None:
    state = status.unknown_exit(make_state(deps, lost=True))
    assert (state.exit_code, state.reason) == (status.UNKNOWN_EXIT, "ContainerStatusUnknown")
    assert state.started_at == CREATED_AT and state.finished_at > 0
    assert not state.lost and state.saved_exit
    assert status.derive(state, deps) == ContainerStatus.EXITED


def test_views_list_the_known_ids(deps: ContainerDeps) -> None:
    table = make_store(deps)
    for i, started in (("a1", 0), ("a2", 2_000), ("b1", 2_000)):
        table.add(i, make_state(deps, i, started_at=started))
    write_exit(deps, "b1", "0")
    statuses = ContainerStatuses(deps, table)
    statuses.read_exit("b1")
    got = {v.state.id: (v.status, v.state.exit_code) for v in statuses.list()}
    assert got == {"a1": (ContainerStatus.CREATED, None), "a2": (ContainerStatus.RUNNING, None),
                   "b1": (ContainerStatus.EXITED, 0)}  # the view shows the exit
    assert table.get("b1").exit_code is None  # the store has it not: a read never writes
    running = statuses.list(lambda v: v.status == ContainerStatus.RUNNING, ids=["a2", "b1", "gone"])
    assert [v.state.id for v in running] == ["a2"]
    with pytest.raises(NotFound, match="container gone not found"):
        statuses.view("gone")


def test_the_exit_file_reader(tmp_path: Path) -> None:
    assert exitfile.read(tmp_path, "none") is None
    (tmp_path / "a").write_text("137\n")
    (tmp_path / "b").write_text("not a number")
    a, b = exitfile.read(tmp_path, "a"), exitfile.read(tmp_path, "b")
    assert a is not None and (a.code, a.text) == (137, "137")
    assert a.finished_at == (tmp_path / "a").stat().st_mtime_ns
    assert b is not None and (b.code, b.text) == (None, "not a number")

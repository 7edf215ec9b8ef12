"""A pod's readiness follows its infra's exit file through an inotify watch
(no stat per view, so a list of 1000 pods makes no 1000 stats): the exit
is seen without anyone looking, an exit before the watch too, and where no
watch can be had the file is looked at each view, as before."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from podrt.host.inotify import DirWatches
from podrt.model.sandbox import SandboxConfig
from podrt.sandbox.status import SandboxStatuses
from podrt.state.idindex import IdIndex
from podrt.state.records import SandboxState
from podrt.state.registry import Registry


class Deps:
    def __init__(self, run: Path) -> None:
        self.run = run

    def run_dir(self, sandbox_id: str) -> Path:
        return self.run / sandbox_id


def _state(sandbox_id: str) -> SandboxState:
    return SandboxState(id=sandbox_id, config=SandboxConfig(name=sandbox_id, uid="u", namespace="ns"), runtime_handler="runc",
                        created_at=1, pod_name="", infra_name="", log_directory="", hostname="", shm_path=None,
                        resolv_conf=None, hostname_file="", cgroup_parent="", cgroups_path="", conmon_cgroup="",
                        netns_path=None, ips=[], infra_pid=0, conmon_pid=0, steps=())


def _pods(tmp_path: Path, *ids: str, exit_dir: bool = True) -> SandboxStatuses:
    table: Registry[SandboxState] = Registry(IdIndex(), "pod sandbox")
    statuses = SandboxStatuses(Deps(tmp_path), table)  # type: ignore[arg-type]
    for i in ids:
        if exit_dir:
            (tmp_path / i / "exits").mkdir(parents=True)
        table.add(i, _state(i))
    return statuses


def _conmon_exit(tmp_path: Path, sandbox_id: str) -> None:
    """As conmon writes it: a temporary file renamed in."""
    tmp = tmp_path / sandbox_id / "exits" / f".{sandbox_id}.tmp"
    tmp.write_text("137")
    os.rename(tmp, tmp_path / sandbox_id / "exits" / sandbox_id)


async def _until(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not seen in time"
        await asyncio.sleep(0.005)


async def test_an_exit_is_seen_without_a_view_and_moves_the_version(tmp_path: Path) -> None:
    statuses = _pods(tmp_path, "a", "b")
    statuses.set_alive("a", True)
    statuses.set_alive("b", True)
    assert statuses.view("a").ready and statuses.view("b").ready
    version = statuses.version
    _conmon_exit(tmp_path, "a")
    await _until(lambda: statuses.version != version)
    assert not statuses.view("a").ready and statuses.view("b").ready
    assert "a" not in statuses._exits and "b" in statuses._exits  # a pod that exited needs no watch
    statuses.close()


async def test_an_exit_before_the_watch_is_seen_at_once(tmp_path: Path) -> None:
    statuses = _pods(tmp_path, "a")
    _conmon_exit(tmp_path, "a")
    statuses.set_alive("a", True)
    assert not statuses.view("a").ready
    statuses.close()


async def test_without_a_watch_the_file_is_looked_at_each_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_watch_left(_self: DirWatches, _key: str, directory: Path) -> None:
        raise OSError(errno.ENOSPC, "inotify_add_watch: no space left", str(directory))

    monkeypatch.setattr(DirWatches, "add", no_watch_left)
    statuses = _pods(tmp_path, "a")
    statuses.set_alive("a", True)
    assert statuses.view("a").ready
    _conmon_exit(tmp_path, "a")
    assert not statuses.view("a").ready


async def test_a_pod_without_an_exit_dir_has_no_infra_to_exit(tmp_path: Path) -> None:
    statuses = _pods(tmp_path, "a", exit_dir=False)
    statuses.set_alive("a", True)
    assert statuses.view("a").ready and "a" not in statuses._exits


async def test_lost_events_make_every_watched_pod_looked_at(tmp_path: Path) -> None:
    statuses = _pods(tmp_path, "a", "b")
    statuses.set_alive("a", True)
    statuses.set_alive("b", True)
    _conmon_exit(tmp_path, "b")
    statuses._written(None, None)  # the queue overflowed: before the event above is read
    assert statuses.view("a").ready and not statuses.view("b").ready
    version = statuses.version
    await asyncio.sleep(0.05)  # the event itself, read now, finds no watch
    assert statuses.version == version
    statuses.close()


async def test_stop_and_removal_take_the_watch_off(tmp_path: Path) -> None:
    statuses = _pods(tmp_path, "a", "b")
    statuses.set_alive("a", True)
    statuses.set_alive("b", True)
    statuses.set_alive("a", False)  # stopped
    statuses.forget("b")  # removed
    assert statuses._exits._wds == {} and statuses._exits._keys == {}
    statuses.close()
    assert statuses._exits._fd == -1

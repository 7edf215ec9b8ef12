"""The managers' shared plumbing: records by full ID and unique prefix,
one lock per ID, listing views, and the two-phase undo (a record's name and
ID are released only once all else is gone, so a failed removal can be retried)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from podrt.errors import InvalidArgument, NotFound
from podrt.rollback import Step
from podrt.state.idindex import IdIndex
from podrt.state.records import PlanStep
from podrt.state.registry import Registry, undo_records

log = logging.getLogger(__name__)


def test_records_by_full_id_and_unique_prefix() -> None:
    table: Registry[str] = Registry(IdIndex(), "container")
    for full_id in ("abc1", "abd2"):
        table.ids.add(full_id)
        table.add(full_id, f"state of {full_id}")
    assert table.resolve("abc") == "abc1" and table.get(table.resolve("abd")) == "state of abd2"
    with pytest.raises(InvalidArgument, match="ambiguous"):
        table.resolve("ab")
    with pytest.raises(NotFound, match="no container with ID 'abz'"):  # the index's own noun was "pod sandbox"
        table.resolve("abz")
    assert table.known_id("zzz") is None and table.known_id("abc") == "abc1"
    with pytest.raises(InvalidArgument):
        table.known_id("ab")  # only an unknown ID is taken as gone; an ambiguous one is the caller's error
    with pytest.raises(NotFound, match="container abc9 not found"):
        table.get("abc9")
    assert table.find("abc9") is None and table.matching_ids("ab") == ["abc1", "abd2"]
    assert table.pop("abc1") == "state of abc1" and "abc1" not in table and len(table) == 1


def test_one_lock_per_id_until_dropped() -> None:
    table: Registry[str] = Registry(IdIndex(), "pod sandbox")
    lock = table.lock("a")
    assert table.lock("a") is lock and table.lock("b") is not lock
    table.drop_lock("a")
    assert table.lock("a") is not lock


def test_views_of_known_ids_that_match() -> None:
    table: Registry[int] = Registry(IdIndex(), "x")
    for n, full_id in enumerate(("a", "b", "c")):
        table.add(full_id, n)
    assert table.views(table.get, lambda v: v != 1) == [0, 2]
    assert table.views(table.get, lambda _v: True, ids=["c", "gone", "a"]) == [2, 0]


class Undo(Step):
    def __init__(self, kind: str, done: list[str], fail: bool = False) -> None:
        self.kind, self._done, self._fail = kind, done, fail  # type: ignore[misc]

    async def do(self, ctx: Any, data: dict[str, Any]) -> None:
        raise AssertionError("not run here")

    async def undo(self, data: dict[str, Any]) -> None:
        if self._fail:
            raise OSError("device busy")
        self._done.append(self.kind)


def records(*kinds: str) -> list[PlanStep]:
    return [PlanStep(kind=k, name=k, data={}) for k in kinds]


async def test_the_released_last_kinds_go_after_all_the_others() -> None:
    done: list[str] = []
    steps = {k: Undo(k, done) for k in ("names", "id", "storage", "mount", "runtime")}
    await undo_records(records("names", "id", "storage", "mount", "runtime"), steps, what="removal of container c1",
                       log=log, released_last={"names", "id", "storage"})
    assert done == ["runtime", "mount", "storage", "id", "names"]  # each phase newest first


async def test_a_failed_phase_keeps_the_name_and_id_and_says_what_failed() -> None:
    done: list[str] = []
    steps = {"names": Undo("names", done), "mount": Undo("mount", done, fail=True), "spec": Undo("spec", done)}
    with pytest.raises(RuntimeError, match=r"^remove of pod sandbox p1 incomplete: mount: device busy$"):
        await undo_records(records("names", "mount", "spec"), steps, what="remove of pod sandbox p1",
                           log=log, released_last={"names"})
    assert done == ["spec"]  # the others of the phase still ran; the name stays reserved


async def test_without_released_last_one_phase_in_reverse() -> None:
    done: list[str] = []
    steps = {k: Undo(k, done) for k in ("names", "cni", "netns")}
    await undo_records(records("names", "cni", "netns"), steps, what="stop of pod sandbox p1", log=log)
    assert done == ["netns", "cni", "names"]

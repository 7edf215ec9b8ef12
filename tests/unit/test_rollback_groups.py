"""Concurrent groups of steps: every sibling that completed is undone, whatever failed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from podrt.rollback import FaultPlan, InjectedFault, Transaction
from podrt.state.journal import Journal
from tests.unit.test_rollback import Recorder, RecStep, journal_files


async def test_group_runs_concurrently_and_commits(tmp_path: Path) -> None:
    rec = Recorder()
    gate = asyncio.Event()
    blocked = RecStep(rec, "b", block_do=gate)
    other = RecStep(rec, "c")
    tx = Transaction("t", [RecStep(rec, "a"), [blocked, other], RecStep(rec, "d")], journal=Journal(tmp_path))
    run = asyncio.ensure_future(tx.run("ctx"))
    await blocked.do_started.wait()
    await asyncio.sleep(0)
    assert ("do", "c") in rec.events  # c ran while b was still blocked
    gate.set()
    report = await run
    assert [r.name for r in report.records] == ["a", "b", "c", "d"]
    assert journal_files(tmp_path) == []


async def test_sibling_failure_undoes_the_completed_sibling(tmp_path: Path) -> None:
    rec = Recorder()
    boom = RuntimeError("boom")
    tx = Transaction("t", [RecStep(rec, "a"), [RecStep(rec, "b", fail_do=boom), RecStep(rec, "c")], RecStep(rec, "d")],
                     journal=Journal(tmp_path))
    with pytest.raises(RuntimeError) as err:
        await tx.run("ctx")
    assert err.value is boom
    undos = [name for kind, name in rec.events if kind == "undo"]
    assert undos == ["c", "a"]  # b cleaned itself (atomic do), d never ran
    assert ("do", "d") not in rec.events
    assert journal_files(tmp_path) == []


async def test_cancel_during_group_undoes_finished_siblings(tmp_path: Path) -> None:
    rec = Recorder()
    never = asyncio.Event()
    blocked = RecStep(rec, "b", block_do=never)
    tx = Transaction("t", [RecStep(rec, "a"), [blocked, RecStep(rec, "c")]], journal=Journal(tmp_path))
    run = asyncio.ensure_future(tx.run("ctx"))
    await blocked.do_started.wait()
    await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert [name for kind, name in rec.events if kind == "undo"] == ["c", "a"]
    assert journal_files(tmp_path) == []


@pytest.mark.parametrize("when", ["before", "after"])
async def test_fault_points_reach_group_members(tmp_path: Path, when: str) -> None:
    rec = Recorder()
    faults = FaultPlan()
    faults.arm("c", when)  # type: ignore[arg-type]
    tx = Transaction("t", [RecStep(rec, "a"), [RecStep(rec, "b"), RecStep(rec, "c")]], journal=Journal(tmp_path), faults=faults)
    with pytest.raises(InjectedFault):
        await tx.run("ctx")
    undos = [name for kind, name in rec.events if kind == "undo"]
    assert undos == (["c", "b", "a"] if when == "after" else ["a"])
    assert journal_files(tmp_path) == []


class Unjournaled(RecStep):
    journaled = False


async def test_unjournaled_steps_never_reach_the_journal(tmp_path: Path) -> None:
    rec = Recorder()
    gate = asyncio.Event()
    blocked = RecStep(rec, "c", block_do=gate)
    tx = Transaction("t", [RecStep(rec, "a"), Unjournaled(rec, "b"), blocked], journal=Journal(tmp_path))
    run = asyncio.ensure_future(tx.run("ctx"))
    await blocked.do_started.wait()
    (pending,) = Journal(tmp_path).pending()
    assert [e.name for e in pending.entries()] == ["a", "c"]
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert [name for kind, name in rec.events if kind == "undo"] == ["b", "a"]  # in-process rollback still undoes b
    assert journal_files(tmp_path) == []

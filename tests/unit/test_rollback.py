"""Transaction runner: undo order, error propagation, cancellation, faults, reports."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podrt.rollback import (
    FaultPlan,
    InjectedFault,
    Step,
    StepRecord,
    StepRegistry,
    Transaction,
    TxReport,
    UndoFailure,
    UnknownStepKind,
    teardown,
)
from podrt.state.journal import Journal, JournalFile


class Recorder:
    """Shared by steps (and by steps a registry builds after a "restart")."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.undo_data: dict[str, dict[str, Any]] = {}
        self.fail_undo: dict[str, BaseException] = {}
        self.block_undo: dict[str, asyncio.Event] = {}
        self.undo_started: dict[str, asyncio.Event] = {}


class RecStep(Step):
    kind = "rec"

    def __init__(self, rec: Recorder, name: str | None = None, *, fail_do: BaseException | None = None,
                 block_do: asyncio.Event | None = None, enrich: dict[str, Any] | None = None) -> None:
        if name is not None:
            self.name = name
        self.rec, self.fail_do, self.block_do, self.enrich = rec, fail_do, block_do, enrich
        self.do_started = asyncio.Event()

    def record(self, ctx: Any) -> dict[str, Any]:
        return {"step": self.name, "ctx": ctx}

    async def do(self, ctx: Any, data: dict[str, Any]) -> None:
        self.rec.events.append(("do", self.name))
        self.do_started.set()
        if self.enrich:
            data.update(self.enrich)
        if self.block_do is not None:
            await self.block_do.wait()
        if self.fail_do is not None:
            raise self.fail_do

    async def undo(self, data: dict[str, Any]) -> None:
        name = data["step"]  # never self.name: must work on a fresh instance
        self.rec.events.append(("undo", name))
        self.rec.undo_data[name] = dict(data)
        if name in self.rec.block_undo:
            self.rec.undo_started.setdefault(name, asyncio.Event()).set()
            await self.rec.block_undo[name].wait()
        if name in self.rec.fail_undo:
            raise self.rec.fail_undo[name]


def rec_registry(rec: Recorder) -> StepRegistry:
    registry = StepRegistry()
    registry.register("rec", lambda: RecStep(rec))
    return registry


class Observer:
    def __init__(self) -> None:
        self.steps: list[tuple[str, str, str, bool]] = []
        self.reports: list[TxReport] = []

    def step_finished(self, tx_kind: str, step: str, phase: str, seconds: float, ok: bool) -> None:
        assert seconds >= 0
        self.steps.append((tx_kind, step, phase, ok))

    def tx_finished(self, report: TxReport) -> None:
        self.reports.append(report)


NAMES = ["a", "b", "c", "d", "e"]


def journal_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("mode", ["do", "before", "after"])
async def test_every_failure_position(tmp_path: Path, mode: str, index: int) -> None:
    rec, journal, faults = Recorder(), Journal(tmp_path), FaultPlan()
    boom = RuntimeError("boom")
    steps = [RecStep(rec, n, fail_do=boom if (mode == "do" and i == index) else None) for i, n in enumerate(NAMES)]
    if mode != "do":
        faults.arm(NAMES[index], mode, exc=boom)
    tx = Transaction("sandbox", steps, journal=journal, faults=faults)

    with pytest.raises(RuntimeError) as info:
        await tx.run("ctx")

    assert info.value is boom
    did = NAMES[: index + 1] if mode in ("do", "after") else NAMES[:index]
    undone = NAMES[: index + 1] if mode == "after" else NAMES[:index]
    assert rec.events == [("do", n) for n in did] + [("undo", n) for n in reversed(undone)]
    report = boom.tx_report
    assert report.failed_step == NAMES[index]
    assert report.outcome == "rolled_back"
    assert report.undos_run == list(reversed(undone))
    assert boom.undo_failures == report.undo_failures == []
    assert [r.name for r in report.records] == [n for n in did if n in undone]
    assert journal_files(tmp_path) == []


async def test_default_injected_fault(tmp_path: Path) -> None:
    rec = Recorder()
    tx = Transaction("sandbox", [RecStep(rec, n) for n in "abc"], faults=FaultPlan.parse(["b:after"]))
    with pytest.raises(InjectedFault, match="injected fault after b"):
        await tx.run(None)
    assert rec.events == [("do", "a"), ("do", "b"), ("undo", "b"), ("undo", "a")]


async def test_success(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec, obs = Recorder(), Observer()
    steps = [RecStep(rec, "a", enrich={"pid": 42}), RecStep(rec, "b"), RecStep(rec, "c")]
    tx = Transaction("sandbox", steps, journal=Journal(tmp_path), observer=obs, tx_id="tx1")
    with caplog.at_level(logging.DEBUG, logger="podrt.rollback"):
        report = await tx.run({"k": 1})

    assert report.outcome == "committed" and report.failed_step is None
    assert report.tx_id == "tx1" and report.kind == "sandbox"
    assert report.records == [
        StepRecord("a", "rec", {"step": "a", "ctx": {"k": 1}, "pid": 42}),
        StepRecord("b", "rec", {"step": "b", "ctx": {"k": 1}}),
        StepRecord("c", "rec", {"step": "c", "ctx": {"k": 1}}),
    ]
    assert [(t.name, t.phase, t.ok) for t in report.timings] == [("a", "do", True), ("b", "do", True), ("c", "do", True)]
    assert report.undos_run == [] and report.undo_failures == []
    assert rec.events == [("do", "a"), ("do", "b"), ("do", "c")]
    assert obs.steps == [("sandbox", n, "do", True) for n in "abc"]
    assert obs.reports == [report]
    assert journal_files(tmp_path) == []
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and "committed" in info[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 3


async def test_default_tx_id_and_step_name() -> None:
    class Plain(Step):
        kind = "plain"

        async def do(self, ctx: Any, data: dict[str, Any]) -> None: ...
        async def undo(self, data: dict[str, Any]) -> None: ...

    tx = Transaction("t", [Plain()])
    assert len(tx.tx_id) == 32 and int(tx.tx_id, 16) >= 0
    assert Transaction("t", []).tx_id != tx.tx_id
    report = await tx.run(None)
    assert report.records == [StepRecord("plain", "plain", {})]
    with pytest.raises(RuntimeError):
        await tx.run(None)


def test_duplicate_step_names_rejected() -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="unique"):
        Transaction("t", [RecStep(rec, "a"), RecStep(rec, "a")])


async def test_observer_errors_do_not_break_transaction() -> None:
    class Broken:
        def step_finished(self, *args: Any) -> None:
            raise RuntimeError("metrics bug")

        def tx_finished(self, report: TxReport) -> None:
            raise RuntimeError("metrics bug")

    rec = Recorder()
    report = await Transaction("t", [RecStep(rec, "a")], observer=Broken()).run(None)
    assert report.outcome == "committed"


async def test_record_failure_rolls_back_previous(tmp_path: Path) -> None:
    rec = Recorder()

    class BadRecord(RecStep):
        def record(self, ctx: Any) -> dict[str, Any]:
            raise KeyError("missing")

    tx = Transaction("t", [RecStep(rec, "a"), BadRecord(rec, "b")], journal=Journal(tmp_path))
    with pytest.raises(KeyError) as info:
        await tx.run(None)
    assert info.value.tx_report.failed_step == "b"
    assert rec.events == [("do", "a"), ("undo", "a")]
    assert journal_files(tmp_path) == []


async def test_unserialisable_record_fails_before_do(tmp_path: Path) -> None:
    rec = Recorder()
    tx = Transaction("t", [RecStep(rec, "a"), RecStep(rec, "b")], journal=Journal(tmp_path))
    with pytest.raises(TypeError):
        await tx.run(object())  # ctx lands in record data
    assert rec.events == []
    assert journal_files(tmp_path) == []


async def test_observer_sees_rollback() -> None:
    rec, obs = Recorder(), Observer()
    rec.fail_undo["a"] = OSError("busy")
    tx = Transaction("t", [RecStep(rec, "a"), RecStep(rec, "b", fail_do=ValueError())], observer=obs)
    with pytest.raises(ValueError):
        await tx.run(None)
    assert obs.steps == [("t", "a", "do", True), ("t", "b", "do", False), ("t", "a", "undo", False)]
    assert obs.reports[0].outcome == "rollback_incomplete"


@pytest.mark.parametrize("failing", [["c"], ["a", "c"], ["a", "b", "c", "d"]])
async def test_failing_undos(tmp_path: Path, failing: list[str], caplog: pytest.LogCaptureFixture) -> None:
    rec, journal = Recorder(), Journal(tmp_path)
    errors = {n: OSError(f"cannot undo {n}") for n in failing}
    rec.fail_undo.update(errors)
    boom = RuntimeError("boom")
    steps = [RecStep(rec, n, enrich={"pid": i}) for i, n in enumerate("abcd")] + [RecStep(rec, "e", fail_do=boom)]
    tx = Transaction("sandbox", steps, journal=journal, tx_id="tx1")

    with pytest.raises(RuntimeError) as info:
        await tx.run(None)

    assert info.value is boom
    assert rec.events == [("do", n) for n in "abcde"] + [("undo", n) for n in "dcba"]
    expected = [n for n in "dcba" if n in failing]
    assert [f.step for f in boom.undo_failures] == expected
    assert [f.error for f in boom.undo_failures] == [errors[n] for n in expected]
    assert all(isinstance(f, UndoFailure) for f in boom.undo_failures)
    assert len(boom.__notes__) == len(expected)
    assert all(f"'{n}'" in note for n, note in zip(expected, boom.__notes__))
    assert boom.tx_report.outcome == "rollback_incomplete"
    assert boom.tx_report.undos_run == list("dcba")
    assert any(r.levelno == logging.WARNING and "undo of step" in r.getMessage() for r in caplog.records)

    # The journal keeps exactly the failing entries, with the data do() added.
    [jf] = Journal(tmp_path).pending()
    assert [e.name for e in jf.entries()] == sorted(failing)
    assert all(e.state == "done" and e.data["pid"] == "abcd".index(e.name) for e in jf.entries())

    # Next start: the undo now succeeds, replay clears it.
    later = Recorder()
    report = await Journal(tmp_path).replay(rec_registry(later))
    assert later.events == [("undo", n) for n in expected]
    assert report.transactions == ["tx1"] and report.failures == [] and report.kept == []
    assert journal_files(tmp_path) == []


async def test_all_undos_fail_after_fault_keeps_enriched_data(tmp_path: Path) -> None:
    rec = Recorder()
    rec.fail_undo["a"] = OSError("nope")
    faults = FaultPlan()
    faults.arm("a", "after")
    tx = Transaction("t", [RecStep(rec, "a", enrich={"pid": 7})], journal=Journal(tmp_path), faults=faults)
    with pytest.raises(InjectedFault):
        await tx.run(None)
    [jf] = Journal(tmp_path).pending()
    [entry] = jf.entries()
    assert entry.state == "done" and entry.data["pid"] == 7


async def test_cancel_during_do(tmp_path: Path) -> None:
    rec, gate = Recorder(), asyncio.Event()
    blocker = RecStep(rec, "c", block_do=gate)
    steps = [RecStep(rec, "a"), RecStep(rec, "b"), blocker, RecStep(rec, "d")]
    task = asyncio.create_task(Transaction("t", steps, journal=Journal(tmp_path)).run(None))
    await blocker.do_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    assert rec.events == [("do", "a"), ("do", "b"), ("do", "c"), ("undo", "b"), ("undo", "a")]
    assert info.value.tx_report.failed_step == "c"
    assert info.value.tx_report.outcome == "rolled_back"
    assert journal_files(tmp_path) == []


async def test_cancel_during_undo_does_not_interrupt_rollback(tmp_path: Path) -> None:
    rec, gate, undo_gate = Recorder(), asyncio.Event(), asyncio.Event()
    rec.block_undo["b"] = undo_gate
    rec.undo_started["b"] = asyncio.Event()
    rec.fail_undo["a"] = OSError("a stuck")
    blocker = RecStep(rec, "d", block_do=gate)
    steps = [RecStep(rec, "a"), RecStep(rec, "b"), RecStep(rec, "c"), blocker]
    task = asyncio.create_task(Transaction("t", steps, journal=Journal(tmp_path)).run(None))
    await blocker.do_started.wait()
    task.cancel()
    await rec.undo_started["b"].wait()
    task.cancel()  # a second cancel while undo b is blocked...
    await asyncio.sleep(0)
    task.cancel()  # ...and a third
    await asyncio.sleep(0)
    assert not task.done()
    undo_gate.set()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    assert rec.events[-3:] == [("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert [f.step for f in info.value.undo_failures] == ["a"]
    assert [e.name for e in Journal(tmp_path).pending()[0].entries()] == ["a"]


async def test_cancel_during_rollback_of_ordinary_failure() -> None:
    rec, undo_gate = Recorder(), asyncio.Event()
    rec.block_undo["a"] = undo_gate
    rec.undo_started["a"] = asyncio.Event()
    boom = RuntimeError("boom")
    task = asyncio.create_task(Transaction("t", [RecStep(rec, "a"), RecStep(rec, "b", fail_do=boom)]).run(None))
    await rec.undo_started["a"].wait()
    task.cancel()
    await asyncio.sleep(0)
    undo_gate.set()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    assert info.value.__cause__ is boom  # the cancel wins, the original is attached
    assert boom.tx_report.undos_run == ["a"]
    assert rec.events == [("do", "a"), ("do", "b"), ("undo", "a")]


async def test_teardown_from_records_continues_past_failures() -> None:
    rec = Recorder()
    report = await Transaction("t", [RecStep(rec, n, enrich={"n": n}) for n in "abc"]).run(None)
    plan = json.loads(json.dumps(report.records))  # as the sandbox manager would persist it

    later = Recorder()
    later.fail_undo["b"] = OSError("busy")
    failures = await teardown(plan, rec_registry(later), log=logging.getLogger("t"))
    assert later.events == [("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert [f.step for f in failures] == ["b"]
    assert later.undo_data["a"] == {"step": "a", "ctx": None, "n": "a"}

    # With the live step objects (by name) instead of a registry.
    live = Recorder()
    steps = [RecStep(live, n) for n in "abc"]
    assert await teardown(report.records, steps) == []
    assert live.events == [("undo", "c"), ("undo", "b"), ("undo", "a")]


async def test_teardown_unknown_kind_is_a_failure() -> None:
    rec = Recorder()
    records = [StepRecord("a", "rec", {"step": "a"}), StepRecord("x", "mystery", {})]
    failures = await teardown(records, rec_registry(rec))
    assert [f.step for f in failures] == ["x"] and isinstance(failures[0].error, UnknownStepKind)
    assert rec.events == [("undo", "a")]


def test_registry() -> None:
    registry = rec_registry(Recorder())
    assert isinstance(registry.get("rec")(), RecStep)
    with pytest.raises(UnknownStepKind, match="'nope'"):
        registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("rec", lambda: RecStep(Recorder()))


def test_fault_plan_parse_good() -> None:
    plan = FaultPlan.parse(["netns:before", " cni:after ", "ns:with:colon:before"])
    plan.check("netns", "after")  # not armed: no-op
    with pytest.raises(InjectedFault, match="injected fault before netns"):
        plan.check("netns", "before")
    plan.check("netns", "before")  # fired once, then disarmed
    with pytest.raises(InjectedFault):
        plan.check("cni", "after")
    with pytest.raises(InjectedFault):
        plan.check("ns:with:colon", "before")
    assert FaultPlan.parse([])._armed == {}


@pytest.mark.parametrize("spec", ["netns", "netns:during", ":before", "netns:Before", "", "netns:before:x"])
def test_fault_plan_parse_bad(spec: str) -> None:
    with pytest.raises(ValueError, match="bad fault spec"):
        FaultPlan.parse([spec])


def test_fault_plan_arm() -> None:
    plan, err = FaultPlan(), KeyError("custom")
    plan.arm("a", "after", exc=err, times=2)
    for _ in range(2):
        with pytest.raises(KeyError) as info:
            plan.check("a", "after")
        assert info.value is err
    plan.check("a", "after")
    with pytest.raises(ValueError, match="before' or 'after"):
        plan.arm("a", "during")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        plan.arm("a", "before", times=0)


async def _run_scenario(n: int, fail_at: int | None, mode: str, failing: set[int], directory: Path) -> None:
    rec, faults = Recorder(), FaultPlan()
    names = [f"s{i}" for i in range(n)]
    for i in failing:
        rec.fail_undo[names[i]] = OSError(names[i])
    boom = RuntimeError("boom")
    steps = [RecStep(rec, name, fail_do=boom if (mode == "do" and i == fail_at) else None)
             for i, name in enumerate(names)]
    if fail_at is not None and mode != "do":
        faults.arm(names[fail_at], mode, exc=boom)  # type: ignore[arg-type]
    tx = Transaction("p", steps, journal=Journal(directory), faults=faults)
    if fail_at is None:
        report = await tx.run(None)
        assert rec.events == [("do", name) for name in names] and report.outcome == "committed"
        return
    with pytest.raises(RuntimeError) as info:
        await tx.run(None)
    assert info.value is boom
    dos = [name for kind, name in rec.events if kind == "do"]
    completed = dos if mode == "after" else dos[:-1] if mode == "do" else dos
    undos = [name for kind, name in rec.events if kind == "undo"]
    assert rec.events[: len(dos)] == [("do", name) for name in dos]
    assert undos == list(reversed(completed))
    assert [f.step for f in boom.undo_failures] == [name for name in undos if name in rec.fail_undo]
    assert boom.tx_report.outcome == ("rollback_incomplete" if boom.undo_failures else "rolled_back")
    left = {e.name for jf in Journal(directory).pending() for e in jf.entries()}
    assert left == {f.step for f in boom.undo_failures}


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_property_undo_order_is_reverse_of_completed(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8), label="steps")
    fail_at = data.draw(st.one_of(st.none(), st.integers(0, n - 1)), label="fail_at")
    mode = data.draw(st.sampled_from(["do", "before", "after"]), label="mode")
    failing = data.draw(st.sets(st.integers(0, n - 1)), label="failing undos")
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(_run_scenario(n, fail_at, mode, failing, Path(directory)))


async def test_commit_that_cannot_be_made_durable_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_discard, calls = JournalFile.discard, []

    def flaky_discard(self: JournalFile) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("EIO")
        real_discard(self)

    monkeypatch.setattr(JournalFile, "discard", flaky_discard)
    rec = Recorder()
    with pytest.raises(OSError, match="EIO"):
        await Transaction("t", [RecStep(rec, "a"), RecStep(rec, "b")], journal=Journal(tmp_path)).run(None)
    assert rec.events == [("do", "a"), ("do", "b"), ("undo", "b"), ("undo", "a")]
    assert journal_files(tmp_path) == []


async def test_undo_failures_from_the_host_are_one_line_bugs_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """A busy mount (OSError) is the host's condition: one line; a TypeError in an undo is a bug: its traceback."""
    rec = Recorder()
    rec.fail_undo.update({"a": OSError(16, "Device or resource busy"), "b": TypeError("a bug")})
    tx = Transaction("sandbox", [RecStep(rec, "a"), RecStep(rec, "b"), RecStep(rec, "c", fail_do=RuntimeError("x"))])
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError):
        await tx.run(None)
    undo_lines = {r.getMessage().split(" ")[3]: r for r in caplog.records if "undo of step" in r.getMessage()}
    assert undo_lines["a"].exc_info is None and "Device or resource busy" in undo_lines["a"].getMessage()
    assert undo_lines["b"].exc_info is not None


def ahead(step: RecStep) -> RecStep:
    step.record_ahead = True
    return step


async def test_records_ahead_share_the_journal_write_and_never_started_ones_are_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """b and c record ahead: their intents go into a's write (on disk before a
    runs, so a crash there undoes them too, finding nothing); d writes its own.
    A rollback at b drops c's intent, which never ran: only a failed undo stays."""
    writes: list[list[str]] = []
    real = JournalFile.intents

    def counted(self: JournalFile, steps: Any) -> None:
        writes.append([name for name, _kind, _data in steps])
        real(self, steps)

    monkeypatch.setattr(JournalFile, "intents", counted)
    rec, journal = Recorder(), Journal(tmp_path)
    await Transaction("t", [RecStep(rec, "a"), ahead(RecStep(rec, "b")), ahead(RecStep(rec, "c")), RecStep(rec, "d")],
                      tx_id="ok", journal=journal).run("x")
    assert writes == [["a", "b", "c"], ["d"]] and journal_files(tmp_path) == []

    writes.clear()
    gate = asyncio.Event()
    a = RecStep(rec, "a", block_do=gate)
    rec.fail_undo["a"] = OSError("busy")
    tx = Transaction("t", [a, ahead(RecStep(rec, "b", fail_do=RuntimeError("boom"))), ahead(RecStep(rec, "c")),
                           RecStep(rec, "d")], tx_id="failing", journal=journal)
    run = asyncio.ensure_future(tx.run("x"))
    await a.do_started.wait()
    on_disk = json.loads((tmp_path / "failing.json").read_bytes())["entries"]
    assert [(e["name"], e["state"]) for e in on_disk] == [("a", "intent"), ("b", "intent"), ("c", "intent")]
    gate.set()
    with pytest.raises(RuntimeError, match="boom"):
        await run
    assert writes == [["a", "b", "c"]]
    kept = json.loads((tmp_path / "failing.json").read_bytes())["entries"]
    assert [e["name"] for e in kept] == ["a"]  # c never started: not kept for the next start

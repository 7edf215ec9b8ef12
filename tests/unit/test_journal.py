"""Journal: atomic persistence, lazy done, crash replay, corrupt and unknown entries."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from podrt.rollback import Step, StepRegistry, Transaction, UnknownStepKind
from podrt.state.journal import Journal
from tests.unit.test_rollback import Recorder, RecStep, rec_registry


def on_disk(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def assert_clean(directory: Path) -> None:
    """Only whole journal files: every *.json parses and no temp file is left behind."""
    for p in directory.iterdir():
        assert p.suffix == ".json", f"stray file {p.name}"
        json.loads(p.read_text())


def test_journal_file_lifecycle(tmp_path: Path) -> None:
    jf = Journal(tmp_path).open("tx1", "sandbox")
    path = tmp_path / "tx1.json"
    assert not path.exists()  # an empty journal undoes nothing: written at the first intents

    jf.intent("a", "rec", {"step": "a"})
    assert on_disk(path)["tx_kind"] == "sandbox"
    assert_clean(tmp_path)
    jf.done("a", {"step": "a", "pid": 1})
    # done() is lazy: the disk still holds the intent until the next write.
    assert on_disk(path)["entries"] == [{"name": "a", "kind": "rec", "data": {"step": "a"}, "state": "intent"}]
    jf.intents([("b", "rec", {"step": "b"}), ("c", "rec", {"step": "c"})])  # a phase's steps: one write
    assert [(e["name"], e["state"], e["data"]) for e in on_disk(path)["entries"]] == [
        ("a", "done", {"step": "a", "pid": 1}), ("b", "intent", {"step": "b"}), ("c", "intent", {"step": "c"})]
    assert_clean(tmp_path)

    jf.done("b", {"step": "b", "pid": 2})
    jf.flush()
    assert on_disk(path)["entries"][1]["state"] == "done"
    jf.remove_entry("a")  # lazy too: an undo run twice after a crash is harmless
    jf.remove_entry("c")
    assert [e["name"] for e in on_disk(path)["entries"]] == ["a", "b", "c"]
    assert [e.name for e in jf.entries()] == ["b"]
    jf.remove_entry("missing")  # no-op
    jf.flush()
    assert [e["name"] for e in on_disk(path)["entries"]] == ["b"]
    assert_clean(tmp_path)
    jf.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_journal_never_written_is_never_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jf = Journal(tmp_path).open("tx1", "t")
    jf.flush()
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync of a journal never written"))
    jf.discard()
    assert list(tmp_path.iterdir()) == []


def test_intents_of_a_phase_are_all_or_nothing(tmp_path: Path) -> None:
    jf = Journal(tmp_path).open("tx1", "t")
    jf.intent("a", "rec", {})
    with pytest.raises(ValueError, match="already"):
        jf.intents([("b", "rec", {}), ("a", "rec", {})])
    assert [e.name for e in jf.entries()] == ["a"] and len(on_disk(tmp_path / "tx1.json")["entries"]) == 1


def test_intent_copies_data_and_rejects_duplicates(tmp_path: Path) -> None:
    jf = Journal(tmp_path).open("tx1", "t")
    data = {"step": "a"}
    jf.intent("a", "rec", data)
    data["later"] = True  # do() mutating its dict must not leak into the intent
    assert jf.entries()[0].data == {"step": "a"}
    with pytest.raises(ValueError, match="already"):
        jf.intent("a", "rec", {})


def test_failed_write_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jf = Journal(tmp_path).open("tx1", "t")
    jf.intent("a", "rec", {"step": "a"})
    before = (tmp_path / "tx1.json").read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        jf.intent("b", "rec", {"step": "b"})
    monkeypatch.undo()
    assert (tmp_path / "tx1.json").read_bytes() == before
    assert [e.name for e in jf.entries()] == ["a"]
    assert_clean(tmp_path)


def test_open_rejects_unsafe_ids_and_existing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "sub")  # created on demand
    for bad in ["../x", "a/b", ".hidden", ""]:
        with pytest.raises(ValueError, match="safe file name"):
            journal.open(bad, "t")
    journal.open("tx1", "t").intent("a", "rec", {})
    with pytest.raises(FileExistsError):
        journal.open("tx1", "t")


async def test_crash_mid_transaction_is_replayed(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    rec, gate = Recorder(), asyncio.Event()
    blocker = RecStep(rec, "c", block_do=gate, enrich={"pid": 3})
    steps = [RecStep(rec, "a", enrich={"pid": 1}), RecStep(rec, "b", enrich={"pid": 2}), blocker, RecStep(rec, "d")]
    task = asyncio.create_task(Transaction("sandbox", steps, journal=Journal(live), tx_id="tx1").run("ctx"))
    await blocker.do_started.wait()

    # The "crash": the journal as it is on disk while c's do() is in flight.
    shutil.copytree(live, crashed)
    entries = on_disk(crashed / "tx1.json")["entries"]
    assert [(e["name"], e["state"]) for e in entries] == [("a", "done"), ("b", "done"), ("c", "intent")]

    later = Recorder()
    report = await Journal(crashed).replay(rec_registry(later))
    assert later.events == [("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert later.undo_data == {
        "c": {"step": "c", "ctx": "ctx"},  # pid 3 was added in do() and never persisted
        "b": {"step": "b", "ctx": "ctx", "pid": 2},  # folded into c's intent write
        "a": {"step": "a", "ctx": "ctx", "pid": 1},
    }
    assert report.transactions == ["tx1"] and report.failures == [] and report.kept == []
    assert report.undos_run == [("tx1", "c"), ("tx1", "b"), ("tx1", "a")]
    assert list(crashed.iterdir()) == []

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(live.iterdir()) == []


async def test_abandoned_journal_undoes_from_intent_data(tmp_path: Path) -> None:
    jf = Journal(tmp_path).open("tx1", "t")
    jf.intent("a", "rec", {"step": "a"})
    jf.done("a", {"step": "a", "pid": 9})  # crash before any further write
    del jf
    later = Recorder()
    await Journal(tmp_path).replay(rec_registry(later))
    assert later.undo_data == {"a": {"step": "a"}}
    assert list(tmp_path.iterdir()) == []


async def test_unknown_kind_is_kept_and_reported(tmp_path: Path) -> None:
    jf = Journal(tmp_path).open("tx1", "t")
    jf.intent("a", "rec", {"step": "a"})
    jf.intent("m", "mystery", {"step": "m"})
    jf.intent("b", "rec", {"step": "b"})

    later = Recorder()
    report = await Journal(tmp_path).replay(rec_registry(later))
    assert later.events == [("undo", "b"), ("undo", "a")]
    assert [(tx, f.step) for tx, f in report.failures] == [("tx1", "m")]
    assert isinstance(report.failures[0][1].error, UnknownStepKind)
    assert report.kept == ["tx1"]
    assert [e["name"] for e in on_disk(tmp_path / "tx1.json")["entries"]] == ["m"]

    # A later version knows the kind: the next start finishes the job.
    class Mystery(Step):
        kind = "mystery"
        undone: list[dict[str, Any]] = []

        async def do(self, ctx: Any, data: dict[str, Any]) -> None: ...

        async def undo(self, data: dict[str, Any]) -> None:
            self.undone.append(data)

    registry = rec_registry(later)
    registry.register("mystery", Mystery)
    report = await Journal(tmp_path).replay(registry)
    assert Mystery.undone == [{"step": "m"}] and report.kept == []
    assert list(tmp_path.iterdir()) == []


async def test_corrupt_journals_are_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "shape.json").write_text(json.dumps({"tx_id": "x", "entries": "nope"}))
    for name, entry in [("badstate", {"name": "a", "kind": "rec", "data": {}, "state": "maybe"}),
                        ("baddata", {"name": "a", "kind": "rec", "data": [], "state": "intent"})]:
        doc = {"tx_id": "y", "tx_kind": "t", "created": 1, "entries": [entry]}
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    jf = Journal(tmp_path).open("good", "t")
    jf.intent("a", "rec", {"step": "a"})

    later = Recorder()
    report = await Journal(tmp_path).replay(rec_registry(later))
    assert report.transactions == ["good"] and later.events == [("undo", "a")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "baddata.json.corrupt", "badstate.json.corrupt", "binary.json.corrupt", "garbage.json.corrupt",
        "shape.json.corrupt"]
    assert sum("unparsable journal" in r.getMessage() for r in caplog.records) == 5


def test_pending_removes_stale_temp_files_and_orders_newest_first(tmp_path: Path) -> None:
    (tmp_path / ".old.json.abc123.tmp").write_text("{half")  # a write interrupted by a crash
    for tx_id, created in [("aaa", 200.0), ("bbb", 100.0), ("ccc", 300.0)]:
        doc = {"version": 1, "tx_id": tx_id, "tx_kind": "t", "created": created, "entries": []}
        (tmp_path / f"{tx_id}.json").write_text(json.dumps(doc))
    assert [jf.tx_id for jf in Journal(tmp_path).pending()] == ["ccc", "aaa", "bbb"]
    assert_clean(tmp_path)


async def test_empty_journal_replays_to_nothing(tmp_path: Path) -> None:
    Journal(tmp_path).open("tx1", "t")._write([])  # as podrt wrote at open before (a crash right after)
    report = await Journal(tmp_path).replay(StepRegistry())
    assert report.transactions == ["tx1"] and report.undos_run == [] and report.failures == []
    assert list(tmp_path.iterdir()) == []


async def test_replay_failure_keeps_only_failed_entries(tmp_path: Path) -> None:
    jf = Journal(tmp_path).open("tx1", "t")
    for n in "abc":
        jf.intent(n, "rec", {"step": n})
    later = Recorder()
    later.fail_undo["b"] = OSError("still busy")
    report = await Journal(tmp_path).replay(rec_registry(later))
    assert later.events == [("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert report.kept == ["tx1"]
    assert [e["name"] for e in on_disk(tmp_path / "tx1.json")["entries"]] == ["b"]
    assert_clean(tmp_path)


async def test_one_journal_write_per_phase_and_per_rollback_all_off_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A phase's intents are one write, made durable before its do()s start; a
    rollback's undos are one write at its end; none of them on the loop's thread."""
    from podrt.state import journal as journal_module

    real_write, writes = journal_module.atomic_write, []
    loop_thread = threading.get_ident()

    def counted(path: Path, payload: bytes, mode: int = 0o600, **kwargs: Any) -> None:
        writes.append((threading.get_ident(), [e["name"] for e in json.loads(payload)["entries"]], list(rec.events)))
        real_write(path, payload, mode, **kwargs)

    monkeypatch.setattr(journal_module, "atomic_write", counted)
    rec = Recorder()
    steps = [RecStep(rec, "a"), [RecStep(rec, "b"), RecStep(rec, "c")], RecStep(rec, "d", fail_do=RuntimeError("x"))]
    with pytest.raises(RuntimeError):
        await Transaction("t", steps, journal=Journal(tmp_path), tx_id="tx1").run(None)
    assert [(names, events) for _, names, events in writes] == [
        (["a"], []),  # before a's do()
        (["a", "b", "c"], [("do", "a")]),  # the group's two intents: one write, before either do()
        (["a", "b", "c", "d"], [("do", "a"), ("do", "b"), ("do", "c")]),
    ]  # and the rollback: a discard (an unlink), no write per undo
    assert sorted(e for e in rec.events if e[0] == "undo") == [("undo", "a"), ("undo", "b"), ("undo", "c")]
    assert all(thread != loop_thread for thread, _, _ in writes)
    assert list(tmp_path.iterdir()) == []


class WriteCommitFile(RecStep):
    """The last step: writes the transaction's commit file (a container's state.json)."""

    def __init__(self, rec: Recorder, name: str, path: Path) -> None:
        super().__init__(rec, name)
        self.path = path

    async def do(self, ctx: Any, data: dict[str, Any]) -> None:
        await super().do(ctx, data)
        self.path.write_text("committed")


async def test_a_commit_file_makes_the_journals_removal_at_commit_need_no_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction whose last step writes its commit file: the journal goes at
    the commit without an fsync; one left behind (the unsynced unlink lost)
    is dropped at replay, nothing undone, while one whose commit file is not
    there is undone as any."""
    journals, commit = tmp_path / "journal", tmp_path / "state.json"
    synced: list[str] = []
    monkeypatch.setattr("podrt.state.journal.fsync_dir", lambda d: synced.append(str(d)))
    rec = Recorder()
    steps = [RecStep(rec, "a"), WriteCommitFile(rec, "state", commit)]
    await Transaction("t", steps, journal=Journal(journals), tx_id="tx1", commit_file=str(commit)).run("ctx")
    for _ in range(200):  # removed in a worker thread, not waited for (the answer need not wait)
        if not list(journals.iterdir()):
            break
        await asyncio.sleep(0.01)
    assert list(journals.iterdir()) == [] and commit.exists()
    assert synced == []  # atomic_write's fsyncs are its own; the discard made none

    for tx_id, committed in (("done", True), ("cut", False)):
        jf = Journal(journals).open(tx_id, "t", commit_file=str(tmp_path / f"{tx_id}.state"))
        jf.intents([("a", "rec", {"step": f"{tx_id}-a"})])
        if committed:
            (tmp_path / f"{tx_id}.state").write_text("committed")
    later = Recorder()
    report = await Journal(journals).replay(rec_registry(later))
    assert later.events == [("undo", "cut-a")] and report.transactions == ["cut"]
    assert list(journals.iterdir()) == []


async def test_a_volatile_journal_is_written_and_replayed_without_an_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journal.volatile (a container's creation): the same files, whole, in the
    same directory, replayed alike after a crash of the daemon; no fsync at
    all, where the durable journal makes two per write and one per discard."""
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    durable = Journal(tmp_path)
    jf = durable.volatile().open("cut", "t")
    jf.intents([("a", "rec", {"step": "a"}), ("b", "rec", {"step": "b"})])
    jf.done("a", {"step": "a", "pid": 7})
    jf.flush()
    assert on_disk(tmp_path / "cut.json")["entries"][0]["data"]["pid"] == 7 and fsyncs == []
    assert_clean(tmp_path)
    gone = durable.volatile().open("gone", "t")
    gone.intents([("a", "rec", {"step": "gone-a"})])
    gone.discard()
    assert not (tmp_path / "gone.json").exists() and fsyncs == []
    durable.open("synced", "t").intents([("a", "rec", {"step": "synced-a"})])
    assert len(fsyncs) == 2  # the durable one's file and dir
    rec = Recorder()
    report = await durable.replay(rec_registry(rec))
    assert sorted(report.transactions) == ["cut", "synced"] and ("undo", "b") in rec.events
    assert list(tmp_path.iterdir()) == []


class BlockingStep(RecStep):
    """A step whose do() is blocking work (rollback.Step.blocking): it notes the
    thread it ran on and what the journal held then."""

    blocking = True

    def __init__(self, rec: Recorder, name: str, journals: Path, *, fail: bool = False) -> None:
        super().__init__(rec, name)
        self.journals, self.fail, self.ran_on = journals, fail, 0
        self.journaled_then: list[str] = []

    def do_blocking(self, ctx: Any, data: dict[str, Any]) -> None:
        self.ran_on = threading.get_ident()
        self.journaled_then = [e["name"] for f in self.journals.iterdir() for e in on_disk(f)["entries"]]
        self.rec.events.append(("do", self.name))
        if self.fail:
            raise RuntimeError("blocking do failed")


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions the runner sends to worker threads, in order."""
    from podrt import rollback

    sent: list[str] = []
    real = rollback.finish_in_thread

    async def counted(fn: Any, *args: Any) -> Any:
        sent.append(getattr(fn, "__name__", "?"))
        return await real(fn, *args)

    monkeypatch.setattr(rollback, "finish_in_thread", counted)
    return sent


async def test_a_blocking_step_runs_in_the_trip_that_journals_its_intent(tmp_path: Path, trips: list[str]) -> None:
    """One trip to a thread for the phase's intents and the blocking step's do(),
    the intent durable first; a fault point before it still fires after the
    intent is written; a failed one is not undone (it cleaned up) and its entry goes."""
    from podrt.rollback import FaultPlan, InjectedFault

    rec = Recorder()
    step = BlockingStep(rec, "b", tmp_path)
    await Transaction("t", [RecStep(rec, "a"), step], journal=Journal(tmp_path), tx_id="tx1").run(None)
    assert step.journaled_then == ["a", "b"] and step.ran_on != threading.get_ident()
    assert trips == ["intents", "run", "discard"] and rec.events == [("do", "a"), ("do", "b")]

    faults = FaultPlan()
    faults.arm("b", "before")
    rec, trips[:] = Recorder(), []
    step = BlockingStep(rec, "b", tmp_path)
    with pytest.raises(InjectedFault):
        await Transaction("t", [RecStep(rec, "a"), step], journal=Journal(tmp_path), tx_id="tx2", faults=faults).run(None)
    assert rec.events == [("do", "a"), ("undo", "a")] and trips[:2] == ["intents", "run"]

    rec = Recorder()
    with pytest.raises(RuntimeError, match="blocking do failed"):
        await Transaction("t", [RecStep(rec, "a"), BlockingStep(rec, "b", tmp_path, fail=True)],
                          journal=Journal(tmp_path), tx_id="tx3").run(None)
    assert rec.events == [("do", "a"), ("do", "b"), ("undo", "a")]
    assert list(tmp_path.iterdir()) == []


async def test_a_run_of_blocking_phases_is_one_trip(tmp_path: Path, trips: list[str]) -> None:
    """Consecutive phases of one blocking step each go to a worker thread in one
    trip, on one thread, each intent journaled before its do(); a fault point
    after the second still unwinds the two, newest first, and names it; every
    step's timing reaches the observer."""
    from podrt.rollback import FaultPlan, InjectedFault
    from tests.unit.test_rollback import Observer

    rec, observer = Recorder(), Observer()
    steps = [BlockingStep(rec, n, tmp_path) for n in "bcd"]
    report = await Transaction("t", [RecStep(rec, "a"), *steps], journal=Journal(tmp_path), tx_id="tx1",
                               observer=observer).run(None)
    assert trips == ["intents", "run", "discard"] and len({s.ran_on for s in steps}) == 1
    assert [s.journaled_then for s in steps] == [["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]]
    assert [t.name for t in report.timings] == list("abcd") and [s[1] for s in observer.steps] == list("abcd")

    faults = FaultPlan()
    faults.arm("c", "after")
    rec, trips[:] = Recorder(), []
    steps = [BlockingStep(rec, n, tmp_path) for n in "bcd"]
    with pytest.raises(InjectedFault) as info:
        await Transaction("t", [RecStep(rec, "a"), *steps], journal=Journal(tmp_path), tx_id="tx2",
                          faults=faults).run(None)
    assert rec.events == [("do", "a"), ("do", "b"), ("do", "c"), ("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert info.value.tx_report.failed_step == "c" and trips[:2] == ["intents", "run"]
    assert list(tmp_path.iterdir()) == []

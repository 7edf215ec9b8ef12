"""Transactions of undoable steps with a durable rollback stack.

Each phase of e.g. RunPodSandbox is a `Step` with a paired undo. `Transaction.run` runs them
in order and, on failure or cancellation, undoes the completed ones newest first (CRI-O's
defer chain, made explicit). A journal (`Journals`: state.journal.Journal) records each step
*before* it runs, so that the next process start can finish a rollback a crash interrupted
(state.journal.Journal.replay, through `teardown`).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, NamedTuple, Protocol, TypeVar

import attrs

from podrt.aio import await_shielded, finish_in_thread
from podrt.errors import PodrtError
from podrt.faults import FaultPlan, When
from podrt.faults import InjectedFault as InjectedFault  # raised by FaultPlan; imported from here by callers

logger = logging.getLogger(__name__)

Outcome = Literal["committed", "rolled_back", "rollback_incomplete"]
Intent = tuple[str, str, dict[str, Any]]  # a journaled step's name, kind and record


Ctx = TypeVar("Ctx", contravariant=True)  # a Step[A] may run where a B is built, if every B is an A
C = TypeVar("C")


class Step(abc.ABC, Generic[Ctx]):
    """One phase of a transaction over a context of type Ctx (the object being built, which
    do() fills in); `kind` is the registry key used for crash replay."""

    kind: ClassVar[str]
    # False for steps whose effect a crash undoes by itself (in-memory state) or an
    # earlier journaled step's undo covers (a file inside a dir it removes): each
    # journal write costs ~1 ms of fsyncs on the creation path.
    journaled: ClassVar[bool] = True
    # True for a step whose record() reads nothing an earlier phase's do() decides: its intent goes into
    # the journal write of the phase before it. A crash in between leaves an intent whose undo finds nothing.
    record_ahead: bool = False
    # True for a step whose do() is blocking host work only (do_blocking): a run of such phases, one step
    # each, goes to a worker thread in one trip, with their journal writes and fault points (a trip costs
    # the loop a wake-up, and the step a wait for the GIL and the loop, with other work going on)
    blocking: ClassVar[bool] = False
    _name: str | None = None

    @property
    def name(self) -> str:
        """Unique within a transaction; defaults to `kind` for steps used once."""
        return self._name or self.kind

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    def record(self, ctx: Ctx) -> dict[str, Any]:
        """JSON data the undo needs; journaled before do() so a crash mid-do is undoable."""
        return {}

    async def do(self, ctx: Ctx, data: dict[str, Any]) -> None:
        """Complete, or clean up own partial work and raise. May add keys to `data`.
        A `blocking` step's is its do_blocking in a worker thread (where no run of blocking phases takes it: in a group)."""
        if not self.blocking:
            raise NotImplementedError(f"step {self.name} has no do()")
        await finish_in_thread(self.do_blocking, ctx, data)

    @abc.abstractmethod
    async def undo(self, data: dict[str, Any]) -> None:
        """Idempotent; uses only `data` and constructor dependencies (runs after a restart)."""

    def do_blocking(self, ctx: Ctx, data: dict[str, Any]) -> None:
        """A `blocking` step's do(), in a worker thread: complete, or clean up and raise."""
        raise NotImplementedError(f"step {self.name} is not blocking")


class StepRecord(NamedTuple):
    """A completed step; a committed transaction's records are its teardown plan."""

    name: str
    kind: str
    data: dict[str, Any]


@attrs.frozen
class UndoFailure:
    step: str
    error: BaseException


@attrs.frozen
class StepTiming:
    name: str
    phase: Literal["do", "undo"]
    seconds: float
    ok: bool


@attrs.define
class TxReport:
    tx_id: str
    kind: str
    outcome: Outcome
    seconds: float
    failed_step: str | None
    timings: list[StepTiming]
    undos_run: list[str]
    undo_failures: list[UndoFailure]
    records: list[StepRecord]


class TxJournal(Protocol):
    """One transaction's durable undo stack (state.journal.JournalFile): a phase's intents
    before it runs, done after, entries removed as undos succeed, discarded on commit.
    `intents`, `flush` and `discard` block (fsyncs): the runner calls them in a thread.
    `done` and `remove_entry` only change memory (folded into the next write)."""

    def intents(self, steps: Sequence[Intent]) -> None: ...
    def done(self, step_name: str, data: dict[str, Any]) -> None: ...
    def remove_entry(self, step_name: str) -> None: ...
    def flush(self) -> None: ...
    def discard(self) -> None: ...
    def discard_committed(self) -> None: ...


class Journals(Protocol):
    """Where transactions' journals are kept (state.journal.Journal, which replays them at start)."""

    def open(self, tx_id: str, tx_kind: str, commit_file: str | None = None) -> TxJournal: ...


class TxObserver(Protocol):
    def step_finished(self, tx_kind: str, step: str, phase: str, seconds: float, ok: bool) -> None: ...
    def tx_finished(self, report: TxReport) -> None: ...


class UnknownStepKind(LookupError):
    """A journal names a step kind this build does not know."""


class StepRegistry:
    """kind -> zero-arg factory of a step able to undo from recorded data (crash replay)."""

    def __init__(self) -> None:
        self._factories: dict[str, Callable[[], Step[Any]]] = {}

    def register(self, kind: str, factory: Callable[[], Step[Any]]) -> None:
        if kind in self._factories:
            raise ValueError(f"step kind {kind!r} is already registered")
        self._factories[kind] = factory

    def get(self, kind: str) -> Callable[[], Step[Any]]:
        if kind not in self._factories:
            raise UnknownStepKind(f"no step registered for kind {kind!r}")
        return self._factories[kind]


def quietly(log: logging.Logger, what: str, fn: Callable[..., Any], *args: Any) -> None:
    """Bookkeeping (journal, metrics) must never abort a rollback."""
    try:
        fn(*args)
    except Exception:
        log.exception("%s failed", what)


def _resolver(source: StepRegistry | Mapping[str, Step[Any]] | Sequence[Step[Any]]) -> Callable[[StepRecord], Step[Any]]:
    if isinstance(source, StepRegistry):
        return lambda rec: source.get(rec.kind)()
    steps = source if isinstance(source, Mapping) else {s.name: s for s in source}
    return lambda rec: steps[rec.name]


UndoHook = Callable[[StepRecord, float, "BaseException | None"], None]


async def _undo_all(records: Sequence[StepRecord], resolve: Callable[[StepRecord], Step[Any]],
                    log: logging.Logger, on_undo: UndoHook | None = None) -> list[UndoFailure]:
    """THE undo loop (rollback, teardown, replay): newest first, keep going past failures."""
    failures: list[UndoFailure] = []
    for rec in reversed(records):
        start, error = time.monotonic(), None
        try:
            await resolve(rec).undo(rec.data)
        except Exception as exc:
            error = exc
            failures.append(UndoFailure(rec.name, exc))
            # the host's condition (a busy mount, a full disk) or a step this podrt
            # does not know is said in one line; anything else is a bug: its traceback
            said = isinstance(exc, (OSError, UnknownStepKind, PodrtError))
            log.warning("undo of step %s (%s) failed: %r", rec.name, rec.kind, exc, exc_info=None if said else exc)
        if on_undo is not None:
            quietly(log, f"bookkeeping after undo of {rec.name}", on_undo, rec, time.monotonic() - start, error)
    return failures


async def teardown(records: Iterable[Sequence[Any]],
                   registry_or_steps: StepRegistry | Mapping[str, Step[Any]] | Sequence[Step[Any]],
                   *, log: logging.Logger | None = None, on_undo: UndoHook | None = None) -> list[UndoFailure]:
    """Undo a committed transaction from its records (also as JSON lists), or a crashed one's
    from its journal (on_undo: after each undo); not shielded."""
    plan = [StepRecord(*r) for r in records]
    return await _undo_all(plan, _resolver(registry_or_steps), log or logger, on_undo)


class Transaction(Generic[C]):
    """Run steps in order; on failure or cancellation undo the completed ones, newest first."""

    def __init__(self, kind: str, steps: Sequence[Step[C] | Sequence[Step[C]]], *, tx_id: str | None = None,
                 journal: Journals | None = None, faults: FaultPlan | None = None,
                 observer: TxObserver | None = None, log: logging.Logger | None = None,
                 commit_file: str | None = None) -> None:
        """`steps` in order; an inner sequence is a group whose steps need nothing from
        each other and run concurrently (e.g. CNI ADD beside the infra start).
        `commit_file`: a file the last step writes durably, whose existence says the
        transaction committed: the journal's removal at commit then needs no fsync
        (state.journal says why), and no trip to a worker thread."""
        self.groups = [list(g) if isinstance(g, Sequence) else [g] for g in steps]
        self.steps = [step for group in self.groups for step in group]
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique within a transaction: {names}")
        self.kind, self.tx_id = kind, tx_id or uuid.uuid4().hex
        self._journal, self._faults, self._observer = journal, faults, observer
        self._commit_file = commit_file
        self._log = log or logger
        self._timings: list[StepTiming] = []
        self.completed: list[StepRecord] = []  # live: a last 'state' step persists it with the object
        self._started = False
        self._current: str | None = None  # the phase under way: a failure's failed_step

    async def run(self, ctx: C) -> TxReport:
        """Commit and return the report, or roll back and re-raise the original exception."""
        if self._started:
            raise RuntimeError(f"transaction {self.tx_id} can only run once")
        self._started, start = True, time.monotonic()
        jf = self._journal.open(self.tx_id, self.kind, self._commit_file) if self._journal else None
        records = self.completed
        in_flight: list[str] = []
        written_ahead: dict[int, list[dict[str, Any]]] = {}  # group index -> its records, journaled with an earlier phase
        try:
            n = 0
            while n < len(self.groups):
                if run := self._blocking_run(n):
                    await self._run_blocking(jf, n, run, ctx, written_ahead, in_flight)
                    n += run
                    continue
                group = self.groups[n]
                self._current = "+".join(step.name for step in group)
                in_flight[:] = [step.name for step in group]
                datas = written_ahead.pop(n, None)
                if datas is None:
                    datas = [step.record(ctx) for step in group]
                    await self._write_intents(jf, n, group, ctx, datas, written_ahead)
                self._check(group, "before")
                await (self._do_group(group, ctx, datas, jf) if len(group) > 1
                       else self._do_one(group[0], ctx, datas[0]))
                if len(group) == 1:
                    self._completed(group[0], datas[0], jf)
                in_flight.clear()
                self._check(group, "after")
                n += 1
            if jf and self._commit_file:  # durable already: the last step wrote the commit file
                self._discard_later(jf)
            elif jf:  # inside the try: if the commit cannot be made durable, roll back instead
                await finish_in_thread(jf.discard)
        except BaseException as exc:
            in_flight += [step.name for n in written_ahead for step in self.groups[n]]  # never started
            task = asyncio.ensure_future(self._rollback(records, jf, in_flight))
            cancelled = await await_shielded(task)  # a cancelled RPC must not interrupt rollback
            undos_run, failures = task.result()
            report = self._finish(start, self._current, records, undos_run, failures)
            for f in failures:
                exc.add_note(f"undo of step {f.step!r} failed: {f.error!r}")
            exc.undo_failures, exc.tx_report = failures, report  # type: ignore[attr-defined]
            if cancelled and not isinstance(exc, asyncio.CancelledError):
                # A task cancelled during rollback must still end cancelled (asyncio.timeout etc.).
                cancel = asyncio.CancelledError(f"cancelled while rolling back {self.kind} tx {self.tx_id}")
                cancel.undo_failures, cancel.tx_report = failures, report  # type: ignore[attr-defined]
                raise cancel from exc
            raise
        return self._finish(start, None, records, [], [])

    async def _write_intents(self, jf: TxJournal | None, n: int, group: list[Step[C]], ctx: C,
                             datas: list[dict[str, Any]], written_ahead: dict[int, list[dict[str, Any]]]) -> None:
        """Group n's intents (and the next phases' that record ahead), durable before any do() of the phase: one write."""
        if intents := self._intents(jf, n, group, ctx, datas, written_ahead):
            await finish_in_thread(jf.intents, intents)  # type: ignore[union-attr]  # none without jf

    def _intents(self, jf: TxJournal | None, n: int, group: list[Step[C]], ctx: C, datas: list[dict[str, Any]],
                 written_ahead: dict[int, list[dict[str, Any]]]) -> list[Intent]:
        """What group n's journal write holds; none when no step of it is journaled."""
        intents = [(step.name, step.kind, data) for step, data in zip(group, datas) if step.journaled]
        if not (jf and intents):
            return []
        return intents + self._records_ahead(n, ctx, written_ahead)

    def _blocking_run(self, n: int) -> int:
        """How many phases from n on are one blocking step each (0: group n is not)."""
        run = 0
        while n + run < len(self.groups) and len(g := self.groups[n + run]) == 1 and g[0].blocking:
            run += 1
        return run

    async def _run_blocking(self, jf: TxJournal | None, first: int, count: int, ctx: C,
                            written_ahead: dict[int, list[dict[str, Any]]], in_flight: list[str]) -> None:
        """Phases first..first+count-1, each one blocking step, in one worker-thread trip: per
        phase its record, its journal write (if any), fault point, do_blocking, completion and
        fault point, as the loop would. Their timings are reported back on the loop."""
        took: list[tuple[str, float, bool]] = []

        def run() -> None:
            for n in range(first, first + count):
                step = self.groups[n][0]
                self._current, in_flight[:] = step.name, [step.name]
                ahead = written_ahead.pop(n, None)
                data = ahead[0] if ahead else step.record(ctx)
                if ahead is None and (intents := self._intents(jf, n, [step], ctx, [data], written_ahead)):
                    jf.intents(intents)  # type: ignore[union-attr]  # none without jf
                self._check([step], "before")
                t0, ok = time.monotonic(), False
                try:
                    step.do_blocking(ctx, data)
                    ok = True
                finally:
                    took.append((step.name, time.monotonic() - t0, ok))
                self._completed(step, data, jf)
                in_flight.clear()
                self._check([step], "after")

        try:
            await finish_in_thread(run)
        finally:
            for name, seconds, ok in took:
                self._timed(name, "do", seconds, ok)

    def _check(self, group: list[Step[C]], point: When) -> None:
        if self._faults:
            for step in group:
                self._faults.check(step.name, point)

    def _records_ahead(self, n: int, ctx: C, written_ahead: dict[int, list[dict[str, Any]]]) -> list[Intent]:
        """The intents of the phases right after group n whose steps all record ahead (their
        records kept in `written_ahead` for when they run), for group n's journal write."""
        intents: list[Intent] = []
        for later in range(n + 1, len(self.groups)):
            group = self.groups[later]
            if not all(step.record_ahead for step in group):
                break
            written_ahead[later] = [step.record(ctx) for step in group]
            intents += [(s.name, s.kind, d) for s, d in zip(group, written_ahead[later]) if s.journaled]
        return intents

    def _discard_later(self, jf: TxJournal) -> None:
        """The committed journal's unlink in a worker thread, not waited for (replay drops it anyway)."""
        def said(done: asyncio.Future[None]) -> None:
            if not done.cancelled() and (error := done.exception()) is not None:
                self._log.warning("removal of committed journal %s failed: %r", self.tx_id, error)

        asyncio.get_running_loop().run_in_executor(None, jf.discard_committed).add_done_callback(said)

    async def _do_one(self, step: Step[C], ctx: C, data: dict[str, Any]) -> None:
        t0, ok = time.monotonic(), False
        try:
            await step.do(ctx, data)
            ok = True
        finally:
            self._timed(step.name, "do", time.monotonic() - t0, ok)

    def _completed(self, step: Step[C], data: dict[str, Any], jf: TxJournal | None) -> None:
        """Push the step's undo on the stack (and mark it done in the journal)."""
        self.completed.append(StepRecord(step.name, step.kind, data))
        if jf and step.journaled:
            jf.done(step.name, data)

    async def _do_group(self, group: list[Step[C]], ctx: C, datas: list[dict[str, Any]],
                        jf: TxJournal | None) -> None:
        """Run a group's do()s at once; every one that completed is recorded for undo,
        even when a sibling fails or we are cancelled (all are settled first).
        Raises the first failure."""
        tasks = [asyncio.ensure_future(self._do_one(step, ctx, data)) for step, data in zip(group, datas)]
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await await_shielded(asyncio.gather(*tasks, return_exceptions=True))
            raise
        finally:
            for step, data, task in zip(group, datas, tasks):
                if task.done() and not task.cancelled() and task.exception() is None:
                    self._completed(step, data, jf)
        for task in tasks:
            error = task.exception()
            if error is not None:
                raise error

    async def _rollback(self, records: list[StepRecord], jf: TxJournal | None,
                        in_flight: list[str]) -> tuple[list[str], list[UndoFailure]]:
        undos_run: list[str] = []

        def on_undo(rec: StepRecord, seconds: float, error: BaseException | None) -> None:
            undos_run.append(rec.name)
            self._timed(rec.name, "undo", seconds, error is None)
            if jf and error is None:
                jf.remove_entry(rec.name)

        done = {rec.name for rec in records}
        for name in in_flight:  # do() never started, or cleaned up after itself
            if jf and name not in done:
                quietly(self._log, f"journal removal of {name}", jf.remove_entry, name)
        failures = await _undo_all(records, _resolver(self.steps), self._log, on_undo)
        if jf:  # keep exactly the failed entries for the next start: one write (or unlink) in all
            try:
                await finish_in_thread(jf.flush if failures else jf.discard)
            except Exception:
                self._log.exception("journal update of tx %s failed", self.tx_id)
        return undos_run, failures

    def _timed(self, name: str, phase: Literal["do", "undo"], seconds: float, ok: bool) -> None:
        self._timings.append(StepTiming(name, phase, seconds, ok))
        self._log.debug("tx %s %s: %s %s %.4fs ok=%s", self.kind, self.tx_id, phase, name, seconds, ok)
        if self._observer:
            quietly(self._log, "observer", self._observer.step_finished, self.kind, name, phase, seconds, ok)

    def _finish(self, start: float, failed_step: str | None, records: list[StepRecord],
                undos_run: list[str], failures: list[UndoFailure]) -> TxReport:
        outcome: Outcome = "committed" if failed_step is None else "rollback_incomplete" if failures else "rolled_back"
        report = TxReport(self.tx_id, self.kind, outcome, time.monotonic() - start, failed_step,
                          list(self._timings), undos_run, failures, list(records))
        self._log.info("tx %s %s %s in %.3fs failed_step=%s undos_run=%s undo_failures=%s", self.kind,
                       self.tx_id, outcome, report.seconds, failed_step, undos_run, [f.step for f in failures])
        if self._observer:
            quietly(self._log, "observer", self._observer.tx_finished, report)
        return report

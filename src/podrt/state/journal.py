"""Transactions' journals: the on-disk undo stack of each (JournalFile) in one directory
(Journal), which podrt.rollback's Transaction writes through and the next start replays.

Each step is written as an intent before it runs and marked done after, so the next start can
undo what a crash interrupted; a committed transaction's file is removed (durably).

What is written when (each write: temp file, fsync, rename, fsync of the dir; ~1 ms, made in a
worker thread by the transaction runner, never on the event loop):
- `intents`: one write per phase (a step, or a group run at once), finished before any of the
  phase's do() starts. This is the one write crash safety needs: whatever a do() may leave on
  the host is named on disk before it can exist. The phase's data (its record()) depends on
  the phases before it, so phases cannot share a write.
- `done`, `remove_entry`: in memory only, folded into the next write. A done entry's extra data
  (what do() learned, e.g. a pid) only sharpens its undo, which works from the intent alone (a
  crash mid-do leaves only that). An entry removed after its undo succeeded but still on disk
  at a crash is undone again at the next start: undos are idempotent (rollback.Step.undo).
- `flush` (a rollback with failed undos: exactly those stay for the next start) or `discard`
  (commit, or a complete rollback): the last one. A transaction whose last step writes a
  commit file durably (a container's state.json) names it at `open`: its journal's removal
  at commit needs no fsync, since replay drops, undoing nothing, a journal whose commit
  file exists (the state record is then the commit's only durable write). A transaction that never wrote (no journaled
  step ran) writes nothing at all; `open` writes nothing either (an empty journal undoes nothing).

A `volatile()` journal writes its files without fsyncs: for transactions whose every leftover a
power loss could keep (a file on the disk, not a mount, a process or a runroot file, which a reboot
ends) the start-up's orphan sweep removes (a container's creation: its dirs, by
sandbox.orphans). A crash of the daemon alone keeps the page cache, and so the journal, for
replay; a power loss may lose the journal, and the sweep then finds what it named.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from podrt.host.fsutil import atomic_write, fsync_dir
from podrt.rollback import StepRecord, StepRegistry, UndoFailure, quietly, teardown

logger = logging.getLogger(__name__)


def _json_copy(data: dict[str, Any]) -> dict[str, Any]:
    """Deep copy that also proves the data is JSON-serialisable before anything runs."""
    return json.loads(json.dumps(data))


_is_str = attrs.validators.instance_of(str)


@attrs.define
class JournalEntry:
    """Validated, so a hand-edited or truncated-but-parseable journal is reported as corrupt."""

    name: str = attrs.field(validator=_is_str)
    kind: str = attrs.field(validator=_is_str)
    data: dict[str, Any] = attrs.field(validator=attrs.validators.instance_of(dict))
    state: Literal["intent", "done"] = attrs.field(validator=attrs.validators.in_(("intent", "done")))


class JournalFile:
    """The on-disk undo stack of one transaction."""

    def __init__(self, path: Path, tx_id: str, tx_kind: str,
                 entries: list[JournalEntry] | None = None, created: float | None = None,
                 commit_file: str | None = None, durable: bool = True) -> None:
        self.path, self.tx_id, self.tx_kind, self.commit_file = path, tx_id, tx_kind, commit_file
        self.durable = durable  # False: written without fsyncs (Journal.volatile)
        self.created = time.time() if created is None else created
        self._entries, self._dirty = entries or [], False
        self._written = entries is not None  # loaded from its file (else: written at the first intents)

    def entries(self) -> list[JournalEntry]:
        return list(self._entries)

    def intent(self, step_name: str, kind: str, data: dict[str, Any]) -> None:
        self.intents([(step_name, kind, data)])

    def intents(self, steps: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Blocking, durable (unless volatile): a phase's steps, written at once before any of them runs."""
        new = [JournalEntry(name, kind, _json_copy(data), "intent") for name, kind, data in steps]
        names = [e.name for e in self._entries] + [e.name for e in new]
        if len(set(names)) != len(names):
            raise ValueError(f"a step of {[e.name for e in new]} is already in journal {self.tx_id}")
        self._write([*self._entries, *new])

    def done(self, step_name: str, data: dict[str, Any]) -> None:
        """Lazy (no fsync of its own): folded into the next write; intent data suffices till then."""
        entry = next(e for e in self._entries if e.name == step_name)
        entry.data, entry.state, self._dirty = _json_copy(data), "done", True

    def remove_entry(self, step_name: str) -> None:
        """Lazy, after a successful undo: folded into the next write (the module doc says why)."""
        remaining = [e for e in self._entries if e.name != step_name]
        if len(remaining) != len(self._entries):
            self._entries, self._dirty = remaining, True

    def flush(self) -> None:
        """Blocking: what changed in memory, durably (if the file was ever written)."""
        if self._dirty and (self._written or self._entries):
            self._write(self._entries)

    def discard(self) -> None:
        """Blocking: the file goes, durably, or a crash could "undo" a committed tx."""
        if self._written:
            self.path.unlink(missing_ok=True)
            if self.durable:
                fsync_dir(self.path.parent)
        self._entries, self._dirty, self._written = [], False, False

    def discard_committed(self) -> None:
        """At the commit of a transaction with a commit file, which exists now:
        the file goes, without an fsync (replay drops it all the same). The
        runner calls it in a worker thread and does not wait: an unlink took
        ~0.3 ms on a busy disk, on the loop."""
        assert self.commit_file is not None
        if self._written:
            self.path.unlink(missing_ok=True)
        self._entries, self._dirty, self._written = [], False, False

    def _write(self, entries: list[JournalEntry]) -> None:
        doc = {"version": 1, "tx_id": self.tx_id, "tx_kind": self.tx_kind, "created": self.created,
               "entries": [attrs.asdict(e) for e in entries]}
        if self.commit_file is not None:
            doc["commit_file"] = self.commit_file
        atomic_write(self.path, json.dumps(doc).encode(), durable=self.durable)
        self._entries, self._dirty, self._written = entries, False, True

    @classmethod
    def load(cls, path: Path) -> JournalFile:
        """Raises ValueError on anything malformed (JSON and Unicode errors are ValueErrors too)."""
        try:
            doc = json.loads(path.read_bytes())
            entries = [JournalEntry(**e) for e in doc["entries"]]
            commit_file = doc.get("commit_file")
            if commit_file is not None and not isinstance(commit_file, str):
                raise TypeError("commit_file is not a path")
            return cls(path, str(doc["tx_id"]), str(doc["tx_kind"]), entries, float(doc["created"]), commit_file)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed journal: {exc!r}") from exc


@attrs.define
class ReplayReport:
    transactions: list[str] = attrs.Factory(list)
    undos_run: list[tuple[str, str]] = attrs.Factory(list)  # (tx_id, step)
    failures: list[tuple[str, UndoFailure]] = attrs.Factory(list)
    kept: list[str] = attrs.Factory(list)  # tx_ids whose journal stays for the next start


class Journal:
    """Directory of per-transaction journals; leftovers at startup are replayed."""

    _TX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

    def __init__(self, directory: Path, *, log: logging.Logger | None = None, durable: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._log, self._durable = log or logger, durable

    def volatile(self) -> Journal:
        """The same directory (replayed alike), its files written without fsyncs (module doc)."""
        return Journal(self.directory, log=self._log, durable=False)

    def open(self, tx_id: str, tx_kind: str, commit_file: str | None = None) -> JournalFile:
        if not self._TX_ID.fullmatch(tx_id):
            raise ValueError(f"tx_id {tx_id!r} is not a safe file name")
        path = self.directory / f"{tx_id}.json"
        if path.exists():
            raise FileExistsError(f"journal for transaction {tx_id} already exists")
        return JournalFile(path, tx_id, tx_kind, commit_file=commit_file, durable=self._durable)  # written at its first intents

    def pending(self) -> list[JournalFile]:
        """Leftover journals, newest first; corrupt ones moved aside. Call only at startup."""
        for tmp in self.directory.glob(".*.tmp"):  # writes a crash interrupted
            tmp.unlink(missing_ok=True)
        found: list[JournalFile] = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(JournalFile.load(path))
            except ValueError as exc:
                aside = path.with_name(path.name + ".corrupt")
                self._log.error("unparsable journal %s (%s); moved to %s", path, exc, aside)
                quietly(self._log, f"moving {path} aside", os.rename, path, aside)
            except OSError:
                self._log.exception("cannot read journal %s; skipped", path)
        return sorted(found, key=lambda jf: jf.created, reverse=True)

    async def replay(self, registry: StepRegistry, log: logging.Logger | None = None) -> ReplayReport:
        """Undo every leftover entry (intent too: a crash may have hit mid-do), newest first."""
        log, report = log or self._log, ReplayReport()
        for jf in self.pending():
            if jf.commit_file is not None and os.path.exists(jf.commit_file):  # committed; its removal was lost
                log.info("%s tx %s committed (%s is written): its journal goes", jf.tx_kind, jf.tx_id, jf.commit_file)
                quietly(log, f"discarding journal {jf.tx_id}", jf.discard)
                continue
            report.transactions.append(jf.tx_id)

            def on_undo(rec: StepRecord, seconds: float, error: BaseException | None, jf: JournalFile = jf) -> None:
                report.undos_run.append((jf.tx_id, rec.name))
                if error is None:
                    jf.remove_entry(rec.name)

            records = [(e.name, e.kind, e.data) for e in jf.entries()]
            failures = await teardown(records, registry, log=log, on_undo=on_undo)
            report.failures.extend((jf.tx_id, f) for f in failures)
            if failures:  # exactly the failed entries stay
                report.kept.append(jf.tx_id)
                quietly(log, f"updating journal {jf.tx_id}", jf.flush)
            else:
                quietly(log, f"discarding journal {jf.tx_id}", jf.discard)
            log.info("replayed %s tx %s: %d undos, %d failed", jf.tx_kind, jf.tx_id, len(records), len(failures))
        return report

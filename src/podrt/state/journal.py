"""The on-disk undo stack of one transaction (podrt.rollback's Journal keeps a directory of them).

Each step is written as an intent before it runs and marked done after, so the next start can
undo what a crash interrupted; a committed transaction's file is removed (durably).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import attrs

from podrt.host.fsutil import atomic_write, fsync_dir


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
                 entries: list[JournalEntry] | None = None, created: float | None = None) -> None:
        self.path, self.tx_id, self.tx_kind = path, tx_id, tx_kind
        self.created = time.time() if created is None else created
        self._entries, self._dirty = entries or [], False

    def entries(self) -> list[JournalEntry]:
        return list(self._entries)

    def intent(self, step_name: str, kind: str, data: dict[str, Any]) -> None:
        if any(e.name == step_name for e in self._entries):
            raise ValueError(f"step {step_name!r} is already in journal {self.tx_id}")
        self._write([*self._entries, JournalEntry(step_name, kind, _json_copy(data), "intent")])

    def done(self, step_name: str, data: dict[str, Any]) -> None:
        """Lazy (no fsync of its own): folded into the next write; intent data suffices till then."""
        entry = next(e for e in self._entries if e.name == step_name)
        entry.data, entry.state, self._dirty = _json_copy(data), "done", True

    def remove_entry(self, step_name: str) -> None:
        remaining = [e for e in self._entries if e.name != step_name]
        if len(remaining) != len(self._entries):
            self._write(remaining)

    def flush(self) -> None:
        if self._dirty:
            self._write(self._entries)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)  # durable, or a crash could "undo" a committed tx
        self._entries, self._dirty = [], False

    def _write(self, entries: list[JournalEntry]) -> None:
        doc = {"version": 1, "tx_id": self.tx_id, "tx_kind": self.tx_kind, "created": self.created,
               "entries": [attrs.asdict(e) for e in entries]}
        atomic_write(self.path, json.dumps(doc).encode())
        self._entries, self._dirty = entries, False

    @classmethod
    def load(cls, path: Path) -> JournalFile:
        """Raises ValueError on anything malformed (JSON and Unicode errors are ValueErrors too)."""
        try:
            doc = json.loads(path.read_bytes())
            entries = [JournalEntry(**e) for e in doc["entries"]]
            return cls(path, str(doc["tx_id"]), str(doc["tx_kind"]), entries, float(doc["created"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed journal: {exc!r}") from exc

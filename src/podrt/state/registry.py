"""The plumbing both managers share, written once: records by full ID, IDs
by unique prefix, a lock per ID, the listing of views, and the two-phase
teardown of a record's steps (the ones that hold its name and ID go last, so a
failed removal can be retried by ID while the name stays taken)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from podrt.errors import NotFound
from podrt.rollback import Step, StepRegistry, UndoFailure, teardown
from podrt.state.idindex import IdIndex
from podrt.state.records import PlanStep

S = TypeVar("S")
V = TypeVar("V")


class Registry(Generic[S]):
    """One kind of record (pods, containers) in memory, keyed by full ID."""

    def __init__(self, ids: IdIndex, what: str) -> None:
        self.ids = ids
        self._what = what  # "container", "pod sandbox": the NotFound message's noun
        self._records: dict[str, S] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.version = 0  # changes with every record added, replaced or removed (cri/listindex.py)

    def resolve(self, id_prefix: str) -> str:
        """The full ID of a unique prefix; NotFound or InvalidArgument (ambiguous)."""
        return self.ids.get(id_prefix, self._what)

    def known_id(self, id_prefix: str) -> str | None:
        """The full ID, or None for an unknown one: stop and remove succeed on those (the kubelet relies on it)."""
        try:
            return self.resolve(id_prefix)
        except NotFound:
            return None

    def matching_ids(self, prefix: str) -> list[str]:
        return self.ids.matching(prefix)

    def get(self, full_id: str) -> S:
        record = self._records.get(full_id)
        if record is None:
            raise NotFound(f"{self._what} {full_id} not found")
        return record

    def find(self, full_id: str) -> S | None:
        return self._records.get(full_id)

    def add(self, full_id: str, record: S) -> None:
        self._records[full_id] = record
        self.version += 1

    def pop(self, full_id: str) -> S | None:
        self.version += 1
        return self._records.pop(full_id, None)

    def lock(self, full_id: str) -> asyncio.Lock:
        """The record's lock: its start, stop, removal and exit are serialized."""
        return self._locks.setdefault(full_id, asyncio.Lock())

    def drop_lock(self, full_id: str) -> None:
        self._locks.pop(full_id, None)

    def values(self) -> list[S]:
        """A copy: callers await between records."""
        return list(self._records.values())

    def items(self) -> list[tuple[str, S]]:
        return list(self._records.items())

    def views(self, view: Callable[[str], V], match: Callable[[V], bool],
              ids: Iterable[str] | None = None) -> list[V]:
        """List*: the view of each record (of `ids` that are known, when given) that `match` accepts."""
        chosen = self._records if ids is None else [i for i in ids if i in self._records]
        made = (view(i) for i in chosen)
        return [v for v in made if match(v)]

    def __contains__(self, full_id: object) -> bool:
        return full_id in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


async def undo_records(plan: Iterable[PlanStep], undo: StepRegistry | Mapping[str, Step] | Sequence[Step],
                       *, what: str, log: logging.Logger, released_last: Collection[str] = (),
                       side_by_side: bool = False, undone_after: Collection[str] = ()) -> None:
    """Undo committed steps from a record's plan: first all but those of
    `released_last` kinds, then those; RuntimeError naming `what` (e.g.
    "removal of container X") when a phase leaves something behind.
    `side_by_side`: the first phase's undos run concurrently (each tried
    whatever the others do). `undone_after`: kinds undone after the rest of
    the first phase, newest first, even when some of the rest failed (the
    namespaces the others work in); their failures count with the rest's."""
    steps = list(plan)
    first = [s for s in steps if s.kind not in released_last and s.kind not in undone_after]
    if side_by_side:
        found = await asyncio.gather(*(teardown([s.undo_record()], undo, log=log) for s in first))
        failures = [f for each in found for f in each]
    else:
        failures = await teardown([s.undo_record() for s in first], undo, log=log)
    failures += await teardown([s.undo_record() for s in steps if s.kind in undone_after], undo, log=log)
    _complete(what, failures)
    if released_last:
        _complete(what, await teardown([s.undo_record() for s in steps if s.kind in released_last], undo, log=log))


def _complete(what: str, failures: list[UndoFailure]) -> None:
    if failures:
        detail = "; ".join(f"{f.step}: {f.error}" for f in failures)
        raise RuntimeError(f"{what} incomplete: {detail}")

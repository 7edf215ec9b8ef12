"""ListPodSandbox and ListContainers (and their Stream* RPCs) answered from
indexes: each item's entry (its encoded list element, cri/listcache.py) kept
with what a filter asks of it (state, labels, pod), a label index (key=value
-> IDs), and the entries of every item and of each state in the registry's
order.

The index follows its source by version (a record added, replaced or
removed, a pod's readiness): while the version holds, an unfiltered list or a
list by state is a list already made, and a filter by label, ID or pod reads
only the items its most selective index names. When the version moves, the
source's items are walked once and only the changed ones are encoded again (a
record is immutable: a changed one is a new object).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Generic, NamedTuple, TypeVar

import betterproto

from podrt.cri.listcache import entry

V = TypeVar("V")
K = TypeVar("K")


class Listed(NamedTuple):
    """What a filter asks of an item, and what says it changed."""

    id: str
    record: object  # the registry's record: the same object while the item is unchanged
    state: int  # the listed state, as the CRI enum's value
    labels: Mapping[str, str]  # fixed at creation
    group: str = ""  # a container's pod


class _Row(NamedTuple):
    record: object
    state: int
    labels: Mapping[str, str]
    group: str
    entry: bytes


class ListIndex(Generic[V]):
    def __init__(self, to_message: Callable[[V], betterproto.Message], describe: Callable[[V], Listed]) -> None:
        self._to_message, self._describe = to_message, describe
        self._rows: dict[str, _Row] = {}  # in the source's order
        self._by_label: dict[tuple[str, str], set[str]] = {}
        self._by_group: dict[str, set[str]] = {}
        self._version: Hashable = object()  # none seen yet
        self._lists: dict[int | None, list[bytes]] = {}  # state (None: any) -> entries, made when asked
        self._position: dict[str, int] = {}  # made when asked

    def sync(self, version: Hashable, items: Callable[[], Iterable[V]]) -> None:
        """Up to date with the source, whose items `items` yields in its order."""
        if version == self._version:
            return
        rows: dict[str, _Row] = {}
        for item in items():
            listed = self._describe(item)
            rows[listed.id] = self._row(item, listed)
        for gone in self._rows.keys() - rows.keys():
            self._unindex(gone)
        self._rows, self._version = rows, version
        self._lists.clear()
        self._position.clear()

    def update(self, item: V) -> None:
        """One item's state as it is now, between versions (a container's exit
        that conmon wrote and the watcher has not recorded yet); it keeps its place."""
        listed = self._describe(item)
        row = self._rows.get(listed.id)
        if row is not None and row.state != listed.state:
            self._rows[listed.id] = self._encoded(item, listed)
            self._lists.clear()

    def _row(self, item: V, listed: Listed) -> _Row:
        row = self._rows.get(listed.id)
        if row is not None and row.record is listed.record and row.state == listed.state:
            return row
        if row is not None and (row.labels != listed.labels or row.group != listed.group):
            self._unindex(listed.id)  # an ID's labels and pod are fixed at creation; a reused ID's are not
            row = None
        if row is None:
            for pair in listed.labels.items():
                self._by_label.setdefault(pair, set()).add(listed.id)
            self._by_group.setdefault(listed.group, set()).add(listed.id)
        return self._encoded(item, listed)

    def _encoded(self, item: V, listed: Listed) -> _Row:
        return _Row(listed.record, listed.state, listed.labels, listed.group, entry(bytes(self._to_message(item))))

    def _unindex(self, item_id: str) -> None:
        row = self._rows[item_id]
        for pair in row.labels.items():
            _discard(self._by_label, pair, item_id)
        _discard(self._by_group, row.group, item_id)

    def select(self, *, ids: Collection[str] | None = None, state: int | None = None,
               labels: Mapping[str, str] | None = None, group: str | None = None) -> list[bytes]:
        """The entries of the items that pass every filter given, in the source's
        order: `ids` (full IDs), `state`, every label pair, `group` (a prefix of a pod's ID)."""
        if ids is None and not labels and group is None:
            return self._listed(state)
        chosen: list[Collection[str]] = [] if ids is None else [set(ids)]
        for pair in (labels or {}).items():
            chosen.append(self._by_label.get(pair, ()))
        if group is not None:
            chosen.append(self._group(group))
        smallest = min(chosen, key=len)
        rest = [c for c in chosen if c is not smallest]
        rows = self._rows
        found = [i for i in smallest if i in rows and (state is None or rows[i].state == state)
                 and all(i in c for c in rest)]
        if len(found) > 1:
            position = self._positions()
            found.sort(key=position.__getitem__)
        return [rows[i].entry for i in found]

    def _group(self, prefix: str) -> Collection[str]:
        exact = self._by_group.get(prefix)
        if exact is not None:
            return exact
        return {i for g, ids in self._by_group.items() if g.startswith(prefix) for i in ids}

    def _listed(self, state: int | None) -> list[bytes]:
        found = self._lists.get(state)
        if found is None:
            rows = self._rows.values()
            found = self._lists[state] = [r.entry for r in rows if state is None or r.state == state]
        return found

    def _positions(self) -> dict[str, int]:
        if not self._position:
            self._position = {i: n for n, i in enumerate(self._rows)}
        return self._position


def _discard(index: dict[K, set[str]], key: K, item_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(item_id)
        if not ids:
            del index[key]

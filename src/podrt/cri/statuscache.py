"""PodSandboxStatus and ContainerStatus answered from each item's encoded
status, kept while its record and state hold (a record is immutable: a
changed one is a new object): joining cached bytes costs microseconds.
critest's benchmark asks a status at every step, of a new item each time:
the status is encoded by cri/status_wire.py, not betterproto (~0.5 ms).

Both responses hold the status as field 1 and the verbose info as field 2,
a map<string, string>: on the wire, one message per entry with the key as
field 1 and the value as field 2. The info is encoded at each call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

import betterproto

from podrt.cri.listcache import encoded, entry
from podrt.cri.wire import string_map

V = TypeVar("V")


def info_entries(info: Mapping[str, str]) -> bytes:
    """The map field 2 of a status response."""
    return string_map(2, info)


def verbose_info(info: Mapping[str, object] | None) -> dict[str, str]:
    """A status response's info map: the verbose info as one JSON value under "info" (as
    containerd and CRI-O send it); nothing when not asked. A bytes value is
    JSON text already (a spec as written): put in as it is, not parsed and written again."""
    if info is None:
        return {}
    return {"info": "{" + ", ".join(f"{json.dumps(k)}: {v.decode() if isinstance(v, bytes) else json.dumps(v)}"
                                    for k, v in info.items()) + "}"}


class _Item(NamedTuple):
    record: object
    state: object
    status: bytes  # field 1, encoded
    info: bytes | None  # field 2's entries, encoded; None until a verbose call asks


class StatusCache(Generic[V]):
    """`to_status(view)`: the status' encoding (cri/status_wire.py); `key(view)`: (ID, record, state); `known(ID)`: whether the item is still there
    (entries of removed items are dropped once they are as many as the live ones)."""

    def __init__(self, response_cls: type[betterproto.Message], to_status: Callable[[V], bytes],
                 key: Callable[[V], tuple[str, object, object]], known: Callable[[str], bool]) -> None:
        self._response_cls, self._to_status, self._key, self._known = response_cls, to_status, key, known
        self._items: dict[str, _Item] = {}
        self._limit = 64

    def _item(self, view: V) -> _Item:
        item_id, record, state = self._key(view)
        found = self._items.get(item_id)
        if found is None or found.record is not record or found.state != state:
            found = self._items[item_id] = _Item(record, state, entry(self._to_status(view)), None)
            if len(self._items) > self._limit:
                self._items = {i: v for i, v in self._items.items() if self._known(i)}
                self._limit = 2 * len(self._items) + 64
        return found

    def response(self, view: V, info: Mapping[str, str]) -> Any:
        """The response message (its bytes set, not encoded) with `view`'s status and `info`."""
        return encoded(self._response_cls, self._item(view).status + info_entries(info))

    def prepare(self, view: V, inspect: Callable[[V], Awaitable[Mapping[str, object]]]) -> None:
        """Encode `view`'s status and verbose info now, in a task of its own, for the call
        that is about to ask them (ContainerStatus after StartContainer's answer): a
        failure (the item gone meanwhile) is left to that call to meet."""
        task = asyncio.ensure_future(self.verbose(view, inspect))
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def verbose(self, view: V, inspect: Callable[[V], Awaitable[Mapping[str, object]]]) -> Any:
        """The response with `view`'s status and its verbose info (`inspect`,
        as one JSON value), the info too encoded once per record and state:
        what it holds (the spec as written at creation, what podrt knows of
        the process) changes only with them. critest asks it at every status,
        each time of a new item, right after its create or start: the spec
        is then in memory (steps/spec_files.py) and nothing here waits, so
        the answer does not queue behind the creation's own work on the loop."""
        found = self._item(view)
        info = found.info
        if info is None:
            info = info_entries(verbose_info(await inspect(view)))
            item_id = self._key(view)[0]
            if self._items.get(item_id) is found:  # not changed meanwhile
                self._items[item_id] = found._replace(info=info)
        return encoded(self._response_cls, found.status + info)

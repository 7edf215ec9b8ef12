"""List answers without re-encoding every item each time (ListPodSandbox, ListImages).

A repeated message field on the wire is the concatenation of each element's
tag, length and bytes, so a response whose only field is the list can be
built from per-item encodings cached by a key that changes whenever the
item's listed fields do. Encoding 1000 pods with betterproto costs hundreds
of ms; joining cached bytes, ~1 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

import betterproto

V = TypeVar("V")
_LIST_TAG = b"\x0a"  # field 1, wire type 2 (length-delimited): the list of both responses


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encoded(response_cls: type[betterproto.Message], data: bytes) -> Any:
    """An instance of `response_cls` whose wire bytes are `data` (grpclib sends bytes(msg))."""
    msg = response_cls()
    object.__setattr__(msg, "_encoded", data)  # not a proto field
    return msg


class _Encoded:
    def __bytes__(self) -> bytes:
        return self._encoded  # type: ignore[attr-defined]


def _encoded_class(response_cls: type[betterproto.Message]) -> type[betterproto.Message]:
    return type(f"Encoded{response_cls.__name__}", (_Encoded, response_cls),
                {"__module__": response_cls.__module__})  # betterproto resolves field types there


class ListCache(Generic[V]):
    """Per-item encodings of field 1 of `response_cls`, keyed by `key(item)`."""

    def __init__(self, response_cls: type[betterproto.Message], to_message: Callable[[V], betterproto.Message],
                 key: Callable[[V], Hashable]) -> None:
        self._cls = _encoded_class(response_cls)
        self._to_message, self._key = to_message, key
        self._items: dict[Hashable, bytes] = {}

    def _item(self, item: V) -> bytes:
        key = self._key(item)
        found = self._items.get(key)
        if found is None:
            body = bytes(self._to_message(item))
            found = self._items[key] = _LIST_TAG + _varint(len(body)) + body
        return found

    def response(self, items: Iterable[V], *, full: bool) -> Any:
        """`full` (an unfiltered list) also drops entries of items that are gone."""
        items = list(items)
        data = b"".join(self._item(i) for i in items)
        if full:
            live = {self._key(i) for i in items}
            self._items = {k: b for k, b in self._items.items() if k in live}
        return encoded(self._cls, data)

"""List answers from per-item encodings: one message (List*) or a stream of
chunks below a size limit (the Stream* RPCs of KEP-5825, `CRIListStreaming`).

A repeated message field on the wire is the concatenation of each element's
tag, length and bytes (an "entry"). Every List* and Stream* response has its
list as field 1 and nothing else, so a response is a join of entries and a
chunk is a join of a run of them: no message is built, and the size of each
chunk is known exactly before it is joined. `ListCache` keeps each item's
entry under a key that changes whenever the item's listed fields do: encoding
1000 pods with betterproto costs hundreds of ms; joining cached bytes, ~1 ms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import betterproto

from podrt.cri.wire import varint

V = TypeVar("V")
_LIST_TAG = b"\x0a"  # field 1, wire type 2 (length-delimited): the list of every List/Stream response


def entry(body: bytes) -> bytes:
    """One item's encoding as an element of field 1 (`field(1, body)`, its tag made once)."""
    return _LIST_TAG + varint(len(body)) + body


def entries(messages: Iterable[betterproto.Message]) -> list[bytes]:
    """Items not cached (stats change at every read): encoded once, here."""
    return [entry(bytes(m)) for m in messages]


class _Encoded:
    """Made without betterproto's __init__ (~30 us here, as long as the rest of
    a cached answer): only its bytes are meaningful (its fields read as defaults)."""

    _encoded: bytes

    def __bytes__(self) -> bytes:
        return self._encoded


@functools.cache
def _encoded_class(response_cls: type[betterproto.Message]) -> type[betterproto.Message]:
    """A subclass whose bytes are set, not encoded: grpclib's codec checks
    isinstance against the method's response type, then sends bytes(msg)."""
    return type(f"Encoded{response_cls.__name__}", (_Encoded, response_cls),
                {"__module__": response_cls.__module__})  # betterproto resolves field types there


def encoded(response_cls: type[betterproto.Message], data: bytes) -> Any:
    """An instance of `response_cls` whose wire bytes are `data`."""
    cls = _encoded_class(response_cls)
    msg = object.__new__(cls)
    object.__setattr__(msg, "_encoded", data)  # not a proto field
    return msg


def whole(response_cls: type[betterproto.Message], items: Sequence[bytes]) -> Any:
    """A List* response: every entry in one message."""
    return encoded(response_cls, b"".join(items))


def chunk_bounds(sizes: Sequence[int], limit: int) -> Iterator[tuple[int, int]]:
    """[start, end) runs of consecutive items whose sizes sum to at most
    `limit`, in order; an item larger than `limit` alone (an item cannot be
    split: the client refuses that message, as it would the List answer).
    Nothing for no items: a stream of no messages is an empty list to the kubelet."""
    start = total = 0
    for i, size in enumerate(sizes):
        if total + size > limit and i > start:
            yield start, i
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield start, len(sizes)


def chunked(response_cls: type[betterproto.Message], items: Sequence[bytes], limit: int) -> Iterator[Any]:
    """A Stream* response's messages, each at most `limit` bytes (but for a
    single larger item). `items` is a snapshot taken before the first message
    goes out: whatever changes while the stream is sent, each item is listed once."""
    for start, end in chunk_bounds([len(e) for e in items], limit):
        yield encoded(response_cls, b"".join(items[start:end]))


class ListCache(Generic[V]):
    """Per-item entries, keyed by `key(item)`."""

    def __init__(self, to_message: Callable[[V], betterproto.Message], key: Callable[[V], Hashable]) -> None:
        self._to_message, self._key = to_message, key
        self._items: dict[Hashable, bytes] = {}

    def _item(self, item: V) -> bytes:
        key = self._key(item)
        found = self._items.get(key)
        if found is None:
            found = self._items[key] = entry(bytes(self._to_message(item)))
        return found

    def entries(self, items: Iterable[V], *, full: bool) -> list[bytes]:
        """`full` (an unfiltered list) also drops entries of items that are gone."""
        items = list(items)
        out = [self._item(i) for i in items]
        if full:
            live = {self._key(i) for i in items}
            self._items = {k: b for k, b in self._items.items() if k in live}
        return out

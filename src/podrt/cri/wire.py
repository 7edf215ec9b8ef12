"""Protobuf's wire format for the answers podrt encodes itself (cri/listcache.py,
cri/statuscache.py, cri/status_wire.py): a field is its tag (number << 3 |
wire type) then its value. A scalar at proto3's default (0, "", false) is left
out, as betterproto leaves it."""

from __future__ import annotations

from collections.abc import Mapping

_ONE_BYTE = [bytes([n]) for n in range(0x80)]


def varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, body: bytes) -> bytes:
    """A length-delimited field (wire type 2): a message, bytes or a string."""
    return varint(number << 3 | 2) + varint(len(body)) + body


def number(n: int, value: int) -> bytes:
    """A varint field (wire type 0: int32, int64, bool, enum); nothing for 0. A
    negative value goes as its 64-bit two's complement, as protobuf writes it."""
    if not value:
        return b""
    return varint(n << 3) + varint(value if value > 0 else value + (1 << 64))


def string(n: int, text: str) -> bytes:
    """A string field; nothing for ""."""
    return field(n, text.encode()) if text else b""


def string_map(n: int, items: Mapping[str, str]) -> bytes:
    """A map<string, string> field: one entry message (key 1, value 2) per pair, in the map's order."""
    return b"".join(field(n, string(1, k) + string(2, v)) for k, v in items.items())

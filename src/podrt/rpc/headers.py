"""A request's header block: decoded against the client's HPACK table, then
read for what a call needs (its path and deadline), or refused as HTTP says."""

from __future__ import annotations

from typing import Any

import hpack
from grpclib.const import Status
from grpclib.metadata import decode_timeout

from podrt.rpc import frames
from podrt.rpc.frames import ConnectionError_, ErrorCode, StreamError

DECODED_BLOCKS = 64  # header blocks kept decoded per connection
_INDEXED = bytes(range(0x81, 0xFF))  # the bytes of one-byte indexed fields: index 1 to 126


class Decoder:
    """hpack's Decoder, with the blocks a client repeats kept decoded.

    Every block is decoded, whatever becomes of its stream: the client's
    encoder counts on our copy of its table. A client repeats its calls'
    blocks byte for byte once its table holds every field; a block of
    one-byte indexed fields only reads the table, so its decoding holds
    until a block that may change the table (hpack's decode costs ~50 us a call)."""

    def __init__(self, max_header_list_size: int) -> None:
        self._hpack = hpack.Decoder(max_header_list_size)
        self._decoded: dict[bytes, Any] = {}

    def decode(self, block: bytes) -> Any:
        found = self._decoded.get(block)
        if found is not None:
            return found
        try:
            fields = self._hpack.decode(block, raw=True)
        except hpack.HPACKError as exc:
            raise ConnectionError_(ErrorCode.COMPRESSION_ERROR, f"a header block that does not decode: {exc}") from None
        if block.translate(None, _INDEXED):
            self._decoded.clear()  # the table may have changed
        elif len(self._decoded) < DECODED_BLOCKS:
            self._decoded[block] = fields
        return fields


def read_request(stream_id: int, fields: Any) -> tuple[str, float | None] | bytes:
    """(path, seconds to its deadline or None) of a gRPC request, or the
    header block of the answer that refuses it."""
    method = path = content_type = timeout = None
    for name, value in fields:
        if name == b":path":
            path = value
        elif name == b":method":
            method = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            timeout = value
    if path is None or method is None:
        raise StreamError(stream_id, ErrorCode.PROTOCOL_ERROR)
    if method != b"POST":
        return frames.http_error_block(405, "gRPC calls are POST requests")
    base, _, subtype = (content_type or b"").partition(b"+")
    if base.split(b";")[0].strip() != frames.CONTENT_TYPE or subtype not in (b"", b"proto"):
        shown = (content_type or b"(none)").decode("latin-1")
        return frames.http_error_block(415, f"content-type {shown!r} is not application/grpc")
    seconds = None
    if timeout is not None:
        try:
            seconds = decode_timeout(timeout.decode("latin-1"))
        except ValueError:
            return frames.RESPONSE_HEADERS + frames.status_block(
                Status.INVALID_ARGUMENT, f"malformed grpc-timeout {timeout.decode('latin-1')!r}")
    return path.decode("latin-1"), seconds

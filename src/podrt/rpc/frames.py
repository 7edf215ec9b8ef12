"""HTTP/2 frames (RFC 9113 section 6) and the header blocks of gRPC answers.

Answers are encoded without HPACK's dynamic table (RFC 7541): ":status 200"
is static entry 8, content-type a literal with static name 31, trailers
literals without indexing. A client's decoder then keeps no state for us,
and the common blocks are constants, built once.
"""

from __future__ import annotations

import enum
import struct

from grpclib.const import Status
from grpclib.metadata import encode_grpc_message
from hpack.hpack import encode_integer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)

# flags
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = range(1, 7)

DEFAULT_WINDOW = 65535
DEFAULT_FRAME = 16384
MAX_FRAME = (1 << 24) - 1
MAX_WINDOW = (1 << 31) - 1

HEAD = struct.Struct(">BHBBI")  # a frame's 9 bytes: length (24 bits as 8 + 16), type, flags, stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")


class ErrorCode(enum.IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return HEAD.pack(n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def header_frames(stream_id: int, block: bytes, max_frame: int, *, end_stream: bool = False) -> bytes:
    """A header block as HEADERS, and CONTINUATION frames for what does not fit one frame."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    parts = [block[i:i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream_id, parts[0])]
    out += [frame(CONTINUATION, 0, stream_id, p) for p in parts[1:-1]]
    out.append(frame(CONTINUATION, END_HEADERS, stream_id, parts[-1]))
    return b"".join(out)


def data_frames(stream_id: int, data: memoryview, max_frame: int) -> list[bytes]:
    """`data` as DATA frames of at most `max_frame` bytes (an empty `data`: none)."""
    out = []
    for pos in range(0, len(data), max_frame):
        chunk = data[pos:pos + max_frame]
        n = len(chunk)
        out.append(HEAD.pack(n >> 16, n & 0xFFFF, DATA, 0, stream_id))
        out.append(bytes(chunk))
    return out


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: ErrorCode) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: ErrorCode, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32.pack(last_stream_id) + _U32.pack(code) + debug)


def u32(payload: bytes) -> int:
    return int(_U32.unpack_from(payload)[0])


def _string(value: bytes) -> bytes:
    """An HPACK string literal, not Huffman-coded (RFC 7541 section 5.2)."""
    return bytes(encode_integer(len(value), 7)) + value


def _literal(name: bytes | int, value: bytes) -> bytes:
    """A literal field without indexing (RFC 7541 section 6.2.2), by static
    table index or by name: a client's dynamic table is never touched."""
    if isinstance(name, int):
        return bytes(encode_integer(name, 4)) + _string(value)
    return b"\x00" + _string(name) + _string(value)


_STATUS_NAME = 8  # static table entries: ":status: 200" (8) and "content-type" (31)
_CONTENT_TYPE = 31
CONTENT_TYPE = b"application/grpc"
RESPONSE_HEADERS = b"\x88" + _literal(_CONTENT_TYPE, CONTENT_TYPE)  # :status 200, content-type
TRAILERS_OK = _literal(b"grpc-status", b"0")


def status_block(status: Status, message: str | None) -> bytes:
    """grpc-status and grpc-message (percent-encoded, as the gRPC spec says) of trailers."""
    block = _literal(b"grpc-status", str(status.value).encode())
    if message:
        block += _literal(b"grpc-message", encode_grpc_message(message).encode("ascii"))
    return block


def http_error_block(http_status: int, message: str) -> bytes:
    """A request HTTP refuses (method, content type): that :status, with gRPC's UNKNOWN for clients that read it."""
    return (_literal(_STATUS_NAME, str(http_status).encode()) + _literal(_CONTENT_TYPE, CONTENT_TYPE)
            + status_block(Status.UNKNOWN, message))


class ConnectionError_(Exception):  # noqa: N801 (the builtin ConnectionError is an OSError)
    """A connection error (RFC 9113 section 5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class StreamError(Exception):
    """A stream error (section 5.4.2): RST_STREAM with `code`; the connection lives."""

    def __init__(self, stream_id: int, code: ErrorCode) -> None:
        super().__init__(code.name)
        self.stream_id, self.code = stream_id, code


def unpad(flags: int, payload: bytes, kind: str) -> tuple[int, int]:
    """[start, end) of a padded frame's content (DATA, HEADERS)."""
    if not flags & PADDED:
        return 0, len(payload)
    if not payload or payload[0] >= len(payload):
        raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, f"{kind} padding longer than the frame")
    return 1, len(payload) - payload[0]

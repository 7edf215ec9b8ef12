"""SPDY/3.1 framing, sans-IO: bytes in, frames out; frames in, bytes out.

The kubelet, crictl and critest speak Kubernetes' remotecommand and
portforward protocols over SPDY/3.1 (moby/spdystream on their side), and no
maintained Python SPDY library exists. This module knows only the frame
layer of draft 3.1: control frames (SYN_STREAM, SYN_REPLY, RST_STREAM,
SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE) and data frames, with header
blocks compressed by one zlib stream per direction, seeded with the
dictionary the draft defines. Streams, flow control and what the streams
carry belong to the session above it.

A peer's frame is bounded (its 24-bit length, and MAX_HEADER_BLOCK once
inflated: a small compressed block must not grow without limit); anything
malformed raises ProtocolError, which ends that one connection.
"""

from __future__ import annotations

import enum
import struct
import zlib

import attrs

VERSION = 3
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02  # SYN_STREAM
FLAG_SETTINGS_CLEAR = 0x01
MAX_LENGTH = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1
MAX_HEADER_BLOCK = 64 * 1024  # inflated


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class ProtocolError(Exception):
    """The peer broke SPDY framing: the connection cannot go on."""


# The draft's header dictionary (section 2.6.10.1): these words, each after
# its 4-byte big-endian length, then the text of TAIL.
_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
    "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
    "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
    "keep-alive", "origin",
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack("!I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()

Headers = tuple[tuple[str, str], ...]  # names lower case; a value may hold several, NUL-separated


@attrs.frozen
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


@attrs.frozen
class SynStream:
    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@attrs.frozen
class SynReply:
    stream_id: int
    headers: Headers = ()
    fin: bool = False


@attrs.frozen
class RstStream:
    stream_id: int
    status: int


@attrs.frozen
class Settings:
    values: tuple[tuple[int, int, int], ...]  # (flags, id, value)
    clear: bool = False


@attrs.frozen
class Ping:
    ping_id: int


@attrs.frozen
class GoAway:
    last_good_stream_id: int
    status: int = 0


@attrs.frozen
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@attrs.frozen
class WindowUpdate:
    stream_id: int
    delta: int


Frame = Data | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate


def header(headers: Headers, name: str) -> str | None:
    """The first value of `name`, if present."""
    return next((v.split("\0", 1)[0] for k, v in headers if k == name), None)


class Codec:
    """One side of one connection: its own deflate and inflate contexts."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                         DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._buffer = bytearray()

    # ---- reading ----------------------------------------------------------------

    def receive(self, data: bytes) -> list[Frame]:
        """Every whole frame `data` completes; unknown control frame types are skipped (as the draft says)."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < 8 + length:
                break
            head, body = bytes(self._buffer[:8]), bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            frame = self._parse(head, body)
            if frame is not None:
                frames.append(frame)
        return frames

    def _parse(self, head: bytes, body: bytes) -> Frame | None:
        first, flags = int.from_bytes(head[:4], "big"), head[4]
        if not first & 0x80000000:
            return Data(first & MAX_STREAM_ID, body, bool(flags & FLAG_FIN))
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} (only {VERSION} is spoken)")
        fin = bool(flags & FLAG_FIN)
        try:
            if kind == FrameType.SYN_STREAM:
                stream_id, associated, prio = struct.unpack_from("!IIB", body)
                return SynStream(stream_id & MAX_STREAM_ID, self._headers(body[10:]), associated & MAX_STREAM_ID,
                                 prio >> 5, fin, bool(flags & FLAG_UNIDIRECTIONAL))
            if kind in (FrameType.SYN_REPLY, FrameType.HEADERS):
                (stream_id,) = struct.unpack_from("!I", body)
                cls = SynReply if kind == FrameType.SYN_REPLY else HeadersFrame
                return cls(stream_id & MAX_STREAM_ID, self._headers(body[4:]), fin)
            if kind == FrameType.RST_STREAM:
                stream_id, status = struct.unpack("!II", body)
                return RstStream(stream_id & MAX_STREAM_ID, status)
            if kind == FrameType.SETTINGS:
                (count,) = struct.unpack_from("!I", body)
                if len(body) != 4 + 8 * count:
                    raise ProtocolError(f"SETTINGS of {count} entries in {len(body)} bytes")
                entries = []
                for n in range(count):
                    id_flags, value = struct.unpack_from("!II", body, 4 + 8 * n)
                    entries.append((id_flags >> 24, id_flags & 0xFFFFFF, value))
                return Settings(tuple(entries), bool(flags & FLAG_SETTINGS_CLEAR))
            if kind == FrameType.PING:
                return Ping(*struct.unpack("!I", body))
            if kind == FrameType.GOAWAY:
                last, status = struct.unpack("!II", body)
                return GoAway(last & MAX_STREAM_ID, status)
            if kind == FrameType.WINDOW_UPDATE:
                stream_id, delta = struct.unpack("!II", body)
                return WindowUpdate(stream_id & MAX_STREAM_ID, delta & MAX_STREAM_ID)
        except struct.error:
            raise ProtocolError(f"{FrameType(kind).name} frame of {len(body)} bytes is malformed") from None
        return None

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            raise ProtocolError(f"header block: {exc}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolError(f"header block inflates past {MAX_HEADER_BLOCK} bytes")
        try:
            (count,) = struct.unpack_from("!I", raw)
            pairs, offset = [], 4
            for _ in range(count):
                fields = []
                for _part in range(2):
                    (size,) = struct.unpack_from("!I", raw, offset)
                    if offset + 4 + size > len(raw):
                        raise ProtocolError("header block ends inside a name or value")
                    fields.append(raw[offset + 4:offset + 4 + size].decode())
                    offset += 4 + size
                pairs.append((fields[0], fields[1]))
        except (struct.error, UnicodeDecodeError) as exc:
            raise ProtocolError(f"header block: {exc}") from None
        return tuple(pairs)

    # ---- writing ----------------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, Data):
            return self._frame(frame.stream_id & MAX_STREAM_ID, FLAG_FIN if frame.fin else 0, frame.data)
        fin = FLAG_FIN if getattr(frame, "fin", False) else 0
        if isinstance(frame, SynStream):
            flags = fin | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            body = struct.pack("!IIBB", frame.stream_id, frame.associated_to, (frame.priority & 7) << 5, 0)
            return self._control(FrameType.SYN_STREAM, flags, body + self._block(frame.headers))
        if isinstance(frame, (SynReply, HeadersFrame)):
            kind = FrameType.SYN_REPLY if isinstance(frame, SynReply) else FrameType.HEADERS
            return self._control(kind, fin, struct.pack("!I", frame.stream_id) + self._block(frame.headers))
        if isinstance(frame, RstStream):
            return self._control(FrameType.RST_STREAM, 0, struct.pack("!II", frame.stream_id, frame.status))
        if isinstance(frame, Settings):
            body = struct.pack("!I", len(frame.values)) + b"".join(
                struct.pack("!II", (flags << 24) | ident, value) for flags, ident, value in frame.values)
            return self._control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR if frame.clear else 0, body)
        if isinstance(frame, Ping):
            return self._control(FrameType.PING, 0, struct.pack("!I", frame.ping_id))
        if isinstance(frame, GoAway):
            return self._control(FrameType.GOAWAY, 0, struct.pack("!II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdate):
            return self._control(FrameType.WINDOW_UPDATE, 0, struct.pack("!II", frame.stream_id, frame.delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")

    def _block(self, headers: Headers) -> bytes:
        raw = struct.pack("!I", len(headers)) + b"".join(
            struct.pack("!I", len(k)) + k + struct.pack("!I", len(v)) + v
            for k, v in ((name.lower().encode(), value.encode()) for name, value in headers))
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(kind: FrameType, flags: int, body: bytes) -> bytes:
        return Codec._frame(0x80000000 | (VERSION << 16) | kind, flags, body)

    @staticmethod
    def _frame(first: int, flags: int, body: bytes) -> bytes:
        if len(body) > MAX_LENGTH:
            raise ValueError(f"a SPDY frame holds at most {MAX_LENGTH} bytes, not {len(body)}")
        return struct.pack("!IB", first, flags) + len(body).to_bytes(3, "big") + body

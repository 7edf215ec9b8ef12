"""One client connection: HTTP/2 frames in, calls started, answers out under flow control.

What a gRPC server needs of RFC 9113, for grpc-go (kubelet, crictl, critest)
and grpclib's client: the preface and SETTINGS, header blocks (HEADERS with
padding and priority, CONTINUATION), DATA with padding, both directions of
flow control, PING, RST_STREAM (cancels the call), GOAWAY. A protocol error
closes the connection with GOAWAY and its error code, one log line, no
traceback. Frames a client sends for streams already closed are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any, Protocol

from grpclib.const import Handler

from podrt.logutil import RateLimited
from podrt.rpc import call, frames, headers
from podrt.rpc.frames import ConnectionError_, ErrorCode, StreamError

_log = RateLimited(logging.getLogger(__name__))

MAX_STREAMS = 1000  # calls at once on one connection (grpc-go: unlimited; h2's default: 100)
STREAM_WINDOW = 4 << 20  # what a client may send on a call before our WINDOW_UPDATE
CONNECTION_WINDOW = 16 << 20  # and on all its calls
MAX_HEADER_BLOCK = 64 << 10  # the most bytes of a request's header block, compressed or not
_LOCAL_SETTINGS = {frames.MAX_CONCURRENT_STREAMS: MAX_STREAMS, frames.INITIAL_WINDOW_SIZE: STREAM_WINDOW}


class Server(Protocol):
    """What a connection needs of its server (server.CriServer)."""

    @property
    def codec(self) -> call.Codec: ...

    @property
    def max_msg_size(self) -> int: ...

    def method(self, path: str) -> Handler: ...

    def started(self, task: asyncio.Task[None]) -> None: ...

    def connected(self, conn: Connection, up: bool) -> None: ...


class Connection(asyncio.Protocol):
    """A client's connection: its calls by stream id, both directions' windows,
    and the writes made while a read is handled (acks, window updates,
    refusals), sent together once it is."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._in = bytearray()
        self._preface = False  # the client's preface came
        self._settings_seen = False  # and the SETTINGS frame that must follow it
        self._decoder = headers.Decoder(MAX_HEADER_BLOCK)
        self._streams: dict[int, call.Stream] = {}
        self.last_stream_id = 0
        self._block: tuple[int, bool, bytearray] | None = None  # a header block awaiting CONTINUATION
        self.max_frame = frames.DEFAULT_FRAME  # the client's MAX_FRAME_SIZE
        self._initial_window = frames.DEFAULT_WINDOW  # the client's INITIAL_WINDOW_SIZE
        self._send_window = frames.DEFAULT_WINDOW  # what we may send on the connection
        self._recv_window = CONNECTION_WINDOW  # what the client may send
        self._recv_unacked = 0
        self._blocked: set[call.Stream] = set()  # streams waiting for the window or the socket
        self._paused = False
        self._batch: list[bytes] | None = None  # writes made while reading, sent together
        self.closing = False

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server.connected(self, True)
        transport.write(frames.settings(_LOCAL_SETTINGS)
                        + frames.window_update(0, CONNECTION_WINDOW - frames.DEFAULT_WINDOW))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for stream in self._streams.values():
            stream.cancel()
        self._streams.clear()
        self._wake_all()
        self._server.connected(self, False)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_all()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        out: list[bytes] = []
        self._batch = out
        try:
            self._read(data)
        except ConnectionError_ as exc:
            _log.warning("closing a client connection: %s: %s", exc.code.name, exc)
            self.close(exc.code, str(exc).encode()[:256])
        except Exception as exc:  # a bug of ours: the client gets INTERNAL_ERROR, the log the traceback
            logging.getLogger(__name__).exception("closing a client connection: %s", exc)
            self.close(ErrorCode.INTERNAL_ERROR)
        finally:
            self._batch = None
            if out and self._transport is not None and not self._transport.is_closing():
                self._transport.write(b"".join(out))

    # ---- writing

    def write(self, data: bytes) -> None:
        if self._batch is not None:
            self._batch.append(data)
        elif not self.closing and self._transport is not None:
            self._transport.write(data)

    async def send(self, stream: call.Stream, data: bytes, head: bytes = b"", tail: bytes = b"") -> None:
        """`head` (frames), `data` as DATA frames, `tail` (frames) in as few
        writes as the flow-control windows allow: all in one while they do."""
        view, pos, last = memoryview(data), 0, len(data)
        while True:
            if stream.closed:
                return
            window = min(self._send_window, stream.send_window)
            if pos < last and (window <= 0 or self._paused):
                await self._wait(stream)
                continue
            take = min(window, last - pos)
            parts = [head] if head else []
            parts += frames.data_frames(stream.id, view[pos:pos + take], self.max_frame)
            head, pos = b"", pos + take
            self._send_window -= take
            stream.send_window -= take
            if pos == last and tail:
                parts.append(tail)
            self.write(b"".join(parts))
            if pos == last:
                return

    async def _wait(self, stream: call.Stream) -> None:
        stream.window_waiter = waiter = self._loop.create_future()
        self._blocked.add(stream)
        try:
            await waiter
        finally:
            self._blocked.discard(stream)
            stream.window_waiter = None

    def _wake_all(self) -> None:
        for stream in list(self._blocked):
            stream.wake_writer()

    # ---- the server's side

    def calls(self) -> Collection[call.Stream]:
        return self._streams.values()

    def released(self, stream: call.Stream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    def close(self, code: ErrorCode = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """GOAWAY and close; running calls are cancelled."""
        if self.closing or self._transport is None:
            return
        self.write(frames.goaway(self.last_stream_id, code, debug))
        if self._batch:
            self._transport.write(b"".join(self._batch))
            self._batch.clear()
        self.closing = True
        for stream in self._streams.values():
            stream.cancel()
        self._transport.close()

    # ---- reading

    def _read(self, data: bytes) -> None:
        if self._in:
            self._in += data
            buf: bytes | bytearray = self._in
        else:
            buf = data
        pos, end = 0, len(buf)
        if not self._preface:
            if end < len(frames.PREFACE):
                if not frames.PREFACE.startswith(bytes(buf)):
                    raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface")
                self._in = bytearray(buf)
                return
            if buf[:len(frames.PREFACE)] != frames.PREFACE:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 client preface")
            self._preface = True
            pos = len(frames.PREFACE)
        unpack = frames.HEAD.unpack_from
        while end - pos >= 9:
            high, low, ftype, flags, stream_id = unpack(buf, pos)
            length = high << 16 | low
            if length > frames.DEFAULT_FRAME:  # our MAX_FRAME_SIZE, never raised
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            if end - pos - 9 < length:
                break
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            try:
                self._frame(ftype, flags, stream_id & 0x7FFFFFFF, payload)
            except StreamError as exc:
                self._reset(exc.stream_id, exc.code)
            if self.closing:
                return
        self._in = bytearray(buf[pos:]) if pos < end else bytearray()

    def _frame(self, ftype: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and (ftype != frames.CONTINUATION or stream_id != self._block[0]):
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "a header block without its CONTINUATION")
        if not self._settings_seen and not (ftype == frames.SETTINGS and not flags & frames.ACK):
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "the preface's SETTINGS frame is missing")
        if ftype == frames.DATA:
            self._data(flags, stream_id, payload)
        elif ftype == frames.HEADERS:
            self._headers(flags, stream_id, payload)
        elif ftype == frames.CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif ftype == frames.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif ftype == frames.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif ftype == frames.PING:
            if stream_id:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "PING not of 8 bytes")
            if not flags & frames.ACK:
                self.write(frames.frame(frames.PING, frames.ACK, 0, payload))
        elif ftype == frames.RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif ftype == frames.PRIORITY:
            if not stream_id:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise StreamError(stream_id, ErrorCode.FRAME_SIZE_ERROR)
        elif ftype == frames.GOAWAY:
            if stream_id:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            # the client starts no more calls; those it started run to their end
        elif ftype == frames.PUSH_PROMISE:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # other types: extensions, ignored (section 5.5)

    def _check_stream(self, stream_id: int, kind: str) -> None:
        if not stream_id:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, f"{kind} on stream 0")
        if stream_id > self.last_stream_id:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, f"{kind} on idle stream {stream_id}")

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        self._check_stream(stream_id, "DATA")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
        self._recv_unacked += size  # the connection's window: given back as it arrives
        if self._recv_unacked >= CONNECTION_WINDOW // 2:
            self.write(frames.window_update(0, self._recv_unacked))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        start, end = frames.unpad(flags, payload, "DATA")
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # a call that ended (answered, reset): its client may still be sending
        if stream.remote_closed:
            raise StreamError(stream_id, ErrorCode.STREAM_CLOSED)
        stream.recv_window -= size
        if stream.recv_window < 0:
            raise StreamError(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
        end_stream = bool(flags & frames.END_STREAM)
        stream.received(payload[start:end] if start or end < size else payload, end_stream)
        stream.recv_unacked += size
        # the stream's window: given back while what waits unread fits a request (a client
        # sending more than the size limit is stopped by its window)
        if (not end_stream and stream.recv_unacked >= STREAM_WINDOW // 2
                and stream.buffered() <= self._server.max_msg_size + 5):
            self.write(frames.window_update(stream_id, stream.recv_unacked))
            stream.recv_window += stream.recv_unacked
            stream.recv_unacked = 0

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id or not stream_id & 1:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        start, end = frames.unpad(flags, payload, "HEADERS")
        if flags & frames.PRIORITY_FLAG:
            start += 5
            if start > end:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
        block = payload[start:end]
        end_stream = bool(flags & frames.END_STREAM)
        if flags & frames.END_HEADERS:
            self._header_block(stream_id, end_stream, block)
        else:
            self._block = (stream_id, end_stream, bytearray(block))

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is None:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        _, end_stream, block = self._block
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise ConnectionError_(ErrorCode.ENHANCE_YOUR_CALM, "a header block larger than 64 KiB")
        if flags & frames.END_HEADERS:
            self._block = None
            self._header_block(stream_id, end_stream, bytes(block))

    def _header_block(self, stream_id: int, end_stream: bool, block: bytes) -> None:
        fields = self._decoder.decode(block)
        if stream_id <= self.last_stream_id:
            stream = self._streams.get(stream_id)
            if stream is None:
                return  # a call that ended (answered, reset): what its client still sends is dropped
            if stream.remote_closed:
                raise StreamError(stream_id, ErrorCode.STREAM_CLOSED)
            if not end_stream:  # trailers of a request end it
                raise StreamError(stream_id, ErrorCode.PROTOCOL_ERROR)
            stream.received(b"", True)
            return
        self.last_stream_id = stream_id
        if len(self._streams) >= MAX_STREAMS:
            raise StreamError(stream_id, ErrorCode.REFUSED_STREAM)
        self._start(stream_id, end_stream, fields)

    def _start(self, stream_id: int, end_stream: bool, fields: Any) -> None:
        request = headers.read_request(stream_id, fields)
        if isinstance(request, bytes):  # refused before any call: the request is not one
            self.write(frames.header_frames(stream_id, request, self.max_frame, end_stream=True))
            if not end_stream:
                self.write(frames.rst_stream(stream_id, ErrorCode.NO_ERROR))
            return
        path, seconds = request
        server = self._server
        handler = server.method(path)
        stream = call.Stream(self, stream_id, handler, server.codec, server.max_msg_size,
                             self._initial_window, STREAM_WINDOW)
        stream.remote_closed = end_stream
        self._streams[stream_id] = stream
        stream.task = task = self._loop.create_task(call.run(stream, handler.func))
        server.started(task)
        if seconds is not None:
            stream.timer = self._loop.call_later(seconds, stream.expire)

    def _reset(self, stream_id: int, code: ErrorCode) -> None:
        self.write(frames.rst_stream(stream_id, code))
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.cancel()

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        self._check_stream(stream_id, "RST_STREAM")
        if len(payload) != 4:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM not of 4 bytes")
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.cancel()
            stream.wake_writer()

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & frames.ACK:
            if payload:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        for at in range(0, len(payload), 6):
            key, value = int.from_bytes(payload[at:at + 2], "big"), frames.u32(payload[at + 2:at + 6])
            if key == frames.INITIAL_WINDOW_SIZE:
                if value > frames.MAX_WINDOW:
                    raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR, f"INITIAL_WINDOW_SIZE {value}")
                delta, self._initial_window = value - self._initial_window, value
                for stream in self._streams.values():  # section 6.9.2: open streams' windows move too
                    stream.send_window += delta
            elif key == frames.MAX_FRAME_SIZE:
                if not frames.DEFAULT_FRAME <= value <= frames.MAX_FRAME:
                    raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
                self.max_frame = value
            elif key == frames.ENABLE_PUSH and value > 1:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
            # HEADER_TABLE_SIZE: our answers use no dynamic table; the rest are limits on us we stay under
        self._settings_seen = True
        self.write(frames.frame(frames.SETTINGS, frames.ACK, 0))
        self._wake_all()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE not of 4 bytes")
        increment = frames.u32(payload) & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > frames.MAX_WINDOW:
                raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR, "the connection's window above 2^31-1")
            self._wake_all()
            return
        self._check_stream(stream_id, "WINDOW_UPDATE")
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if not increment:
            raise StreamError(stream_id, ErrorCode.PROTOCOL_ERROR)
        stream.send_window += increment
        if stream.send_window > frames.MAX_WINDOW:
            raise StreamError(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
        stream.wake_writer()

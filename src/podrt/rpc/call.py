"""One gRPC call: the Stream its handler reads the request from and writes
the answer to, and the task that runs the handler and ends the call.

The handlers are betterproto's generated `__rpc_*` methods (and
cri/events.py's): they use recv_message, send_message and
send_initial_metadata, as on grpclib's server Stream. A call always ends
with trailers (gRPC's status), never with END_STREAM on data; an error
before anything was sent is a Trailers-Only answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from grpclib.const import Handler, Status
from grpclib.exceptions import GRPCError

from podrt.rpc import frames

if TYPE_CHECKING:
    from podrt.rpc.connection import Connection

log = logging.getLogger(__name__)

_PREFIX_LEN = 5  # a gRPC message's compressed flag and 32-bit length


class Codec(Protocol):
    def encode(self, message: Any, message_type: Any) -> bytes: ...

    def decode(self, data: bytes, message_type: Any) -> Any: ...


class Stream:
    """One call's request and answer.

    The request's bytes arrive in `_buf` as the connection reads them; a
    unary answer is kept until the handler returns, then goes out with its
    headers and trailers in one socket write (the client wakes once)."""

    __slots__ = ("id", "_conn", "_method", "_codec", "_max_size", "_buf", "remote_closed", "closed", "expired",
                 "send_window", "recv_window", "recv_unacked", "window_waiter", "_data_waiter", "_headers_sent",
                 "_answer", "_read", "task", "timer")

    def __init__(self, conn: Connection, stream_id: int, method: Handler, codec: Codec, max_size: int,
                 send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self._conn = conn
        self._method = method
        self._codec = codec
        self._max_size = max_size
        self._buf = bytearray()
        self.remote_closed = False  # the client's END_STREAM came
        self.closed = False  # answered, reset, or its connection gone: nothing more is sent
        self.expired = False  # its grpc-timeout passed
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_unacked = 0
        self.window_waiter: asyncio.Future[None] | None = None
        self._data_waiter: asyncio.Future[None] | None = None
        self._headers_sent = False
        self._answer: bytes | None = None
        self._read = False
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    # ---- what the connection feeds in

    def buffered(self) -> int:
        return len(self._buf)

    def received(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._buf += data
        if end_stream:
            self.remote_closed = True
        if self._data_waiter is not None and not self._data_waiter.done():
            self._data_waiter.set_result(None)

    def cancel(self) -> None:
        """The client reset the stream, or its connection is gone: the handler
        is cancelled (a task cancelled before its first step never runs
        run()'s finally: the deadline's timer goes here)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()

    def wake_writer(self) -> None:
        """The flow-control window or the socket opened: an answer waiting on them goes on."""
        if self.window_waiter is not None and not self.window_waiter.done():
            self.window_waiter.set_result(None)

    def expire(self) -> None:
        self.expired = True
        if self.task is not None:
            self.task.cancel()

    # ---- what a handler uses

    async def recv_message(self) -> Any:
        """The request: one message, its size checked from its length prefix
        before the body is waited for; None once it was read."""
        if self._read:
            return None
        self._read = True
        await self._wait_for(_PREFIX_LEN, "the request has no message", "the request ended inside a message header")
        buf = self._buf
        compressed, length = buf[0], int.from_bytes(buf[1:_PREFIX_LEN], "big")
        if compressed:
            raise GRPCError(Status.UNIMPLEMENTED, "compressed requests are not supported; send them uncompressed")
        if length > self._max_size:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, f"request of {length} bytes is larger than the limit of "
                                                       f"{self._max_size} (podrt.api.max_msg_size)")
        ended_short = f"the request ended before its {length} bytes"
        await self._wait_for(_PREFIX_LEN + length, ended_short, ended_short)
        body = bytes(buf[_PREFIX_LEN:_PREFIX_LEN + length])
        del buf[:_PREFIX_LEN + length]
        return self._codec.decode(body, self._method.request_type)

    async def _wait_for(self, size: int, if_none: str, if_short: str) -> None:
        while len(self._buf) < size:
            if self.remote_closed:
                raise GRPCError(Status.INVALID_ARGUMENT, if_short if self._buf else if_none)
            self._data_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._data_waiter
            finally:
                self._data_waiter = None

    async def send_initial_metadata(self) -> None:
        """The answer's headers, now (a long-lived stream tells its client it is subscribed)."""
        if self._headers_sent:
            raise RuntimeError("the headers were already sent")
        self._headers_sent = True
        if not self.closed:
            self._conn.write(frames.frame(frames.HEADERS, frames.END_HEADERS, self.id, frames.RESPONSE_HEADERS))

    async def send_message(self, message: Any) -> None:
        data = self._codec.encode(message, self._method.reply_type)
        data = len(data).to_bytes(_PREFIX_LEN, "big") + data  # the flag byte: 0, not compressed
        if not self._method.cardinality.server_streaming:
            if self._answer is not None:
                raise RuntimeError("a unary method sent a second answer")
            self._answer = data
            return
        if not self.closed:
            await self._conn.send(self, data, self._take_headers())

    # ---- the end

    def _take_headers(self) -> bytes:
        """The headers frame if it is still to go out, once."""
        if self._headers_sent:
            return b""
        self._headers_sent = True
        return frames.frame(frames.HEADERS, frames.END_HEADERS, self.id, frames.RESPONSE_HEADERS)

    async def end(self, status: Status, message: str | None = None) -> None:
        """The answer's end: a unary answer with its trailers, or the trailers
        (Trailers-Only when nothing was sent); then the stream is done with."""
        if self.closed:
            return
        if status is Status.OK and not self._method.cardinality.server_streaming:
            if self._answer is None:
                status, message = Status.INTERNAL, "the method sent no answer"
            else:
                trailers = frames.frame(frames.HEADERS, frames.END_HEADERS | frames.END_STREAM, self.id,
                                        frames.TRAILERS_OK)
                await self._conn.send(self, self._answer, self._take_headers(), trailers)
                self._done()
                return
        if status is Status.OK:
            block = frames.TRAILERS_OK
        else:
            block = frames.status_block(status, message)
        if not self._headers_sent:
            self._headers_sent = True
            block = frames.RESPONSE_HEADERS + block
        self._conn.write(frames.header_frames(self.id, block, self._conn.max_frame, end_stream=True))
        self._done()

    def _done(self) -> None:
        if self.closed:  # reset while the answer waited for the window
            return
        self.closed = True
        if not self.remote_closed:  # a client still sending: it is told to stop (gRPC over HTTP/2)
            self._conn.write(frames.rst_stream(self.id, frames.ErrorCode.NO_ERROR))

    def release(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self._conn.released(self)


CallFunc = Callable[[Stream], Awaitable[None]]


async def run(stream: Stream, func: CallFunc) -> None:
    """A call's task: the handler, then the answer's end. A GRPCError is its
    status; a call cancelled by its deadline answers DEADLINE_EXCEEDED, one
    cancelled by its client (RST_STREAM, connection gone) or by the server's
    close nothing."""
    try:
        try:
            await func(stream)
        except GRPCError as exc:
            await stream.end(exc.status, exc.message)
        except asyncio.CancelledError:
            if stream.expired:
                await stream.end(Status.DEADLINE_EXCEEDED, "deadline exceeded")
        except Exception:
            log.exception("call %s failed", stream.id)  # a bug: the hooks map every error they know
            await stream.end(Status.INTERNAL, "internal error")
        else:
            await stream.end(Status.OK)
    except asyncio.CancelledError:
        pass  # reset or gone while the answer waited for the client's window
    finally:
        stream.release()

"""The gRPC server on a unix socket: both CRI services, unknown methods, socket file.

grpclib answers an unknown RPC path with a bare HTTP/2 header block without
content-type, which Go gRPC clients (kubelet, crictl) report as Unknown
"malformed header: missing HTTP content-type". A newer kubelet calls RPCs we
do not know yet, so unknown paths are routed to a handler that answers
UNIMPLEMENTED through the normal response path (with content-type).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import betterproto
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.events import SendInitialMetadata, SendMessage, SendTrailingMetadata
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from podrt.errors import FailedPrecondition
from podrt.logutil import RateLimited

_decode_log = RateLimited(logging.getLogger(__name__))
IDLE_SETTLE = 0.05


SHARED_REQUESTS = 256  # decoded requests kept (CriCodec)
SHARED_BYTES = 512  # the largest request body kept


class CriCodec(ProtoCodec):
    """grpclib's protobuf codec; a request body that does not parse is the
    client's error: InvalidArgument, one rate-limited log line, no traceback.

    Requests of the `shared` types (those whose handlers only read them) are
    decoded once per distinct body and the same message is handed to every
    call with those bytes: betterproto takes 40 us to make an empty message
    and 140 us to decode a label filter, as long as the rest of a cached
    ListPodSandbox, and a kubelet sends the same lists and statuses again and again."""

    def __init__(self, shared: Collection[type] = ()) -> None:
        self._shared = frozenset(shared)
        self._decoded: dict[tuple[type, bytes], Any] = {}

    def decode(self, data: bytes, message_type: Any) -> Any:
        shared = message_type in self._shared and len(data) <= SHARED_BYTES
        if shared and (found := self._decoded.get((message_type, data))) is not None:
            return found
        try:
            message = super().decode(data, message_type)
        except Exception as exc:  # betterproto's codec raises RuntimeError for bad bytes
            name = getattr(message_type, "__name__", "message")
            _decode_log.warning("request body (%d bytes) is not a valid %s: %s", len(data), name, exc)
            raise GRPCError(Status.INVALID_ARGUMENT, f"the request could not be decoded as {name}: {exc}") from None
        if shared:
            if len(self._decoded) >= SHARED_REQUESTS:
                del self._decoded[next(iter(self._decoded))]  # the oldest
            self._decoded[message_type, data] = message
        return message


async def _recv_request(stream: Any, max_size: int) -> Any:
    """grpclib's Stream.recv_message with the checks it lacks (0.4.x): a size
    limit read from the length prefix before the body is buffered, and clear
    statuses for a compressed flag (NotImplementedError there) or a body
    shorter than its prefix (AssertionError there, or nothing at all when
    no byte of it came)."""
    h2 = stream._stream
    try:
        meta = await h2.recv_data(5)
    except AssertionError:  # grpclib's buffer: the stream ended short of 5 bytes
        raise GRPCError(Status.INVALID_ARGUMENT, "the request ended inside a message header") from None
    if not meta:
        return None
    compressed, length = struct.unpack(">?I", meta)
    if compressed:
        raise GRPCError(Status.UNIMPLEMENTED, "compressed requests are not supported; send them uncompressed")
    if length > max_size:
        raise GRPCError(Status.RESOURCE_EXHAUSTED,
                        f"request of {length} bytes is larger than the limit of {max_size} (podrt.api.max_msg_size)")
    try:
        body = await h2.recv_data(length)
    except AssertionError:  # some bytes came, not all
        body = b""
    if len(body) != length:  # none came: grpclib returns b""
        raise GRPCError(Status.INVALID_ARGUMENT, f"the request ended before its {length} bytes")
    message = stream._codec.decode(body, stream._recv_type)
    message, = await stream._dispatch.recv_message(message)
    h2.connection.messages_received += 1
    h2.connection.last_message_received = time.monotonic()
    return message


async def _send_data(h2: Any, data: bytes, end_stream: bool = False) -> None:
    """grpclib's protocol.Stream.send_data (0.4.x) with one socket write per
    flow-control window instead of one per frame: the peer's 16 KiB frames
    made a 1000-pod ListPodSandbox (~200 KB) 13 writes, 13 wakeups of the client.
    The same frames, in the same order."""
    conn, view, pos, last = h2._h2_connection, memoryview(data), 0, len(data)
    while True:
        await h2.connection.write_ready.wait()
        window = conn.local_flow_control_window(h2.id)
        if not window > 0:  # it can become negative
            h2.window_updated.clear()
            await h2.window_updated.wait()
            continue  # other streams may have sent meanwhile: from the top
        frame, start, end = conn.max_outbound_frame_size, pos, min(last, pos + window)
        while True:  # an empty message is one empty frame, as grpclib sends it
            size = min(frame, end - pos)
            conn.send_data(h2.id, bytes(view[pos:pos + size]), end_stream=end_stream and pos + size == last)
            pos += size
            if pos >= end:
                break
        _written(h2, pos - start)
        if pos == last:
            return


_TRAILERS_OK = [("grpc-status", "0")]
_SEND_EVENTS = (SendInitialMetadata, SendMessage, SendTrailingMetadata)  # what _send_unary does not dispatch


async def _send_unary(stream: Any, message: Any) -> None:
    """grpclib's server Stream.send_message (0.4.x) for the one message of a
    unary answer, with its headers before and its trailers (grpc-status 0)
    after, in one socket write: grpclib writes each of the three on its own,
    with its own await and bookkeeping, and the client wakes for each. What
    grpclib does between them is not needed here: its send events have no
    listener (guard_requests checks), and nothing follows the message in a
    unary handler (cri/hooks.py's wrapper only counts). An answer larger than
    one frame or than the flow-control window goes grpclib's way (_send_data)."""
    h2 = stream._stream
    conn = h2._h2_connection
    if stream._send_initial_metadata_done:
        return await _grpclib_send_message(stream, message)  # its error, as grpclib raises it
    body = stream._codec.encode(message, stream._send_type)
    data = struct.pack(">?I", False, len(body)) + body
    await h2.connection.write_ready.wait()
    if h2.id not in conn.streams or len(data) > min(conn.local_flow_control_window(h2.id),
                                                    conn.max_outbound_frame_size):
        return await _grpclib_send_message(stream, message)  # a closed stream's error too
    conn.send_headers(h2.id, [(":status", "200"), ("content-type", stream._content_type)])
    conn.send_data(h2.id, data)
    conn.send_headers(h2.id, _TRAILERS_OK, end_stream=True)
    stream._send_initial_metadata_done = stream._send_message_done = stream._send_trailing_metadata_done = True
    stream._messages_sent += 1
    h2.connection.messages_sent += 1
    h2.connection.last_message_sent = time.monotonic()
    _written(h2, len(data))


def _written(h2: Any, sent: int) -> None:
    """What h2 queued, to the socket in one write, and grpclib's counts of the DATA bytes sent."""
    h2._transport.write(h2._h2_connection.data_to_send())
    h2.data_sent += sent
    h2.connection.data_sent += sent
    h2.connection.data_send_process()  # keepalive's bookkeeping


def _grpclib_send_message(stream: Any, message: Any) -> Any:
    return type(stream).send_message(stream, message)


def guard_requests(stream: Any, max_size: int) -> None:
    """Route this call's request reads through _recv_request, its data writes
    through _send_data, and a unary answer through _send_unary."""
    stream.recv_message = functools.partial(_recv_request, stream, max_size)
    stream._stream.send_data = functools.partial(_send_data, stream._stream)
    listeners = stream._dispatch._listeners
    if not stream._cardinality.server_streaming and not any(listeners.get(e) for e in _SEND_EVENTS):
        stream.send_message = functools.partial(_send_unary, stream)


@dataclass(eq=False, repr=False)
class _AnyMessage(betterproto.Message):
    """Accepts any payload (unknown fields are skipped); never inspected."""


def _unimplemented(method_name: str) -> Handler:
    async def answer(stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, f"unknown method {method_name}")

    return Handler(answer, Cardinality.STREAM_STREAM, _AnyMessage, _AnyMessage)


Wrap = Callable[[Any, str], Any]  # (a handler's func, its path) -> the func called instead


def _unwrapped(func: Any, _path: str) -> Any:
    return func


class _MethodTable(dict):
    """The server's path -> handler table; unknown paths get UNIMPLEMENTED.
    Every handler's func goes through `wrap` (cri/hooks.py), once per method:
    grpclib's RecvRequest event would wrap it again at every call."""

    def __init__(self, handlers: dict[str, Handler], wrap: Wrap = _unwrapped) -> None:
        super().__init__({path: h._replace(func=wrap(h.func, path)) for path, h in handlers.items()})
        self._wrap = wrap

    def get(self, key: str, default: Any = None) -> Handler:
        found = super().get(key)
        if found is not None:
            return found
        h = _unimplemented(key)
        return h._replace(func=self._wrap(h.func, key))


class CriServer(Server):
    """grpclib's Server plus a graceful stop (grpc-go's GracefulStop).

    grpclib's close() cancels every running call, so clients of calls that
    would have finished get "EOF". Here the listener closes first, calls that
    arrive meanwhile on open connections are refused (`draining`, checked by
    the hooks), and running calls get a grace period to answer. No HTTP/2
    GOAWAY is sent: grpclib (server and client) tears a connection down on
    GOAWAY, in-flight streams included, so it would cut Python clients.
    """

    def __init__(self, handlers: Collection[Any], **kwargs: Any) -> None:
        """A handler's `shared_requests`: request types its methods only read (CriCodec)."""
        shared = [t for h in handlers for t in getattr(h, "shared_requests", ())]
        super().__init__(handlers, codec=CriCodec(shared), **kwargs)
        self._methods = dict(self._mapping)
        self._mapping = _MethodTable(self._methods)
        self.draining = False

    def wrap_handlers(self, wrap: Wrap) -> None:
        """Every call of every method (unknown ones too) runs `wrap(func, path)` instead of func."""
        self._mapping = _MethodTable(self._methods, wrap)

    def stop_accepting(self) -> None:
        self.draining = True
        if self._server is not None:
            self._server.close()  # the listener only; accepted connections stay open

    def _calls(self) -> set[asyncio.Task[None]]:
        # grpclib keeps one task per call in each connection's Handler (0.4.x);
        # the task ends after the trailers are written, so waiting on it waits
        # for the whole answer, not just the method.
        return {t for h in self._handlers for t in h._tasks.values() if not t.done()}

    async def wait_idle(self, timeout: float) -> int:
        """Wait until no call runs, at most `timeout` s; the number still running.
        Idle means idle after a short settle, so requests already in the
        sockets are read (and refused) rather than lost when the daemon exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if calls := self._calls():
                await asyncio.wait(calls, timeout=deadline - loop.time())
                continue
            await asyncio.sleep(min(IDLE_SETTLE, max(0.0, deadline - loop.time())))
            if not self._calls():
                break
        return len(self._calls())


def prepare_socket_path(path: Path) -> None:
    """Create parent dirs and remove a stale socket; refuse a live or foreign one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; remove it or choose another --listen path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        path.unlink(missing_ok=True)  # stale: nobody listens on it
        return
    finally:
        probe.close()
    raise FailedPrecondition(f"{path} is in use by a running server (another podrt?); stop it or choose another --listen path")


async def listen_unix(server: Server, path: Path, mode: int) -> None:
    """Bind the socket with `mode` from the first moment (umask, then chmod)."""
    prepare_socket_path(path)
    old = os.umask(0o777 & ~mode)
    try:
        await server.start(path=str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)


def remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

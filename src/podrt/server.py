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
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import betterproto
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from podrt.errors import FailedPrecondition
from podrt.logutil import RateLimited

_decode_log = RateLimited(logging.getLogger(__name__))
IDLE_SETTLE = 0.05


class CriCodec(ProtoCodec):
    """grpclib's protobuf codec; a request body that does not parse is the
    client's error: InvalidArgument, one rate-limited log line, no traceback."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            return super().decode(data, message_type)
        except Exception as exc:  # betterproto's codec raises RuntimeError for bad bytes
            name = getattr(message_type, "__name__", "message")
            _decode_log.warning("request body (%d bytes) is not a valid %s: %s", len(data), name, exc)
            raise GRPCError(Status.INVALID_ARGUMENT, f"the request could not be decoded as {name}: {exc}") from None


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


def guard_requests(stream: Any, max_size: int) -> None:
    """Route this call's request reads through _recv_request."""
    stream.recv_message = functools.partial(_recv_request, stream, max_size)


@dataclass(eq=False, repr=False)
class _AnyMessage(betterproto.Message):
    """Accepts any payload (unknown fields are skipped); never inspected."""


def _unimplemented(method_name: str) -> Handler:
    async def answer(stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, f"unknown method {method_name}")

    return Handler(answer, Cardinality.STREAM_STREAM, _AnyMessage, _AnyMessage)


class _MethodTable(dict):
    """The server's path -> handler table; unknown paths get UNIMPLEMENTED."""

    def get(self, key: str, default: Any = None) -> Handler:
        found = super().get(key)
        return found if found is not None else _unimplemented(key)


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
        super().__init__(handlers, codec=CriCodec(), **kwargs)
        self._mapping = _MethodTable(self._mapping)
        self.draining = False

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

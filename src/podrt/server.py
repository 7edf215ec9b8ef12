"""The gRPC server on a unix socket: both CRI services, unknown methods, socket file.

The HTTP/2 side is podrt's own (podrt/rpc: grpclib's server cost ~1 ms of
loop CPU per call). A newer kubelet calls RPCs we do not know yet, so
unknown paths are routed to a handler that answers UNIMPLEMENTED through the
normal answer path: with content-type, whose absence a Go gRPC client
reports as Unknown "malformed header: missing HTTP content-type".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import betterproto
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from podrt.api import lean_decode
from podrt.errors import FailedPrecondition
from podrt.logutil import RateLimited
from podrt.rpc.connection import Connection

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
    ListPodSandbox, and a kubelet sends the same lists and statuses again and again.
    The largest requests, CreateContainer's and RunPodSandbox's, are read by
    api/lean_decode instead of betterproto (25 times faster)."""

    def __init__(self, shared: Collection[type] = ()) -> None:
        self._shared = frozenset(shared)
        self._decoded: dict[tuple[type, bytes], Any] = {}

    def decode(self, data: bytes, message_type: Any) -> Any:
        shared = message_type in self._shared and len(data) <= SHARED_BYTES
        if shared and (found := self._decoded.get((message_type, data))) is not None:
            return found
        message: Any
        try:
            if message_type in lean_decode.LEAN_REQUESTS:
                message = lean_decode.decode(data, message_type)
            else:
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
    Every handler's func goes through `wrap` (cri/hooks.py), once per method,
    not at every call."""

    def __init__(self, handlers: dict[str, Handler], wrap: Wrap = _unwrapped) -> None:
        super().__init__({path: h._replace(func=wrap(h.func, path)) for path, h in handlers.items()})
        self._wrap = wrap

    def get(self, key: str, default: Any = None) -> Handler:
        found = super().get(key)
        if found is not None:
            return found
        h = _unimplemented(key)
        return h._replace(func=self._wrap(h.func, key))


class CriServer:
    """The CRI services on podrt's own HTTP/2 connections (podrt/rpc), with a
    graceful stop (grpc-go's GracefulStop).

    The listener closes first, calls that arrive meanwhile on open
    connections are refused (`draining`, checked by the hooks), and running
    calls get a grace period to answer. No GOAWAY is sent until close():
    grpclib's client tears a connection down on GOAWAY, in-flight calls
    included, so it would cut Python clients mid-answer.
    """

    def __init__(self, handlers: Collection[Any], *, max_msg_size: int = 16 << 20) -> None:
        """A handler's `shared_requests`: request types its methods only read
        (CriCodec). `max_msg_size`: the largest request accepted."""
        shared = [t for h in handlers for t in getattr(h, "shared_requests", ())]
        self.codec = CriCodec(shared)
        self.max_msg_size = max_msg_size
        self._methods: dict[str, Handler] = {}
        for h in handlers:
            self._methods.update(h.__mapping__())
        self._table = _MethodTable(self._methods)
        self.draining = False
        self._listener: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._calls: set[asyncio.Task[None]] = set()

    def wrap_handlers(self, wrap: Wrap) -> None:
        """Every call of every method (unknown ones too) runs `wrap(func, path)` instead of func."""
        self._table = _MethodTable(self._methods, wrap)

    # ---- what a Connection asks (rpc.connection.Server)

    def method(self, path: str) -> Handler:
        return self._table.get(path)

    def started(self, task: asyncio.Task[None]) -> None:
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    def connected(self, conn: Connection, up: bool) -> None:
        if up:
            self._connections.add(conn)
        else:
            self._connections.discard(conn)

    # ---- life

    async def start(self, *, path: str) -> None:
        self._listener = await asyncio.get_running_loop().create_unix_server(lambda: Connection(self), path)

    def stop_accepting(self) -> None:
        self.draining = True
        if self._listener is not None:
            self._listener.close()  # the listener only; accepted connections stay open

    def _running(self) -> set[asyncio.Task[None]]:
        # a call's task ends after its trailers are written: waiting on it waits for the whole answer
        return {t for t in self._calls if not t.done()}

    async def wait_idle(self, timeout: float) -> int:
        """Wait until no call runs, at most `timeout` s; the number still running.
        Idle means idle after a short settle, so requests already in the
        sockets are read (and refused) rather than lost when the daemon exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if calls := self._running():
                await asyncio.wait(calls, timeout=deadline - loop.time())
                continue
            await asyncio.sleep(min(IDLE_SETTLE, max(0.0, deadline - loop.time())))
            if not self._running():
                break
        return len(self._running())

    def close(self) -> None:
        """The listener and every connection closed (GOAWAY first); running calls cancelled."""
        self.stop_accepting()
        for conn in list(self._connections):
            conn.close()

    async def wait_closed(self) -> None:
        """Until every cancelled call has ended."""
        if self._listener is not None:
            await self._listener.wait_closed()
        if calls := self._running():
            await asyncio.wait(calls)


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


async def listen_unix(server: CriServer, path: Path, mode: int) -> None:
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

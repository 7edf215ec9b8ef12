"""podrt's streaming server: what the URLs of Exec, Attach and PortForward
lead to, as the kubelet's streaming library serves them.

An RPC stores its request under a single-use token (tokens.py) and answers
`http(s)://<stream_address>:<port>/<kind>/<token>`. A client's HTTP/1.1
request on that URL is read (upgrade.py), the token taken, and the
connection upgraded to SPDY/3.1 or WebSocket (transport.py); then the
session runs (remotecommand.py, portforward.py) until its work ends or the
client leaves. Whatever ends it, close() of the exec'd process or attach
socket runs: a vanished client leaves no process behind.

Limits: the request must arrive within REQUEST_TIMEOUT; at most
`stream_max_sessions` sessions at once (503 past that); a session with
nothing moving either way for `stream_idle_timeout` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from podrt.aio import await_shielded
from podrt.config import ApiConfig
from podrt.errors import PodrtError, StartError
from podrt.network.nssocket import connect_localhost
from podrt.node.metrics import Metrics
from podrt.oci.attach import AttachSocket
from podrt.oci.execproc import ExecProcess
from podrt.streaming import portforward, remotecommand, upgrade
from podrt.streaming.tokens import TOKEN_TTL, TokenCache
from podrt.streaming.transport import Connection, SpdyConnection, WebSocketConnection

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0


@attrs.frozen
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    kind = "exec"


@attrs.frozen
class AttachRequest:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    kind = "attach"


@attrs.frozen
class PortForwardRequest:
    sandbox_id: str
    netns_path: str  # "" for a pod on the host's network
    kind = "portforward"


Request = ExecRequest | AttachRequest | PortForwardRequest


class Backend(Protocol):
    """What a session needs of the container manager."""

    async def open_exec(self, container_id: str, cmd: tuple[str, ...], *, tty: bool, stdin: bool,
                        stderr: bool) -> ExecProcess: ...

    async def open_attach(self, container_id: str) -> AttachSocket: ...

    def resize_tty(self, container_id: str, width: int, height: int) -> None: ...


def tls_context(config: ApiConfig) -> ssl.SSLContext | None:
    if not config.stream_enable_tls:
        return None
    if not (config.stream_tls_cert and config.stream_tls_key):
        raise StartError("api.stream_enable_tls needs api.stream_tls_cert and api.stream_tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.stream_tls_cert, config.stream_tls_key)
        if config.stream_tls_ca:
            context.load_verify_locations(config.stream_tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise StartError(f"streaming server TLS: {exc}") from None
    return context


class StreamServer:
    def __init__(self, config: ApiConfig, backend: Backend, metrics: Metrics, token_ttl: float = TOKEN_TTL) -> None:
        self._config = config
        self._backend = backend
        self._metrics = metrics
        self._tokens: TokenCache[Request] = TokenCache(ttl=token_ttl)
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()  # every connection, upgraded or not
        self._upgraded = 0  # sessions past their upgrade: what stream_max_sessions caps
        self._closing = False
        self._base = ""

    async def start(self) -> None:
        context = tls_context(self._config)
        host = self._config.stream_address
        self._server = await asyncio.start_server(self._connection, host, self._config.stream_port, ssl=context,
                                                  reuse_address=True)
        port = self._server.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self._base = f"{'https' if context else 'http'}://{shown}:{port}"
        log.info("streaming server on %s", self._base)

    def url(self, request: Request) -> str:
        """Where the client goes for `request` (ResourceExhausted when too many wait)."""
        return f"{self._base}/{request.kind}/{self._tokens.issue(request)}"

    async def close(self) -> None:
        """Stop listening and end every session (their processes are killed, attaches detached)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    # ---- one connection --------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing:  # accepted as close() began: it would outlive the daemon's stop
            writer.transport.abort()
            return
        self._sessions.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug must end this connection only, with a trace in the log
            log.exception("streaming: session failed")
        finally:
            self._sessions.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outcome = await self._read_request(reader)
        if outcome is None:
            return
        if isinstance(outcome, upgrade.Refusal):
            await _answer(writer, outcome.response)
            return
        if self._upgraded >= self._config.stream_max_sessions:  # before the token is used: the URL still works later
            await _answer(writer, upgrade.refusal(503, f"{self._config.stream_max_sessions} streaming sessions "
                                                       "are open; try again later").response)
            return
        kind, _, token = outcome.path.split("?", 1)[0].lstrip("/").partition("/")
        request = self._tokens.take(token)
        if request is None or request.kind != kind:
            await _answer(writer, upgrade.not_found().response)
            return
        if isinstance(request, PortForwardRequest) and isinstance(outcome, upgrade.WebSocketUpgrade):
            try:
                ports = portforward.url_ports(outcome.path, outcome.protocol)
            except portforward.PortError as exc:
                await _answer(writer, upgrade.refusal(400, str(exc)).response)
                return
        writer.write(outcome.response)
        count = self._counter(kind)
        if isinstance(outcome, upgrade.SpdyUpgrade):
            conn: Connection = SpdyConnection(reader, writer, outcome.rest, count)
        else:
            conn = WebSocketConnection(reader, writer, outcome.connection, outcome.protocol, count)
        self._metrics.stream_sessions_total.labels(kind).inc()
        gauge = self._metrics.stream_sessions.labels(kind)
        gauge.inc()
        self._upgraded += 1
        try:
            if isinstance(request, PortForwardRequest):
                work = self._port_forward(conn, request, ports if isinstance(conn, WebSocketConnection) else [])
            else:
                work = self._remote_command(conn, request, outcome.protocol if isinstance(outcome, upgrade.SpdyUpgrade) else "")
            await self._run(conn, work)
        finally:
            self._upgraded -= 1
            gauge.dec()

    async def _read_request(self, reader: asyncio.StreamReader) -> upgrade.Outcome | None:
        request = upgrade.RequestReader()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                while True:
                    data = await reader.read(4096)
                    if not data:
                        return None
                    outcome = request.feed(data)
                    if outcome is not None:
                        return outcome
        except (TimeoutError, ConnectionError, OSError, ssl.SSLError):
            return None

    def _counter(self, kind: str) -> Callable[[str, int], None]:
        counters = {d: self._metrics.stream_bytes.labels(kind, d) for d in ("in", "out")}
        return lambda direction, n: counters[direction].inc(n)

    async def _run(self, conn: Connection, work: Awaitable[None]) -> None:
        """The session's work, its reader, and the idle watch; the first of
        work done, client gone or idle ends it, and the rest is cancelled."""
        closed = asyncio.ensure_future(conn.closed.wait())
        tasks = [asyncio.ensure_future(work), asyncio.ensure_future(conn.run()),
                 asyncio.ensure_future(self._idle_watch(conn)), closed]
        try:
            await asyncio.wait(tasks[:2] + [closed], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks[:2]:  # a failure in the work or the reader ends this session, logged
                if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                    raise error
        finally:
            if not tasks[0].done():  # cut short (client gone, idle, daemon stopping): nothing more is sent,
                conn.closed.set()  # so no cancelled handler can wait on a client that reads nothing
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await conn.finish()

    async def _idle_watch(self, conn: Connection) -> None:
        limit = self._config.stream_idle_timeout
        if not limit:
            return
        loop = asyncio.get_running_loop()
        while True:
            idle = loop.time() - conn.last_activity
            if idle >= limit:
                log.info("streaming: closing a session idle for %.0fs", idle)
                conn.closed.set()
                return
            await asyncio.sleep(limit - idle)

    # ---- the sessions ----------------------------------------------------------------

    async def _remote_command(self, conn: Connection, request: ExecRequest | AttachRequest, protocol: str) -> None:
        opts = remotecommand.Options(request.stdin, request.stdout, request.stderr, request.tty)
        if isinstance(conn, SpdyConnection):
            try:
                streams = await remotecommand.spdy_streams(conn, protocol, opts)
            except remotecommand.SetupError as exc:
                log.info("streaming: %s session not set up: %s", request.kind, exc)
                return
        else:
            assert isinstance(conn, WebSocketConnection)
            streams = remotecommand.ws_streams(conn, opts)
        if isinstance(request, ExecRequest):
            try:
                process = await self._backend.open_exec(request.container_id, request.cmd, tty=request.tty,
                                                        stdin=request.stdin, stderr=request.stderr)
            except PodrtError as exc:
                await remotecommand.refuse(streams, str(exc))
                return
            try:
                await remotecommand.run_exec(streams, process)
            finally:  # even when cancelled twice (a client gone while the daemon stops)
                await await_shielded(asyncio.ensure_future(process.close()))
        else:
            try:
                sock = await self._backend.open_attach(request.container_id)
            except PodrtError as exc:
                await remotecommand.refuse(streams, str(exc))
                return
            try:
                await remotecommand.run_attach(
                    streams, sock, lambda w, h: self._backend.resize_tty(request.container_id, w, h))
            finally:
                sock.close()

    async def _port_forward(self, conn: Connection, request: PortForwardRequest, ports: list[int]) -> None:
        async def connect(port: int) -> socket.socket:
            return await connect_localhost(request.netns_path, port)

        if isinstance(conn, SpdyConnection):
            await portforward.serve_spdy(conn, connect, request.sandbox_id)
        else:
            assert isinstance(conn, WebSocketConnection)
            await portforward.serve_websocket(conn, ports, connect, request.sandbox_id)


async def _answer(writer: asyncio.StreamWriter, response: bytes) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        writer.write(response)
        await writer.drain()

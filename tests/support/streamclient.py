"""The tests' own clients for Kubernetes' streaming protocols: remotecommand
(exec, attach) and port-forward, over SPDY/3.1 and over WebSocket, spoken as
client-go (kubectl, crictl, critest) speaks them, on podrt's sans-IO codecs
(spdy, session, channels) with h11 and wsproto for the HTTP upgrade.

Every wait is bounded, so a broken server fails a test instead of hanging
it. Reading is back-pressured: one reader task per connection hands chunks
to per-stream inboxes and stops reading the socket while one inbox holds
more than MAX_BUFFER bytes, so a slow consumer slows the server through TCP
instead of filling memory. Hence read the streams of one connection
concurrently (as spdy_exec does): a full stream nobody reads stalls the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import ssl as ssl_module
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import wsproto
import wsproto.events as wse
import wsproto.utilities

from podrt.streaming import channels, spdy
from podrt.streaming.session import DataReceived, Replied, Session, SessionEnded, StreamOpened, StreamReset

DEFAULT_EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
DEFAULT_WS_EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
DEFAULT_WS_PORT_FORWARD_PROTOCOLS = ("v4.channel.k8s.io",)
PORT_FORWARD_PROTOCOL = "portforward.k8s.io"
MAX_BUFFER = 4 * 1024 * 1024  # bytes queued per stream before the reader task stops reading the socket
CHUNK = 32 * 1024  # bytes of stdin per write
SSL = ssl_module.SSLContext | None
Stdin = bytes | AsyncIterable[bytes] | None
Sink = Callable[[bytes], None] | None
T = TypeVar("T")


class UpgradeRefused(Exception):
    """The server answered the upgrade request with something else than 101."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"upgrade refused with {status}: {body.strip()}")
        self.status, self.body = status, body


@attrs.frozen
class ExecResult:
    stdout: bytes
    stderr: bytes
    error: str  # the error stream's (channel's) raw text
    exit_code: int  # 0 on success, the ExitCode cause of NonZeroExitCode, -1 for any other failure


def resize_message(width: int, height: int) -> bytes:
    """A terminal size as client-go encodes it on the resize stream (channel 4)."""
    return json.dumps({"Width": width, "Height": height}, separators=(",", ":")).encode()


def parse_status(error: str, *, json_status: bool = True) -> int:
    """The exit code an error stream means, read as client-go reads it: empty is success; v4 and v5 carry a
    metav1.Status, v1-v3 a failure's text."""
    if not error.strip():
        return 0
    try:
        status = json.loads(error) if json_status else None
    except ValueError:
        return -1
    if not isinstance(status, dict):
        return -1
    if status.get("status") == "Success":
        return 0
    causes = (status.get("details") or {}).get("causes") or []
    code = next((c.get("message") for c in causes if isinstance(c, dict) and c.get("reason") == "ExitCode"), None)
    return int(code) if status.get("reason") == "NonZeroExitCode" and isinstance(code, str) and code.isdigit() else -1


class _Inbox(Generic[T]):
    """Items from a reader task to their consumer; the reader task waits while more than `limit` bytes are queued."""

    def __init__(self, limit: int = MAX_BUFFER) -> None:
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self._size, self._limit, self.closed = 0, limit, False
        self._ready, self._room = asyncio.Event(), asyncio.Event()
        self._room.set()

    async def put(self, item: T, size: int) -> None:
        if not self.closed:
            self._items.append((item, size))
            self._size += size
            self._ready.set()
            if self._size > self._limit:
                self._room.clear()
                await self._room.wait()

    def close(self, *, discard: bool = False) -> None:
        """No more items; what is queued is still read unless discarded."""
        self.closed = True
        if discard:
            self._items.clear()
        self._ready.set()
        self._room.set()

    async def get(self, timeout: float | None) -> T | None:
        """The next item, None once closed and empty."""
        async with asyncio.timeout(timeout):
            while not self._items:
                if self.closed:
                    return None
                self._ready.clear()
                await self._ready.wait()
        item, size = self._items.popleft()
        self._size -= size
        if self._size <= self._limit:
            self._room.set()
        return item


class _Closing:
    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _dial(url: str, ssl: SSL, timeout: float) -> tuple[str, str, asyncio.StreamReader, asyncio.StreamWriter]:
    """(path with query, Host header, the open connection); https (or an SSL context) means TLS."""
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss") or ssl is not None
    ssl = ssl_module.create_default_context() if secure and ssl is None else ssl
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or (443 if secure else 80), ssl=ssl)
    return path, parts.netloc.rsplit("@", 1)[-1], reader, writer


class _Connection(_Closing):
    """What both kinds share: the socket, one reader task, bounded waits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str, timeout: float):
        self.protocol = protocol  # negotiated ("" when the server named none)
        self.timeout = timeout  # bounds every wait on this connection
        self.error: BaseException | None = None  # what broke the connection, if not a plain close
        self._reader, self._writer = reader, writer
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def send_raw(self, data: bytes) -> None:
        """Bytes as they are on the socket (a malformed frame, say)."""
        self._writer.write(data)
        await self._drain()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Until the server closes the TCP connection."""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            await self._closed.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self._writer.wait_closed()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=1)

    def _is_open(self) -> bool:
        return not self._closed.is_set() and not self._writer.is_closing()

    async def _drain(self) -> None:
        async with asyncio.timeout(self.timeout):
            await self._writer.drain()


class SpdyStream:
    """One client-opened stream. `end` says how the server's side ended: "fin", "reset" or "closed" (connection gone)."""

    def __init__(self, conn: SpdyConnection, stream_id: int, headers: spdy.Headers) -> None:
        self.id, self.headers, self._conn = stream_id, headers, conn
        self.reply_headers: spdy.Headers | None = None
        self.end: str | None = None
        self.reset_status: int | None = None
        self._reply: asyncio.Future[spdy.Headers] = asyncio.get_running_loop().create_future()
        self._inbox: _Inbox[bytes] = _Inbox()

    async def replied(self, timeout: float | None = None) -> spdy.Headers:
        """The SYN_REPLY's headers; ConnectionResetError if the stream or the connection ended first."""
        async with asyncio.timeout(self._conn.timeout if timeout is None else timeout):
            return await asyncio.shield(self._reply)

    async def write(self, data: bytes) -> None:
        await self._conn._send(self.id, data, fin=False)

    async def close_write(self) -> None:
        """FIN: our side is done (stdin's end, a port-forward half-close)."""
        await self._conn._send(self.id, b"", fin=True)

    async def read(self, timeout: float | None = None) -> bytes:
        """The next chunk as it came; b"" once the server's side ended (see `end`)."""
        return await self._inbox.get(self._conn.timeout if timeout is None else timeout) or b""

    async def read_all(self, limit: int | None = None, timeout: float | None = None) -> bytes:
        """Everything to the end; ValueError beyond `limit` bytes (a runaway stream fails, it does not fill memory)."""
        out = bytearray()
        while chunk := await self.read(timeout):
            out += chunk
            if limit is not None and len(out) > limit:
                raise ValueError(f"stream {self.id} sent more than {limit} bytes")
        return bytes(out)

    def reset(self) -> None:
        """RST_STREAM (CANCEL); what was queued is dropped."""
        self._conn._session.reset(self.id)
        self._conn._flush()
        self._ended("reset", spdy.RstStatus.CANCEL)
        self._inbox.close(discard=True)

    def _ended(self, how: str, status: int | None = None) -> None:
        if self.end is None:
            self.end, self.reset_status = how, status
        self._inbox.close()
        if not self._reply.done():
            self._reply.set_exception(ConnectionResetError(f"stream {self.id} ended ({how}) before its SYN_REPLY"))
            self._reply.exception()  # retrieved: nobody need be waiting


class SpdyConnection(_Connection):
    """An upgraded SPDY/3.1 connection of client-opened streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str, rest: bytes,
                 timeout: float) -> None:
        super().__init__(reader, writer, protocol, timeout)
        self.goaway: SessionEnded | None = None
        self._session = Session(client=True)
        self._streams: dict[int, SpdyStream] = {}
        self._task = asyncio.create_task(self._read_loop(rest))

    def start_stream(self, headers: Mapping[str, str]) -> SpdyStream:
        """SYN_STREAM without waiting for its reply (names lower-cased, as on the wire)."""
        if not self._is_open():
            raise ConnectionResetError("the SPDY connection is closed")
        pairs = tuple((k.lower(), str(v)) for k, v in headers.items())
        stream = SpdyStream(self, self._session.open(pairs), pairs)
        self._streams[stream.id] = stream
        self._flush()
        return stream

    async def open_stream(self, headers: Mapping[str, str]) -> SpdyStream:
        """SYN_STREAM, then its SYN_REPLY."""
        stream = self.start_stream(headers)
        await stream.replied()
        return stream

    async def _send(self, stream_id: int, data: bytes, *, fin: bool) -> None:
        if not self._is_open():
            raise ConnectionResetError("the SPDY connection is closed")
        self._session.send(stream_id, data, fin=fin)
        self._flush()
        await self._drain()

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    async def _read_loop(self, data: bytes) -> None:
        try:
            while True:
                for event in self._session.receive(data):
                    if isinstance(event, StreamOpened):  # servers open none in these protocols
                        self._session.reset(event.stream_id, spdy.RstStatus.REFUSED_STREAM)
                    elif isinstance(event, SessionEnded):
                        self.goaway = event
                    elif isinstance(event, (Replied, DataReceived, StreamReset)) and event.stream_id in self._streams:
                        await self._dispatch(self._streams[event.stream_id], event)
                self._flush()  # pings echoed, RST_STREAMs
                if not (data := await self._reader.read(65536)):
                    break
        except (OSError, spdy.ProtocolError) as exc:
            self.error = exc
        finally:
            self._closed.set()
            for stream in self._streams.values():
                stream._ended("closed")

    @staticmethod
    async def _dispatch(stream: SpdyStream, event: Replied | DataReceived | StreamReset) -> None:
        if isinstance(event, Replied):
            stream.reply_headers = event.headers
            if not stream._reply.done():
                stream._reply.set_result(event.headers)
        elif isinstance(event, StreamReset):
            stream._ended("reset", event.status)
        else:
            if event.data:
                await stream._inbox.put(event.data, len(event.data))
            if event.fin:
                stream._ended("fin")


async def spdy_connect(url: str, protocols: Sequence[str], *, ssl: SSL = None, timeout: float = 10) -> SpdyConnection:
    """The upgrade as client-go's SPDY round tripper asks it; UpgradeRefused for any answer but 101."""
    path, host, reader, writer = await _dial(url, ssl, timeout)
    http = h11.Connection(h11.CLIENT)
    headers = [("Host", host), ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
    headers += [("X-Stream-Protocol-Version", p) for p in protocols] + [("Content-Length", "0")]
    status, body = 0, bytearray()
    try:
        async with asyncio.timeout(timeout):
            writer.write(http.send(h11.Request(method="POST", target=path, headers=headers))
                         + http.send(h11.EndOfMessage()))
            await writer.drain()
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    http.receive_data(await reader.read(65536))
                elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    chosen = next((v.decode() for k, v in event.headers if k == b"x-stream-protocol-version"), "")
                    return SpdyConnection(reader, writer, chosen, bytes(http.trailing_data[0]), timeout)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    raise UpgradeRefused(status, body.decode(errors="replace")) if status else \
                        ConnectionError("the server closed the connection without answering the upgrade")
    except h11.RemoteProtocolError as exc:
        writer.close()
        raise ConnectionError(f"bad answer to the SPDY upgrade: {exc}") from None
    except BaseException:
        writer.close()
        raise


def _version(protocol: str) -> int:
    """4 for v4.channel.k8s.io; 1 for the unversioned (or unnamed) protocol."""
    head = protocol.split(".", 1)[0]
    return int(head[1:]) if head[:1] == "v" and head[1:].isdigit() else 1


async def _chunks(stdin: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        for offset in range(0, len(stdin), CHUNK):
            yield bytes(stdin[offset:offset + CHUNK])
    else:
        async for chunk in stdin:
            yield chunk


async def _feed(stdin: bytes | AsyncIterable[bytes], write: Callable[[bytes], Any], end: Callable[[], Any]) -> None:
    with contextlib.suppress(ConnectionError):  # the command may end before reading all its input
        async for chunk in _chunks(stdin):
            await write(chunk)
        await end()


async def _finish(feeder: asyncio.Task[None] | None) -> None:
    """Stdin may still be feeding when the command is done: cancelled; its own failure raised."""
    if feeder is not None:
        feeder.cancel()
        await asyncio.wait([feeder])
        if not feeder.cancelled() and (exc := feeder.exception()) is not None:
            raise exc


async def _collect(stream: SpdyStream | None, sink: Sink) -> bytes:
    kept = bytearray()
    while stream is not None and (chunk := await stream.read()):
        if sink is None:
            kept += chunk
        else:
            sink(chunk)
    return bytes(kept)


async def spdy_exec(url: str, *, stdin: Stdin = None, stdout: bool = True, stderr: bool = True, tty: bool = False,
                    resizes: Sequence[tuple[int, int]] = (), protocols: Sequence[str] = DEFAULT_EXEC_PROTOCOLS,
                    ssl: SSL = None, sink: Sink = None, timeout: float = 60) -> ExecResult:
    """exec/attach as client-go's v1-v4 stream protocols: streams error, stdin, stdout, stderr (not with a tty),
    resize (tty, v3+); stdin ends with FIN; with a `sink`, stdout goes to it chunk by chunk and is not kept.
    ConnectionError if the error stream ends otherwise than by FIN (the server ends it before closing)."""
    async with asyncio.timeout(timeout):
        async with await spdy_connect(url, protocols, ssl=ssl, timeout=timeout) as conn:
            version = _version(conn.protocol)
            kinds = ["error"] + ["stdin"] * (stdin is not None) + ["stdout"] * stdout
            kinds += ["stderr"] * (stderr and not tty) + ["resize"] * (tty and version >= 3)
            streams = {kind: conn.start_stream({"streamType": kind}) for kind in kinds}
            await asyncio.gather(*(s.replied() for s in streams.values()))
            for width, height in resizes if "resize" in streams else ():
                await streams["resize"].write(resize_message(width, height))
            feeder = None
            if stdin is not None:
                feeder = asyncio.create_task(_feed(stdin, streams["stdin"].write, streams["stdin"].close_write))
            try:
                out, err, error = await asyncio.gather(_collect(streams.get("stdout"), sink),
                                                       _collect(streams.get("stderr"), None), _collect(streams["error"], None))
            finally:
                await _finish(feeder)
            if streams["error"].end != "fin":
                raise ConnectionError(f"the error stream ended by {streams['error'].end}, not FIN ({conn.error!r})")
            text = error.decode(errors="replace")
            return ExecResult(out, err, text, parse_status(text, json_status=version >= 4))


def _channel_protocol(name: str) -> channels.Protocol:
    known = {p.name: p for p in channels.EXEC_PROTOCOLS + channels.PORT_FORWARD_PROTOCOLS}
    if name and name not in known:
        raise ConnectionError(f"the server chose an unknown subprotocol {name!r}")
    return known[name or "channel.k8s.io"]  # none chosen: the binary one, as the kubelet assumes


class WsConnection(_Connection):
    """An upgraded WebSocket of channel messages; the server's pings and close are answered by the reader task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: wsproto.WSConnection,
                 protocol: str, pending: list[wse.Event], timeout: float) -> None:
        super().__init__(reader, writer, protocol, timeout)
        self.channel_protocol = _channel_protocol(protocol)
        self.close_code: int | None = None  # of the server's close frame; None if none came (yet)
        self.close_reason = ""
        self._ws = ws
        self._inbox: _Inbox[tuple[int, bytes]] = _Inbox()
        self._task = asyncio.create_task(self._read_loop(pending))

    async def send(self, channel: int, data: bytes) -> None:
        """One message on `channel`, encoded for the negotiated protocol (v5's close signal: send(255, b"\\0"))."""
        await self.send_message(channels.encode(self.channel_protocol, channel, data))

    async def send_message(self, message: bytes | str) -> None:
        """A whole message as given: bytes binary, str text."""
        if self._ws.state != wsproto.ConnectionState.OPEN or not self._is_open():
            raise ConnectionResetError("the WebSocket is closed")
        self._writer.write(self._ws.send(wse.TextMessage(message) if isinstance(message, str) else wse.BytesMessage(message)))
        await self._drain()

    async def recv(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next (channel, payload); None once the server closed the WebSocket (or the connection ended)."""
        return await self._inbox.get(self.timeout if timeout is None else timeout)

    async def close(self) -> None:
        """A close frame if still open, then the socket."""
        if self._ws.state == wsproto.ConnectionState.OPEN and not self._writer.is_closing():
            self._writer.write(self._ws.send(wse.CloseConnection(code=1000)))
        await super().close()

    def _answer(self, event: wse.Event) -> None:
        if not self._writer.is_closing():
            self._writer.write(self._ws.send(event))

    async def _read_loop(self, events: list[wse.Event]) -> None:
        parts: list[Any] = []
        try:
            while True:
                for event in events:
                    if isinstance(event, wse.Message):
                        parts.append(event.data)
                        if event.message_finished:  # wsproto hands a message over in pieces
                            message = "".join(parts) if isinstance(event, wse.TextMessage) else b"".join(parts)
                            parts = []
                            channel, payload = channels.decode(self.channel_protocol, message)
                            await self._inbox.put((channel, payload), len(payload))
                    elif isinstance(event, wse.Ping):
                        self._answer(event.response())
                    elif isinstance(event, wse.CloseConnection):
                        self.close_code, self.close_reason = event.code, event.reason or ""
                        if self._ws.state == wsproto.ConnectionState.REMOTE_CLOSING:
                            self._answer(event.response())
                        self._inbox.close()
                if not (data := await self._reader.read(65536)):
                    break
                self._ws.receive_data(data)
                events = list(self._ws.events())
        except (OSError, channels.ChannelError, wsproto.utilities.RemoteProtocolError) as exc:
            self.error = exc
        finally:
            self._closed.set()
            self._inbox.close()


async def ws_connect(url: str, protocols: Sequence[str], *, ssl: SSL = None, timeout: float = 10) -> WsConnection:
    """The WebSocket handshake offering `protocols`; UpgradeRefused for any answer but 101."""
    path, host, reader, writer = await _dial(url, ssl, timeout)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    status, body, pending = 0, bytearray(), []
    try:
        async with asyncio.timeout(timeout):
            writer.write(ws.send(wse.Request(host=host, target=path, subprotocols=list(protocols))))
            await writer.drain()
            while True:
                data = await reader.read(65536)
                ws.receive_data(data or None)
                accepted = None
                for event in ws.events():
                    if accepted is not None:
                        pending.append(event)  # what came with the 101
                    elif isinstance(event, wse.AcceptConnection):
                        accepted = event.subprotocol or ""
                    elif isinstance(event, wse.RejectConnection):
                        status = event.status_code
                        if not event.has_body:
                            raise UpgradeRefused(status, "")
                    elif isinstance(event, wse.RejectData):
                        body += event.data
                        if event.body_finished:
                            raise UpgradeRefused(status, body.decode(errors="replace"))
                if accepted is not None:
                    return WsConnection(reader, writer, ws, accepted, pending, timeout)
                if not data:
                    raise UpgradeRefused(status, body.decode(errors="replace")) if status else \
                        ConnectionError("the server closed the connection without answering the WebSocket handshake")
    except BaseException:
        writer.close()
        raise


async def ws_exec(url: str, *, stdin: Stdin = None, stdout: bool = True, stderr: bool = True, tty: bool = False,
                  resizes: Sequence[tuple[int, int]] = (), protocols: Sequence[str] = DEFAULT_WS_EXEC_PROTOCOLS,
                  ssl: SSL = None, sink: Sink = None, timeout: float = 60) -> ExecResult:
    """exec/attach over WebSocket channels; v5 ends stdin with the close signal (v4 cannot end it). Which streams
    the server opens is the request's (its token's); stdout/stderr only say what to keep. ConnectionError if the
    connection ends without a close frame."""
    async with asyncio.timeout(timeout):
        async with await ws_connect(url, protocols, ssl=ssl, timeout=timeout) as conn:
            for width, height in resizes if tty else ():
                await conn.send(channels.RESIZE, resize_message(width, height))

            async def end() -> None:
                if conn.channel_protocol.has_close:
                    await conn.send(channels.CLOSE, bytes([channels.STDIN]))

            write = functools.partial(conn.send, channels.STDIN)
            feeder = asyncio.create_task(_feed(stdin, write, end)) if stdin is not None else None
            wanted = {channels.STDOUT: stdout, channels.STDERR: stderr, channels.ERROR: True}
            kept: dict[int, bytearray] = collections.defaultdict(bytearray)
            try:
                while (item := await conn.recv()) is not None:
                    channel, data = item
                    if channel == channels.STDOUT and sink is not None:
                        sink(data)
                    elif wanted.get(channel):
                        kept[channel] += data
            finally:
                await _finish(feeder)
            if conn.close_code is None:
                raise ConnectionError(f"the WebSocket ended without a close frame ({conn.error!r})")
            text = kept[channels.ERROR].decode(errors="replace")
            return ExecResult(bytes(kept[channels.STDOUT]), bytes(kept[channels.STDERR]), text,
                              parse_status(text, json_status=conn.channel_protocol.version >= 4))


class PortForwardClient(_Closing):
    """A portforward.k8s.io session: each connect() is one connection to a pod port, with its own requestID."""

    def __init__(self, connection: SpdyConnection) -> None:
        self.connection, self._next_request = connection, 0

    async def connect(self, port: int) -> tuple[SpdyStream, SpdyStream]:
        """(data, error) streams, both replied; FIN on data is a half-close."""
        request_id, self._next_request = str(self._next_request), self._next_request + 1
        error = self.connection.start_stream({"streamType": "error", "port": str(port), "requestID": request_id})
        data = self.connection.start_stream({"streamType": "data", "port": str(port), "requestID": request_id})
        await asyncio.gather(error.replied(), data.replied())
        return data, error

    async def close(self) -> None:
        await self.connection.close()


async def spdy_port_forward(url: str, *, ssl: SSL = None, timeout: float = 10) -> PortForwardClient:
    return PortForwardClient(await spdy_connect(url, (PORT_FORWARD_PROTOCOL,), ssl=ssl, timeout=timeout))


class WsPortForward(_Closing):
    """Port forwarding over one WebSocket: port i's data on channel 2i, its errors on 2i+1, each channel opened by
    the port number (little-endian), checked and stripped here: a wrong one (or channel) sets `error`."""

    def __init__(self, connection: WsConnection, ports: list[int]) -> None:
        self.connection, self.ports, self.error = connection, ports, None
        self._inboxes: dict[int, _Inbox[bytes]] = {c: _Inbox() for c in range(2 * len(ports))}
        self._prefixes = {c: b"" for c in self._inboxes}
        self._task = asyncio.create_task(self._route())

    async def read(self, index: int, timeout: float | None = None) -> bytes:
        """The next data of port `index`; b"" once the WebSocket closed."""
        return await self._inboxes[2 * index].get(self.connection.timeout if timeout is None else timeout) or b""

    async def read_error(self, index: int, timeout: float | None = None) -> bytes:
        """The next error message of port `index`; b"" once the WebSocket closed."""
        return await self._inboxes[2 * index + 1].get(self.connection.timeout if timeout is None else timeout) or b""

    async def write(self, index: int, data: bytes) -> None:
        await self.connection.send(2 * index, data)

    async def close(self) -> None:
        self._task.cancel()
        await self.connection.close()

    async def _route(self) -> None:
        try:
            while (item := await self.connection._inbox.get(None)) is not None:
                channel, data = item
                if channel not in self._inboxes:
                    self.error = f"a message on channel {channel}, beyond the {len(self.ports)} ports' channels"
                    return
                if len(self._prefixes[channel]) < 2:
                    need = 2 - len(self._prefixes[channel])
                    self._prefixes[channel], data = self._prefixes[channel] + data[:need], data[need:]
                    expected = channels.port_prefix(self.ports[channel // 2])
                    if len(self._prefixes[channel]) == 2 and self._prefixes[channel] != expected:
                        self.error = f"channel {channel} opened with {self._prefixes[channel].hex()}, not {expected.hex()}"
                        return
                if data:
                    await self._inboxes[channel].put(data, len(data))
        finally:
            for inbox in self._inboxes.values():
                inbox.close()


async def ws_port_forward(url_with_ports: str, *, ports: Sequence[int] | None = None,
                          protocols: Sequence[str] = DEFAULT_WS_PORT_FORWARD_PROTOCOLS, ssl: SSL = None,
                          timeout: float = 10) -> WsPortForward:
    """The URL carries the ports (?port=8080,9090, repeatable, as the kubelet reads it): their order
    gives the channels. `ports` overrides what the query says (to send a query the server should refuse, say)."""
    if ports is None:
        query = parse_qs(urlsplit(url_with_ports).query)
        ports = [int(p) for v in query.get("port", []) for p in v.split(",") if p.strip()]
    return WsPortForward(await ws_connect(url_with_ports, protocols, ssl=ssl, timeout=timeout), list(ports))

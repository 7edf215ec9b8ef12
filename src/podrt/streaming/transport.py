"""The two transports of a streaming session, driven on asyncio: SPDY/3.1
streams and WebSocket channels, both seen by the protocol handlers
(remotecommand.py, portforward.py) as Pipes.

Back-pressure both ways, with no unbounded buffer: a pipe holds at most
PIPE_DEPTH chunks from the client, and the connection's reader waits when
one is full (TCP then slows the client); every write waits for the socket to
drain (a slow client slows the process). SPDY's own flow control is not
used: see session.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

import wsproto
import wsproto.events
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from podrt.streaming import channels, spdy
from podrt.streaming.session import DataReceived, Session, SessionEnded, StreamOpened, StreamReset

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
PIPE_DEPTH = 16  # chunks a pipe holds from the client before the connection stops reading
MAX_WS_MESSAGE = 1 << 20
GOAWAY_PROTOCOL_ERROR = 1  # SPDY/3 GOAWAY status
LINGER = 2.0


class Pipe:
    """One SPDY stream or WebSocket channel: what the client sent, in order,
    and our way back to it."""

    def __init__(self, send: Callable[[bytes, bool], Awaitable[None]], headers: spdy.Headers = (),
                 stream_id: int = 0) -> None:
        self.headers, self.stream_id = headers, stream_id
        self._send = send
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(PIPE_DEPTH)
        self._ended = False  # the client's side
        self._closed = False  # ours

    def header(self, name: str) -> str:
        return spdy.header(self.headers, name) or ""

    async def read(self) -> bytes:
        """The client's next chunk; b"" once it ended its side (or left)."""
        if self._ended and self._queue.empty():
            return b""
        chunk = await self._queue.get()
        if chunk is None:
            self._ended = True
            return b""
        return chunk

    async def write(self, data: bytes) -> None:
        if data and not self._closed:
            await self._send(data, False)

    async def close(self) -> None:
        """End our side (SPDY FIN); the client may still send."""
        if not self._closed:
            self._closed = True
            await self._send(b"", True)

    async def _feed(self, data: bytes) -> None:
        if not self._ended:
            await self._queue.put(data)

    def _end(self) -> None:
        """The client ended its side or the connection went: wake the reader without waiting."""
        if self._ended:
            return
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:  # the reader drains the chunks first, then sees the end
            self._ended = True
            self._queue._queue.append(None)  # type: ignore[attr-defined]  # one past the bound, once


class Connection:
    """What both transports share: the socket, byte counts, idle time, the end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 count: Callable[[str, int], None] = lambda _d, _n: None) -> None:
        self._reader, self._writer = reader, writer
        self._count = count
        self.last_activity = asyncio.get_running_loop().time()
        self.closed = asyncio.Event()  # the client left, broke the protocol, or we closed

    async def _write(self, data: bytes) -> None:
        if not data or self.closed.is_set():
            return
        self._writer.write(data)
        self._count("out", len(data))
        self.last_activity = asyncio.get_running_loop().time()
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            self.closed.set()

    async def _read(self) -> bytes:
        try:
            data = await self._reader.read(READ_CHUNK)
        except (ConnectionError, OSError):
            return b""
        self._count("in", len(data))
        self.last_activity = asyncio.get_running_loop().time()
        return data

    async def aclose(self) -> None:
        """Close after a short linger: our end first, then what the client
        still sends is read and dropped until it closes. Closing with unread
        input would make the kernel send RST, which can discard our last
        output (the exit status) before the client reads it."""
        self.closed.set()
        with contextlib.suppress(Exception):
            if self._writer.can_write_eof() and not self._writer.is_closing():
                self._writer.write_eof()
                async with asyncio.timeout(LINGER):
                    while await self._reader.read(READ_CHUNK):
                        pass
        self._writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 2)


class SpdyConnection(Connection):
    """A SPDY/3.1 session: the client opens the streams, each is replied at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b"",
                 count: Callable[[str, int], None] = lambda _d, _n: None) -> None:
        super().__init__(reader, writer, count)
        self._session = Session(client=False)
        self._streams: dict[int, Pipe] = {}
        self._opened: asyncio.Queue[Pipe | None] = asyncio.Queue()
        self._first = first

    async def accept(self) -> Pipe | None:
        """The next stream the client opened; None once the connection ended."""
        if self.closed.is_set() and self._opened.empty():
            return None
        return await self._opened.get()

    async def run(self) -> None:
        """Read until the client leaves or breaks SPDY (that ends this connection only)."""
        data = self._first
        try:
            while not self.closed.is_set():
                if data:
                    for event in self._session.receive(data):
                        await self._event(event)
                    await self._flush()
                data = await self._read()
                if not data:
                    break
        except spdy.ProtocolError as exc:
            log.info("streaming: closing a SPDY connection: %s", exc)
            self._session.goaway(GOAWAY_PROTOCOL_ERROR)
            await self._flush()
        except asyncio.CancelledError:  # the session is over: finish() says goodbye
            raise
        self.closed.set()
        for pipe in self._streams.values():
            pipe._end()
        self._opened.put_nowait(None)

    async def _event(self, event: object) -> None:
        if isinstance(event, StreamOpened):
            pipe = Pipe(self._sender(event.stream_id), event.headers, event.stream_id)
            self._streams[event.stream_id] = pipe
            self._session.reply(event.stream_id)
            if event.fin:
                pipe._end()
            self._opened.put_nowait(pipe)
        elif isinstance(event, DataReceived):
            pipe = self._streams.get(event.stream_id)
            if pipe is not None:
                if event.data:
                    await self._flush()  # our replies first: the wait below may be long
                    await pipe._feed(event.data)
                if event.fin:
                    pipe._end()
        elif isinstance(event, StreamReset):
            pipe = self._streams.pop(event.stream_id, None)
            if pipe is not None:
                pipe._closed = True
                pipe._end()
        elif isinstance(event, SessionEnded):
            self.closed.set()

    def _sender(self, stream_id: int) -> Callable[[bytes, bool], Awaitable[None]]:
        async def send(data: bytes, fin: bool) -> None:
            if self.closed.is_set():
                return
            self._session.send(stream_id, data, fin=fin)
            await self._flush()
        return send

    async def _flush(self) -> None:
        await self._write(self._session.data_to_send())

    async def finish(self) -> None:
        """The session's work is done: tell the client (GOAWAY) and close."""
        if not self.closed.is_set():
            self._session.goaway()
            await self._flush()
        await self.aclose()


class WebSocketConnection(Connection):
    """A WebSocket session with Kubernetes' channel framing: channel i is a Pipe."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: wsproto.WSConnection,
                 protocol: channels.Protocol, count: Callable[[str, int], None] = lambda _d, _n: None) -> None:
        super().__init__(reader, writer, count)
        self._ws, self.protocol = ws, protocol
        self._channels: dict[int, Pipe] = {}
        self._message: list[bytes | str] = []
        self._size = 0

    def channel(self, number: int) -> Pipe:
        pipe = self._channels.get(number)
        if pipe is None:
            pipe = self._channels[number] = Pipe(self._sender(number))
        return pipe

    async def run(self) -> None:
        try:
            for event in self._ws.events():  # anything that came with the handshake
                await self._event(event)
            while not self.closed.is_set():
                data = await self._read()
                if not data:
                    self._ws.receive_data(None)
                    break
                self._ws.receive_data(data)
                for event in self._ws.events():
                    await self._event(event)
        except (RemoteProtocolError, LocalProtocolError, channels.ChannelError) as exc:
            log.info("streaming: closing a WebSocket connection: %s", exc)
            with contextlib.suppress(LocalProtocolError):
                await self._write(self._ws.send(wsproto.events.CloseConnection(code=1002, reason=str(exc)[:100])))
        except asyncio.CancelledError:  # the session is over: finish() says goodbye
            raise
        self.closed.set()
        for pipe in self._channels.values():
            pipe._end()

    async def _event(self, event: object) -> None:
        if isinstance(event, wsproto.events.Message):
            self._size += len(event.data)
            if self._size > MAX_WS_MESSAGE:
                raise channels.ChannelError(f"a message over {MAX_WS_MESSAGE} bytes")
            self._message.append(event.data)
            if event.message_finished:
                parts, self._message, self._size = self._message, [], 0
                message = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)  # type: ignore[arg-type]
                await self._deliver(message)
        elif isinstance(event, wsproto.events.Ping):
            await self._write(self._ws.send(event.response()))
        elif isinstance(event, wsproto.events.CloseConnection):
            with contextlib.suppress(LocalProtocolError):
                await self._write(self._ws.send(event.response()))
            self.closed.set()

    async def _deliver(self, message: bytes | str) -> None:
        number, data = channels.decode(self.protocol, message)
        if number == channels.CLOSE and self.protocol.has_close:
            if data:
                self.channel(data[0])._end()
            return
        if data:
            await self.channel(number)._feed(data)

    def _sender(self, number: int) -> Callable[[bytes, bool], Awaitable[None]]:
        async def send(data: bytes, fin: bool) -> None:
            if self.closed.is_set():
                return
            if fin:  # no close signal from the server: client-go's v5 reader drops channel 255 as unknown
                return
            await self._message_out(channels.encode(self.protocol, number, data))
        return send

    async def send_raw_message(self, number: int, data: bytes) -> None:
        """A message on a channel even when empty (port-forward's port prefix is not empty; kept for clarity)."""
        await self._message_out(channels.encode(self.protocol, number, data))

    async def _message_out(self, message: bytes | str) -> None:
        if isinstance(message, str):
            out = self._ws.send(wsproto.events.TextMessage(data=message))
        else:
            out = self._ws.send(wsproto.events.BytesMessage(data=message))
        await self._write(out)

    async def finish(self) -> None:
        if not self.closed.is_set():
            with contextlib.suppress(LocalProtocolError):
                await self._write(self._ws.send(wsproto.events.CloseConnection(code=1000)))
        await self.aclose()

"""The two transports of a streaming session, driven on asyncio: SPDY/3.1
streams and WebSocket channels, both seen by the protocol handlers
(remotecommand.py, portforward.py) as Pipes.

Back-pressure both ways, with no unbounded buffer: a pipe holds at most
PIPE_BYTES from the client, and the connection's reader waits when one is
full (TCP then slows the client); every write waits for the socket to drain
(a slow client slows the process). SPDY's own flow control is not used: see
session.py. A connection holds at most MAX_STREAMS SPDY streams, forgotten
once both sides ended them; a WebSocket carries only the channels its
handler opened (the kubelet drops messages for others).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

import wsproto
import wsproto.events
from wsproto.connection import ConnectionState
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from podrt.streaming import channels, spdy
from podrt.streaming.session import DataReceived, Session, SessionEnded, StreamOpened, StreamReset

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
PIPE_BYTES = 1 << 20  # a pipe holds this much from the client before the connection stops reading
MAX_STREAMS = 1000  # open SPDY streams per connection; more are refused
MAX_WS_MESSAGE = 1 << 20
GOAWAY_PROTOCOL_ERROR = 1  # SPDY/3 GOAWAY status
LINGER = 2.0


class Pipe:
    """One SPDY stream or WebSocket channel: what the client sent, in order,
    and our way back to it.

    At most PIPE_BYTES wait to be read; past that the connection's reader
    waits (TCP then slows the client). A pipe whose consumer has stopped is
    discarded: what comes for it is dropped, so it can never stall the
    connection's other streams."""

    def __init__(self, send: Callable[[bytes, bool], Awaitable[None]], headers: spdy.Headers = (),
                 stream_id: int = 0) -> None:
        self.headers, self.stream_id = headers, stream_id
        self._send = send
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._ready = asyncio.Event()  # something to read, or the end
        self._room = asyncio.Event()  # below the bound, or discarded
        self._room.set()
        self.ended = False  # the client's side: ended (FIN) or gone
        self.aborted = asyncio.Event()  # the client reset the stream (RST_STREAM); for writers to wait on
        self.closed = False  # ours
        self._discarded = False

    def header(self, name: str) -> str:
        return spdy.header(self.headers, name) or ""

    @property
    def reset(self) -> bool:
        """The client aborted the stream (RST_STREAM), rather than ending it."""
        return self.aborted.is_set()

    async def read(self) -> bytes:
        """The client's next chunk; b"" once it ended its side, reset it, or left."""
        while not self._chunks:
            if self.ended or self._discarded:
                return b""
            self._ready.clear()
            await self._ready.wait()
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        if self._size <= PIPE_BYTES:
            self._room.set()
        return chunk

    async def write(self, data: bytes) -> None:
        if data and not self.closed:
            await self._send(data, False)

    async def close(self) -> None:
        """End our side (SPDY FIN); the client may still send."""
        if not self.closed:
            self.closed = True
            await self._send(b"", True)

    def discard(self) -> None:
        """Nobody reads this pipe any more: drop what it holds and what comes."""
        self._discarded = True
        self._chunks.clear()
        self._size = 0
        self._room.set()
        self._ready.set()

    async def _feed(self, data: bytes) -> None:
        if self.ended or self._discarded:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._ready.set()
        if self._size > PIPE_BYTES:
            self._room.clear()
            await self._room.wait()

    def _end(self, *, reset: bool = False) -> None:
        """The client ended its side, reset it, or left: never waits; what was sent before is still read."""
        self.ended = True
        if reset:
            self.aborted.set()
        self._ready.set()


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

    async def _goodbye(self, write: Awaitable[None]) -> None:
        """The last words, given LINGER to leave: a client that reads nothing cannot hold up the end."""
        try:
            async with asyncio.timeout(LINGER):
                await write
        except TimeoutError:
            self._writer.transport.abort()
            self.closed.set()

    async def run(self) -> None:
        """Read until the client leaves or breaks the protocol (each transport its own)."""
        raise NotImplementedError

    async def finish(self) -> None:
        """The session's work is done: say so in the protocol, then close (each transport its own)."""
        raise NotImplementedError

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
        try:
            await asyncio.wait_for(self._writer.wait_closed(), LINGER)
        except asyncio.CancelledError:
            self._writer.transport.abort()
            raise
        except Exception:  # a client that reads nothing keeps our output queued: drop it
            self._writer.transport.abort()


class SpdyConnection(Connection):
    """A SPDY/3.1 session: the client opens the streams, each is replied at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b"",
                 count: Callable[[str, int], None] = lambda _d, _n: None) -> None:
        super().__init__(reader, writer, count)
        self._session = Session(client=False)
        self._streams: dict[int, Pipe] = {}
        self._opened: asyncio.Queue[Pipe | None] = asyncio.Queue()  # bounded by MAX_STREAMS
        self._first = first
        self._refusing = False

    async def accept(self) -> Pipe | None:
        """The next stream the client opened; None once the connection ended."""
        if self.closed.is_set() and self._opened.empty():
            return None
        return await self._opened.get()

    def refuse_new_streams(self) -> None:
        """The handler has all the streams it takes: later ones are reset (REFUSED_STREAM), not queued."""
        self._refusing = True
        while not self._opened.empty():
            pipe = self._opened.get_nowait()
            if pipe is not None:
                pipe.discard()  # frees the reader if it waits on this pipe
                self._refuse(pipe.stream_id)

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
        # (cancelled: the session is over and finish() says goodbye; nothing below runs)
        self.closed.set()
        for pipe in self._streams.values():
            pipe._end()
        self._opened.put_nowait(None)

    async def _event(self, event: object) -> None:
        pipe: Pipe | None
        if isinstance(event, StreamOpened):
            if self._refusing or len(self._streams) >= MAX_STREAMS:
                self._refuse(event.stream_id)
                return
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
                    self._forget_if_done(pipe)
        elif isinstance(event, StreamReset):
            pipe = self._streams.pop(event.stream_id, None)
            if pipe is not None:
                pipe.closed = True
                pipe._end(reset=True)
        elif isinstance(event, SessionEnded):
            self.closed.set()

    def _refuse(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._session.reset(stream_id, spdy.RstStatus.REFUSED_STREAM)

    def _forget_if_done(self, pipe: Pipe) -> None:
        """Both sides ended it: its Pipe goes (a long port-forward session opens thousands)."""
        if pipe.ended and pipe.closed:
            self._streams.pop(pipe.stream_id, None)

    def _sender(self, stream_id: int) -> Callable[[bytes, bool], Awaitable[None]]:
        async def send(data: bytes, fin: bool) -> None:
            if self.closed.is_set():
                return
            self._session.send(stream_id, data, fin=fin)
            if fin and (pipe := self._streams.get(stream_id)) is not None:
                self._forget_if_done(pipe)
            await self._flush()
        return send

    async def reset(self, pipe: Pipe) -> None:
        """Abort a stream (a data stream whose pair never came, say)."""
        pipe.discard()
        pipe.closed = True
        if not self.closed.is_set() and self._streams.pop(pipe.stream_id, None) is not None:
            self._session.reset(pipe.stream_id, spdy.RstStatus.CANCEL)
            await self._flush()

    async def _flush(self) -> None:
        await self._write(self._session.data_to_send())

    async def finish(self) -> None:
        """The session's work is done: tell the client (GOAWAY) and close."""
        if not self.closed.is_set():
            self._session.goaway()
            await self._goodbye(self._flush())
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
        """Channel `number`, opened by the handler before the client's data for it counts."""
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
            if self._ws.state is ConnectionState.OPEN:
                out = self._ws.send(wsproto.events.CloseConnection(code=1002, reason=str(exc)[:100]))
                await self._goodbye(self._write(out))
        # (cancelled: the session is over and finish() says goodbye; nothing below runs)
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
            answer = self._ws.send(event.response())  # wsproto is CLOSED now: no other message goes out
            self.closed.set()
            self._writer.write(answer)

    async def _deliver(self, message: bytes | str) -> None:
        number, data = channels.decode(self.protocol, message)
        if number == channels.CLOSE and self.protocol.has_close:
            if data and (pipe := self._channels.get(data[0])) is not None:
                pipe._end()
            return
        pipe = self._channels.get(number)
        if data and pipe is not None:  # a channel the handler did not open: dropped, as the kubelet does
            await pipe._feed(data)

    def _sender(self, number: int) -> Callable[[bytes, bool], Awaitable[None]]:
        async def send(data: bytes, fin: bool) -> None:
            if self.closed.is_set():
                return
            if fin:  # no close signal from the server: client-go's v5 reader drops channel 255 as unknown
                return
            await self._message_out(channels.encode(self.protocol, number, data))
        return send

    async def _message_out(self, message: bytes | str) -> None:
        if self._ws.state is not ConnectionState.OPEN:  # closing: the client said goodbye or broke the protocol
            return
        if isinstance(message, str):
            out = self._ws.send(wsproto.events.TextMessage(data=message))
        else:
            out = self._ws.send(wsproto.events.BytesMessage(data=message))
        await self._write(out)

    async def finish(self) -> None:
        if self._ws.state is ConnectionState.OPEN and not self.closed.is_set():
            await self._goodbye(self._write(self._ws.send(wsproto.events.CloseConnection(code=1000))))
        await self.aclose()

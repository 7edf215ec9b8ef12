"""A SPDY/3.1 connection's streams, sans-IO: frames (spdy.Codec) in, events
out; calls in, bytes out (data_to_send). Both sides speak it: the streaming
server, and the tests' own client.

No SPDY flow control: moby/spdystream, which the kubelet, crictl and critest
use at both ends of these connections, neither sends nor honours
WINDOW_UPDATE or SETTINGS, so a sender that waited on windows would stall
after 64 KiB. Back-pressure is TCP's: whoever writes data_to_send() waits
for the transport to drain. WINDOW_UPDATE and SETTINGS are read and ignored.
"""

from __future__ import annotations

import attrs

from podrt.streaming import spdy

DATA_CHUNK = 32 * 1024  # bytes per DATA frame sent


@attrs.frozen
class StreamOpened:
    stream_id: int
    headers: spdy.Headers
    fin: bool  # the peer sends nothing on it (unidirectional from us, or empty)


@attrs.frozen
class Replied:
    stream_id: int
    headers: spdy.Headers


@attrs.frozen
class DataReceived:
    stream_id: int
    data: bytes
    fin: bool


@attrs.frozen
class StreamReset:
    stream_id: int
    status: int


@attrs.frozen
class Pong:
    ping_id: int


@attrs.frozen
class SessionEnded:
    last_good_stream_id: int
    status: int


Event = StreamOpened | Replied | DataReceived | StreamReset | Pong | SessionEnded


@attrs.define
class _Stream:
    remote_open: bool = True
    local_open: bool = True


class Session:
    def __init__(self, *, client: bool) -> None:
        self._codec = spdy.Codec()
        self._client = client
        self._next_stream = 1 if client else 2  # clients' streams are odd, servers' even
        self._next_ping = 1 if client else 2
        self._streams: dict[int, _Stream] = {}
        self._out = bytearray()
        self.ended = False

    # ---- input --------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Events for the frames `data` completes; spdy.ProtocolError ends the connection."""
        events: list[Event] = []
        for frame in self._codec.receive(data):
            event = self._frame(frame)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: spdy.Frame) -> Event | None:
        if isinstance(frame, spdy.SynStream):
            if frame.stream_id in self._streams or frame.stream_id == 0 or self._ours(frame.stream_id):
                self.reset(frame.stream_id, spdy.RstStatus.PROTOCOL_ERROR if frame.stream_id == 0 or self._ours(frame.stream_id)
                           else spdy.RstStatus.STREAM_IN_USE)
                return None
            self._streams[frame.stream_id] = _Stream(remote_open=not frame.fin)
            return StreamOpened(frame.stream_id, frame.headers, frame.fin)
        if isinstance(frame, spdy.SynReply):
            if frame.fin:
                self._remote_done(frame.stream_id)
            return Replied(frame.stream_id, frame.headers)
        if isinstance(frame, spdy.Data):
            stream = self._streams.get(frame.stream_id)
            if stream is None or not stream.remote_open:
                status = spdy.RstStatus.INVALID_STREAM if stream is None else spdy.RstStatus.STREAM_ALREADY_CLOSED
                self._send(spdy.RstStream(frame.stream_id, status))
                return None
            if frame.fin:
                self._remote_done(frame.stream_id)
            return DataReceived(frame.stream_id, frame.data, frame.fin)
        if isinstance(frame, spdy.HeadersFrame):
            if frame.fin:
                self._remote_done(frame.stream_id)
                return DataReceived(frame.stream_id, b"", True)
            return None
        if isinstance(frame, spdy.RstStream):
            self._streams.pop(frame.stream_id, None)
            return StreamReset(frame.stream_id, frame.status)
        if isinstance(frame, spdy.Ping):
            if frame.ping_id % 2 == self._next_ping % 2:
                return Pong(frame.ping_id)  # the answer to ours
            self._send(frame)  # theirs: echoed
            return None
        if isinstance(frame, spdy.GoAway):
            self.ended = True
            return SessionEnded(frame.last_good_stream_id, frame.status)
        return None  # SETTINGS, WINDOW_UPDATE: see the module's note

    def _ours(self, stream_id: int) -> bool:
        return stream_id % 2 == self._next_stream % 2

    def _remote_done(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.remote_open = False
            self._forget_if_closed(stream_id, stream)

    def _forget_if_closed(self, stream_id: int, stream: _Stream) -> None:
        if not stream.remote_open and not stream.local_open:
            del self._streams[stream_id]

    # ---- output -------------------------------------------------------------------

    def open(self, headers: spdy.Headers, *, fin: bool = False) -> int:
        stream_id = self._next_stream
        self._next_stream += 2
        self._streams[stream_id] = _Stream(local_open=not fin)
        self._send(spdy.SynStream(stream_id, headers, fin=fin))
        return stream_id

    def reply(self, stream_id: int, headers: spdy.Headers = (), *, fin: bool = False) -> None:
        self._send(spdy.SynReply(stream_id, headers, fin=fin))
        if fin:
            self._local_done(stream_id)

    def send(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        """DATA frames of at most DATA_CHUNK bytes; fin ends our side of the stream."""
        view = memoryview(data)
        for offset in range(0, len(view), DATA_CHUNK):
            last = offset + DATA_CHUNK >= len(view)
            self._send(spdy.Data(stream_id, bytes(view[offset:offset + DATA_CHUNK]), fin=fin and last))
        if not data and fin:
            self._send(spdy.Data(stream_id, b"", fin=True))
        if fin:
            self._local_done(stream_id)

    def reset(self, stream_id: int, status: int = spdy.RstStatus.CANCEL) -> None:
        self._streams.pop(stream_id, None)
        self._send(spdy.RstStream(stream_id, status))

    def ping(self) -> int:
        ping_id = self._next_ping
        self._next_ping += 2
        self._send(spdy.Ping(ping_id))
        return ping_id

    def goaway(self, status: int = 0) -> None:
        last = max((i for i in self._streams if not self._ours(i)), default=0)
        self._send(spdy.GoAway(last, status))
        self.ended = True

    def _local_done(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.local_open = False
            self._forget_if_closed(stream_id, stream)

    def _send(self, frame: spdy.Frame) -> None:
        self._out += self._codec.encode(frame)

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def __len__(self) -> int:
        """Streams open in either direction."""
        return len(self._streams)

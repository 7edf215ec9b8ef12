"""A reply's DATA frames go out in one socket write per flow-control window
(server._send_data), the same frames h2 would send one write at a time, and
a window that runs out still waits for the peer's WINDOW_UPDATE. A unary
answer that fits one frame goes out with its headers and trailers in one
write (server._send_unary); a larger one, grpclib's way."""

from __future__ import annotations

import asyncio
import types

import h2.config
import h2.connection
import h2.events
import h2.settings
from grpclib import protocol
from grpclib.const import Cardinality
from grpclib.encoding.proto import ProtoCodec
from grpclib.events import SendMessage, _DispatchServerEvents
from grpclib.server import Stream

from podrt.api.runtime import v1 as cri
from podrt.server import _send_data, guard_requests


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False


def _pair(window: int, headers: bool = True) -> tuple[h2.connection.H2Connection, h2.connection.H2Connection, int]:
    """(server, client, stream id): a request received, the client's window
    `window`; the server's headers sent when `headers`."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    if window > 65535:
        client.increment_flow_control_window(window - 65535)
    server.initiate_connection()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(":method", "POST"), (":path", "/x"), (":scheme", "http"), (":authority", "a")],
                        end_stream=True)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the settings' ack
    if headers:
        server.send_headers(sid, [(":status", "200")])
    client.receive_data(server.data_to_send())
    return server, client, sid


def _stream(server: h2.connection.H2Connection, sid: int) -> types.SimpleNamespace:
    """What _send_data uses of grpclib's protocol.Stream."""
    ready = asyncio.Event()
    ready.set()
    conn = types.SimpleNamespace(write_ready=ready, data_sent=0, data_send_process=lambda: None, messages_sent=0,
                                 headers_send_process=lambda: None, get_peer=lambda: None)
    return types.SimpleNamespace(_h2_connection=server, id=sid, connection=conn, window_updated=asyncio.Event(),
                                 _transport=_Transport(), data_sent=0)


def _received(client: h2.connection.H2Connection, writes: list[bytes]) -> tuple[bytes, bool, int]:
    """(data, whether the stream ended, DATA frames) as the client reads them."""
    data, ended, frames = b"", False, 0
    for w in writes:
        for ev in client.receive_data(w):
            if isinstance(ev, h2.events.DataReceived):
                data += ev.data
                frames += 1
                client.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            ended |= isinstance(ev, h2.events.StreamEnded)
    return data, ended, frames


def test_a_large_reply_is_one_write_of_every_frame() -> None:
    server, client, sid = _pair(4 << 20)
    stream = _stream(server, sid)
    body = bytes(range(256)) * 800  # 200 KiB: 13 frames of 16 KiB
    asyncio.run(_send_data(stream, body, end_stream=True))
    assert len(stream._transport.writes) == 1
    data, ended, frames = _received(client, stream._transport.writes)
    assert data == body and ended and frames == 13
    assert stream.data_sent == stream.connection.data_sent == len(body)


def test_an_empty_message_is_one_empty_frame() -> None:
    server, client, sid = _pair(4 << 20)
    stream = _stream(server, sid)
    asyncio.run(_send_data(stream, b"", end_stream=True))
    assert _received(client, stream._transport.writes) == (b"", True, 1)


def test_a_spent_window_waits_for_the_peer() -> None:
    """With the default 64 KiB window, 100 KB go out as one write of 64 KiB,
    then the rest once the client's WINDOW_UPDATE came."""
    server, client, sid = _pair(65535)
    stream = _stream(server, sid)
    body = b"x" * 100_000

    got: list[bytes] = []

    async def run() -> None:
        task = asyncio.create_task(_send_data(stream, body, end_stream=True))
        await asyncio.sleep(0.01)
        assert not task.done() and len(stream._transport.writes) == 1
        got.append(_received(client, stream._transport.writes)[0])  # acknowledged: WINDOW_UPDATEs to send
        server.receive_data(client.data_to_send())
        stream.window_updated.set()  # as grpclib's WindowUpdated handler does
        await asyncio.wait_for(task, 1)

    asyncio.run(run())
    assert len(stream._transport.writes) == 2 and len(got[0]) == 65535
    rest, ended, _ = _received(client, stream._transport.writes[1:])
    assert got[0] + rest == body and ended
    assert stream.data_sent == len(body)


def _grpc_stream(server: h2.connection.H2Connection, sid: int, cardinality: Cardinality = Cardinality.UNARY_UNARY,
                 dispatch: _DispatchServerEvents | None = None) -> Stream:  # type: ignore[type-arg]
    """grpclib's server stream over _stream's fake, its writes routed as hooks.py routes them."""
    fake = _stream(server, sid)
    fake.connection.__dict__.update(streams_started=0, ack=lambda *_: None)
    h2_stream = protocol.Stream(fake.connection, server, fake._transport, stream_id=sid)  # type: ignore[arg-type]
    stream = Stream(h2_stream, "/runtime.v1.RuntimeService/Version", cardinality, cri.VersionRequest,
                    cri.VersionResponse, codec=ProtoCodec(), status_details_codec=None,
                    dispatch=dispatch or _DispatchServerEvents())
    guard_requests(stream, 1 << 20)
    return stream


def _answer(stream: Stream, message: cri.VersionResponse) -> list[bytes]:  # type: ignore[type-arg]
    async def run() -> None:
        async with stream:  # its exit sends the trailers that were not sent
            await stream.send_message(message)

    asyncio.run(run())
    return stream._stream._transport.writes  # type: ignore[no-any-return]


def _events(client: h2.connection.H2Connection, writes: list[bytes]) -> list[object]:
    return [ev for w in writes for ev in client.receive_data(w)]


def test_a_unary_answer_is_one_write() -> None:
    server, client, sid = _pair(4 << 20, headers=False)
    reply = cri.VersionResponse(version="0.1.0", runtime_name="podrt")
    writes = _answer(_grpc_stream(server, sid), reply)
    assert len(writes) == 1
    events = _events(client, writes)
    headers, data, trailers = (e for e in events if isinstance(e, (h2.events.ResponseReceived, h2.events.DataReceived,
                                                                    h2.events.TrailersReceived)))
    assert dict(headers.headers) == {b":status": b"200", b"content-type": b"application/grpc+proto"}  # type: ignore[attr-defined]
    assert data.data == b"\0" + len(bytes(reply)).to_bytes(4, "big") + bytes(reply)  # type: ignore[attr-defined]
    assert dict(trailers.headers) == {b"grpc-status": b"0"}  # type: ignore[attr-defined]
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)


def test_a_large_unary_answer_and_a_stream_go_grpclibs_way() -> None:
    """More than one frame (16 KiB): headers, data and trailers each written; the same for a server stream's messages."""
    for cardinality, text in ((Cardinality.UNARY_UNARY, "x" * 20_000), (Cardinality.UNARY_STREAM, "v")):
        server, client, sid = _pair(4 << 20, headers=False)
        reply = cri.VersionResponse(version=text)
        writes = _answer(_grpc_stream(server, sid, cardinality), reply)
        assert len(writes) == 3
        events = _events(client, writes)
        assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))[5:] == bytes(reply)
        trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
        assert [dict(t.headers)[b"grpc-status"] for t in trailers] == [b"0"]


def test_a_send_listener_gets_grpclibs_way() -> None:
    dispatch = _DispatchServerEvents()
    seen: list[object] = []

    async def on_send(event: SendMessage) -> None:
        seen.append(event.message)

    dispatch.add_listener(SendMessage, on_send)  # type: ignore[arg-type]
    server, _client, sid = _pair(4 << 20, headers=False)
    reply = cri.VersionResponse(version="1")
    assert len(_answer(_grpc_stream(server, sid, dispatch=dispatch), reply)) == 3 and seen == [reply]


def test_a_stream_the_client_reset_gets_no_answer() -> None:
    server, client, sid = _pair(4 << 20, headers=False)
    client.reset_stream(sid)
    server.receive_data(client.data_to_send())
    assert _answer(_grpc_stream(server, sid), cri.VersionResponse(version="1")) == []

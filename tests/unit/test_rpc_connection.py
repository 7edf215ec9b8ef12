"""podrt/rpc's HTTP/2 against h2's client over a fake transport: requests
(padding, CONTINUATION, many DATA frames, the request checks), errors as
Trailers-Only answers, cancellation by RST_STREAM, a lost connection or
grpc-timeout, PING, and protocol errors closing with GOAWAY and their code.
Answers' writes and flow control: test_server_writes.py; the real daemon's
side: tests/integration/test_rpc_http2.py."""

from __future__ import annotations

import asyncio

import h2.errors
import h2.events
import h2.settings
import hpack
import pytest
from grpclib.const import Status

from podrt.api.runtime import v1 as cri
from podrt.rpc import frames
from podrt.rpc.connection import STREAM_WINDOW, Connection
from podrt.server import CriServer
from tests.support.h2raw import grpc_frame
from tests.support.rpcpeer import STATUS, VERSION, Peer, Service, Transport, reply, version_request


async def test_an_error_before_any_message_is_one_trailers_only_header_block() -> None:
    peer = Peer()
    sid = peer.request("/runtime.v1.RuntimeService/NoSuchRpc", b"")
    await asyncio.sleep(0)
    events = peer.events()
    assert [type(ev) for ev in events if isinstance(ev, (h2.events.ResponseReceived, h2.events.DataReceived))] == [
        h2.events.ResponseReceived]
    headers = next(dict(ev.headers) for ev in events if isinstance(ev, h2.events.ResponseReceived))
    assert headers[":status"] == "200" and headers["content-type"] == "application/grpc"
    assert headers["grpc-status"] == str(Status.UNIMPLEMENTED.value)
    assert headers["grpc-message"] == "unknown method /runtime.v1.RuntimeService/NoSuchRpc"
    assert any(isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid for ev in events)


async def test_grpc_message_is_percent_encoded() -> None:
    block = frames.status_block(Status.NOT_FOUND, "ü 100%\n")
    assert dict(hpack.Decoder().decode(block)) == {"grpc-status": "5", "grpc-message": "%C3%BC 100%25%0A"}


async def test_an_exception_that_is_not_a_grpc_error_is_internal(caplog: pytest.LogCaptureFixture) -> None:
    peer = Peer()
    sid = peer.request(VERSION, grpc_frame(bytes(cri.VersionRequest(version="fail"))))
    headers, _, _ = await peer.answer(sid)
    assert headers["grpc-status"] == str(Status.INTERNAL.value)


@pytest.mark.parametrize("body,status,fragment", [
    (grpc_frame(b"", compressed=True), Status.UNIMPLEMENTED, "compressed requests are not supported"),
    (grpc_frame(b"", length=2 << 20), Status.RESOURCE_EXHAUSTED, "larger than the limit of 1048576"),
    (grpc_frame(b"\x0a", length=5), Status.INVALID_ARGUMENT, "the request ended before its 5 bytes"),
    (b"\x00\x00", Status.INVALID_ARGUMENT, "inside a message header"),
    (b"", Status.INVALID_ARGUMENT, "the request has no message"),
    (grpc_frame(b"\xff\xff"), Status.INVALID_ARGUMENT, "could not be decoded as VersionRequest"),
])
async def test_requests_that_are_not_one_message_get_a_clear_status(body: bytes, status: Status, fragment: str) -> None:
    peer = Peer()
    headers, _, _ = await peer.answer(peer.request(VERSION, body))
    assert headers["grpc-status"] == str(status.value) and fragment in headers["grpc-message"]


async def test_the_size_limit_is_checked_before_the_body_arrives() -> None:
    """The client is still sending (no END_STREAM): it gets its status and RST_STREAM(NO_ERROR)."""
    peer = Peer()
    sid = peer.request(VERSION, grpc_frame(b"", length=2 << 20), end=False)
    await asyncio.sleep(0)
    events = peer.events()
    assert any(isinstance(ev, h2.events.StreamReset) and ev.error_code == h2.errors.ErrorCodes.NO_ERROR
               for ev in events), events
    headers = next(dict(ev.headers) for ev in events if isinstance(ev, h2.events.ResponseReceived))
    assert headers["grpc-status"] == str(Status.RESOURCE_EXHAUSTED.value)
    assert sid not in {s.id for s in peer.conn.calls()}


async def test_a_request_in_many_data_frames_and_padding() -> None:
    peer = Peer()
    sid = peer.client.get_next_available_stream_id()
    peer.client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", VERSION),
                                   (":authority", "a"), ("content-type", "application/grpc+proto")])
    body = version_request(7)
    for i in range(len(body)):
        peer.client.send_data(sid, body[i:i + 1], pad_length=3, end_stream=i == len(body) - 1)
        peer.send()
        await asyncio.sleep(0)
    _, data, _ = await peer.answer(sid)
    assert data == reply(7)


def _headers_block(path: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    return hpack.Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                   ("content-type", "application/grpc"), *(extra or [])])


async def test_a_header_block_in_continuation_frames_with_padding_and_priority() -> None:
    peer = Peer()
    block = _headers_block(VERSION, [("x-big", "v" * 40_000)])  # as a header too large for one frame would come
    pieces = [block[:100], block[100:20_000], block[20_000:]]
    first = bytes([4]) + b"\x00\x00\x00\x00\x10" + pieces[0] + b"\x00" * 4  # pad length 4, priority, padding
    wire = (frames.frame(frames.HEADERS, frames.PADDED | frames.PRIORITY_FLAG, 1, first)
            + frames.frame(frames.CONTINUATION, 0, 1, pieces[1][:16384])
            + frames.frame(frames.CONTINUATION, 0, 1, pieces[1][16384:])
            + frames.frame(frames.CONTINUATION, frames.END_HEADERS, 1, pieces[2])
            + frames.frame(frames.DATA, frames.END_STREAM, 1, version_request(2)))
    peer.send(wire)
    await asyncio.sleep(0)
    data = peer.transport.writes
    assert len(data) == 1 and reply(2) in data[0] and frames.TRAILERS_OK in data[0]


async def test_rst_stream_cancels_the_call() -> None:
    peer = Peer()
    sid = peer.request(STATUS, grpc_frame(b""))
    await asyncio.sleep(0.01)
    assert peer.conn.calls()
    peer.client.reset_stream(sid)
    peer.send()
    await asyncio.wait_for(peer.service.cancelled.wait(), 1)
    await asyncio.sleep(0)
    assert not peer.conn.calls() and not peer.transport.writes  # nothing answers a reset stream
    assert not peer.server._running()


async def test_grpc_timeout_cancels_the_call_with_deadline_exceeded() -> None:
    peer = Peer()
    sid = peer.request(STATUS, grpc_frame(b""), extra=[("grpc-timeout", "20m")])
    headers, _, _ = await asyncio.wait_for(_answer_in_time(peer, sid), 2)
    assert headers["grpc-status"] == str(Status.DEADLINE_EXCEEDED.value)
    assert peer.service.cancelled.is_set()


async def _answer_in_time(peer: Peer, sid: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
    while not peer.transport.writes:
        await asyncio.sleep(0.005)
    return await peer.answer(sid)


async def test_a_lost_connection_cancels_its_calls() -> None:
    peer = Peer()
    peer.request(STATUS, grpc_frame(b""))
    await asyncio.sleep(0.01)
    peer.conn.connection_lost(None)
    await asyncio.wait_for(peer.service.cancelled.wait(), 1)


async def test_ping_is_acknowledged_with_its_payload() -> None:
    peer = Peer()
    peer.client.ping(b"12345678")
    peer.send()
    assert [ev.ping_data for ev in peer.events() if isinstance(ev, h2.events.PingAckReceived)] == [b"12345678"]


async def test_unknown_frame_types_are_ignored() -> None:
    peer = Peer()
    peer.send(frames.frame(0x42, 0, 0, b"whatever"))
    sid = peer.request(VERSION, version_request(1))
    assert (await peer.answer(sid))[2] == {"grpc-status": "0"}


async def test_wrong_method_and_content_type_are_refused_as_http_says() -> None:
    peer = Peer()
    sid = peer.client.get_next_available_stream_id()
    peer.client.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", VERSION), (":authority", "a")],
                             end_stream=True)
    peer.send()
    assert (await peer.answer(sid))[0][":status"] == "405"
    peer2 = Peer()
    sid = peer2.client.get_next_available_stream_id()
    peer2.client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", VERSION), (":authority", "a"),
                                    ("content-type", "application/json")], end_stream=True)
    peer2.send()
    assert (await peer2.answer(sid))[0][":status"] == "415"


def _goaway(peer: Peer) -> frames.ErrorCode:
    """The GOAWAY's error code the server closed with."""
    assert peer.transport.closed
    terminated = [ev for ev in peer.client.receive_data(b"".join(peer.transport.writes))
                  if isinstance(ev, h2.events.ConnectionTerminated)]
    assert len(terminated) == 1
    return frames.ErrorCode(terminated[0].error_code)


@pytest.mark.parametrize("wire,code", [
    (frames.frame(frames.DATA, 0, 0, b"x"), frames.ErrorCode.PROTOCOL_ERROR),
    (frames.frame(frames.DATA, 0, 99, b"x"), frames.ErrorCode.PROTOCOL_ERROR),  # an idle stream
    (frames.frame(frames.HEADERS, frames.END_HEADERS, 2, _headers_block(VERSION)), frames.ErrorCode.PROTOCOL_ERROR),
    (frames.frame(frames.HEADERS, frames.END_HEADERS, 1, b"\xff\xff\xff\xff"), frames.ErrorCode.COMPRESSION_ERROR),
    (frames.frame(frames.HEADERS, 0, 1, _headers_block(VERSION)) + frames.frame(frames.PING, 0, 0, b"\0" * 8),
     frames.ErrorCode.PROTOCOL_ERROR),  # CONTINUATION expected
    (frames.frame(frames.PING, 0, 0, b"\0" * 7), frames.ErrorCode.FRAME_SIZE_ERROR),
    (frames.frame(frames.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), frames.ErrorCode.PROTOCOL_ERROR),
    (frames.frame(frames.WINDOW_UPDATE, 0, 0, b"\x7f\xff\xff\xff"), frames.ErrorCode.FLOW_CONTROL_ERROR),
    (frames.settings({frames.MAX_FRAME_SIZE: 100}), frames.ErrorCode.PROTOCOL_ERROR),
    (frames.frame(frames.SETTINGS, 0, 0, b"\0" * 5), frames.ErrorCode.FRAME_SIZE_ERROR),
    (frames.frame(frames.PUSH_PROMISE, frames.END_HEADERS, 1, b"\0\0\0\2"), frames.ErrorCode.PROTOCOL_ERROR),
    (frames.frame(frames.DATA, 0, 1, b"x" * 20_000), frames.ErrorCode.FRAME_SIZE_ERROR),
], ids=["data on 0", "data on idle", "even stream", "bad hpack", "no continuation", "short ping", "window of 0",
        "window overflow", "tiny frame size", "settings of 5 bytes", "push promise", "frame too large"])
async def test_protocol_errors_close_with_goaway_and_a_code(wire: bytes, code: frames.ErrorCode,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    peer = Peer()
    peer.transport.writes.clear()
    peer.send(wire)
    assert _goaway(peer) == code
    assert "Traceback" not in caplog.text


async def test_a_client_that_is_not_http2_is_closed() -> None:
    server = CriServer([Service()])
    transport = Transport()
    conn = Connection(server)
    conn.connection_made(transport)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.closed


async def test_a_request_window_is_given_back_as_it_arrives() -> None:
    """A request larger than the stream window still arrives whole: the
    server's WINDOW_UPDATEs keep the client sending."""
    peer = Peer(max_size=16 << 20)
    sid = peer.client.get_next_available_stream_id()
    peer.client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", VERSION), (":authority", "a"),
                                   ("content-type", "application/grpc")])
    filler = STREAM_WINDOW + 100_000  # an unknown field (18) the decoder skips
    payload = grpc_frame(bytes(cri.VersionRequest(version="1")) + b"\x92\x01" + _varint(filler) + b"z" * filler)
    pos = 0
    for _ in range(1000):
        window = min(peer.client.local_flow_control_window(sid), 16384)
        if window and pos < len(payload):
            chunk = payload[pos:pos + window]
            pos += len(chunk)
            peer.client.send_data(sid, chunk, end_stream=pos == len(payload))
            peer.send()
        else:
            peer.events()
            await asyncio.sleep(0)
            if pos == len(payload):
                break
    assert pos == len(payload)
    _, data, _ = await peer.answer(sid)
    assert data == reply(1)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


async def test_frames_on_a_finished_call_are_dropped_and_the_connection_lives() -> None:
    """Section 5.1: a client may still send on a stream the server closed."""
    peer = Peer()
    sid = peer.request(VERSION, version_request(1))
    await peer.answer(sid)
    peer.send(frames.frame(frames.HEADERS, frames.END_HEADERS | frames.END_STREAM, sid, b"\x83")  # :method POST
              + frames.frame(frames.DATA, 0, sid, b"late") + frames.frame(frames.WINDOW_UPDATE, 0, sid, b"\0\0\0\1")
              + frames.frame(frames.RST_STREAM, 0, sid, b"\0\0\0\0"))
    assert not peer.transport.closed
    assert (await peer.answer(peer.request(VERSION, version_request(2))))[1] == reply(2)

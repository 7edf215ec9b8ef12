"""Answers on the wire (podrt/rpc over a fake transport, h2's client reading):
a unary answer is one socket write of headers, message and trailers; a large
one is one write of every DATA frame the flow-control window allows (a
1000-pod list is ~200 KB: 13 frames, one wakeup of the client), and a spent
window waits for the client's WINDOW_UPDATE; a stream's messages go out as
they are sent; a stream the client reset gets nothing."""

from __future__ import annotations

import asyncio

import h2.events
import h2.settings

from tests.support.h2raw import grpc_frame
from tests.support.rpcpeer import STATUS, STREAM, VERSION, Peer, reply, version_request


async def test_a_unary_answer_is_one_write_of_headers_data_and_trailers() -> None:
    peer = Peer()
    sid = peer.request(VERSION, version_request(3))
    await asyncio.sleep(0)
    assert len(peer.transport.writes) == 1
    headers, data, trailers = await peer.answer(sid)
    assert headers == {":status": "200", "content-type": "application/grpc"}
    assert data == reply(3) and trailers == {"grpc-status": "0"}
    assert not peer.conn.calls()


async def test_a_large_answer_is_one_write_of_every_frame_the_window_allows() -> None:
    """200 KiB (a 1000-pod list) in a 4 MiB window: one write of 13 frames of 16 KiB."""
    peer = Peer()
    peer.request(VERSION, version_request(200_000))
    await asyncio.sleep(0)
    assert len(peer.transport.writes) == 1
    frames_in = [ev for ev in peer.client.receive_data(peer.transport.writes[0]) if isinstance(ev, h2.events.DataReceived)]
    assert len(frames_in) == 13 and b"".join(ev.data for ev in frames_in) == reply(200_000)  # type: ignore[misc]


async def test_a_spent_window_waits_for_the_clients_window_update() -> None:
    """With the default 64 KiB window, 100 KB go out as one write of 64 KiB,
    then the rest (and the trailers) once the client's WINDOW_UPDATE came."""
    peer = Peer(65535)
    sid = peer.request(VERSION, version_request(100_000))
    await asyncio.sleep(0)
    assert len(peer.transport.writes) == 1
    first = [ev for ev in peer.client.receive_data(peer.transport.writes.pop()) if isinstance(ev, h2.events.DataReceived)]
    assert sum(len(ev.data or b"") for ev in first) == 65535
    await asyncio.sleep(0.01)
    assert not peer.transport.writes and peer.conn.calls()  # waits
    for ev in first:
        peer.client.acknowledge_received_data(ev.flow_controlled_length, sid)
    peer.send()
    _, rest, trailers = await peer.answer(sid)
    assert b"".join(ev.data or b"" for ev in first) + rest == reply(100_000) and trailers["grpc-status"] == "0"


async def test_a_client_that_opens_its_window_slowly_gets_the_whole_answer() -> None:
    """A stream window of 100 bytes, opened 100 bytes at a time: the answer
    crosses hundreds of windows, each frame within one, in order."""
    peer = Peer(100)
    sid = peer.request(VERSION, version_request(30_000))
    _, data, trailers = await peer.answer(sid)
    assert data == reply(30_000) and trailers == {"grpc-status": "0"}


async def test_a_smaller_initial_window_from_settings_holds_a_waiting_answer() -> None:
    peer = Peer(65535)
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    peer.send()
    sid = peer.request(VERSION, version_request(1000))
    await asyncio.sleep(0)
    data = b"".join(ev.data or b"" for ev in peer.events() if isinstance(ev, h2.events.DataReceived))
    assert len(data) == 10
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})  # section 6.9.2
    peer.send()
    _, rest, _ = await peer.answer(sid)
    assert data + rest == reply(1000)


async def test_a_streams_messages_go_out_as_sent_headers_once_trailers_last() -> None:
    peer = Peer()
    sid = peer.request(STREAM, grpc_frame(b""))
    headers, data, trailers = await peer.answer(sid)
    assert headers == {":status": "200", "content-type": "application/grpc"} and trailers == {"grpc-status": "0"}
    assert data.count(b"\x00\x00\x00\x00\x05\x0a\x03\x0a\x01") == 3  # three messages of one pod each


async def test_an_empty_answer_is_one_data_frame_of_its_prefix() -> None:
    peer = Peer()
    sid = peer.request(VERSION, grpc_frame(b"\x0a\x010"))  # version "0": an empty VersionResponse
    assert (await peer.answer(sid))[1] == b"\x00\x00\x00\x00\x00"


async def test_a_stream_the_client_reset_gets_no_answer() -> None:
    peer = Peer()
    sid = peer.request(STATUS, grpc_frame(b""))
    await asyncio.sleep(0.01)
    peer.client.reset_stream(sid)
    peer.send()
    await asyncio.sleep(0.01)
    assert not peer.transport.writes and not peer.conn.calls()

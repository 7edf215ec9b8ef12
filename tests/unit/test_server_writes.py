"""A reply's DATA frames go out in one socket write per flow-control window
(server._send_data), the same frames h2 would send one write at a time, and
a window that runs out still waits for the peer's WINDOW_UPDATE."""

from __future__ import annotations

import asyncio
import types

import h2.config
import h2.connection
import h2.events
import h2.settings

from podrt.server import _send_data


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def _pair(window: int) -> tuple[h2.connection.H2Connection, h2.connection.H2Connection, int]:
    """(server, client, stream id): a request received, the client's window `window`."""
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
    server.send_headers(sid, [(":status", "200")])
    client.receive_data(server.data_to_send())
    return server, client, sid


def _stream(server: h2.connection.H2Connection, sid: int) -> types.SimpleNamespace:
    """What _send_data uses of grpclib's protocol.Stream."""
    ready = asyncio.Event()
    ready.set()
    conn = types.SimpleNamespace(write_ready=ready, data_sent=0, data_send_process=lambda: None)
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

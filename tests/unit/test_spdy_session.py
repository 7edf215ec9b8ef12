"""Two SPDY sessions (a client and a server) talking in memory: streams
opened, replied, carried both ways and closed; pings; resets; peers that
break the rules get a RST_STREAM, and the connection goes on."""

from __future__ import annotations

from podrt.streaming import spdy
from podrt.streaming.session import (
    DATA_CHUNK,
    DataReceived,
    Pong,
    Replied,
    Session,
    SessionEnded,
    StreamOpened,
    StreamReset,
)


def _pair() -> tuple[Session, Session]:
    return Session(client=True), Session(client=False)


def _pass(a: Session, b: Session) -> list[object]:
    return b.receive(a.data_to_send())


def test_a_stream_both_ways_then_closed() -> None:
    client, server = _pair()
    sid = client.open((("streamtype", "stdout"),))
    assert sid == 1
    (opened,) = _pass(client, server)
    assert opened == StreamOpened(1, (("streamtype", "stdout"),), False)
    server.reply(1)
    big = bytes(range(256)) * 1000  # several DATA frames
    server.send(1, big, fin=True)
    events = _pass(server, client)
    assert events[0] == Replied(1, ())
    data = [e for e in events if isinstance(e, DataReceived)]
    assert b"".join(e.data for e in data) == big and len(data) == -(-len(big) // DATA_CHUNK)
    assert [e.fin for e in data][-1] and not any(e.fin for e in data[:-1])
    client.send(1, b"", fin=True)
    assert _pass(client, server) == [DataReceived(1, b"", True)]
    assert len(server) == 0 and len(client) == 0  # closed both ways: forgotten


def test_unidirectional_streams_from_the_client() -> None:
    client, server = _pair()
    client.open((("streamtype", "error"),), fin=True)
    assert _pass(client, server) == [StreamOpened(1, (("streamtype", "error"),), True)]
    server.send(1, b"status", fin=True)
    assert _pass(server, client) == [DataReceived(1, b"status", True)]


def test_pings_are_echoed_and_answers_reported() -> None:
    client, server = _pair()
    ping_id = client.ping()
    assert _pass(client, server) == []  # the server echoes it
    assert _pass(server, client) == [Pong(ping_id)]


def test_data_on_an_unknown_or_closed_stream_is_refused() -> None:
    client, server = _pair()
    raw = spdy.Codec()
    server.receive(raw.encode(spdy.Data(9, b"x")))
    assert spdy.Codec().receive(server.data_to_send()) == [spdy.RstStream(9, spdy.RstStatus.INVALID_STREAM)]
    client.open((), fin=True)
    _pass(client, server)
    server.receive(client._codec.encode(spdy.Data(1, b"late")))  # after its FIN
    assert [f.status for f in spdy.Codec().receive(server.data_to_send())] == [spdy.RstStatus.STREAM_ALREADY_CLOSED]


def test_a_reused_or_server_numbered_stream_is_refused() -> None:
    client, server = _pair()
    codec = spdy.Codec()
    events = server.receive(codec.encode(spdy.SynStream(1, ())) + codec.encode(spdy.SynStream(1, ()))
                            + codec.encode(spdy.SynStream(2, ())))
    assert [e.stream_id for e in events] == [1]
    statuses = [f.status for f in spdy.Codec().receive(server.data_to_send())]
    assert statuses == [spdy.RstStatus.STREAM_IN_USE, spdy.RstStatus.PROTOCOL_ERROR]


def test_resets_and_goaway() -> None:
    client, server = _pair()
    client.open(())
    _pass(client, server)
    server.reset(1)
    assert _pass(server, client) == [StreamReset(1, spdy.RstStatus.CANCEL)]
    server.goaway()
    assert _pass(server, client) == [SessionEnded(0, 0)] and client.ended


def test_settings_and_window_updates_are_ignored() -> None:
    """spdystream honours neither; see the module's note."""
    _, server = _pair()
    codec = spdy.Codec()
    assert server.receive(codec.encode(spdy.Settings(((0, 7, 1),))) + codec.encode(spdy.WindowUpdate(1, 5))) == []
    assert server.data_to_send() == b""

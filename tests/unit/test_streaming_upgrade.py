"""The request that opens a streaming session: SPDY and WebSocket upgrades
with their sub-protocols, and what is refused, without a network."""

from __future__ import annotations

import wsproto
import wsproto.events

from podrt.streaming.upgrade import Refusal, RequestReader, SpdyUpgrade, WebSocketUpgrade, not_found


def _spdy_request(*versions: str) -> bytes:
    offered = "".join(f"X-Stream-Protocol-Version: {v}\r\n" for v in versions)
    return (f"POST /exec/abc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n{offered}"
            "Content-Length: 0\r\n\r\n").encode()


def test_spdy_upgrade_takes_the_newest_shared_version_in_pieces() -> None:
    reader = RequestReader()
    request = _spdy_request("v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io") + b"\x80\x03\x00\x01"  # a first frame
    outcome = None
    for n in range(len(request)):
        outcome = outcome or reader.feed(request[n:n + 1])
    assert isinstance(outcome, SpdyUpgrade)
    assert (outcome.path, outcome.protocol) == ("/exec/abc", "v4.channel.k8s.io")
    head = outcome.response.decode()
    assert head.startswith("HTTP/1.1 101 ") and "Upgrade: SPDY/3.1" in head and "X-Stream-Protocol-Version: v4.channel.k8s.io" in head


def test_spdy_port_forward_and_refusals() -> None:
    out = RequestReader(port_forward=True).feed(_spdy_request("portforward.k8s.io"))
    assert isinstance(out, SpdyUpgrade) and out.protocol == "portforward.k8s.io"
    refused = RequestReader().feed(_spdy_request("v9.channel.k8s.io"))
    assert isinstance(refused, Refusal) and refused.status == 403 and b"v4.channel.k8s.io" in refused.response
    legacy = RequestReader().feed(_spdy_request())
    assert isinstance(legacy, SpdyUpgrade) and legacy.protocol == ""  # the unversioned protocol
    plain = RequestReader().feed(b"GET /exec/abc HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(plain, Refusal) and plain.status == 400
    garbage = RequestReader().feed(b"\x16\x03\x01 not http\r\n\r\n")
    assert isinstance(garbage, Refusal) and garbage.status == 400
    assert not_found().response.startswith(b"HTTP/1.1 404 ")


def test_websocket_upgrade_with_a_channel_protocol() -> None:
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = client.send(wsproto.events.Request(host="127.0.0.1", target="/exec/abc",
                                                 subprotocols=["v4.channel.k8s.io", "v5.channel.k8s.io"]))
    out = RequestReader().feed(request)
    assert isinstance(out, WebSocketUpgrade) and out.protocol.name == "v5.channel.k8s.io" and out.path == "/exec/abc"
    client.receive_data(out.response)
    accepted = [e for e in client.events() if isinstance(e, wsproto.events.AcceptConnection)]
    assert accepted and accepted[0].subprotocol == "v5.channel.k8s.io"
    client.receive_data(out.connection.send(wsproto.events.BytesMessage(data=b"\x01hi")))  # the session goes on
    assert [e.data for e in client.events() if isinstance(e, wsproto.events.BytesMessage)] == [bytearray(b"\x01hi")]


def test_websocket_without_a_shared_protocol_is_refused() -> None:
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    out = RequestReader().feed(client.send(wsproto.events.Request(host="x", target="/exec/abc", subprotocols=["mqtt"])))
    assert isinstance(out, Refusal) and out.status == 403


def test_websocket_handshake_headers_wsproto_cannot_decode_are_a_400() -> None:
    """wsproto decodes headers as ASCII and Host as IDNA: UnicodeError there was a session traceback and no answer."""
    base = (b"GET /exec/abc HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n")
    for headers in (b"Host: xn--zz-\r\nConnection: Upgrade\r\n", b"Host: x\r\nConnection: Upgrade, \xff\r\n",
                    b"Host: x\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: v4.channel.k8s.io, \xe9\r\n"):
        out = RequestReader().feed(base + headers + b"\r\n")
        assert isinstance(out, Refusal) and out.status == 400, (headers, out)

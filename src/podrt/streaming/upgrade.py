"""The HTTP/1.1 request that opens a streaming session, sans-IO: h11 reads
it, and it is either upgraded (SPDY/3.1 or WebSocket, with the sub-protocol
both sides speak) or refused with a status, as the kubelet's streaming
server answers.

SPDY: the client offers `X-Stream-Protocol-Version` headers (one per
version) with `Upgrade: SPDY/3.1`; the 101 names the chosen one. A client
that offers none gets the unversioned protocol; one that offers only
unknown ones gets 403. WebSocket: wsproto does the handshake; the
sub-protocols are `Sec-WebSocket-Protocol`'s.
"""

from __future__ import annotations

import attrs
import h11
import wsproto
import wsproto.events
from wsproto.utilities import RemoteProtocolError

from podrt.streaming import channels

MAX_REQUEST = 16 * 1024  # bytes of request line and headers
SPDY = "SPDY/3.1"
SPDY_EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
SPDY_PORT_FORWARD_PROTOCOLS = ("portforward.k8s.io",)


@attrs.frozen
class SpdyUpgrade:
    path: str
    protocol: str
    response: bytes  # the 101, to send before the first SPDY frame
    rest: bytes  # what the client sent after its request (its first frames)


@attrs.frozen
class WebSocketUpgrade:
    path: str
    protocol: channels.Protocol
    connection: wsproto.WSConnection  # open; feed it what comes next
    response: bytes


@attrs.frozen
class Refusal:
    status: int
    response: bytes


Outcome = SpdyUpgrade | WebSocketUpgrade | Refusal


class RequestReader:
    """Feed bytes until `outcome()` is not None."""

    def __init__(self, *, port_forward: bool | None = None) -> None:
        """port_forward: which protocols to offer; None decides by the path (/portforward/...)."""
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        self._raw = bytearray()
        self._port_forward = port_forward

    def feed(self, data: bytes) -> Outcome | None:
        self._raw += data
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            return self._refuse(exc.error_status_hint, f"bad request: {exc}")
        if event is h11.NEED_DATA:
            return None
        if not isinstance(event, h11.Request):
            return self._refuse(400, "expected an HTTP request")
        headers = [(k.decode().lower(), v.decode("latin-1")) for k, v in event.headers]
        upgrade = ",".join(v for k, v in headers if k == "upgrade").strip().lower()
        path = event.target.decode("latin-1")
        port_forward = self._port_forward if self._port_forward is not None else path.startswith("/portforward/")
        if upgrade == SPDY.lower():
            return self._spdy(path, headers, port_forward)
        if upgrade == "websocket":
            return self._websocket(path, port_forward)
        return self._refuse(400, "this URL upgrades to SPDY/3.1 or WebSocket only")

    def _spdy(self, path: str, headers: list[tuple[str, str]], port_forward: bool) -> Outcome:
        offered = [p.strip() for k, v in headers if k == "x-stream-protocol-version" for p in v.split(",") if p.strip()]
        supported = SPDY_PORT_FORWARD_PROTOCOLS if port_forward else SPDY_EXEC_PROTOCOLS
        chosen = next((p for p in supported if p in offered), None)
        if offered and chosen is None:
            return self._refuse(403, f"unable to negotiate a protocol: the client speaks {', '.join(offered)}; "
                                     f"podrt speaks {', '.join(supported)}")
        reply = [("Connection", "Upgrade"), ("Upgrade", SPDY)]
        if chosen:
            reply.append(("X-Stream-Protocol-Version", chosen))
        response = self._h11.send(h11.InformationalResponse(status_code=101, headers=reply)) or b""
        rest, _closed = self._h11.trailing_data
        return SpdyUpgrade(path, chosen or "", response, bytes(rest))

    def _websocket(self, path: str, port_forward: bool) -> Outcome:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        try:
            ws.receive_data(bytes(self._raw))
            request = next((e for e in ws.events() if isinstance(e, wsproto.events.Request)), None)
        except (RemoteProtocolError, ValueError) as exc:  # no Sec-WebSocket-Key, not a GET, a header not ASCII or a bad IDNA Host
            return self._refuse(400, f"bad WebSocket handshake: {exc}")
        if request is None:
            return self._refuse(400, "not a WebSocket handshake")
        supported = channels.PORT_FORWARD_PROTOCOLS if port_forward else channels.EXEC_PROTOCOLS
        protocol = channels.choose(list(request.subprotocols), supported)
        if protocol is None:
            response = ws.send(wsproto.events.RejectConnection(status_code=403))
            return Refusal(403, response)
        response = ws.send(wsproto.events.AcceptConnection(subprotocol=protocol.name))
        return WebSocketUpgrade(path, protocol, ws, response)

    def _refuse(self, status: int, reason: str) -> Refusal:
        body = (reason + "\n").encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        return Refusal(status, head + body)


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def refusal(status: int, reason: str) -> Refusal:
    return RequestReader()._refuse(status, reason)


def not_found() -> Refusal:
    """An unknown, used or expired token."""
    return refusal(404, "no such streaming request (unknown, used, or expired token)")

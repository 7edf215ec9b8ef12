"""A bare HTTP/2 gRPC call, to see the exact headers a Go client would see."""

from __future__ import annotations

import socket
from pathlib import Path

import h2.config
import h2.connection
import h2.events


def grpc_frame(payload: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    """A gRPC length-prefixed message; `length` may lie about the payload."""
    return bytes([compressed]) + (len(payload) if length is None else length).to_bytes(4, "big") + payload


def raw_unary(socket_path: Path, rpc_path: str, payload: bytes = b"", *, body: bytes | None = None) -> dict[str, str]:
    """POST one gRPC frame (or `body` as it is) to rpc_path; return all response headers and trailers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(socket_path))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", rpc_path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    conn.send_data(stream_id, grpc_frame(payload) if body is None else body, end_stream=True)
    sock.sendall(conn.data_to_send())
    headers: dict[str, str] = {}
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers.update(dict(event.headers))
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return headers
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return headers

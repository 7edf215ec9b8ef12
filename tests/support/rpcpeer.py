"""podrt/rpc's Connection with h2's client on the other side of a fake
transport (h2: a strict, independent implementation of RFC 9113, so what it
accepts a Go client accepts too), for the unit tests of tests/unit/test_rpc_*.py
and test_server_writes.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from podrt.api.runtime import v1 as cri
from podrt.rpc.connection import Connection
from podrt.server import CriServer
from tests.support.h2raw import grpc_frame

VERSION = "/runtime.v1.RuntimeService/Version"
STATUS = "/runtime.v1.RuntimeService/Status"
STREAM = "/runtime.v1.RuntimeService/StreamPodSandboxes"


class Service(cri.RuntimeServiceBase):
    """Version answers `version` bytes of "x" as its version (any answer size);
    StreamPodSandboxes sends 3 messages; Status runs until cancelled."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def version(self, version_request: cri.VersionRequest) -> cri.VersionResponse:
        if version_request.version == "fail":
            raise ValueError("a bug")
        return cri.VersionResponse(version="x" * int(version_request.version or "1"))

    async def stream_pod_sandboxes(self, stream_pod_sandboxes_request: cri.StreamPodSandboxesRequest
                                   ) -> AsyncIterator[cri.StreamPodSandboxesResponse]:
        for i in range(3):
            yield cri.StreamPodSandboxesResponse(pod_sandboxes=[cri.PodSandbox(id=str(i))])

    async def status(self, status_request: cri.StatusRequest) -> cri.StatusResponse:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("not reached")


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Peer:
    """h2's client on one side, podrt's Connection on the other."""

    def __init__(self, window: int = 4 << 20, *, max_size: int = 1 << 20) -> None:
        self.service = Service()
        self.server = CriServer([self.service], max_msg_size=max_size)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.client.initiate_connection()
        self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        if window > 65535:
            self.client.increment_flow_control_window(window - 65535)
        self.transport = Transport()
        self.conn = Connection(self.server)
        self.conn.connection_made(self.transport)
        self.events()  # settings both ways

    def send(self, data: bytes | None = None) -> None:
        """What the client has to send (or `data`), to the server."""
        data = self.client.data_to_send() if data is None else data
        if data:
            self.conn.data_received(data)

    def events(self) -> list[Any]:
        """What the server wrote, read by the client (whose answers go back)."""
        found = []
        while self.transport.writes:
            writes, self.transport.writes[:] = list(self.transport.writes), []
            for w in writes:
                found += self.client.receive_data(w)
            self.send()
        return found

    def request(self, path: str, body: bytes, *, end: bool = True, extra: list[tuple[str, str]] | None = None) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                       (":authority", "localhost"), ("content-type", "application/grpc"),
                                       ("te", "trailers"), *(extra or [])])
        self.client.send_data(sid, body, end_stream=end)
        self.send()
        return sid

    async def answer(self, sid: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """(headers, data, trailers) of stream `sid`, once it ended."""
        headers: dict[str, str] = {}
        trailers: dict[str, str] = {}
        data = b""
        for _ in range(1000):
            await asyncio.sleep(0)
            for ev in self.events():
                if getattr(ev, "stream_id", sid) != sid:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = dict(ev.headers)  # type: ignore[arg-type]
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)  # type: ignore[arg-type]
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data or b""
                    self.client.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    return headers, data, trailers
            self.send()  # the WINDOW_UPDATEs
        raise AssertionError("the stream did not end")


def version_request(size: int) -> bytes:
    return grpc_frame(bytes(cri.VersionRequest(version=str(size))))


def reply(size: int) -> bytes:
    body = bytes(cri.VersionResponse(version="x" * size))
    return grpc_frame(body)

"""The daemon's own HTTP/2 (podrt/rpc) on its real socket, seen by h2's
client: header blocks in CONTINUATION frames, an answer across many
flow-control windows of a client that opens its window slowly, RST_STREAM
cancelling a running call (the metrics count it CANCELLED), grpc-timeout
ending a call with DEADLINE_EXCEEDED, PING, a client's GOAWAY, and a
protocol error answered with GOAWAY while the daemon serves on."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest
from grpclib.const import Status

from podrt.api.runtime import v1 as cri
from tests.integration.test_daemon_lifecycle import _free_port
from tests.support.client import connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.h2raw import grpc_frame

pytestmark = pytest.mark.root

VERSION = "/runtime.v1.RuntimeService/Version"
STATUS = "/runtime.v1.RuntimeService/Status"
EVENTS = "/runtime.v1.RuntimeService/GetContainerEvents"


@pytest.fixture(scope="module")
def metrics_daemon() -> Iterator[tuple[DaemonProcess, int]]:
    """A daemon with its metrics endpoint (the hooks' count of each call's code)."""
    base = Path(tempfile.mkdtemp(prefix="podrt-test-"))
    d = DaemonDirs(base)
    port = _free_port()
    d.write_config({"metrics": {"enable_metrics": True, "metrics_port": port}})
    proc = DaemonProcess(d).start()
    yield proc, port
    proc.kill()
    shutil.rmtree(base, ignore_errors=True)


class _Client:
    """h2's client on the daemon's socket, one event at a time."""

    def __init__(self, path: Path, window: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        if window is not None:
            self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()

    def flush(self) -> None:
        if data := self.h2.data_to_send():
            self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def request(self, path: str, body: bytes, extra: list[tuple[str, str]] | None = None) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                                   ("content-type", "application/grpc"), ("te", "trailers"), *(extra or [])])
        self.h2.send_data(sid, body, end_stream=True)
        self.flush()
        return sid

    def events(self) -> list[Any]:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        found = self.h2.receive_data(data)
        self.flush()
        return found

    def until(self, kind: type, sid: int | None = None) -> Any:
        while True:
            for ev in self.events():
                if isinstance(ev, kind) and (sid is None or getattr(ev, "stream_id", None) == sid):
                    return ev

    def answer(self, sid: int, *, ack_each: int | None = None) -> tuple[dict[str, str], bytes, dict[str, str], int]:
        """(headers or Trailers-Only, data, trailers, DATA frames); `ack_each`:
        the window given back, that many bytes per frame received."""
        headers: dict[str, str] = {}
        trailers: dict[str, str] = {}
        data, count = b"", 0
        while True:
            for ev in self.events():
                if getattr(ev, "stream_id", sid) != sid:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = dict(ev.headers)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data or b""
                    count += 1
                    if ack_each is None:
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                    else:  # the slow client: a little window back, per frame, straight to the socket
                        self.h2.increment_flow_control_window(ack_each)
                        with contextlib.suppress(h2.exceptions.StreamClosedError):  # the last frame's
                            self.h2.increment_flow_control_window(ack_each, stream_id=sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    return headers, data, trailers, count
            self.flush()


def _metric(port: int, line: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def test_a_header_block_in_continuation_frames(shared_daemon: DaemonProcess) -> None:
    """A 40 KB metadata value: h2 sends the block as HEADERS and CONTINUATION frames."""
    client = _Client(shared_daemon.dirs.socket)
    try:
        sid = client.request(VERSION, grpc_frame(bytes(cri.VersionRequest())), [("x-big", "v" * 40_000)])
        headers, data, trailers, _ = client.answer(sid)
    finally:
        client.close()
    assert trailers == {"grpc-status": "0"}
    assert cri.VersionResponse().parse(data[5:]).runtime_name == "podrt"


def test_an_answer_across_many_windows_of_a_slow_client(shared_daemon: DaemonProcess) -> None:
    """The client's stream window is 64 bytes and it gives back 64 bytes per
    DATA frame: the verbose Status (kilobytes) comes in frames of at most 64
    bytes, whole and in order (h2 would fail on a frame beyond the window)."""
    whole = _Client(shared_daemon.dirs.socket)
    slow = _Client(shared_daemon.dirs.socket, window=64)
    try:
        _, expected, _, _ = whole.answer(whole.request(STATUS, grpc_frame(bytes(cri.StatusRequest(verbose=True)))))
        sid = slow.request(STATUS, grpc_frame(bytes(cri.StatusRequest(verbose=True))))
        _, data, trailers, frames = slow.answer(sid, ack_each=64)
    finally:
        whole.close()
        slow.close()
    assert len(expected) > 2000
    assert trailers == {"grpc-status": "0"}
    assert cri.StatusResponse().parse(data[5:]).info.keys() == cri.StatusResponse().parse(expected[5:]).info.keys()
    assert frames >= len(data) // 64


def test_rst_stream_cancels_a_running_call(metrics_daemon: tuple[DaemonProcess, int]) -> None:
    daemon, port = metrics_daemon
    cancelled = 'podrt_operations_errors_total{code="CANCELLED",operation="GetContainerEvents"}'
    before = _metric(port, cancelled)
    client = _Client(daemon.dirs.socket)
    try:
        sid = client.request(EVENTS, grpc_frame(b""))
        client.until(h2.events.ResponseReceived, sid)  # subscribed: the call runs
        client.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        client.flush()
        sid = client.request(VERSION, grpc_frame(b""))  # the connection lives on
        assert client.answer(sid)[2] == {"grpc-status": "0"}
    finally:
        client.close()
    assert _metric(port, cancelled) == before + 1


def test_grpc_timeout_ends_a_call_with_deadline_exceeded(shared_daemon: DaemonProcess) -> None:
    client = _Client(shared_daemon.dirs.socket)
    try:
        sid = client.request(EVENTS, grpc_frame(b""), [("grpc-timeout", "300m")])
        headers, _, trailers, _ = client.answer(sid)
    finally:
        client.close()
    assert headers[":status"] == "200" and trailers["grpc-status"] == str(Status.DEADLINE_EXCEEDED.value)


def test_ping_is_acknowledged(shared_daemon: DaemonProcess) -> None:
    client = _Client(shared_daemon.dirs.socket)
    try:
        client.h2.ping(b"podrt-h2")
        client.flush()
        assert client.until(h2.events.PingAckReceived).ping_data == b"podrt-h2"
    finally:
        client.close()


def test_a_clients_goaway_lets_its_running_call_answer(shared_daemon: DaemonProcess) -> None:
    client = _Client(shared_daemon.dirs.socket)
    try:
        sid = client.request(VERSION, grpc_frame(b""))
        client.sock.sendall(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(8))  # GOAWAY, NO_ERROR (h2 would stop reading)
        assert client.answer(sid)[2] == {"grpc-status": "0"}
    finally:
        client.close()


async def test_a_protocol_error_gets_goaway_and_the_daemon_serves_on(shared_daemon: DaemonProcess) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(shared_daemon.dirs.socket))
    before = len(shared_daemon.log())
    try:
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        sock.sendall(client.data_to_send() + b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")  # DATA on stream 0
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    finally:
        sock.close()
    terminated = [ev for ev in client.receive_data(got) if isinstance(ev, h2.events.ConnectionTerminated)]
    assert [ev.error_code for ev in terminated] == [h2.errors.ErrorCodes.PROTOCOL_ERROR]
    assert "Traceback" not in shared_daemon.log()[before:]
    async with connect(shared_daemon.dirs.socket) as c:
        assert (await c.runtime.version(cri.VersionRequest())).runtime_name == "podrt"

"""The host-free parts of the streaming server: the exit status each
remotecommand version reports, resize parsing, port-forward URL ports, and
the Pipe that carries a stream's data with a bound."""

from __future__ import annotations

import asyncio
import json

import pytest

from podrt.oci.execproc import ExecExit
from podrt.streaming import channels, portforward, remotecommand
from podrt.streaming.transport import PIPE_BYTES, Pipe


def test_v4_status_carries_the_exit_code_as_client_go_reads_it() -> None:
    doc = json.loads(remotecommand.status(4, ExecExit(3)))
    assert doc["status"] == "Failure" and doc["reason"] == "NonZeroExitCode"
    assert doc["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert json.loads(remotecommand.status(5, ExecExit(0))) == {"metadata": {}, "status": "Success"}
    failed = json.loads(remotecommand.status(4, ExecExit(255, "exec: \"nope\": not found")))
    assert failed["reason"] == "InternalError" and "nope" in failed["message"] and "causes" in failed["details"]


def test_older_versions_report_only_a_failure_text() -> None:
    assert remotecommand.status(3, ExecExit(0)) == b""
    text = remotecommand.status(2, ExecExit(7)).decode()
    assert text.startswith("command terminated with non-zero exit code") and "7" in text
    assert remotecommand.spdy_version("v4.channel.k8s.io") == 4 and remotecommand.spdy_version("channel.k8s.io") == 1


async def _collect_sizes(chunks: list[bytes]) -> list[tuple[int, int]]:
    pipe = Pipe(_no_send)
    for chunk in chunks:
        await pipe._feed(chunk)
    pipe._end()
    return [size async for size in remotecommand.sizes(pipe)]


async def _no_send(data: bytes, fin: bool) -> None:
    raise AssertionError("nothing is sent")


async def test_resize_messages_split_and_joined_anyhow() -> None:
    stream = b'{"Width":80,"Height":24}{"Width":100,' + b'"Height":40}\n{"Height":1}{"Width":5,"Height":6}'
    assert await _collect_sizes([stream[:7], stream[7:30], stream[30:]]) == [(80, 24), (100, 40), (5, 6)]
    assert await _collect_sizes([b"not json" * 1000]) == []  # unreadable: the resizes end, nothing raised


def test_websocket_port_forward_ports_from_the_url() -> None:
    binary, text = channels.PORT_FORWARD_PROTOCOLS[0], channels.PORT_FORWARD_PROTOCOLS[1]
    assert portforward.url_ports("/portforward/t?port=80&port=8080,9090", binary) == [80, 8080, 9090]
    for bad in ("/portforward/t", "/portforward/t?port=0", "/portforward/t?port=x", "/portforward/t?port=70000"):
        with pytest.raises(portforward.PortError):
            portforward.url_ports(bad, binary)
    six = "/portforward/t?port=" + ",".join(str(p) for p in range(1, 7))
    assert len(portforward.url_ports(six, binary)) == 6
    with pytest.raises(portforward.PortError, match="at most 5"):  # channels 0-9 as one base64 digit
        portforward.url_ports(six, text)


async def test_pipe_bounds_bytes_keeps_order_and_its_end() -> None:
    pipe = Pipe(_no_send)
    chunk = b"x" * (PIPE_BYTES // 4)
    for _ in range(4):
        await pipe._feed(chunk)
    blocked = asyncio.ensure_future(pipe._feed(b"late"))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # over the bound: the connection's reader waits (back-pressure)
    assert await pipe.read() == chunk
    await asyncio.wait_for(blocked, 1)
    pipe._end()  # the client ended: never waits
    assert [await pipe.read() for _ in range(4)] == [chunk, chunk, chunk, b"late"]
    assert await pipe.read() == b"" and await pipe.read() == b""


async def test_a_discarded_pipe_never_holds_up_the_reader() -> None:
    pipe = Pipe(_no_send)
    for _ in range(4):
        await pipe._feed(b"y" * (PIPE_BYTES // 4))
    # the reader would wait here forever if nobody reads; discard frees it and drops what comes
    blocked = asyncio.ensure_future(pipe._feed(b"z"))
    await asyncio.sleep(0.01)
    pipe.discard()
    await asyncio.wait_for(blocked, 1)
    await asyncio.wait_for(pipe._feed(b"after"), 1)
    assert await pipe.read() == b""


async def test_a_reset_is_told_apart_from_an_end() -> None:
    pipe = Pipe(_no_send)
    await pipe._feed(b"a")
    pipe._end(reset=True)
    assert await pipe.read() == b"a" and await pipe.read() == b"" and pipe.reset

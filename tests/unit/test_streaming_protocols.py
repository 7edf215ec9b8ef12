"""The host-free parts of the streaming server: the exit status each
remotecommand version reports, resize parsing, port-forward URL ports, and
the Pipe that carries a stream's data with a bound."""

from __future__ import annotations

import asyncio
import json

import pytest

from podrt.oci.execproc import ExecExit
from podrt.streaming import portforward, remotecommand
from podrt.streaming.transport import PIPE_DEPTH, Pipe


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
    assert portforward.url_ports("/portforward/t?port=80&port=8080,9090") == [80, 8080, 9090]
    for bad in ("/portforward/t", "/portforward/t?port=0", "/portforward/t?port=x", "/portforward/t?port=70000"):
        with pytest.raises(portforward.PortError):
            portforward.url_ports(bad)


async def test_pipe_keeps_order_and_an_end_behind_a_full_queue() -> None:
    pipe = Pipe(_no_send)
    for i in range(PIPE_DEPTH):
        await pipe._feed(bytes([i]))
    blocked = asyncio.ensure_future(pipe._feed(b"late"))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # full: the connection's reader waits (back-pressure)
    got = [await pipe.read() for _ in range(PIPE_DEPTH)]
    await blocked
    pipe._end()  # the client ended: never blocks
    assert got == [bytes([i]) for i in range(PIPE_DEPTH)]
    assert await pipe.read() == b"late" and await pipe.read() == b"" and await pipe.read() == b""


async def test_pipe_end_with_a_full_queue_does_not_block() -> None:
    pipe = Pipe(_no_send)
    for i in range(PIPE_DEPTH):
        await pipe._feed(b"x")
    pipe._end()
    chunks = []
    while chunk := await pipe.read():
        chunks.append(chunk)
    assert len(chunks) == PIPE_DEPTH and await pipe.read() == b""

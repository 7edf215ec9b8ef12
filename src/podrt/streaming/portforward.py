"""Kubernetes' port-forward protocol over either transport, as the kubelet's
streaming server speaks it.

SPDY (portforward.k8s.io): each forwarded connection is a pair of streams
the client opens, `streamType` error and data, with the same `port` and
`requestID` headers (old clients without requestID: the error stream's ID,
the data stream's ID minus 2). Once both are there, a TCP connection to
localhost:<port> is made inside the pod; a failure is written on the error
stream. Half-close goes through: the client's FIN shuts our write side, the
pod's EOF is our FIN. Many pairs run at once on one session.

WebSocket: the ports are in the URL (`?port=80&port=8080` or `?port=80,8080`), channel 2i carries
port i's data and 2i+1 its errors, each opened by the port number (two
bytes, little-endian) from the server; one connection per port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

from podrt.streaming import channels
from podrt.streaming.transport import Pipe, SpdyConnection, WebSocketConnection

log = logging.getLogger(__name__)

PAIR_TIMEOUT = 30.0
Connect = Callable[[int], Awaitable[socket.socket]]


class PortError(ValueError):
    pass


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise PortError(f"invalid port {text!r}") from None
    if not 0 < port < 65536:
        raise PortError(f"port {port} is not between 1 and 65535")
    return port


def url_ports(path: str, protocol: channels.Protocol) -> list[int]:
    """The `port` values of a WebSocket port-forward URL (the kubelet's query
    parameter), as many as the protocol has channel numbers for (two each)."""
    values = parse_qs(urlsplit(path).query).get("port", [])
    ports = [port_number(p.strip()) for v in values for p in v.split(",") if p.strip()]
    if not ports:
        raise PortError("a WebSocket port forward names its ports in the URL: ?port=80&port=8080")
    most = 5 if protocol.base64 else 127  # channels 0-9 as one digit; 0-254 as a byte
    if len(ports) > most:
        raise PortError(f"{protocol.name} forwards at most {most} ports in one session, not {len(ports)}")
    return ports


async def forward(port: int, data: Pipe, error: Pipe, connect: Connect, pod: str) -> None:
    """One forwarded connection, until the pod's side ends (then FIN to the
    client) or the client resets the data stream (then the pod's socket is
    dropped). The client's FIN only half-closes: the pod's answer still comes."""
    error.discard()  # the client never writes on it; nothing it sends may hold up the connection
    try:
        try:
            sock = await connect(port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's own text names only 127.0.0.1
            await error.write(f"error forwarding port {port} to pod {pod}: {reason}".encode())
            await data.close()
            data.discard()
            return
        reader, writer = await asyncio.open_connection(sock=sock)
        to_pod = asyncio.ensure_future(_to_pod(data, writer))
        from_pod = asyncio.ensure_future(_from_pod(reader, data))
        aborted = asyncio.ensure_future(data.aborted.wait())
        try:
            await asyncio.wait({from_pod, aborted}, return_when=asyncio.FIRST_COMPLETED)
            if aborted.done():  # the client reset the stream, maybe while the pod was not reading
                writer.transport.abort()
        finally:
            for task in (to_pod, from_pod, aborted):
                task.cancel()
            data.discard()
            await asyncio.gather(to_pod, from_pod, aborted, return_exceptions=True)
            await _close_socket(writer)
    except (ConnectionError, OSError):  # the client went: the session ends anyway
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            await error.close()


async def _close_socket(writer: asyncio.StreamWriter) -> None:
    """Close the pod's socket; one whose peer stopped reading is dropped, not waited for."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except Exception:
        writer.transport.abort()


async def _to_pod(data: Pipe, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await data.read():
            writer.write(chunk)
            await writer.drain()
        if not data.reset and writer.can_write_eof():  # a reset is forward()'s to handle
            writer.write_eof()  # the client's half-close
    except (ConnectionError, OSError):
        data.discard()  # the pod's side broke: what the client still sends goes nowhere


async def _from_pod(reader: asyncio.StreamReader, data: Pipe) -> None:
    try:
        while chunk := await reader.read(64 * 1024):
            await data.write(chunk)
    except (ConnectionError, OSError):
        pass
    await data.close()


async def serve_spdy(conn: SpdyConnection, connect: Connect, pod: str) -> None:
    """Pair the client's streams and forward each pair, until the client leaves."""
    pairs: dict[str, dict[str, Pipe]] = {}
    deadlines: dict[str, float] = {}
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    try:
        while True:
            timeout = min(deadlines.values(), default=loop.time() + PAIR_TIMEOUT) - loop.time()
            try:
                async with asyncio.timeout(max(timeout, 0.01)):
                    pipe = await conn.accept()
            except TimeoutError:
                for request in [r for r, d in deadlines.items() if d <= loop.time()]:
                    del deadlines[request]
                    for stale in pairs.pop(request).values():
                        await _refuse(conn, stale, f"timed out waiting for the other stream of request {request}")
                continue
            if pipe is None:
                break
            kind = pipe.header("streamtype")
            try:
                port = port_number(pipe.header("port"))
                if kind not in ("data", "error"):
                    raise PortError(f"unexpected stream type {kind!r}")
            except PortError as exc:
                await _refuse(conn, pipe, str(exc))
                continue
            request = pipe.header("requestid") or _old_request_id(pipe, kind)
            pair = pairs.setdefault(request, {})
            deadlines.setdefault(request, loop.time() + PAIR_TIMEOUT)
            if kind in pair:
                await _refuse(conn, pipe, f"a second {kind} stream for request {request}")
                continue
            pair[kind] = pipe
            if len(pair) == 2:
                del pairs[request], deadlines[request]
                task = asyncio.ensure_future(forward(port, pair["data"], pair["error"], connect, pod))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _old_request_id(pipe: Pipe, kind: str) -> str:
    return str(pipe.stream_id if kind == "error" else pipe.stream_id - 2)


async def _refuse(conn: SpdyConnection, pipe: Pipe, message: str) -> None:
    """An error stream says why and ends; a data stream is reset (its bytes are the client's app's data)."""
    if pipe.header("streamtype") == "error":
        with contextlib.suppress(ConnectionError, OSError):
            await pipe.write(message.encode())
            await pipe.close()
        pipe.discard()
    else:
        await conn.reset(pipe)


async def serve_websocket(conn: WebSocketConnection, ports: list[int], connect: Connect, pod: str) -> None:
    """Each port's channels get its number first, then its one connection;
    the session ends when all have (the kubelet closes the WebSocket then)."""
    pipes = [(conn.channel(2 * i), conn.channel(2 * i + 1)) for i in range(len(ports))]
    for (data, error), port in zip(pipes, ports):
        for pipe in (data, error):
            await pipe.write(channels.port_prefix(port))
    await asyncio.gather(*(forward(port, data, error, connect, pod) for (data, error), port in zip(pipes, ports)))

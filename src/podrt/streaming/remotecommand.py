"""Kubernetes' remotecommand protocol (exec and attach) over either
transport, as the kubelet's streaming server speaks it.

SPDY: the client opens one stream per standard stream, named by its
`streamType` header; the server waits for all it expects (error, then the
requested stdin/stdout/stderr, and resize for a TTY from v3 on) for up to
STREAM_CREATION_TIMEOUT. WebSocket: fixed channels (0 stdin ... 4 resize).
Resize messages are JSON {"Width": w, "Height": h}, one after another.

The result goes on the error stream when the command is over: v4 and v5 a
JSON metav1.Status (NonZeroExitCode with an ExitCode cause, so clients learn
the code); earlier versions only a failure's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs

from podrt.oci.attach import STDERR, STDOUT, AttachSocket
from podrt.oci.execproc import ExecExit, ExecProcess
from podrt.streaming import channels
from podrt.streaming.transport import Pipe, SpdyConnection, WebSocketConnection

log = logging.getLogger(__name__)

STREAM_CREATION_TIMEOUT = 30.0
MAX_RESIZE_MESSAGE = 4096


class SetupError(Exception):
    """The client did not open the streams the request needs."""


@attrs.frozen
class Options:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@attrs.define
class Streams:
    error: Pipe
    stdin: Pipe | None = None
    stdout: Pipe | None = None
    stderr: Pipe | None = None
    resize: Pipe | None = None
    version: int = 1

    async def close_all(self) -> None:
        for pipe in (self.stdout, self.stderr, self.error):
            if pipe is not None:
                await pipe.close()


def spdy_version(protocol: str) -> int:
    return int(protocol[1]) if protocol.startswith("v") else 1


async def spdy_streams(conn: SpdyConnection, protocol: str, opts: Options) -> Streams:
    """The streams the client opened, once all that `opts` needs are there."""
    version = spdy_version(protocol)
    expected = {"error"}
    expected |= {name for name, wanted in (("stdin", opts.stdin), ("stdout", opts.stdout),
                                           ("stderr", opts.stderr and not opts.tty)) if wanted}
    if opts.tty and version >= 3:
        expected.add("resize")
    got: dict[str, Pipe] = {}
    try:
        async with asyncio.timeout(STREAM_CREATION_TIMEOUT):
            while not expected <= got.keys():
                pipe = await conn.accept()
                if pipe is None:
                    raise SetupError("the client left before opening its streams")
                kind = pipe.header("streamtype")
                if kind not in ("error", "stdin", "stdout", "stderr", "resize") or kind in got:
                    raise SetupError(f"unexpected stream type {kind!r}")
                got[kind] = pipe
    except TimeoutError:
        raise SetupError(f"timed out after {STREAM_CREATION_TIMEOUT:g}s waiting for the client's "
                         f"{', '.join(sorted(expected - got.keys()))} stream(s)") from None
    conn.refuse_new_streams()  # a stream nobody reads must not hold up the connection's reader
    return _discard_write_only(
        Streams(got["error"], got.get("stdin"), got.get("stdout"), got.get("stderr"), got.get("resize"), version))


def _discard_write_only(streams: Streams) -> Streams:
    """error, stdout and stderr only go to the client: what it sends there is dropped."""
    for pipe in (streams.error, streams.stdout, streams.stderr):
        if pipe is not None:
            pipe.discard()
    return streams


def ws_streams(conn: WebSocketConnection, opts: Options) -> Streams:
    return _discard_write_only(Streams(
        conn.channel(channels.ERROR),
        conn.channel(channels.STDIN) if opts.stdin else None,
        conn.channel(channels.STDOUT) if opts.stdout else None,
        conn.channel(channels.STDERR) if opts.stderr and not opts.tty else None,
        conn.channel(channels.RESIZE) if opts.tty else None,
        conn.protocol.version,
    ))


def status(version: int, result: ExecExit) -> bytes:
    """What the error stream carries at the end ("" for success before v4)."""
    if result.error:
        message = f"error executing command in container: {result.error}"
        doc = {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
               "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}
    elif result.code != 0:
        doc = {"metadata": {}, "status": "Failure",
               "message": f"command terminated with non-zero exit code: exit status {result.code}",
               "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": str(result.code)}]}}
    else:
        doc = {"metadata": {}, "status": "Success"}
    if version >= 4:
        return json.dumps(doc, separators=(",", ":")).encode()
    return b"" if doc["status"] == "Success" else str(doc["message"]).encode()


async def sizes(pipe: Pipe | None) -> AsyncIterator[tuple[int, int]]:
    """(width, height) of each resize message; a malformed one ends the resizes (logged)."""
    if pipe is None:
        return
    decoder, buffer = json.JSONDecoder(), ""
    while chunk := await pipe.read():
        buffer += chunk.decode(errors="replace")
        while buffer.strip():
            try:
                doc, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                if len(buffer) > MAX_RESIZE_MESSAGE:
                    log.info("streaming: dropping an unreadable resize message")
                    return
                break
            buffer = buffer.lstrip()[end:]
            try:
                width, height = int(doc["Width"]), int(doc["Height"])
            except (KeyError, TypeError, ValueError, OverflowError):
                log.info("streaming: ignoring a resize message without Width and Height: %.100r", doc)
                continue
            yield width, height  # the pty's owner ignores what fits no winsize


async def _copy_out(read: Callable[[], Awaitable[bytes]], pipe: Pipe | None) -> None:
    """Output to the client until it ends; without a pipe it is read and dropped (the process must not block)."""
    while chunk := await read():
        if pipe is not None:
            await pipe.write(chunk)
    if pipe is not None:
        await pipe.close()


async def _copy_in(pipe: Pipe | None, write: Callable[[bytes], Awaitable[None]], end: Callable[[], None]) -> None:
    if pipe is None:
        return
    while chunk := await pipe.read():
        await write(chunk)
    end()


async def _resizes(pipe: Pipe | None, apply: Callable[[int, int], None]) -> None:
    async for width, height in sizes(pipe):
        apply(width, height)


async def run_exec(streams: Streams, process: ExecProcess) -> ExecExit:
    """Relay until the process exits and its output is sent, then report the exit."""
    side = [asyncio.ensure_future(_copy_in(streams.stdin, process.write_stdin, process.close_stdin)),
            asyncio.ensure_future(_resizes(streams.resize, process.resize))]
    try:
        outputs = [_copy_out(process.read_stdout, streams.stdout)]
        if not process.tty:
            outputs.append(_copy_out(process.read_stderr, streams.stderr))
        await asyncio.gather(*outputs)
        result = await process.wait()
    finally:
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
    await _report(streams, result)
    return result


async def run_attach(streams: Streams, sock: AttachSocket, resize: Callable[[int, int], None]) -> None:
    """Relay until the container's output ends (it exited); the client leaving ends it too (detach)."""
    side = [asyncio.ensure_future(_copy_in(streams.stdin, sock.write, sock.close_write)),
            asyncio.ensure_future(_resizes(streams.resize, resize))]
    try:
        while (packet := await sock.read()) is not None:
            pipe = {STDOUT: streams.stdout, STDERR: streams.stderr}.get(packet[0])
            if pipe is not None:
                await pipe.write(packet[1])
    finally:
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
    await _report(streams, ExecExit(0))


async def _report(streams: Streams, result: ExecExit) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        await streams.error.write(status(streams.version, result))
        await streams.close_all()


async def refuse(streams: Streams, message: str) -> None:
    """The request cannot run (the container stopped since the RPC): say so on the error stream."""
    await _report(streams, ExecExit(-1, message))

"""The tests' own streaming clients (tests/support/streamclient.py) against
tiny in-process peers built from podrt's sans-IO server pieces (RequestReader,
Session(client=False), wsproto): the upgrade they ask, the streams and
channels they open, what they send and how they read the end of a command,
and that a peer which refuses, drops or stalls fails fast."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import wsproto.events as wse

from podrt.streaming import channels, spdy
from podrt.streaming.session import DataReceived, Pong, Session, StreamOpened
from podrt.streaming.upgrade import Refusal, RequestReader, SpdyUpgrade, WebSocketUpgrade, not_found
from tests.support import streamclient as sc

EXIT_3 = json.dumps({"metadata": {}, "status": "Failure", "message": "command terminated with non-zero exit code: 3",
                     "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})
SUCCESS = '{"metadata":{},"status":"Success"}'
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _serving(handler: Handler, path: str = "/exec/tok") -> AsyncIterator[str]:
    failures: list[BaseException] = []

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except Exception as exc:  # the test fails on it, below
            failures.append(exc)
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}{path}"
    finally:
        server.close()
        await server.wait_closed()
    assert not failures, failures


async def _upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, port_forward: bool = False,
                   refuse: bool = False) -> tuple[bytes, SpdyUpgrade | WebSocketUpgrade | None]:
    """The request read by podrt's own RequestReader; a refusal (or `refuse`, a 404) is answered here."""
    request, outcome, upgrader = b"", None, RequestReader(port_forward=port_forward)
    while outcome is None:
        data = await reader.read(65536)
        assert data, "the client hung up during its request"
        request += data
        outcome = upgrader.feed(data)
    if refuse or isinstance(outcome, Refusal):
        writer.write(not_found().response if refuse else outcome.response)
        await writer.drain()
        return request, None
    writer.write(outcome.response)
    return request, outcome


class FakeSpdy:
    """The server end of exec (echo stdin to stdout, then `status`) or port-forward (echo upper-cased; port 9 is refused)."""

    def __init__(self, *, status: str = EXIT_3, port_forward: bool = False, refuse: bool = False, drop: bool = False):
        self.status, self.port_forward, self.refuse, self.drop = status, port_forward, refuse, drop
        self.request, self.protocol = b"", ""
        self.opened: list[spdy.Headers] = []
        self.received: dict[str, bytes] = collections.defaultdict(bytes)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.request, outcome = await _upgrade(reader, writer, port_forward=self.port_forward, refuse=self.refuse)
        if outcome is None:
            return
        assert isinstance(outcome, SpdyUpgrade)
        self.protocol, session, data, done = outcome.protocol, Session(client=False), outcome.rest, False
        kinds: dict[int, str] = {}
        while not done:
            for event in session.receive(data):
                if isinstance(event, StreamOpened):
                    self.opened.append(event.headers)
                    kind, request = spdy.header(event.headers, "streamtype"), spdy.header(event.headers, "requestid")
                    kinds[event.stream_id] = f"{kind}{request or ''}"
                    session.reply(event.stream_id)
                    if spdy.header(event.headers, "port") == "9" and kinds[event.stream_id].startswith("data"):
                        session.send(event.stream_id - 2, b"connection refused", fin=True)
                        session.send(event.stream_id, b"", fin=True)
                elif isinstance(event, DataReceived):
                    done = self._data(session, kinds, event) or done
            writer.write(session.data_to_send())
            await writer.drain()
            if not done and not (data := await reader.read(65536)):
                return

    def _data(self, session: Session, kinds: dict[int, str], event: DataReceived) -> bool:
        kind, ids = kinds[event.stream_id], {k: i for i, k in kinds.items()}
        self.received[kind] += event.data
        if self.port_forward:  # the error stream is opened just before its data stream
            session.send(event.stream_id, event.data.upper(), fin=event.fin)
            if event.fin:
                session.send(event.stream_id - 2, b"", fin=True)
            return False
        if kind == "stdin" and "stdout" in ids:
            session.send(ids["stdout"], event.data)
        if kind != "stdin" or not event.fin or self.drop:
            return kind == "stdin" and event.fin
        for name, data in (("stdout", b""), ("stderr", b"err\n"), ("error", self.status.encode())):
            if name in ids:
                session.send(ids[name], data, fin=True)
        return True


async def test_spdy_exec_opens_the_streams_echoes_and_reads_exit_code_3() -> None:
    fake = FakeSpdy()
    async with _serving(fake) as url:
        result = await sc.spdy_exec(url, stdin=b"hello\n" * 20000, timeout=10)
    assert result == sc.ExecResult(b"hello\n" * 20000, b"err\n", EXIT_3, 3)
    assert [spdy.header(h, "streamtype") for h in fake.opened] == ["error", "stdin", "stdout", "stderr"]
    assert fake.protocol == "v4.channel.k8s.io"
    head = fake.request.decode().split("\r\n")
    assert head[0] == "POST /exec/tok HTTP/1.1" and "Upgrade: SPDY/3.1" in head and "Connection: Upgrade" in head
    assert f"Host: {url.split('/')[2]}" in head
    assert [line for line in head if line.startswith("X-Stream-Protocol-Version")] == [
        f"X-Stream-Protocol-Version: {p}" for p in sc.DEFAULT_EXEC_PROTOCOLS]


async def test_spdy_exec_tty_resizes_async_stdin_and_sink() -> None:
    fake, seen = FakeSpdy(status=SUCCESS), []

    async def slowly() -> AsyncIterator[bytes]:
        for n in range(40):
            await asyncio.sleep(0)
            yield bytes([n]) * 65536

    async with _serving(fake) as url:
        result = await sc.spdy_exec(url, stdin=slowly(), tty=True, resizes=[(80, 24), (100, 30)], sink=seen.append,
                                    timeout=10)
    assert result == sc.ExecResult(b"", b"", SUCCESS, 0)  # stdout went to the sink, not kept
    assert b"".join(seen) == b"".join(bytes([n]) * 65536 for n in range(40))
    assert [spdy.header(h, "streamtype") for h in fake.opened] == ["error", "stdin", "stdout", "resize"]
    assert fake.received["resize"] == b'{"Width":80,"Height":24}{"Width":100,"Height":30}'


async def test_spdy_exec_v3_reads_plain_failure_text_and_offers_only_what_it_is_told() -> None:
    fake = FakeSpdy(status="some failure")
    async with _serving(fake) as url:
        result = await sc.spdy_exec(url, stdin=b"", stderr=False, tty=True, resizes=[(1, 2)], protocols=["v3.channel.k8s.io"])
    assert (result.error, result.exit_code, fake.protocol) == ("some failure", -1, "v3.channel.k8s.io")
    assert [spdy.header(h, "streamtype") for h in fake.opened] == ["error", "stdin", "stdout", "resize"]
    fake = FakeSpdy(status="")
    async with _serving(fake) as url:
        result = await sc.spdy_exec(url, stdin=b"x", protocols=["v2.channel.k8s.io"], tty=True, resizes=[(1, 2)])
    assert result.exit_code == 0 and result.stdout == b"x"
    assert [spdy.header(h, "streamtype") for h in fake.opened] == ["error", "stdin", "stdout"]  # no resize before v3


async def test_spdy_refusals_raise_upgrade_refused() -> None:
    async with _serving(FakeSpdy(refuse=True)) as url:
        with pytest.raises(sc.UpgradeRefused) as caught:
            await sc.spdy_exec(url, stdin=b"x")
    assert caught.value.status == 404 and "no such streaming request" in caught.value.body
    async with _serving(FakeSpdy()) as url:
        with pytest.raises(sc.UpgradeRefused) as caught:
            await sc.spdy_connect(url, ["v9.channel.k8s.io"])
    assert caught.value.status == 403 and "unable to negotiate" in caught.value.body


async def test_a_dropped_error_stream_or_a_silent_server_fails_fast() -> None:
    async with _serving(FakeSpdy(drop=True)) as url:
        with pytest.raises(ConnectionError, match="not FIN"):
            await sc.spdy_exec(url, stdin=b"x", timeout=5)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    async with _serving(silent) as url:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await sc.spdy_connect(url, sc.DEFAULT_EXEC_PROTOCOLS, timeout=0.2)
        with pytest.raises(TimeoutError):
            await sc.ws_exec(url, stdin=b"x", timeout=0.2)
        assert loop.time() - started < 2


async def test_spdy_connection_low_level_pings_resets_and_close() -> None:
    stream_headers = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, outcome = await _upgrade(reader, writer)
        assert isinstance(outcome, SpdyUpgrade)
        session, data = Session(client=False), outcome.rest
        while True:
            for event in session.receive(data):
                if isinstance(event, StreamOpened):
                    stream_headers.append(event.headers)
                    session.reply(event.stream_id, (("x-reply", "yes"),))
                    session.send(event.stream_id, b"some")
                    session.ping()
                    session.reset(event.stream_id)
                if isinstance(event, Pong):
                    return  # hangs up
            writer.write(session.data_to_send())
            if not (data := await reader.read(65536)):
                return

    async with _serving(peer) as url:
        async with await sc.spdy_connect(url, ["channel.k8s.io"]) as conn:
            stream = await conn.open_stream({"streamType": "stdout", "Port": "80"})
            assert stream.reply_headers == (("x-reply", "yes"),)
            assert await stream.read() == b"some" and await stream.read() == b"" and stream.end == "reset"
            await conn.wait_closed(timeout=5)  # the peer had our pong, and hung up
            assert conn.protocol == "channel.k8s.io" and conn.error is None
            with pytest.raises(ConnectionResetError):
                conn.start_stream({"streamType": "stdin"})
    assert stream_headers == [(("streamtype", "stdout"), ("port", "80"))]


async def test_spdy_port_forward_pairs_error_and_data_streams_by_request_id() -> None:
    fake = FakeSpdy(port_forward=True)
    async with _serving(fake, "/portforward/tok") as url:
        async with await sc.spdy_port_forward(url) as forward:
            data, error = await forward.connect(8080)
            refused_data, refused_error = await forward.connect(9)
            await data.write(b"hello ")
            await data.write(b"world")
            await data.close_write()
            assert await data.read_all(limit=100) == b"HELLO WORLD" and data.end == "fin"
            assert await error.read_all() == b"" and error.end == "fin"
            assert await refused_error.read_all() == b"connection refused" and await refused_data.read_all() == b""
            with pytest.raises(ValueError, match="more than 3 bytes"):
                more, _ = await forward.connect(8080)
                await more.write(b"abcdef")
                await more.close_write()
                await more.read_all(limit=3)
    assert fake.protocol == sc.PORT_FORWARD_PROTOCOL
    assert fake.opened == [(("streamtype", kind), ("port", port), ("requestid", rid))
                           for port, rid in (("8080", "0"), ("9", "1"), ("8080", "2")) for kind in ("error", "data")]


class FakeWs:
    """A WebSocket server end: exec echoes stdin to stdout until v5's close signal (or ^D), then `status` and a close
    frame; port-forward opens each channel with its port (or `bad_prefix`) and echoes port 0 upper-cased."""

    def __init__(self, *, status: str = EXIT_3, port_forward: bool = False, refuse: bool = False, drop: bool = False,
                 bad_prefix: bool = False) -> None:
        self.status, self.port_forward, self.refuse, self.drop, self.bad_prefix = status, port_forward, refuse, drop, bad_prefix
        self.protocol: channels.Protocol | None = None
        self.received: list[tuple[int, bytes]] = []
        self.answered_close = False

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, outcome = await _upgrade(reader, writer, port_forward=self.port_forward, refuse=self.refuse)
        if outcome is None:
            return
        assert isinstance(outcome, WebSocketUpgrade)
        ws, self.protocol, parts, closing = outcome.connection, outcome.protocol, [], False  # type: ignore[var-annotated]

        def send(channel: int, data: bytes) -> None:
            message = channels.encode(outcome.protocol, channel, data)
            writer.write(ws.send(wse.TextMessage(message) if isinstance(message, str) else wse.BytesMessage(message)))

        for channel in range(4 if self.port_forward else 0):
            send(channel, b"\x00\x00" if self.bad_prefix else channels.port_prefix((8080, 9090)[channel // 2]))
        while data := await reader.read(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, wse.CloseConnection):
                    self.answered_close = True
                    return
                if not isinstance(event, wse.Message):
                    continue
                parts.append(event.data)
                if not event.message_finished:
                    continue
                message = "".join(parts) if isinstance(event, wse.TextMessage) else b"".join(parts)
                channel, payload = channels.decode(outcome.protocol, message)
                parts = []
                self.received.append((channel, payload))
                if self.port_forward and channel == 0:
                    send(0, payload.upper())
                elif self.port_forward:
                    send(3, b"refused")
                elif channel == channels.STDIN:
                    send(channels.STDOUT, payload)
                if ((channel, payload) == (channels.CLOSE, b"\x00") or payload.endswith(b"\x04")) and not closing:
                    if self.drop:
                        return
                    closing = True
                    send(channels.STDERR, b"err\n")
                    send(channels.ERROR, self.status.encode())
                    writer.write(ws.send(wse.CloseConnection(code=1000)))
            await writer.drain()


async def test_ws_exec_v5_echoes_ends_stdin_with_the_close_signal_and_answers_the_close() -> None:
    fake = FakeWs()
    async with _serving(fake) as url:
        result = await sc.ws_exec(url, stdin=b"abc" * 50000, tty=True, resizes=[(80, 24)])
    assert result == sc.ExecResult(b"abc" * 50000, b"err\n", EXIT_3, 3)
    assert fake.protocol is not None and fake.protocol.name == "v5.channel.k8s.io"
    assert fake.received[0] == (channels.RESIZE, b'{"Width":80,"Height":24}')
    assert fake.received[-1] == (channels.CLOSE, bytes([channels.STDIN])) and fake.answered_close


async def test_ws_exec_base64_and_sink() -> None:
    fake, seen = FakeWs(status=SUCCESS), []
    async with _serving(fake) as url:
        result = await sc.ws_exec(url, stdin=b"\xff\x00hi\x04", protocols=["v4.base64.channel.k8s.io"], sink=seen.append)
    assert result == sc.ExecResult(b"", b"err\n", SUCCESS, 0) and b"".join(seen) == b"\xff\x00hi\x04"
    assert fake.received == [(channels.STDIN, b"\xff\x00hi\x04")]  # no close signal before v5


async def test_ws_refusals_and_a_connection_dropped_without_a_close_frame() -> None:
    async with _serving(FakeWs(refuse=True)) as url:
        with pytest.raises(sc.UpgradeRefused) as caught:
            await sc.ws_exec(url, stdin=b"x")
    assert caught.value.status == 404 and "no such streaming request" in caught.value.body
    async with _serving(FakeWs()) as url:
        with pytest.raises(sc.UpgradeRefused) as caught:
            await sc.ws_connect(url, ["v9.channel.k8s.io"])
    assert caught.value.status == 403
    async with _serving(FakeWs(drop=True)) as url:
        with pytest.raises(ConnectionError, match="without a close frame"):
            await sc.ws_exec(url, stdin=b"x")


async def test_ws_port_forward_strips_and_checks_the_port_prefixes() -> None:
    fake = FakeWs(port_forward=True)
    async with _serving(fake, "/portforward/tok?port=8080,9090") as url:
        async with await sc.ws_port_forward(url) as forward:
            assert forward.ports == [8080, 9090] and forward.connection.protocol == "v4.channel.k8s.io"
            await forward.write(0, b"hello")
            assert await forward.read(0) == b"HELLO"
            await forward.write(1, b"x")
            assert await forward.read_error(1) == b"refused" and forward.error is None
    assert fake.received == [(0, b"hello"), (2, b"x")]
    async with _serving(FakeWs(port_forward=True, bad_prefix=True), "/portforward/tok?port=8080&port=9090") as url:
        async with await sc.ws_port_forward(url) as forward:
            assert forward.ports == [8080, 9090]
            assert await forward.read(0, timeout=5) == b""
            assert forward.error == "channel 0 opened with 0000, not 901f"


def test_status_parsing_and_resize_encoding() -> None:
    assert sc.parse_status(EXIT_3) == 3 and sc.parse_status(SUCCESS) == 0 and sc.parse_status("") == 0
    other = {"metadata": {}, "status": "Failure", "message": "boom", "reason": "InternalError"}
    assert sc.parse_status(json.dumps(other)) == -1 and sc.parse_status("not json") == -1
    assert sc.parse_status(EXIT_3.replace('"3"', '"x"')) == -1
    assert sc.parse_status("command terminated with non-zero exit code: 3", json_status=False) == -1
    assert sc.resize_message(80, 24) == b'{"Width":80,"Height":24}'


async def test_inbox_holds_the_reader_back_past_its_limit() -> None:
    inbox: sc._Inbox[bytes] = sc._Inbox(limit=10)
    await inbox.put(b"x" * 6, 6)
    blocked = asyncio.create_task(inbox.put(b"y" * 6, 6))  # 12 > 10: waits for the consumer
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert await inbox.get(1) == b"x" * 6
    await asyncio.wait_for(blocked, 1)
    inbox.close()
    assert await inbox.get(1) == b"y" * 6 and await inbox.get(1) is None and await inbox.get(1) is None
    with pytest.raises(TimeoutError):
        await sc._Inbox().get(0.01)

"""Exec, Attach and PortForward on the real parts: the RPCs hand out URLs,
the project's own SPDY and WebSocket clients (tests/support/streamclient.py)
use them against a busybox container under runc and conmon, in a pod with a
real netns. Processes a session started must be gone when it ends, whoever
ends it."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.integration.test_containers import _config, _configure, _create, _pod, _pull
from tests.support import streamclient as sc
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]

HTTPD_PORT = 8080
BIG = 50 * 1024 * 1024


class Pod:
    """One pod for the module: a plain container, one with stdin (cat), one with a TTY (sh), and a busybox httpd."""

    def __init__(self, daemon: DaemonProcess, pod: tuple[str, cri.PodSandboxConfig], ids: dict[str, str]) -> None:
        self.daemon, self.ids = daemon, ids
        self.id, self.config = pod


@pytest.fixture(scope="module")
def pod(registry: Registry) -> Iterator[Pod]:
    with _network_dirs() as d:
        _configure(d, registry)
        proc = DaemonProcess(d).start()
        try:
            asyncio.run(_pull(d.socket, f"{registry.host}/test/busybox:v1"))
            made, ids = asyncio.run(_make_pod(d.socket, registry))
            yield Pod(proc, made, ids)
        finally:
            asyncio.run(remove_all_pods(d.socket))
            proc.stop()
        leftovers = audit_daemon_dirs(d)
        assert not leftovers, f"streaming left resources behind: {leftovers}"
        log = proc.log()  # broken clients end their sessions, never the server: no traceback
        assert "Traceback" not in log, log[log.index("Traceback") - 200:][:3000]


async def _make_pod(sock: Path, registry: Registry) -> tuple[tuple[str, cri.PodSandboxConfig], dict[str, str]]:
    async with connect(sock) as c:
        pod = await _pod(c)
        configs = {
            "app": _config(registry, "app", command=["sleep", "3600"]),
            "cat": _config(registry, "cat", command=["cat"], stdin=True),
            "tty": _config(registry, "tty", command=["sh"], stdin=True, tty=True),
            "httpd": _config(registry, "httpd", command=["busybox", "httpd", "-f", "-p", str(HTTPD_PORT), "-h", "/"]),
        }
        ids = {}
        for name, config in configs.items():
            ids[name] = await _create(c, pod, config)
            await c.runtime.start_container(cri.StartContainerRequest(container_id=ids[name]))
        return pod, ids


@pytest.fixture
async def client(pod: Pod) -> AsyncIterator[CriClient]:
    async with connect(pod.daemon.dirs.socket) as c:
        yield c


async def _exec_url(c: CriClient, container_id: str, cmd: list[str], *, stdin: bool = False, tty: bool = False,
                    stderr: bool = True) -> str:
    req = cri.ExecRequest(container_id=container_id, cmd=cmd, stdin=stdin, stdout=True, stderr=stderr and not tty, tty=tty)
    return (await c.runtime.exec(req)).url


async def _ps(c: CriClient, container_id: str) -> str:
    resp = await c.runtime.exec_sync(cri.ExecSyncRequest(container_id=container_id, cmd=["ps", "-o", "pid,args"], timeout=10))
    return resp.stdout.decode()


async def _gone(c: CriClient, container_id: str, marker: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker not in await _ps(c, container_id):
            return True
        await asyncio.sleep(0.1)
    return False


# ---- exec ------------------------------------------------------------------------------

async def test_exec_spdy_output_streams_and_exit_codes(pod: Pod, client: CriClient) -> None:
    app = pod.ids["app"]
    url = await _exec_url(client, app, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url
    result = await sc.spdy_exec(url)
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 3)
    assert '"reason":"NonZeroExitCode"' in result.error
    ok = await sc.spdy_exec(await _exec_url(client, app, ["true"]))
    assert ok.exit_code == 0 and '"status":"Success"' in ok.error


async def test_exec_older_protocol_reports_failure_as_text(pod: Pod, client: CriClient) -> None:
    url = await _exec_url(client, pod.ids["app"], ["sh", "-c", "exit 5"])
    result = await sc.spdy_exec(url, protocols=["v2.channel.k8s.io"])
    assert result.error.startswith("command terminated with non-zero exit code") and "5" in result.error


async def test_exec_missing_command_is_an_error_status(pod: Pod, client: CriClient) -> None:
    result = await sc.spdy_exec(await _exec_url(client, pod.ids["app"], ["no-such-command"]))
    assert result.exit_code == -1 and "no-such-command" in result.error and "InternalError" in result.error


async def test_exec_stdin_echo_spdy_and_websocket(pod: Pod, client: CriClient) -> None:
    data = os.urandom(300_000)
    url = await _exec_url(client, pod.ids["app"], ["cat"], stdin=True)
    result = await sc.spdy_exec(url, stdin=data)
    assert result.stdout == data and result.exit_code == 0
    url = await _exec_url(client, pod.ids["app"], ["sh", "-c", "cat; exit 7"], stdin=True)
    result = await sc.ws_exec(url, stdin=b"hello over websocket\n", protocols=["v5.channel.k8s.io"])  # v5 can end stdin
    assert (result.stdout, result.exit_code) == (b"hello over websocket\n", 7)


async def test_exec_websocket_protocols(pod: Pod, client: CriClient) -> None:
    for protocol in ("v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io"):
        url = await _exec_url(client, pod.ids["app"], ["sh", "-c", "echo o; echo e >&2; exit 2"])
        result = await sc.ws_exec(url, protocols=[protocol])
        assert (result.stdout, result.stderr) == (b"o\n", b"e\n"), protocol
        if protocol.startswith("v4"):
            assert result.exit_code == 2, protocol
        else:
            assert "non-zero exit code" in result.error, protocol


async def test_exec_tty_resize_seen_by_stty(pod: Pod, client: CriClient) -> None:
    async def typing() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.3)
        yield b"stty size; exit 4\n"

    url = await _exec_url(client, pod.ids["app"], ["sh"], stdin=True, tty=True)
    result = await sc.spdy_exec(url, stdin=typing(), tty=True, resizes=[(70000, 5), (123, 45)])  # no winsize fits the first
    assert b"45 123" in result.stdout and result.exit_code == 4
    assert result.stderr == b""  # a TTY has one output
    url = await _exec_url(client, pod.ids["app"], ["sh"], stdin=True, tty=True)
    result = await sc.ws_exec(url, stdin=typing(), tty=True, resizes=[(99, 33)])
    assert b"33 99" in result.stdout and result.exit_code == 4


def _rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


async def test_exec_large_output_no_loss_bounded_memory(pod: Pod, client: CriClient) -> None:
    daemon_pid = pod.daemon.proc.pid  # type: ignore[union-attr]
    before = _rss_kib(daemon_pid)
    peak = before
    received = 0
    hashes: list[bytes] = []

    def sink(chunk: bytes) -> None:
        nonlocal received, peak
        received += len(chunk)
        hashes.append(chunk[-1:])
        peak = max(peak, _rss_kib(daemon_pid)) if received % (4 << 20) < len(chunk) else peak

    url = await _exec_url(client, pod.ids["app"], ["sh", "-c", f"head -c {BIG} /dev/zero | tr '\\0' x"])
    result = await sc.spdy_exec(url, sink=sink, timeout=120)
    assert result.exit_code == 0 and received == BIG
    assert all(h == b"x" for h in hashes)
    assert (peak - before) < 40 * 1024, f"daemon RSS grew by {(peak - before) // 1024} MiB while relaying {BIG >> 20} MB"


async def test_websocket_close_during_output(pod: Pod, client: CriClient) -> None:
    """The client says goodbye while output floods: the session ends cleanly (the module checks the log)."""
    url = await _exec_url(client, pod.ids["app"], ["sh", "-c", "exec yes flood"])
    conn = await sc.ws_connect(url, ["v5.channel.k8s.io"])
    assert (await conn.recv(timeout=10))[0] == 1
    await conn.close()  # a close frame, then the socket
    assert await _gone(client, pod.ids["app"], "yes flood"), "the flood outlived its client's goodbye"


async def test_vanished_client_leaves_no_process(pod: Pod, client: CriClient) -> None:
    app = pod.ids["app"]
    for tty in (False, True):
        marker = f"sleep {1000 + tty}"
        url = await _exec_url(client, app, ["sh", "-c", f"echo started; exec {marker}"], tty=tty)
        conn = await sc.spdy_connect(url, sc.DEFAULT_EXEC_PROTOCOLS)
        kinds = ["error", "stdout"] + ([] if tty else ["stderr"]) + (["resize"] if tty else [])
        streams = {k: await conn.open_stream({"streamType": k}) for k in kinds}
        assert b"started" in await streams["stdout"].read(timeout=10)
        assert marker in await _ps(client, app)
        await conn.close()  # gone without a word
        assert await _gone(client, app, marker), f"{marker} (tty={tty}) outlived its client"


# ---- attach ----------------------------------------------------------------------------

async def test_attach_stdin_many_clients_and_detach(pod: Pod, client: CriClient) -> None:
    cat = pod.ids["cat"]
    urls = [(await client.runtime.attach(cri.AttachRequest(container_id=cat, stdin=True, stdout=True, stderr=True))).url
            for _ in range(2)]
    first = await sc.spdy_connect(urls[0], sc.DEFAULT_EXEC_PROTOCOLS)
    second = await sc.ws_connect(urls[1], ["v5.channel.k8s.io"])
    try:
        s1 = {k: await first.open_stream({"streamType": k}) for k in ("error", "stdin", "stdout", "stderr")}
        await asyncio.sleep(0.2)  # both attached before the line goes in
        await s1["stdin"].write(b"ping through conmon\n")
        assert await s1["stdout"].read(timeout=10) == b"ping through conmon\n"
        assert await second.recv(timeout=10) == (1, b"ping through conmon\n")  # the other client sees it too
    finally:
        await first.close()
        await second.close()
    await asyncio.sleep(0.3)
    status = (await client.runtime.container_status(cri.ContainerStatusRequest(container_id=cat))).status
    assert status.state == cri.ContainerState.CONTAINER_RUNNING  # detaching leaves it running


async def test_attach_tty_resize(pod: Pod, client: CriClient) -> None:
    tty = pod.ids["tty"]
    url = (await client.runtime.attach(cri.AttachRequest(container_id=tty, stdin=True, stdout=True, tty=True))).url
    async with await sc.spdy_connect(url, sc.DEFAULT_EXEC_PROTOCOLS) as conn:
        streams = {k: await conn.open_stream({"streamType": k}) for k in ("error", "stdin", "stdout", "resize")}
        await streams["resize"].write(sc.resize_message(50, 20))
        await asyncio.sleep(0.3)
        await streams["stdin"].write(b"stty size\n")
        seen = b""
        async with asyncio.timeout(10):
            while b"20 50" not in seen:
                seen += await streams["stdout"].read()
    assert b"20 50" in seen


async def test_attach_refusals(pod: Pod, client: CriClient) -> None:
    with pytest.raises(GRPCError) as e:
        await client.runtime.attach(cri.AttachRequest(container_id=pod.ids["app"], stdin=True, stdout=True))
    assert e.value.status == Status.INVALID_ARGUMENT and "without stdin" in str(e.value.message)
    with pytest.raises(GRPCError) as e:
        await client.runtime.attach(cri.AttachRequest(container_id=pod.ids["tty"], stdout=True))
    assert e.value.status == Status.INVALID_ARGUMENT and "tty" in str(e.value.message)


# ---- port forward ----------------------------------------------------------------------

async def _http_get(data: sc.SpdyStream, path: str) -> bytes:
    await data.write(f"GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n".encode())
    await data.close_write()  # half-close: the answer still comes
    return await data.read_all(timeout=20)


async def test_port_forward_spdy_concurrent_connections_and_refused_port(pod: Pod, client: CriClient) -> None:
    url = (await client.runtime.port_forward(cri.PortForwardRequest(pod_sandbox_id=pod.id, port=[HTTPD_PORT]))).url
    expected = BUSYBOX.read_bytes()
    pf = await sc.spdy_port_forward(url)
    try:
        pairs = [await pf.connect(HTTPD_PORT) for _ in range(5)]
        answers = await asyncio.gather(*(_http_get(data, "/bin/busybox") for data, _ in pairs))
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
            assert body == expected
        data, error = await pf.connect(9)  # nothing listens there
        message = await error.read_all(timeout=10)
        assert b"error forwarding port 9" in message and b"refused" in message.lower()
        assert await data.read_all(timeout=10) == b""
        data, _ = await pf.connect(HTTPD_PORT)  # the session goes on after a refusal
        assert b" 200 " in (await _http_get(data, "/etc/hostname")).split(b"\r\n")[0]
        data, error = await pf.connect(HTTPD_PORT)  # no half-close: the pod's close ends it
        await data.write(b"GET /etc/hostname HTTP/1.0\r\n\r\n")
        assert b" 200 " in (await data.read_all(timeout=10)).split(b"\r\n")[0]
        assert await error.read_all(timeout=10) == b""
        data, error = await pf.connect(HTTPD_PORT)  # the client aborts mid-request: so does the pod's side
        await data.write(b"GET /etc/host")
        data.reset()
        assert await error.read_all(timeout=10) == b"" and error.end == "fin"
    finally:
        await pf.close()


async def test_port_forward_websocket(pod: Pod, client: CriClient) -> None:
    url = (await client.runtime.port_forward(cri.PortForwardRequest(pod_sandbox_id=pod.id))).url
    pf = await sc.ws_port_forward(f"{url}?port={HTTPD_PORT}")
    try:
        await pf.write(0, b"GET /etc/hostname HTTP/1.0\r\n\r\n")
        answer = b""
        async with asyncio.timeout(10):
            while chunk := await pf.read(0):  # to the end: the pod's close ends the session
                answer += chunk
        assert answer.startswith(b"HTTP/1.") and b" 200 " in answer.split(b"\r\n")[0]
        assert pf.connection.close_code == 1000 and pf.error is None
    finally:
        await pf.close()


# ---- tokens, bad input, broken clients --------------------------------------------------

async def test_token_is_single_use_and_unknown_is_404(pod: Pod, client: CriClient) -> None:
    url = await _exec_url(client, pod.ids["app"], ["true"])
    assert (await sc.spdy_exec(url)).exit_code == 0
    with pytest.raises(sc.UpgradeRefused) as e:
        await sc.spdy_exec(url)
    assert e.value.status == 404
    with pytest.raises(sc.UpgradeRefused) as e:
        await sc.ws_exec(url.rsplit("/", 1)[0] + "/not-a-token")
    assert e.value.status == 404
    attach_url = (await client.runtime.attach(cri.AttachRequest(container_id=pod.ids["cat"], stdout=True))).url
    with pytest.raises(sc.UpgradeRefused) as e:  # a token is for its own kind of request only
        await sc.spdy_exec(attach_url.replace("/attach/", "/exec/"))
    assert e.value.status == 404


async def test_garbage_requests_get_an_http_error(pod: Pod, client: CriClient) -> None:
    url = await _exec_url(client, pod.ids["app"], ["true"])
    host, port = url.split("/")[2].rsplit(":", 1)
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(300) + b"\r\n\r\n",  # TLS to a plain server
                    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no upgrade
                    b"POST /exec/x HTTP/1.1\r\nHost: x\r\nUpgrade: SPDY/3.1\r\nConnection: Upgrade\r\n"
                    b"X-Stream-Protocol-Version: v9.channel.k8s.io\r\n\r\n",  # no shared protocol
                    b"GET /exec/x HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n",  # too long
                    b"GET /exec/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"):  # no key
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(garbage)
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert re.match(rb"HTTP/1.1 4\d\d ", answer), (garbage[:40], answer[:200])
    assert (await sc.spdy_exec(url)).exit_code == 0  # and the server goes on
    pf_url = (await client.runtime.port_forward(cri.PortForwardRequest(pod_sandbox_id=pod.id))).url
    with pytest.raises(sc.UpgradeRefused) as e:  # base64 numbers channels 0-9: five ports at most
        await sc.ws_port_forward(pf_url + "?port=" + ",".join(map(str, range(81, 87))),
                                 protocols=["v4.base64.channel.k8s.io"])
    assert e.value.status == 400 and "at most 5" in e.value.body


async def test_rpc_refusals(pod: Pod, client: CriClient) -> None:
    cases = [
        (client.runtime.exec(cri.ExecRequest(container_id="0" * 64, cmd=["true"], stdout=True)), Status.NOT_FOUND),
        (client.runtime.exec(cri.ExecRequest(container_id=pod.ids["app"], cmd=[], stdout=True)), Status.INVALID_ARGUMENT),
        (client.runtime.exec(cri.ExecRequest(container_id=pod.ids["app"], cmd=["true"])), Status.INVALID_ARGUMENT),
        (client.runtime.exec(cri.ExecRequest(container_id=pod.ids["app"], cmd=["sh"], tty=True, stderr=True)),
         Status.INVALID_ARGUMENT),
        (client.runtime.port_forward(cri.PortForwardRequest(pod_sandbox_id="f" * 64)), Status.NOT_FOUND),
        (client.runtime.port_forward(cri.PortForwardRequest(pod_sandbox_id=pod.id, port=[70000])), Status.INVALID_ARGUMENT),
    ]
    for call, status in cases:
        with pytest.raises(GRPCError) as e:
            await call
        assert e.value.status == status, e.value.message


async def test_exec_in_a_stopped_container_is_refused(pod: Pod, client: CriClient, registry: Registry) -> None:
    req = cri.CreateContainerRequest(pod_sandbox_id=pod.id, config=_config(registry, "short", command=["true"]),
                                     sandbox_config=pod.config)
    cid = (await client.runtime.create_container(req)).container_id
    try:
        with pytest.raises(GRPCError) as e:  # created, never started
            await client.runtime.exec(cri.ExecRequest(container_id=cid, cmd=["true"], stdout=True))
        assert e.value.status == Status.FAILED_PRECONDITION
    finally:
        await client.runtime.remove_container(cri.RemoveContainerRequest(container_id=cid))


async def test_malformed_frames_close_only_their_session(pod: Pod, client: CriClient) -> None:
    app = pod.ids["app"]
    healthy_url = await _exec_url(client, app, ["cat"], stdin=True)
    healthy = await sc.spdy_connect(healthy_url, sc.DEFAULT_EXEC_PROTOCOLS)
    try:
        h = {k: await healthy.open_stream({"streamType": k}) for k in ("error", "stdin", "stdout", "stderr")}
        for transport in ("spdy", "websocket"):
            url = await _exec_url(client, app, ["sh", "-c", "echo started; exec sleep 1002"], stdin=True)
            if transport == "spdy":
                bad = await sc.spdy_connect(url, sc.DEFAULT_EXEC_PROTOCOLS)
                streams = {k: await bad.open_stream({"streamType": k}) for k in ("error", "stdin", "stdout", "stderr")}
                assert b"started" in await streams["stdout"].read(timeout=10)
                await bad.send_raw(b"\x80\x03\x00\x01\x00\x00\x00\x10" + b"\xff" * 16)  # SYN_STREAM with a broken header block
            else:
                bad = await sc.ws_connect(url, ["v5.channel.k8s.io"])
                assert (await bad.recv(timeout=10)) == (1, b"started\n")
                await bad.send_raw(b"\x82\x05hello")  # a client frame without its mask
            await bad.wait_closed(timeout=10)
            await bad.close()
            assert await _gone(client, app, "sleep 1002"), f"the broken {transport} session's process outlived it"
            await h["stdin"].write(f"still here after {transport}\n".encode())
            assert await h["stdout"].read(timeout=10) == f"still here after {transport}\n".encode()
        url = await _exec_url(client, app, ["sh", "-c", "echo started; exec sleep 1002"], stdin=True)
        bad = await sc.ws_connect(url, ["v4.base64.channel.k8s.io"])
        assert await bad.recv(timeout=10) == (1, b"started\n")
        await bad.send_message("\u00b2aGVsbG8=")  # "²" is a digit to str.isdigit, not a channel
        await bad.wait_closed(timeout=10)
        await bad.close()
        assert await _gone(client, app, "sleep 1002"), "the base64 session's process outlived it"
    finally:
        await healthy.close()

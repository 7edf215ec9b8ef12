"""The streaming server's limits on the real parts, with a daemon of their
own (the leak audit is host-wide, so not beside test_streaming.py's pod):
TLS, the session cap, the idle timeout, token expiry, and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from podrt.api.runtime import v1 as cri
from podrt.network.nssocket import netns_socket
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.integration.test_containers import _config, _create, _pod, _start
from tests.integration.test_streaming import _exec_url, _gone
from tests.support import streamclient as sc
from tests.support.client import connect
from tests.support.daemon import DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry
from tests.support.tokens import make_ca_and_server_cert

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]


@contextlib.asynccontextmanager
async def _own_daemon(registry: Registry, extra: dict[str, Any] | None = None) -> AsyncIterator[DaemonProcess]:
    """A daemon of the test's own with busybox pulled; at the end its pods go and nothing may be left."""
    with _network_dirs() as d:
        proc = await _start(d, registry, extra)
        try:
            yield proc
            await remove_all_pods(d.socket)
        finally:
            proc.stop()
        leftovers = audit_daemon_dirs(d)
        assert not leftovers, leftovers


async def test_tls_session_cap_idle_timeout_token_expiry_and_metrics(registry: Registry, tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    metrics_port = _free_port()
    async with _own_daemon(registry, {
        "api": {"stream_enable_tls": True, "stream_tls_cert": str(cert), "stream_tls_key": str(key),
                "stream_max_sessions": 2, "stream_idle_timeout": 1.5},
        "metrics": {"enable_metrics": True, "metrics_port": metrics_port},
        "debug": {"stream_token_ttl": 1.0},
    }) as proc:
        async with connect(proc.dirs.socket) as c:
            pod_ = await _pod(c)
            app = await _create(c, pod_, _config(registry, "app", command=["sleep", "3600"]))
            await c.runtime.start_container(cri.StartContainerRequest(container_id=app))
            tls = ssl.create_default_context(cafile=str(ca))
            url = await _exec_url(c, app, ["sh", "-c", "echo secure"])
            assert url.startswith("https://")
            assert (await sc.spdy_exec(url, ssl=tls)).stdout == b"secure\n"

            idle = [await sc.spdy_connect(await _exec_url(c, app, ["sleep", "30"]), sc.DEFAULT_EXEC_PROTOCOLS, ssl=tls)
                    for _ in range(2)]
            with pytest.raises(sc.UpgradeRefused) as e:  # the cap: two sessions are open
                await sc.spdy_exec(await _exec_url(c, app, ["true"]), ssl=tls)
            assert e.value.status == 503
            for conn in idle:  # nothing moves: closed by the idle timeout
                await conn.wait_closed(timeout=10)
                await conn.close()
            assert await _gone(c, app, "sleep 30"), "an idle session's process outlived it"

            url = await _exec_url(c, app, ["true"])
            await asyncio.sleep(1.5)
            with pytest.raises(sc.UpgradeRefused) as e:
                await sc.spdy_exec(url, ssl=tls)
            assert e.value.status == 404  # expired

            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
            assert re.search(r'podrt_streaming_sessions_total\{kind="exec"\} [3-9]', text), text
            assert re.search(r'podrt_streaming_bytes_total\{direction="out",kind="exec"\} [1-9]', text)
            assert 'podrt_streaming_sessions_open{kind="exec"} 0.0' in text


FLOOD = ["sh", "-c", "exec yes flood33"]  # busybox runs the applet in the shell's process: this is its cmdline


async def test_daemon_stop_ends_sessions_and_their_processes(registry: Registry) -> None:
    """SIGTERM with an exec session open whose client stopped reading its
    flood of output: the daemon stops (the session does not hold it up) and
    the exec'd process is gone, though the container stays."""
    async with _own_daemon(registry) as proc:
        async with connect(proc.dirs.socket) as c:
            app = await _create(c, await _pod(c), _config(registry, "app", command=["sleep", "3600"]))
            await c.runtime.start_container(cri.StartContainerRequest(container_id=app))
            conn = await sc.spdy_connect(await _exec_url(c, app, FLOOD),
                                         sc.DEFAULT_EXEC_PROTOCOLS)
            streams = {k: await conn.open_stream({"streamType": k}) for k in ("error", "stdout", "stderr")}
            assert b"flood33" in await streams["stdout"].read(timeout=10)
            await asyncio.sleep(1)  # the client reads no more: every buffer on the way fills
            assert _host_processes(FLOOD)
        assert proc.stop(timeout=20) == 0  # the session's goodbye cannot wait on a client that reads nothing
        await conn.close()
        assert not _host_processes(FLOOD), "an exec'd process outlived the daemon's stop"
        assert _host_processes(["sleep", "3600"])  # the container itself keeps running
        proc.start()


async def test_a_stalled_port_forward_ends_with_the_idle_timeout(registry: Registry) -> None:
    """A listener in the pod's netns accepts and never reads while the client
    uploads: the stream's bound stops the connection's reader (TCP holds the
    client back; no SPDY flow control, as spdystream in the kubelet), so
    nothing moves, and the idle timeout ends the session and the pod-side connection."""
    async with _own_daemon(registry, {"api": {"stream_idle_timeout": 1.5}}) as proc:
        async with connect(proc.dirs.socket) as c:
            pod_id, _ = await _pod(c)
            status = await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
            netns = json.loads(status.info["info"])["netnsPath"]
            listener = await asyncio.to_thread(netns_socket, netns, socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.bind(("127.0.0.1", 9091))
                listener.listen()
                url = (await c.runtime.port_forward(cri.PortForwardRequest(pod_sandbox_id=pod_id, port=[9091]))).url
                async with await sc.spdy_port_forward(url) as pf:
                    data, error = await pf.connect(9091)
                    accepted, _ = await asyncio.to_thread(listener.accept)
                    try:
                        with contextlib.suppress(TimeoutError, ConnectionError):
                            async with asyncio.timeout(3):
                                while True:
                                    await data.write(bytes(256 * 1024))
                        await pf.connection.wait_closed(timeout=10)
                        accepted.settimeout(10)  # the pod's side is closed too: what was sent, then the end
                        while accepted.recv(1 << 20):
                            pass
                    finally:
                        accepted.close()
            finally:
                listener.close()


def _host_processes(argv: list[str]) -> list[int]:
    """PIDs whose command line is exactly `argv` (only this test's exec makes such)."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == wanted:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

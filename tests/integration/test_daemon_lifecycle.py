"""Start-up, socket handling, shutdown and metrics of a real `podrt serve`."""

from __future__ import annotations

import os
import signal
import socket
import stat
import urllib.request
from pathlib import Path

import pytest
from grpclib.const import Status

from podrt.api.runtime import v1 as cri
from podrt.state.journal import Journal
from tests.support.client import connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.h2raw import raw_unary

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts the daemon, which runs runc, conmon and catatonit: needs root"),
]


def test_socket_created_with_mode_0660_in_new_parent_dir(tmp_path: Path) -> None:
    dirs = DaemonDirs(tmp_path)
    dirs.write_config({"api": {"listen": str(tmp_path / "deep" / "er" / "podrt.sock")}})
    proc = DaemonProcess(dirs).start()
    try:
        mode = dirs.socket.stat().st_mode
        assert dirs.socket.parent.name == "er"
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660
    finally:
        proc.kill()


def test_stale_socket_file_is_replaced(dirs: DaemonDirs) -> None:
    dirs.runroot.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(dirs.socket))
    stale.close()  # the file stays, nobody listens
    proc = DaemonProcess(dirs).start()
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(dirs.socket))  # would be refused on the stale file
        s.close()
    finally:
        proc.kill()


def test_socket_of_live_daemon_is_refused(daemon: DaemonProcess, tmp_path: Path) -> None:
    other = DaemonDirs(tmp_path)
    other.write_config({"api": {"listen": str(daemon.dirs.socket)}})
    second = DaemonProcess(other)
    with pytest.raises(RuntimeError) as err:
        second.start()
    assert "in use by a running server" in str(err.value)
    assert second.proc is not None and second.proc.returncode == 1
    assert "Traceback" not in second.log()


def test_second_daemon_on_same_root_is_refused(daemon: DaemonProcess, tmp_path: Path) -> None:
    other = DaemonDirs(tmp_path)
    other.write_config({"root": str(daemon.dirs.root)})
    second = DaemonProcess(other)
    with pytest.raises(RuntimeError) as err:
        second.start()
    assert "another podrt is running with root" in str(err.value)


async def test_sigterm_shuts_down_cleanly(daemon: DaemonProcess) -> None:
    async with connect(daemon.dirs.socket) as c:
        await c.runtime.version(cri.VersionRequest())
    assert daemon.stop(signal.SIGTERM) == 0
    assert not daemon.dirs.socket.exists()
    assert "stopped" in daemon.log()


def test_sigint_shuts_down_cleanly(daemon: DaemonProcess) -> None:
    assert daemon.stop(signal.SIGINT) == 0
    assert not daemon.dirs.socket.exists()


def test_leftover_journal_with_unknown_step_is_kept_and_daemon_starts(dirs: DaemonDirs) -> None:
    Journal(dirs.root / "journal").open("abc", "test").intent("x", "no-such-step", {})
    leftover = dirs.root / "journal" / "abc.json"
    proc = DaemonProcess(dirs).start()
    try:
        assert leftover.exists()
        assert "no-such-step" in proc.log()
    finally:
        proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_endpoint_counts_operations(dirs: DaemonDirs) -> None:
    port = _free_port()
    dirs.write_config({"metrics": {"enable_metrics": True, "metrics_port": port}})
    proc = DaemonProcess(dirs).start()
    try:
        async with connect(dirs.socket) as c:
            for _ in range(3):
                await c.runtime.version(cri.VersionRequest())
        headers = raw_unary(dirs.socket, "/runtime.v1.RuntimeService/SomeFutureRpc")  # an error, for the error counter
        assert headers.get("grpc-status") == str(Status.UNIMPLEMENTED.value)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        proc.kill()
    assert 'podrt_operations_total{operation="Version"} 3.0' in text
    assert 'podrt_operations_errors_total{code="UNIMPLEMENTED",operation="SomeFutureRpc"} 1.0' in text
    assert 'podrt_operations_latency_seconds_count{operation="Version"} 3.0' in text

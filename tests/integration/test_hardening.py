"""An operator's bad day: SIGTERM mid-creation, kept pods across a restart, bytes
that do not decode, values out of range, a full disk, a root podrt cannot use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.integration.conftest import remove_all_pods
from tests.support.client import connect
from tests.support.daemon import DaemonDirs, DaemonProcess, podrt_command
from tests.support.fuzz import RawCodec
from tests.support.h2raw import grpc_frame, raw_unary
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config

pytestmark = pytest.mark.root


async def _wait_gone(dirs: DaemonDirs, timeout: float = 10.0, *, own_mount: Path | None = None) -> dict[str, list[str]]:
    """The leak audit, once conmon processes had time to leave (a tmpfs the
    test itself mounted is not a leak)."""
    def audit() -> dict[str, list[str]]:
        left = audit_daemon_dirs(dirs)
        if own_mount is not None and left.get("mounts") == [str(own_mount)]:
            del left["mounts"]
        return left

    deadline = time.monotonic() + timeout
    while (left := audit()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return left


async def _pod_ids(sock: Path) -> set[str]:
    async with connect(sock) as c:
        return {p.id for p in (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items}


# ---- 2. SIGTERM lets running calls answer ---------------------------------------

async def test_sigterm_lets_in_flight_creations_answer(net_dirs: DaemonDirs) -> None:
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            calls = [asyncio.ensure_future(c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config())))
                     for _ in range(20)]
            await asyncio.sleep(0.1)  # in the daemon: 20 creations take about a second here
            os.kill(daemon.proc.pid, signal.SIGTERM)
            assert sum(call.done() for call in calls) < 20
            await asyncio.sleep(0.1)
            with pytest.raises(GRPCError) as late:  # a new call on the open connection is refused
                await c.runtime.version(cri.VersionRequest())
            assert late.value.status == Status.UNAVAILABLE and "shutting down" in (late.value.message or "")
            answered = await asyncio.gather(*calls)
        assert daemon.proc.wait(timeout=60) == 0
        assert "cut" not in daemon.log()
    finally:
        daemon.kill()
    restarted = DaemonProcess(net_dirs).start()
    try:
        assert await _pod_ids(net_dirs.socket) == {r.pod_sandbox_id for r in answered}
        await remove_all_pods(net_dirs.socket)
        assert await _wait_gone(net_dirs) == {}
    finally:
        restarted.kill()


async def test_calls_past_the_grace_period_are_cut_and_unwound(net_dirs: DaemonDirs) -> None:
    net_dirs.write_config({"api": {"shutdown_grace": 0.05}, "network": slow_network(net_dirs)})
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            call = asyncio.ensure_future(c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config())))
            await asyncio.sleep(0.5)  # inside the slow CNI ADD
            os.kill(daemon.proc.pid, signal.SIGTERM)
            with pytest.raises(GRPCError) as err:
                await call
            assert err.value.status == Status.UNAVAILABLE and "cut and rolled back" in (err.value.message or "")
        assert daemon.proc.wait(timeout=60) == 0
        assert "still running after the 0s grace period are cut" in daemon.log()
    finally:
        daemon.kill()
    assert await _wait_gone(net_dirs) == {}


def slow_network(dirs: DaemonDirs) -> dict[str, object]:
    """A conflist whose one plugin sleeps 30 s on ADD and ignores SIGTERM; the
    network config keys that find it."""
    plugins = dirs.base / "plugins"
    plugins.mkdir(exist_ok=True)
    slow = plugins / "slowadd"
    slow.write_text("#!/bin/sh\ntrap '' TERM\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && sleep 30\nexit 0\n")
    slow.chmod(0o755)
    for old in dirs.cni_dir.iterdir():
        old.unlink()
    (dirs.cni_dir / "10-slow.conflist").write_text(
        '{"cniVersion": "1.0.0", "name": "slow", "plugins": [{"type": "slowadd"}]}')
    return {"plugin_dirs": [str(plugins), "/usr/lib/cni"]}


async def test_plugin_timeout_is_a_config_key(net_dirs: DaemonDirs) -> None:
    net_dirs.write_config({"network": {"plugin_timeout": 1.0, **slow_network(net_dirs)}})
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            with pytest.raises(GRPCError) as err:
                await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config()), timeout=30)
        assert err.value.status == Status.UNAVAILABLE and "timed out after 1s" in (err.value.message or "")
        assert "slowadd: still running after its 1s timeout; killing its process group" in daemon.log()
        assert await _wait_gone(net_dirs) == {}
    finally:
        daemon.kill()


# ---- 3. pods kept for a retry survive a restart, and still expire ------------------

async def _abandoned_pods(sock: Path, count: int) -> set[str]:
    """Creations whose clients give up after 5 ms (a creation takes 30 ms or more):
    each pod is kept for a retry. Until `count` such pods exist."""
    deadline = time.monotonic() + 60
    async with connect(sock) as c:
        while len(pods := await _pod_ids(sock)) < count and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError, GRPCError):
                await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config()), timeout=0.005)
            await asyncio.sleep(0.3)
    assert len(pods) == count
    return pods


async def test_unclaimed_pods_expire_after_a_restart(net_dirs: DaemonDirs) -> None:
    net_dirs.write_config({"runtime": {"sandbox_claim_timeout": 4.0}})
    daemon = DaemonProcess(net_dirs).start()
    try:
        await _abandoned_pods(net_dirs.socket, 5)
        assert daemon.stop(signal.SIGTERM) == 0  # well within the claim timeout
    finally:
        daemon.kill()
    restarted = DaemonProcess(net_dirs).start()
    try:
        assert len(await _pod_ids(net_dirs.socket)) == 5
        assert restarted.log().count(", unclaimed)") >= 5
        deadline = time.monotonic() + 20
        while await _pod_ids(net_dirs.socket) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert await _pod_ids(net_dirs.socket) == set()
        assert await _wait_gone(net_dirs) == {}
    finally:
        restarted.kill()


async def test_a_retry_after_restart_claims_the_kept_pod(net_dirs: DaemonDirs) -> None:
    net_dirs.write_config({"runtime": {"sandbox_claim_timeout": 3.0}})
    config = pod_config()
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            with contextlib.suppress(asyncio.TimeoutError, GRPCError):
                await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config), timeout=0.005)
        await asyncio.sleep(1.0)
        kept = await _pod_ids(net_dirs.socket)
        assert len(kept) == 1
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.kill()
    restarted = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            claimed = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
        assert {claimed} == kept
        await asyncio.sleep(4.0)  # past the claim timeout: the pod is the kubelet's now
        assert await _pod_ids(net_dirs.socket) == kept
        restarted.stop()
        restarted = DaemonProcess(net_dirs).start()
        await asyncio.sleep(4.0)  # and it stays so across another restart
        assert await _pod_ids(net_dirs.socket) == kept
        await remove_all_pods(net_dirs.socket)
        assert await _wait_gone(net_dirs) == {}
    finally:
        restarted.kill()


# ---- 4. bytes that do not decode ---------------------------------------------------

async def test_undecodable_bodies_are_invalid_argument_and_logged_briefly(daemon: DaemonProcess) -> None:
    before = len(daemon.log())
    channel = Channel(path=str(daemon.dirs.socket), codec=RawCodec())
    try:
        for body in [b"\xff" * 8, b"\x0a\x05abc", b"\x08" * 3] * 100:
            with pytest.raises(GRPCError) as err:
                async with channel.request("/runtime.v1.RuntimeService/RunPodSandbox", Cardinality.UNARY_UNARY,
                                           bytes, bytes, timeout=10) as stream:  # type: ignore[type-var]
                    await stream.send_message(body, end=True)
                    await stream.recv_message()
            assert err.value.status == Status.INVALID_ARGUMENT
            assert "could not be decoded as RunPodSandboxRequest" in (err.value.message or "")
    finally:
        channel.close()
    written = daemon.log()[before:]
    assert "Traceback" not in written
    assert written.count("is not a valid RunPodSandboxRequest") <= 5, written[-2000:]
    async with connect(daemon.dirs.socket) as c:
        assert (await c.runtime.version(cri.VersionRequest())).runtime_name == "podrt"


@pytest.mark.parametrize("body,status,fragment", [
    (grpc_frame(b"", compressed=True), "12", "compressed requests are not supported"),
    (grpc_frame(b"\x0a\x00", length=100), "3", "the request ended before its 100 bytes"),
    (grpc_frame(b"", length=10), "3", "the request ended before its 10 bytes"),
    (b"\x00\x00", "3", "inside a message header"),
    (grpc_frame(b"", length=2**31), "8", "larger than the limit of 16777216 (podrt.api.max_msg_size)"),
], ids=["compressed flag", "short body", "no body", "short header", "huge length prefix"])
def test_malformed_grpc_framing_gets_a_clear_status(shared_daemon: DaemonProcess, body: bytes, status: str,
                                                    fragment: str) -> None:
    before = len(shared_daemon.log())
    answer = raw_unary(shared_daemon.dirs.socket, "/runtime.v1.RuntimeService/Version", body=body)
    assert answer.get("grpc-status") == status, answer
    assert fragment in answer.get("grpc-message", ""), answer
    assert "Traceback" not in shared_daemon.log()[before:]


async def test_huge_echoed_values_get_a_short_message_and_the_connection_lives(shared_daemon: DaemonProcess) -> None:
    """A 90 KB value echoed in an error used to stall the loop for seconds and
    overflow the client's header limit, dropping every call on the connection."""
    async with connect(shared_daemon.dirs.socket) as c:
        with pytest.raises(GRPCError) as err:
            await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id="/.." * 30000), timeout=10)
        assert err.value.status == Status.NOT_FOUND
        assert len(err.value.message or "") < 1200 and "more characters" in (err.value.message or "")
        with pytest.raises(GRPCError) as err:
            await c.runtime.update_runtime_config(cri.UpdateRuntimeConfigRequest(runtime_config=cri.RuntimeConfig(
                network_config=cri.NetworkConfig(pod_cidr="ü" * 20000))), timeout=10)
        assert err.value.status == Status.INVALID_ARGUMENT
        assert (await c.runtime.version(cri.VersionRequest(), timeout=10)).runtime_name == "podrt"


# ---- 5. values out of range -------------------------------------------------------

def _with_context(**kw: object) -> cri.PodSandboxConfig:
    kw.setdefault("namespace_options", cri.NamespaceOption())
    return pod_config(linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(**kw)))  # type: ignore[arg-type]


@pytest.mark.parametrize("config,fragment", [
    (_with_context(namespace_options=cri.NamespaceOption(network=99)), "namespace_options.network: unknown value 99"),
    (_with_context(run_as_user=cri.Int64Value(2**32)), "run_as_user: 4294967296 is out of range"),
    (_with_context(run_as_user=cri.Int64Value(2**31)), "run_as_user: 2147483648 is out of range"),
    (_with_context(run_as_group=cri.Int64Value(2**63 - 1)), "run_as_group"),
], ids=["namespace mode 99", "uid 2^32", "uid 2^31", "gid 2^63-1"])
async def test_out_of_range_values_name_the_field(pod_daemon: DaemonProcess, config: cri.PodSandboxConfig, fragment: str) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        with pytest.raises(GRPCError) as err:
            await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert fragment in (err.value.message or "")
    assert audit_daemon_dirs(pod_daemon.dirs) == {}


async def test_non_ascii_log_directory_works(pod_daemon: DaemonProcess) -> None:
    """conmon parses paths in its locale; in the C locale a UTF-8 path made it
    exit at once (found by the fuzzer as INTERNAL "cannot move conmon")."""
    log_dir = pod_daemon.dirs.base / "logs-ü" / "pod"
    async with connect(pod_daemon.dirs.socket) as c:
        pod = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config(log_directory=str(log_dir))))).pod_sandbox_id
        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    assert audit_daemon_dirs(pod_daemon.dirs) == {}


# ---- 6. a full disk, a root podrt cannot use --------------------------------------

@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "podrt-test-tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path) -> Path:
    """Use up every free byte of the filesystem under `directory`."""
    filler = directory / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


async def test_full_state_dir_is_resource_exhausted(net_dirs: DaemonDirs) -> None:
    with _tmpfs(net_dirs.root, "16m"):
        daemon = DaemonProcess(net_dirs).start()
        try:
            filler = _fill(net_dirs.root)
            async with connect(net_dirs.socket) as c:
                with pytest.raises(GRPCError) as err:
                    await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config()))
            assert err.value.status == Status.RESOURCE_EXHAUSTED, err.value.message
            assert "No space left on device" in (err.value.message or "")
            assert f"cannot write {net_dirs.root}/" in (err.value.message or "")
            assert await _wait_gone(net_dirs, own_mount=net_dirs.root) == {}
            filler.unlink()
            async with connect(net_dirs.socket) as c:  # space is back: the same request works
                await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config()))
            await remove_all_pods(net_dirs.socket)
            assert await _wait_gone(net_dirs, own_mount=net_dirs.root) == {}
        finally:
            daemon.kill()


def _start_fails(dirs: DaemonDirs) -> str:
    """Run `podrt serve` expecting it to exit 1; its output."""
    out = subprocess.run(podrt_command("serve", "--config", str(dirs.config_file)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    return out.stderr


def test_no_space_for_the_pause_image_is_one_line(dirs: DaemonDirs) -> None:
    with _tmpfs(dirs.root, "256k"):  # catatonit is larger
        err = _start_fails(dirs)
    assert ("podrt: cannot prepare the pause image podrt.local/pause:builtin in "
            f"{dirs.root}/images: No space left on device") in err
    assert len([line for line in err.splitlines() if line.startswith("podrt:")]) == 1
    assert "Unclosed" not in err  # the registry client's session is closed on the way out


def test_unusable_root_is_one_line(dirs: DaemonDirs) -> None:
    blocker = dirs.base / "a-file"
    blocker.write_text("")
    dirs.write_config({"root": str(blocker / "root")})
    err = _start_fails(dirs)
    assert f"podrt: cannot create the state directory {blocker / 'root'}: Not a directory" in err

"""Pods without an infra process (podrt.runtime.drop_infra_ctr, on by default,
as CRI-O's): a pod that does not share its PID namespace gets no conmon and
no runc container of its own; podrt pins its IPC and UTS namespaces (with
its hostname and sysctls in them) beside its netns, and its containers join
them by path. A pod that shares its PID namespace keeps its infra as that
namespace's init; the switch off gives every pod one, as before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.host.nspin import is_ns_mounted
from podrt.oci.conmon import find_conmon_pids
from podrt.state.store import STATE_FILE
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.integration.test_containers import _config, _create, _exec, _module_daemon, _remove_pod, _start
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]

SYSCTLS = {"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shm_rmid_forced": "1"}


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    with _module_daemon(registry) as proc:
        yield proc


def _pod_config(pid: cri.NamespaceMode, **kw: object) -> cri.PodSandboxConfig:
    ns = cri.NamespaceOption(pid=pid)
    linux = cri.LinuxPodSandboxConfig(sysctls=dict(kw.pop("sysctls", {})),  # type: ignore[call-overload]
                                      security_context=cri.LinuxSandboxSecurityContext(namespace_options=ns))
    return pod_config(linux=linux, **kw)


async def _run_pod(c: CriClient, config: cri.PodSandboxConfig) -> tuple[str, cri.PodSandboxConfig]:
    return (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id, config


async def _info(c: CriClient, pod_id: str) -> tuple[cri.PodSandboxStatus, dict]:  # type: ignore[type-arg]
    st = await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    return st.status, json.loads(st.info["info"])


async def _sleeper(c: CriClient, registry: Registry, pod: tuple[str, cri.PodSandboxConfig], name: str) -> tuple[str, int]:
    """A running container of the pod in the pod's PID mode, as the kubelet asks; (its ID, its pid)."""
    sc = cri.LinuxContainerSecurityContext(namespace_options=pod[1].linux.security_context.namespace_options)
    cid = await _create(c, pod, _config(registry, name, command=["/bin/sleep", "1000"],
                                        linux=cri.LinuxContainerConfig(security_context=sc)))
    await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
    st = await c.runtime.container_status(cri.ContainerStatusRequest(container_id=cid, verbose=True))
    return cid, int(json.loads(st.info["info"])["pid"])


def _runc_ids(dirs: DaemonDirs) -> set[str]:
    out = subprocess.run(["runc", "--root", str(dirs.runroot / "runc"), "list", "-q"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _pin(dirs: DaemonDirs, kind: str, pod_id: str) -> Path:
    return dirs.runroot / f"{kind}ns" / pod_id


def _inode(path: str | Path) -> int:
    return os.stat(path).st_ino


def _nsenter(*argv: str) -> str:
    out = subprocess.run(["nsenter", *argv], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def test_a_pod_without_infra_pins_its_namespaces_for_its_containers(daemon: DaemonProcess, registry: Registry) -> None:
    """No conmon and no runc container for the pod; its hostname and sysctls
    are in the namespaces podrt pinned before any container ran; two
    containers share its net, IPC and UTS namespaces (and not a PID one)."""
    dirs = daemon.dirs
    async with connect(dirs.socket) as c:
        pod = await _run_pod(c, _pod_config(cri.NamespaceMode.CONTAINER, hostname="noinfra", sysctls=SYSCTLS))
        try:
            status, info = await _info(c, pod[0])
            assert status.state == cri.PodSandboxState.SANDBOX_READY and status.network.ip.startswith("10.233.64.")
            assert status.created_at > 0
            assert info["pid"] == 0 and info["runtimeState"] is None
            assert pod[0] not in _runc_ids(dirs) and find_conmon_pids(pod[0]) == []
            netns = info["netnsPath"]
            ipc, uts = _pin(dirs, "ipc", pod[0]), _pin(dirs, "uts", pod[0])
            assert is_ns_mounted(ipc) and is_ns_mounted(uts)
            assert _nsenter(f"--uts={uts}", "hostname") == "noinfra"
            assert _nsenter(f"--ipc={ipc}", "cat", "/proc/sys/kernel/shm_rmid_forced") == "1"
            assert _nsenter(f"--net={netns}", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start") == "80"
            spec = info["runtimeSpec"]  # the pod's record: the namespaces its containers join
            assert {"type": "ipc", "path": str(ipc)} in spec["linux"]["namespaces"]

            (a, pid_a), (b, pid_b) = await _sleeper(c, registry, pod, "a"), await _sleeper(c, registry, pod, "b")
            assert _runc_ids(dirs) >= {a, b} and pod[0] not in _runc_ids(dirs)
            for kind, pin in (("net", netns), ("ipc", ipc), ("uts", uts)):
                assert _inode(f"/proc/{pid_a}/ns/{kind}") == _inode(f"/proc/{pid_b}/ns/{kind}") == _inode(pin), kind
            assert _inode(f"/proc/{pid_a}/ns/pid") != _inode(f"/proc/{pid_b}/ns/pid")
            assert (await _exec(c, a, "cat", "/proc/sys/kernel/hostname")).stdout.decode().strip() == "noinfra"
            out = (await _exec(c, b, "cat", "/proc/sys/kernel/shm_rmid_forced", "/proc/sys/net/ipv4/ip_unprivileged_port_start"))
            assert out.stdout.decode().split() == ["1", "80"]
            stats = (await c.runtime.pod_sandbox_stats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod[0]))).stats
            assert stats.linux.network.default_interface.name == "eth0"

            await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod[0]))
            status, _ = await _info(c, pod[0])
            assert status.state == cri.PodSandboxState.SANDBOX_NOTREADY
            assert not ipc.exists() and not uts.exists() and not os.path.exists(netns)
        finally:
            await _remove_pod(c, pod[0])


async def test_a_pod_sharing_its_pid_namespace_keeps_its_infra(daemon: DaemonProcess, registry: Registry) -> None:
    dirs = daemon.dirs
    async with connect(dirs.socket) as c:
        pod = await _run_pod(c, _pod_config(cri.NamespaceMode.POD, hostname="withinfra"))
        try:
            _, info = await _info(c, pod[0])
            infra = info["pid"]
            assert infra > 0 and info["runtimeState"]["status"] == "running"
            assert pod[0] in _runc_ids(dirs) and find_conmon_pids(pod[0])
            assert not _pin(dirs, "ipc", pod[0]).exists() and not _pin(dirs, "uts", pod[0]).exists()
            _, pid = await _sleeper(c, registry, pod, "app")
            for kind in ("pid", "ipc", "uts", "net"):
                assert _inode(f"/proc/{pid}/ns/{kind}") == _inode(f"/proc/{infra}/ns/{kind}"), kind
        finally:
            await _remove_pod(c, pod[0])


@pytest.mark.parametrize("sysctls", [{"net.ipv4.tcp_keepalive_tme": "60"}, {"kernel.shm_rmid_forced": "x"}],
                         ids=["no such net sysctl", "ipc value refused"])
async def test_a_sysctl_the_kernel_refuses_is_invalid_and_leaves_nothing(daemon: DaemonProcess, sysctls: dict[str, str]) -> None:
    dirs = daemon.dirs
    async with connect(dirs.socket) as c:
        with pytest.raises(GRPCError) as err:
            await _run_pod(c, _pod_config(cri.NamespaceMode.CONTAINER, sysctls=sysctls))
        assert err.value.status == Status.INVALID_ARGUMENT and "refused by the kernel" in (err.value.message or "")
        assert (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items == []
    for kind in ("ipc", "uts", "net"):
        pins = dirs.runroot / f"{kind}ns"
        assert not pins.exists() or not list(pins.iterdir()), kind


async def test_the_switch_off_gives_every_pod_an_infra(registry: Registry) -> None:
    with _network_dirs() as d:
        proc = await _start(d, registry, {"runtime": {"drop_infra_ctr": False}})
        try:
            async with connect(d.socket) as c:
                pod = await _run_pod(c, _pod_config(cri.NamespaceMode.CONTAINER, hostname="old", sysctls=SYSCTLS))
                _, info = await _info(c, pod[0])
                infra = info["pid"]
                assert infra > 0 and pod[0] in _runc_ids(d)
                assert not _pin(d, "ipc", pod[0]).exists()
                cid, pid = await _sleeper(c, registry, pod, "app")
                for kind in ("ipc", "uts", "net"):
                    assert _inode(f"/proc/{pid}/ns/{kind}") == _inode(f"/proc/{infra}/ns/{kind}"), kind
                assert _inode(f"/proc/{pid}/ns/pid") != _inode(f"/proc/{infra}/ns/pid")
                assert (await _exec(c, cid, "cat", "/proc/sys/kernel/hostname")).stdout.decode().strip() == "old"
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


async def test_restart_keeps_a_pod_without_infra_ready_and_releases_orphan_pins(registry: Registry) -> None:
    """Across a restart: a pod with its pins is READY, its container runs on;
    one whose pin went (by hand) is NOTREADY; the pins of a pod whose record
    is gone are released."""
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                keep = await _run_pod(c, _pod_config(cri.NamespaceMode.CONTAINER))
                cid, pid = await _sleeper(c, registry, keep, "app")
                lost = await _run_pod(c, _pod_config(cri.NamespaceMode.CONTAINER))
                orphan = await _run_pod(c, _pod_config(cri.NamespaceMode.CONTAINER))
                before, _ = await _info(c, keep[0])
            proc.stop(signal.SIGKILL)
            subprocess.run(["umount", str(_pin(d, "uts", lost[0]))], check=True)
            (d.root / "sandboxes" / orphan[0] / STATE_FILE).unlink()  # its record gone
            proc = DaemonProcess(d).start()
            async with connect(d.socket) as c:
                after, _ = await _info(c, keep[0])
                assert after.state == cri.PodSandboxState.SANDBOX_READY
                assert (after.network.ip, after.created_at) == (before.network.ip, before.created_at)
                assert (await c.runtime.container_status(cri.ContainerStatusRequest(container_id=cid))).status.state == \
                    cri.ContainerState.CONTAINER_RUNNING and os.path.exists(f"/proc/{pid}")
                assert (await _info(c, lost[0]))[0].state == cri.PodSandboxState.SANDBOX_NOTREADY
                for kind in ("ipc", "uts", "net"):
                    assert not (d.runroot / f"{kind}ns" / orphan[0]).exists(), kind
                assert {p.id for p in (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items} == {keep[0], lost[0]}
            await remove_all_pods(d.socket)
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}

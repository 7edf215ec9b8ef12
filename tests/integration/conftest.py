"""Fixtures that run the real daemon on temporary dirs and a temporary socket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from podrt.api.runtime import v1 as cri
from tests.support.client import connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.leaks import audit_daemon_dirs, scrub_daemon_dirs
from tests.support.registry import Registry, busybox_registry

TEST_BRIDGE = "podrttest0"
TEST_SUBNET = "10.233.64.0/24"


def write_test_conflist(cni_dir: Path, name: str = "podrt-test", data_dir: Path | None = None) -> Path:
    """A network for test namespaces only: own bridge name, unused private subnet.
    host-local's leases go to data_dir (default: beside the conflist), so a
    test can see every lease it caused."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": TEST_SUBNET}]], "dataDir": str(data_dir or cni_dir.parent / "ipam")}
    path = cni_dir / "10-podrt-test.conflist"
    path.write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": TEST_BRIDGE,
                        "isGateway": False,  # True would set the host's ip_forward
                        "ipMasq": False,
                        "ipam": ipam,
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],  # no loopback plugin: podrt brings lo up
            }
        )
    )
    return path


@pytest.fixture
def dirs() -> Iterator[DaemonDirs]:
    base = Path(tempfile.mkdtemp(prefix="podrt-test-"))
    d = DaemonDirs(base)
    d.write_config()
    yield d
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def daemon(dirs: DaemonDirs) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(dirs).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def shared_daemon() -> Iterator[DaemonProcess]:
    """One daemon for read-mostly tests of a module (saves start-up time)."""
    base = Path(tempfile.mkdtemp(prefix="podrt-test-"))
    d = DaemonDirs(base)
    d.write_config()
    proc = DaemonProcess(d).start()
    yield proc
    proc.kill()
    shutil.rmtree(base, ignore_errors=True)


def remove_test_bridge() -> None:
    """The bridge plugin creates the bridge and never deletes it; it is ours."""
    subprocess.run(["ip", "link", "del", TEST_BRIDGE], capture_output=True)


@contextmanager
def _network_dirs() -> Iterator[DaemonDirs]:
    """Temporary daemon dirs with the test CNI network; the bridge goes at the end."""
    if os.geteuid() != 0:
        pytest.skip("pod tests need root (runc, conmon, netns, CNI)")
    base = Path(tempfile.mkdtemp(prefix="podrt-test-"))
    d = DaemonDirs(base)
    d.write_config()
    write_test_conflist(d.cni_dir)
    try:
        yield d
    finally:
        scrub_daemon_dirs(d)
        remove_test_bridge()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def net_dirs() -> Iterator[DaemonDirs]:
    """Per-test dirs with the test network, for tests that start daemons themselves."""
    with _network_dirs() as d:
        yield d


@pytest.fixture(scope="module")
def pod_daemon() -> Iterator[DaemonProcess]:
    """A daemon with the test CNI network, shared by a module's pod tests.

    At the end every pod must be gone and nothing of theirs left on the host."""
    with _network_dirs() as d:
        proc = DaemonProcess(d).start()
        yield proc
        proc.stop()
        leftovers = audit_daemon_dirs(d)
        assert not leftovers, f"pods left resources behind: {leftovers}"


async def remove_all_pods(sock: Path) -> None:
    """What the kubelet does for pods it no longer wants: stop, then remove."""
    async with connect(sock) as c:
        for p in (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items:
            await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=p.id))
            await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=p.id))


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    """A registry on 127.0.0.1 with the busybox test images, for a module's container tests."""
    reg = busybox_registry()
    yield reg
    reg.stop()

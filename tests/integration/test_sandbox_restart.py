"""Pods survive a daemon restart; pods whose infra died come back NotReady."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from podrt.api.runtime import v1 as cri
from tests.integration.conftest import remove_all_pods
from tests.support.leaks import audit_daemon_dirs
from tests.support.client import connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.pods import host_ns, pod_config

pytestmark = pytest.mark.root


async def _status(dirs: DaemonDirs, pod_id: str) -> cri.PodSandboxStatusResponse:
    async with connect(dirs.socket) as c:
        return await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))


async def test_pods_survive_restart_and_dead_infra_is_not_ready(net_dirs: DaemonDirs) -> None:
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            keep = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config(labels={"k": "keep"})))).pod_sandbox_id
            dies = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config(linux=host_ns(network=True))))).pod_sandbox_id
        before = await _status(net_dirs, keep)
        dead_pid = json.loads((await _status(net_dirs, dies)).info["info"])["pid"]
        assert daemon.stop(signal.SIGTERM) == 0
        os.kill(dead_pid, signal.SIGKILL)  # the infra process our daemon started
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{dead_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.kill()
    restarted = DaemonProcess(net_dirs).start()
    try:
        after = await _status(net_dirs, keep)
        assert after.status.state == cri.PodSandboxState.SANDBOX_READY
        assert after.status.network.ip == before.status.network.ip
        assert after.status.labels == before.status.labels
        assert after.status.created_at == before.status.created_at
        assert json.loads(after.info["info"])["pid"] == json.loads(before.info["info"])["pid"]
        assert (await _status(net_dirs, dies)).status.state == cri.PodSandboxState.SANDBOX_NOTREADY
        async with connect(net_dirs.socket) as c:  # names are reserved again: same request, same pod
            resp = await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector={"k": "keep"})))
            assert [p.id for p in resp.items] == [keep]
        await remove_all_pods(net_dirs.socket)
        assert audit_daemon_dirs(net_dirs) == {}
    finally:
        restarted.kill()


async def test_restart_releases_what_belongs_to_no_sandbox(net_dirs: DaemonDirs) -> None:
    """A pod whose state file is lost: its container, netns, IP lease and dirs are released."""
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config()))).pod_sandbox_id
        daemon.stop(signal.SIGKILL)
    finally:
        daemon.kill()
    (net_dirs.root / "sandboxes" / pod_id / "state.json").unlink()
    assert audit_daemon_dirs(net_dirs) != {}
    restarted = DaemonProcess(net_dirs).start()
    try:
        assert f"container {pod_id}" in restarted.log()
        async with connect(net_dirs.socket) as c:
            assert (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items == []
        deadline = time.monotonic() + 10  # conmon leaves once its container is gone
        while audit_daemon_dirs(net_dirs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert audit_daemon_dirs(net_dirs) == {}
    finally:
        restarted.kill()

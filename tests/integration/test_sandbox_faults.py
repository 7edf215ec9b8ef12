"""Failures in the middle of RunPodSandbox leave nothing behind.

For every step: a fault before and after it (debug fault points of a real
daemon), then the leak audit. Also SIGKILL of the daemon mid-creation and a
restart, and a client that gives up before the pod is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.sandbox.run import STEP_CLASSES
from podrt.steps.sandbox.runtime import InfraStart
from tests.integration.conftest import remove_all_pods, write_test_conflist
from tests.support.client import connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config

pytestmark = pytest.mark.root
STEPS = [cls.kind for cls in STEP_CLASSES if cls.kind != "userns"]  # a user namespace's pod: test_userns.py


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", STEPS)
async def test_fault_at_every_step_leaks_nothing(net_dirs: DaemonDirs, step: str, when: str) -> None:
    net_dirs.write_config({"debug": {"fault_points": [f"{step}:{when}"]}})
    write_test_conflist(net_dirs.cni_dir)
    daemon = DaemonProcess(net_dirs).start()
    try:  # the kubelet's usual pod has no infra process; one that shares its PID namespace has
        config = pod_config(pid=cri.NamespaceMode.POD if step == InfraStart.kind else cri.NamespaceMode.CONTAINER)
        async with connect(net_dirs.socket) as c:
            with pytest.raises(GRPCError) as err:
                await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))
            assert f"injected fault {when} {step}" in (err.value.message or "")
            assert (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items == []
            assert audit_daemon_dirs(net_dirs) == {}
            # the name was released: the same pod can be created now (the fault fired once)
            pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
            await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        assert audit_daemon_dirs(net_dirs) == {}
    finally:
        daemon.kill()


@pytest.mark.parametrize("pid", [cri.NamespaceMode.POD, cri.NamespaceMode.CONTAINER], ids=["infra", "no-infra"])
@pytest.mark.parametrize("delay_ms", [5, 15, 30, 45, 60, 80])
async def test_sigkill_mid_creation_then_restart_leaks_nothing(net_dirs: DaemonDirs, delay_ms: int,
                                                               pid: cri.NamespaceMode) -> None:
    """Killed somewhere in the creation (or just after it: both must end clean)."""
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            call = asyncio.ensure_future(c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config(pid=pid))))
            await asyncio.sleep(delay_ms / 1000)
            daemon.stop(signal.SIGKILL)
            with contextlib.suppress(Exception):
                await call
    finally:
        daemon.kill()
    restarted = DaemonProcess(net_dirs).start()
    try:
        await remove_all_pods(net_dirs.socket)  # a pod that finished before the kill is restored, then removed
        assert audit_daemon_dirs(net_dirs) == {}
        assert list((net_dirs.root / "journal").iterdir()) == []
    finally:
        restarted.kill()


async def test_client_deadline_then_retry_gets_the_pod(net_dirs: DaemonDirs) -> None:
    daemon = DaemonProcess(net_dirs).start()
    try:
        config = pod_config()
        async with connect(net_dirs.socket) as c:
            with pytest.raises((GRPCError, asyncio.TimeoutError)) as err:
                await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config), timeout=0.005)
            if isinstance(err.value, GRPCError):
                assert err.value.status == Status.DEADLINE_EXCEEDED
            pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
            items = (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items
            assert [p.id for p in items] == [pod_id]
            assert items[0].state == cri.PodSandboxState.SANDBOX_READY
        await remove_all_pods(net_dirs.socket)
        assert audit_daemon_dirs(net_dirs) == {}
    finally:
        daemon.kill()


async def test_unclaimed_pod_of_a_departed_client_is_removed(net_dirs: DaemonDirs) -> None:
    net_dirs.write_config({"runtime": {"sandbox_claim_timeout": 0.5}})
    write_test_conflist(net_dirs.cni_dir)
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            with pytest.raises((GRPCError, asyncio.TimeoutError)):
                await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config()), timeout=0.005)
            for _ in range(100):
                await asyncio.sleep(0.1)
                if not (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items and audit_daemon_dirs(net_dirs) == {}:
                    break
            assert (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items == []
        assert audit_daemon_dirs(net_dirs) == {}
        assert "never claimed" in daemon.log()
    finally:
        daemon.kill()

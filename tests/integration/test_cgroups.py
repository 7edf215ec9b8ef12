"""Cgroups on the real parts, on whichever hierarchy the host runs: these
machines' v1 hybrid, and cgroup v2 in the VM lane (tests/vm/, which runs the
tests marked `cgroups`). Limits land in the hierarchy's own files and an
update changes them, stats carry CPU and memory, an OOM kill reads OOMKilled
from the cgroup, a pod in a kubelet-made cgroup parent is counted by that
parent, a restart keeps it all, and nothing of podrt's is left."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from betterproto import serialized_on_wire as sent
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.host import cgroups
from tests.integration.conftest import _network_dirs
from tests.integration.test_containers import (
    _config,
    _create,
    _exec,
    _module_daemon,
    _no_traceback,
    _pod,
    _remove_pod,
    _running,
    _start,
    _status,
    _wait_exit,
)
from tests.support.client import connect
from tests.support.daemon import DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry
from tests.support.slow import FACTOR

pytestmark = [
    pytest.mark.root,
    pytest.mark.cgroups,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]

V2 = cgroups.unified()
ROOT = cgroups.CGROUP_ROOT


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    with _module_daemon(registry) as proc:
        yield proc


def _file(controller: str, cgroup: str, name: str) -> str:
    base = ROOT if V2 else ROOT / controller
    return (base / cgroup.strip("/") / name).read_text().strip()


def _limits(cgroup: str) -> tuple[int, int, int, int]:
    """(CPU weight or shares, quota, period, memory limit) from the hierarchy's own files."""
    if V2:
        quota, period = _file("", cgroup, "cpu.max").split()
        return int(_file("", cgroup, "cpu.weight")), int(quota), int(period), int(_file("", cgroup, "memory.max"))
    return (int(_file("cpu", cgroup, "cpu.shares")), int(_file("cpu", cgroup, "cpu.cfs_quota_us")),
            int(_file("cpu", cgroup, "cpu.cfs_period_us")), int(_file("memory", cgroup, "memory.limit_in_bytes")))


def _cpu_share(shares: int) -> int:
    """What runc writes for CRI's cpu_shares: the shares on v1, a weight on v2 (its conversion)."""
    return 1 + ((shares - 2) * 9999) // 262142 if V2 else shares


async def test_limits_land_in_the_cgroup_and_an_update_changes_them(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        limits = cri.LinuxContainerResources(cpu_shares=256, cpu_quota=50000, cpu_period=100000, memory_limit_in_bytes=64 << 20)
        cid = await _running(c, registry, pod, "limited", linux=cri.LinuxContainerConfig(resources=limits))
        cgroup = "/podrt/podrt-" + cid
        assert _limits(cgroup) == (_cpu_share(256), 50000, 100000, 64 << 20)
        # inside, its own limit at the top of its cgroup mount (what JVMs and Go runtimes read); on v2 in
        # a cgroup namespace of its own, as with containerd and CRI-O
        inside = "cat /proc/self/cgroup; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
        seen = (await _exec(c, cid, "/bin/sh", "-c", inside)).stdout.decode().split()
        assert seen[-1] == str(64 << 20)
        assert (seen[:-1] == ["0::/"]) if V2 else any(line.endswith(f":memory:{cgroup}") for line in seen)
        if cgroups.swap_accounting():  # no swap beyond the memory limit unless asked for
            swap = _file("memory", cgroup, "memory.swap.max") if V2 else _file("memory", cgroup, "memory.memsw.limit_in_bytes")
            assert int(swap) == (0 if V2 else 64 << 20)
        update = cri.LinuxContainerResources(cpu_shares=512, cpu_quota=20000, cpu_period=100000, memory_limit_in_bytes=96 << 20,
                                             unified={"memory.high": str(80 << 20)} if V2 else {})
        await c.runtime.update_container_resources(cri.UpdateContainerResourcesRequest(container_id=cid, linux=update))
        assert _limits(cgroup) == (_cpu_share(512), 20000, 100000, 96 << 20)
        shown = (await _status(c, cid)).resources.linux
        assert (shown.cpu_shares, shown.cpu_quota, shown.memory_limit_in_bytes) == (512, 20000, 96 << 20)
        if V2:
            assert int(_file("", cgroup, "memory.high")) == 80 << 20
        else:  # v1 has no such files: refused by name, nothing changed
            with pytest.raises(GRPCError) as err:
                await c.runtime.update_container_resources(cri.UpdateContainerResourcesRequest(
                    container_id=cid, linux=cri.LinuxContainerResources(unified={"memory.high": "1"})))
            assert err.value.status == Status.INVALID_ARGUMENT and "cgroup v2 only" in (err.value.message or "")
        await _remove_pod(c, pod[0])


async def test_hugepage_limits_where_the_host_has_them(daemon: DaemonProcess, registry: Registry) -> None:
    """A limit for each page size the host has, where the hugetlb controller
    exists (v2 here; these v1 hosts mount none, and the limit is left out as
    containerd does)."""
    sizes = sorted(p.name for p in Path("/sys/kernel/mm/hugepages").glob("hugepages-2048kB"))
    if not sizes:
        pytest.skip("this kernel has no 2 MB huge pages")
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        limits = cri.LinuxContainerResources(hugepage_limits=[cri.HugepageLimit(page_size="2MB", limit=4 << 20)])
        cid = await _running(c, registry, pod, "huge", linux=cri.LinuxContainerConfig(resources=limits))
        cgroup = "/podrt/podrt-" + cid
        if not cgroups.available("hugetlb"):  # left out: runc would have failed on it
            assert (await _status(c, cid)).state == cri.ContainerState.CONTAINER_RUNNING
        else:
            name = "hugetlb.2MB.max" if V2 else "hugetlb.2MB.limit_in_bytes"
            assert int(_file("hugetlb", cgroup, name)) == 4 << 20
        await _remove_pod(c, pod[0])


async def test_stats_carry_cpu_memory_and_the_hierarchys_extras(daemon: DaemonProcess, registry: Registry) -> None:
    """ContainerStats and PodSandboxStats: CPU (time and rate), memory (working
    set, usage, RSS, page faults), swap where the host accounts for it, PSI on
    v2; the pod (in podrt's shared parent) sums its cgroups; the reader sees a
    CPU-limited loop throttled."""
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        quota = cri.LinuxContainerResources(cpu_quota=20000, cpu_period=100000)
        busy = await _create(c, pod, _config(registry, "busy", command=["/bin/sh", "-c", "head -c 3000000 /dev/zero > /big; while :; do :; done"],
                                             linux=cri.LinuxContainerConfig(resources=quota)))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=busy))
        idle = await _running(c, registry, pod, "idle")
        listing = cri.ListContainerStatsRequest(filter=cri.ContainerStatsFilter(pod_sandbox_id=pod[0]))
        await asyncio.sleep(1.0 * FACTOR)
        first = {s.attributes.id: s for s in (await c.runtime.list_container_stats(listing)).stats}
        assert not sent(first[idle].cpu.usage_nano_cores)  # a rate needs an earlier sample
        await asyncio.sleep(1.0 * FACTOR)
        by_id = {s.attributes.id: s for s in (await c.runtime.list_container_stats(listing)).stats}
        assert set(by_id) == {busy, idle}
        second = by_id[busy]
        assert second.attributes.metadata.name == "busy"
        assert second.cpu.usage_core_nano_seconds.value > first[busy].cpu.usage_core_nano_seconds.value
        assert 100_000_000 < second.cpu.usage_nano_cores.value < 350_000_000  # a spinning shell held to 0.2 of a core
        assert sent(by_id[idle].cpu.usage_nano_cores) and by_id[idle].cpu.usage_nano_cores.value < 100_000_000
        assert second.writable_layer.used_bytes.value >= 3_000_000  # /big in its upper dir
        assert second.writable_layer.fs_id.mountpoint == str(daemon.dirs.root)
        memory = second.memory
        assert memory.usage_bytes.value >= memory.working_set_bytes.value > 0
        assert memory.rss_bytes.value > 0 and memory.page_faults.value > 0
        assert not sent(memory.available_bytes)  # no memory limit
        assert sent(second.swap) == cgroups.swap_accounting()
        assert sent(second.cpu.psi) == (V2 and (ROOT / "podrt" / f"podrt-{busy}" / "cpu.pressure").exists())
        if sent(second.cpu.psi):
            assert second.cpu.psi.some.total > 0  # throttled: its runnable shell waits for the CPU
        usage = cgroups.read_usage(f"/podrt/podrt-{busy}")
        assert usage is not None and usage.cpu_throttled_periods > 0 and usage.cpu_throttled_ns > 0
        assert usage.cpu_user_ns + usage.cpu_system_ns > 0 and usage.processes >= 1
        (pod_stats,) = (await c.runtime.list_pod_sandbox_stats(cri.ListPodSandboxStatsRequest(
            filter=cri.PodSandboxStatsFilter(id=pod[0])))).stats
        linux = pod_stats.linux
        assert {x.attributes.id for x in linux.containers} == {busy, idle}
        assert linux.cpu.usage_core_nano_seconds.value >= second.cpu.usage_core_nano_seconds.value
        assert linux.memory.working_set_bytes.value >= second.memory.working_set_bytes.value
        assert linux.process.process_count.value >= 3  # the infra's pause, the shell, the sleep
        assert linux.network.default_interface.name == "eth0"  # the bridge plugin's veth
        assert sent(linux.network.default_interface.rx_bytes) and sent(linux.network.default_interface.tx_bytes)
        await _remove_pod(c, pod[0])


async def test_an_oom_kill_is_read_from_the_cgroup(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        limits = cri.LinuxContainerResources(memory_limit_in_bytes=32 << 20)
        hungry = await _create(c, pod, _config(registry, "hungry", command=["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
                                                linux=cri.LinuxContainerConfig(resources=limits)))
        fine = await _create(c, pod, _config(registry, "fine", command=["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1"],
                                              linux=cri.LinuxContainerConfig(resources=limits)))
        for cid in (hungry, fine):
            await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        st = await _wait_exit(c, hungry)
        assert (st.exit_code, st.reason) == (137, "OOMKilled")
        assert st.resources.linux.memory_limit_in_bytes == 32 << 20
        assert (await _wait_exit(c, fine)).reason == "Completed"
        # the cgroup's own counter says it (v2 memory.events, v1 memory.oom_control), not only conmon's marker
        assert cgroups.oom_killed(f"/podrt/podrt-{hungry}") and not cgroups.oom_killed(f"/podrt/podrt-{fine}")
        await _remove_pod(c, pod[0])


@pytest.fixture
def kubelet_parent() -> Iterator[str]:
    """A pod cgroup as the kubelet's cgroupfs driver makes it (`<qos>/pod<uid>`),
    removed afterwards; named for podrt so the suite's leak audit would see it."""
    parent = f"/kubepods-podrttest/burstable/pod{uuid.uuid4()}"
    for h in cgroups.hierarchy.hierarchies():
        (h / parent.strip("/")).mkdir(parents=True)
    yield parent
    for h in cgroups.hierarchy.hierarchies():
        for level in (parent, os.path.dirname(parent), "/kubepods-podrttest"):
            try:
                (h / level.strip("/")).rmdir()
            except OSError:  # what the test left is reported by its assertions and the audit
                pass


async def test_a_pod_in_a_kubelet_cgroup_parent(daemon: DaemonProcess, registry: Registry, kubelet_parent: str) -> None:
    """Its cgroups live under that parent; PodSandboxStats reads the parent's
    totals (containers, infra and conmon); removal leaves the parent alone and
    nothing of podrt's in it."""
    linux = cri.LinuxPodSandboxConfig(cgroup_parent=kubelet_parent,
                                      security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption()))
    async with connect(daemon.dirs.socket) as c:
        config = pod_config(linux=linux)
        pod = ((await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id, config)
        try:
            cid = await _running(c, registry, pod, "app", linux=cri.LinuxContainerConfig(
                resources=cri.LinuxContainerResources(memory_limit_in_bytes=48 << 20)))
            await _exec(c, cid, "/bin/sh", "-c", "head -c 4000000 /dev/zero > /dev/shm/fill")
            children = {p.name for p in (ROOT / ("" if V2 else "memory") / kubelet_parent.strip("/")).iterdir() if p.is_dir()}
            assert children == {f"podrt-{pod[0]}", f"podrt-conmon-{pod[0]}", f"podrt-{cid}"}
            stats = (await c.runtime.pod_sandbox_stats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod[0]))).stats.linux
            parent = cgroups.read_usage(kubelet_parent)
            assert parent is not None
            (container,) = stats.containers
            assert stats.memory.usage_bytes.value >= container.memory.usage_bytes.value >= 4 << 20  # /dev/shm's pages are the writer's
            assert stats.process.process_count.value >= 3  # pause, sleep, conmon (in the parent on both hierarchies)
            assert abs(stats.memory.usage_bytes.value - parent.memory_bytes) < 8 << 20  # the parent's own totals
            assert container.memory.available_bytes.value <= 48 << 20
        finally:  # before the fixture removes the parent
            await _remove_pod(c, pod[0])
    left = [str(p) for h in cgroups.hierarchy.hierarchies() for p in (h / kubelet_parent.strip("/")).iterdir() if p.is_dir()]
    assert left == [] and cgroups.exists(kubelet_parent)  # the kubelet's parent stays, for the kubelet to remove


async def test_after_a_restart_stats_and_cleanup_still_work(registry: Registry) -> None:
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                cid = await _running(c, registry, pod, "survivor")
            proc.stop()
            proc = DaemonProcess(d).start()
            async with connect(d.socket) as c:
                st = (await c.runtime.container_stats(cri.ContainerStatsRequest(container_id=cid))).stats
                assert st.cpu.usage_core_nano_seconds.value > 0 and st.memory.working_set_bytes.value > 0
                pod_st = (await c.runtime.pod_sandbox_stats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod[0]))).stats
                assert pod_st.linux.cpu.usage_core_nano_seconds.value > 0
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}
        _no_traceback(proc)


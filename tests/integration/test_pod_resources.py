"""UpdatePodSandboxResources on the real parts, on whichever hierarchy the
host runs (these machines' v1 hybrid; cgroup v2 in the VM lane): the pod's
cgroup (a kubelet-made parent) takes resources plus overhead in its own
files, PodSandboxStatus' verbose info shows the request, a restart keeps
both; a limit the host or the cgroup cannot take is refused with the field
named and nothing changed; bad input, an unknown pod, a pod without a cgroup
of its own get their statuses."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.container import hostfit
from podrt.host import cgroups
from podrt.sandbox.resources import page_bytes
from tests.integration.conftest import _network_dirs
from tests.integration.test_cgroups import _cpu_share, _file, kubelet_parent  # noqa: F401  (a fixture)
from tests.integration.test_containers import _exec, _module_daemon, _no_traceback, _remove_pod, _running, _start
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.cgroups,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]

V2 = cgroups.unified()
MiB = 1 << 20
R = cri.LinuxContainerResources


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    with _module_daemon(registry) as proc:
        yield proc


def _limits(cgroup: str) -> tuple[int, int, int, int]:
    """(CPU weight or shares, quota, period, memory limit) from the hierarchy's own files; -1: none."""
    if V2:
        quota, period = _file("", cgroup, "cpu.max").split()
        memory = _file("", cgroup, "memory.max")
        return (int(_file("", cgroup, "cpu.weight")), -1 if quota == "max" else int(quota), int(period),
                -1 if memory == "max" else int(memory))
    return (int(_file("cpu", cgroup, "cpu.shares")), int(_file("cpu", cgroup, "cpu.cfs_quota_us")),
            int(_file("cpu", cgroup, "cpu.cfs_period_us")), int(_file("memory", cgroup, "memory.limit_in_bytes")))


async def _pod_in(c: CriClient, parent: str = "") -> tuple[str, cri.PodSandboxConfig]:
    linux = cri.LinuxPodSandboxConfig(cgroup_parent=parent,
                                      security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption()))
    config = pod_config(linux=linux)
    return (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id, config


async def _update(c: CriClient, pod_id: str, resources: R, overhead: R | None = None) -> None:
    await c.runtime.update_pod_sandbox_resources(cri.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=pod_id, resources=resources, overhead=overhead or R()))


async def _refused(c: CriClient, pod_id: str, resources: R, overhead: R | None = None) -> tuple[Status, str]:
    with pytest.raises(GRPCError) as err:
        await _update(c, pod_id, resources, overhead)
    return err.value.status, err.value.message or ""


async def _shown(c: CriClient, pod_id: str) -> dict[str, object]:
    """The request PodSandboxStatus' verbose info shows: {"overhead": ..., "resources": ...} as CRI names them."""
    info = (await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))).info
    doc = json.loads(info["info"])
    return {k: doc[k] for k in ("overhead", "resources") if k in doc}


RESIZED = R(cpu_shares=512, cpu_quota=50000, cpu_period=100000, memory_limit_in_bytes=256 * MiB)
OVERHEAD = R(cpu_shares=102, cpu_quota=10000, cpu_period=100000, memory_limit_in_bytes=64 * MiB)
SHOWN = {"overhead": {"cpu_period": 100000, "cpu_quota": 10000, "cpu_shares": 102, "memory_limit_in_bytes": 64 * MiB},
         "resources": {"cpu_period": 100000, "cpu_quota": 50000, "cpu_shares": 512, "memory_limit_in_bytes": 256 * MiB}}


async def test_the_pods_cgroup_takes_the_sum_and_a_restart_keeps_it(registry: Registry, kubelet_parent: str) -> None:  # noqa: F811
    """Shares, quota, period and memory land in the pod cgroup's own files
    (v1 cpu.shares, cpu.cfs_quota_us, memory.limit_in_bytes; v2 cpu.weight,
    cpu.max, memory.max) as resources plus overhead; the request shows in the
    verbose status, before and after a restart; a second resize changes them."""
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod_in(c, kubelet_parent)
                await _update(c, pod[0], RESIZED, OVERHEAD)
                assert _limits(kubelet_parent) == (_cpu_share(614), 60000, 100000, 320 * MiB)
                assert await _shown(c, pod[0]) == SHOWN
            proc.stop()
            proc = DaemonProcess(d).start()
            async with connect(d.socket) as c:
                assert await _shown(c, pod[0]) == SHOWN
                assert _limits(kubelet_parent) == (_cpu_share(614), 60000, 100000, 320 * MiB)
                cpus = hostfit.online_cpus()
                every = f"0-{max(cpus)}" if len(cpus) > 1 else "0"
                await _update(c, pod[0], R(cpu_shares=2048, cpu_quota=-1, memory_limit_in_bytes=128 * MiB, cpuset_cpus=every))
                assert _limits(kubelet_parent) == (_cpu_share(2048), -1, 100000, 128 * MiB)
                assert _file("cpuset", kubelet_parent, "cpuset.cpus") == every
                assert await _shown(c, pod[0]) == {"overhead": {}, "resources": {
                    "cpu_quota": -1, "cpu_shares": 2048, "memory_limit_in_bytes": 128 * MiB, "cpuset_cpus": every}}
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}
        _no_traceback(proc)


async def test_memory_below_what_the_pod_uses_is_refused_and_nothing_changes(daemon: DaemonProcess, registry: Registry,
                                                                             kubelet_parent: str) -> None:  # noqa: F811
    """40 MiB in the pod's /dev/shm: a 16 MiB limit would make v1 reclaim in
    vain (EBUSY) and v2 OOM-kill; it is refused before the kernel sees it, and
    the shares sent with it are put back. The kubelet retries the resize. On
    v1 a cpuset or a CPU quota below a container's is the kernel's refusal."""
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod_in(c, kubelet_parent)
        try:
            quota = cri.LinuxContainerConfig(resources=R(cpu_quota=50000, cpu_period=100000))
            cid = await _running(c, registry, pod, "filler", linux=quota)
            await _exec(c, cid, "/bin/sh", "-c", "head -c 41943040 /dev/zero > /dev/shm/fill")
            await _update(c, pod[0], R(cpu_shares=300, memory_limit_in_bytes=512 * MiB))
            before = _limits(kubelet_parent)
            status, message = await _refused(c, pod[0], R(cpu_shares=400, memory_limit_in_bytes=16 * MiB))
            assert status == Status.FAILED_PRECONDITION and "resources.memory_limit_in_bytes" in message
            assert "below what the cgroup uses now" in message
            assert _limits(kubelet_parent) == before
            assert (await _shown(c, pod[0]))["resources"] == {"cpu_shares": 300, "memory_limit_in_bytes": 512 * MiB}
            cpus = hostfit.online_cpus()
            if not V2 and len(cpus) > 1:  # v1: a pod's cpuset must hold its children's (the kernel's EBUSY)
                status, message = await _refused(c, pod[0], R(cpu_shares=400, cpuset_cpus="0"))
                assert status == Status.FAILED_PRECONDITION and "resources.cpuset_cpus" in message
                assert _limits(kubelet_parent) == before  # the shares written first are put back
            if not V2:  # v1: nor a CPU quota below a child's (v2 takes it: the lower one bounds)
                status, message = await _refused(c, pod[0], R(cpu_quota=20000, cpu_period=100000))
                assert status == Status.FAILED_PRECONDITION and "resources.cpu_quota" in message, message
                assert _limits(kubelet_parent) == before
            else:
                await _update(c, pod[0], R(cpu_quota=20000, cpu_period=100000))
                assert _limits(kubelet_parent)[1:3] == (20000, 100000)
        finally:
            await _remove_pod(c, pod[0])


def _absent_page_size() -> str:
    return next(size for size in ("64KB", "16MB", "32MB", "512MB", "16GB") if size not in hostfit.hugepage_sizes())


async def test_what_the_host_cannot_apply_is_an_error(daemon: DaemonProcess, kubelet_parent: str) -> None:  # noqa: F811
    """A page size the host lacks, a hugetlb or swap limit where the cgroup
    has no such files, unified files on v1: refused by field, nothing recorded."""
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod_in(c, kubelet_parent)
        try:
            size = _absent_page_size()
            status, message = await _refused(c, pod[0], R(hugepage_limits=[cri.HugepageLimit(page_size=size, limit=2 * MiB)]))
            assert status == Status.INVALID_ARGUMENT and "resources.hugepage_limits[0].page_size" in message
            sizes = hostfit.hugepage_sizes()
            page = "2MB" if "2MB" in sizes else next(iter(sorted(sizes)), None)
            if page is not None:
                file = f"hugetlb.{page}.max" if V2 else f"hugetlb.{page}.limit_in_bytes"
                hugetlb_here = (cgroups.CGROUP_ROOT / ("" if V2 else "hugetlb") / kubelet_parent.strip("/") / file).exists()
                two = 2 * page_bytes(page)
                huge = R(hugepage_limits=[cri.HugepageLimit(page_size=page, limit=two)])
                if hugetlb_here:
                    await _update(c, pod[0], huge)
                    assert int(_file("hugetlb", kubelet_parent, file)) == two
                else:  # these v1 hosts mount no hugetlb hierarchy: containerd would drop the limit; a pod's is refused
                    status, message = await _refused(c, pod[0], huge)
                    assert status == Status.FAILED_PRECONDITION and "resources.hugepage_limits[0]" in message
                    assert "hugetlb" in message
                # the kernel would round a limit down to whole pages (to none, for less than one): refused
                status, message = await _refused(c, pod[0], R(hugepage_limits=[cri.HugepageLimit(page_size=page, limit=two - 1)]))
                assert status == Status.INVALID_ARGUMENT and "not a multiple of its page size" in message
            swap = R(memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=96 * MiB)
            if cgroups.swap_accounting():
                await _update(c, pod[0], swap)
                memsw = _file("memory", kubelet_parent, "memory.swap.max" if V2 else "memory.memsw.limit_in_bytes")
                assert int(memsw) == (32 if V2 else 96) * MiB
            else:
                status, message = await _refused(c, pod[0], swap)
                assert status == Status.FAILED_PRECONDITION and "does not account swap" in message
            if not V2:
                status, message = await _refused(c, pod[0], R(unified={"memory.high": str(64 * MiB)}))
                assert status == Status.INVALID_ARGUMENT and "resources.unified" in message and "cgroup v2 only" in message
            else:
                await _update(c, pod[0], R(unified={"memory.high": str(48 * MiB)}))
                assert int(_file("", kubelet_parent, "memory.high")) == 48 * MiB
        finally:
            await _remove_pod(c, pod[0])


async def test_bad_input_unknown_pods_and_pods_without_a_cgroup_of_their_own(daemon: DaemonProcess) -> None:
    async with connect(daemon.dirs.socket) as c:
        status, message = await _refused(c, "f" * 64, RESIZED)
        assert status == Status.NOT_FOUND
        pod = await _pod_in(c)  # podrt's shared default parent: no pod cgroup to bound
        try:
            for resources, overhead, fragment in [
                (R(cpu_shares=262145), None, "resources.cpu_shares"),
                (R(cpu_quota=5), None, "resources.cpu_quota"),
                (R(memory_limit_in_bytes=MiB), None, "resources.memory_limit_in_bytes"),
                (R(cpuset_cpus="3-1"), None, "resources.cpuset_cpus"),
                (R(oom_score_adj=100), None, "resources.oom_score_adj"),
                (RESIZED, R(cpuset_cpus="0"), "overhead.cpuset_cpus"),
                (RESIZED, R(memory_limit_in_bytes=-5), "overhead.memory_limit_in_bytes"),
            ]:
                status, message = await _refused(c, pod[0], resources, overhead)
                assert (status, fragment in message) == (Status.INVALID_ARGUMENT, True), message
            status, message = await _refused(c, pod[0], RESIZED)
            assert status == Status.FAILED_PRECONDITION and "no cgroup of its own" in message
            await _update(c, pod[0], R())  # nothing to apply: recorded
            assert await _shown(c, pod[0]) == {"overhead": {}, "resources": {}}
            await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod[0]))
            await _update(c, pod[0], RESIZED, OVERHEAD)  # a stopped pod's is recorded, as containerd records it
            assert await _shown(c, pod[0]) == SHOWN
        finally:
            await _remove_pod(c, pod[0])
        status, _ = await _refused(c, pod[0], RESIZED)
        assert status == Status.NOT_FOUND

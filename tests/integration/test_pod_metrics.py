"""The CRI metrics (ListMetricDescriptors, ListPodSandboxMetrics,
StreamPodSandboxMetrics) on the real parts, on whichever cgroup hierarchy the
host runs (these machines' v1 hybrid; v2 in the VM lane): a busy container's
CPU time rises between two calls, its memory is what ContainerStats says, the
pod's interfaces are counted at the pod's level, every metric has a
descriptor with as many label keys as it has values, the configured groups
are all that is collected, and one pass serves the calls of its period."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from podrt.api.runtime import v1 as cri
from podrt.cri.metric_names import GROUPS
from tests.integration.conftest import _network_dirs
from tests.integration.test_containers import (
    _config,
    _create,
    _module_daemon,
    _no_traceback,
    _pod,
    _remove_pod,
    _running,
    _start,
)
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry
from tests.support.slow import FACTOR

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]

Key = tuple[str, tuple[str, ...]]  # (name, label values)


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    """Every group, each call a fresh collection."""
    with _module_daemon(registry, {"stats": {"included_pod_metrics": ["all"], "collection_period": 0}}) as proc:
        yield proc


async def _metrics(c: CriClient) -> dict[str, cri.PodSandboxMetrics]:
    answer = await c.runtime.list_pod_sandbox_metrics(cri.ListPodSandboxMetricsRequest())
    return {p.pod_sandbox_id: p for p in answer.pod_metrics}


def _by_key(metrics: list[cri.Metric]) -> dict[Key, cri.Metric]:
    found = {(m.name, tuple(m.label_values)): m for m in metrics}
    assert len(found) == len(metrics), "two metrics of one name and the same labels"
    return found


async def _descriptors(c: CriClient) -> dict[str, cri.MetricDescriptor]:
    answer = await c.runtime.list_metric_descriptors(cri.ListMetricDescriptorsRequest())
    return {d.name: d for d in answer.descriptors}


def _described(pod: cri.PodSandboxMetrics, descriptors: dict[str, cri.MetricDescriptor]) -> None:
    """What the kubelet needs to turn a metric into a Prometheus sample: a descriptor of its name with one key per value."""
    for m in [*pod.metrics, *(x for cm in pod.container_metrics for x in cm.metrics)]:
        assert m.name in descriptors, m.name
        assert len(m.label_values) == len(descriptors[m.name].label_keys), (m.name, m.label_values)
        assert m.timestamp > 0


@pytest.mark.cgroups  # the readers of both hierarchies; which groups a config selects is the same on both
@pytest.mark.parametrize("pid", [cri.NamespaceMode.POD, cri.NamespaceMode.CONTAINER], ids=["infra", "no-infra"])
async def test_a_busy_pods_metrics(daemon: DaemonProcess, registry: Registry, pid: cri.NamespaceMode) -> None:
    """With an infra process, and without (its network counters read in its pinned netns)."""
    async with connect(daemon.dirs.socket) as c:
        config = pod_config(pid=pid)
        pod = ((await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id, config)
        busy = await _create(c, pod, _config(registry, "busy", command=["/bin/sh", "-c", "while :; do :; done"]))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=busy))
        idle = await _running(c, registry, pod, "idle")
        descriptors = await _descriptors(c)
        assert set(descriptors) == {d.name for descs in GROUPS.values() for d in descs}
        assert descriptors["container_cpu_usage_seconds_total"].label_keys == ["id", "image", "namespace", "pod", "container", "cpu"]
        await asyncio.sleep(1.0 * FACTOR)
        first = (await _metrics(c))[pod[0]]
        await asyncio.sleep(2.5 * FACTOR)
        stats = (await c.runtime.container_stats(cri.ContainerStatsRequest(container_id=busy))).stats
        second = (await _metrics(c))[pod[0]]
        for answer in (first, second):
            _described(answer, descriptors)
        assert {m.container_id for m in second.container_metrics} == {busy, idle}
        image = f"{registry.host}/test/busybox:v1"
        labels = (busy, image, "test", pod[1].metadata.name, "busy")
        before = _by_key(next(m for m in first.container_metrics if m.container_id == busy).metrics)
        after = _by_key(next(m for m in second.container_metrics if m.container_id == busy).metrics)
        cpu = ("container_cpu_usage_seconds_total", (*labels, "total"))
        assert after[cpu].metric_type == cri.MetricType.COUNTER
        assert after[cpu].value.value >= before[cpu].value.value + 1  # a spinning shell: a CPU-second a second
        assert after[cpu].timestamp > before[cpu].timestamp
        # The metrics and ContainerStats read the same cgroup files ms apart, of a
        # shell that allocates nothing: only the kernel's batched per-CPU counters
        # (flushed lazily: up to 64 pages a CPU) may differ between the two reads.
        slack = 64 * 4096 * (os.cpu_count() or 1)
        usage = after[("container_memory_usage_bytes", labels)]
        assert usage.metric_type == cri.MetricType.GAUGE
        for name, value in (("container_memory_usage_bytes", stats.memory.usage_bytes.value),
                            ("container_memory_working_set_bytes", stats.memory.working_set_bytes.value),
                            ("container_memory_rss", stats.memory.rss_bytes.value)):
            assert abs(after[(name, labels)].value.value - value) <= slack, (name, after[(name, labels)].value.value, value)
        assert after[("container_memory_working_set_bytes", labels)].value.value > 0
        assert after[("container_processes", labels)].value.value == 1  # the shell
        assert after[("container_spec_memory_limit_bytes", labels)].value.value == 0  # none asked for
        assert ("container_oom_events_total", labels) in after and ("container_fs_usage_bytes", labels) in after
        assert abs(after[("container_last_seen", labels)].value.value - time.time()) < 60 * FACTOR
        network = _by_key(list(second.metrics))  # the pod's own: its interfaces
        pod_labels = (pod[0], "", "test", pod[1].metadata.name, "POD")
        rx = network[("container_network_receive_bytes_total", (*pod_labels, "eth0"))]
        assert rx.metric_type == cri.MetricType.COUNTER
        assert ("container_network_transmit_errors_total", (*pod_labels, "eth0")) in network
        assert not any(values[-1] == "lo" for _, values in network)  # loopback left out, as cAdvisor does
        streamed = [p async for r in c.runtime.stream_pod_sandbox_metrics(cri.StreamPodSandboxMetricsRequest())
                    for p in r.pod_sandbox_metrics]
        assert [p.pod_sandbox_id for p in streamed] == [pod[0]]
        assert {m.container_id for m in streamed[0].container_metrics} == {busy, idle}
        await c.runtime.stop_container(cri.StopContainerRequest(container_id=idle, timeout=0))
        assert {m.container_id for m in (await _metrics(c))[pod[0]].container_metrics} == {busy}  # running ones only
        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod[0]))
        assert pod[0] not in await _metrics(c)  # ready pods only
        await _remove_pod(c, pod[0])


@pytest.mark.parametrize("groups", [["cpu"], []], ids=["cpu", "none"])
async def test_the_configured_groups_are_all_there_is(registry: Registry, groups: list[str]) -> None:
    """["cpu"]: its metrics and container_last_seen, nothing else (no network,
    no memory); []: container_last_seen alone (CRI-O's default). Calls within
    collection_period get the same pass."""
    with _network_dirs() as d:
        proc = await _start(d, registry, {"stats": {"included_pod_metrics": groups, "collection_period": 30}})
        try:
            async with connect(d.socket) as c:
                wanted = {d.name for g in groups for d in GROUPS[g]} | {"container_last_seen"}
                assert set(await _descriptors(c)) == wanted
                pod = await _pod(c)
                cid = await _running(c, registry, pod, "app")
                first = (await _metrics(c))[pod[0]]
                assert not first.metrics  # network not asked for
                (mine,) = first.container_metrics
                assert mine.container_id == cid and {m.name for m in mine.metrics} == wanted
                await asyncio.sleep(0.5)
                assert (await _metrics(c))[pod[0]] == first  # the same pass (timestamps included) within the 30 s
                await _remove_pod(c, pod[0])
                assert pod[0] in await _metrics(c)  # still that pass's answer
        finally:
            proc.stop()
        assert not audit_daemon_dirs(d)
        _no_traceback(proc)

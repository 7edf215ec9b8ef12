"""The CRI metrics' host-free parts: the hand-written wire encoding read back
by betterproto, label values against their descriptors' keys, the groups
against CRI-O's names, /proc/<pid>/net/dev, and the cache
that lets one pass serve every concurrent caller."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from podrt.aio import Recent
from podrt.api.runtime import v1 as cri
from podrt.config.schema import POD_METRIC_GROUPS
from podrt.container.metrics import ContainerReading, Filesystem, PodReading, Processes
from podrt.container.stats import Sample
from podrt.cri import metric_names as names
from podrt.cri import metrics_convert as mconv
from podrt.host import procfs
from podrt.host.cgroups import DeviceIo, Pressure, PressureLine, Usage
from podrt.model.container import Resources

ALL = frozenset(POD_METRIC_GROUPS)
AT = 1_700_000_000_123_456_789

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 5000000   3500    1    4    0     0          0         0     9000      70    2    3    0     0       0          0
"""


def _reading(usage: Usage | None, groups: frozenset[str] = ALL) -> PodReading:
    resources = Resources(memory_limit=64 << 20, cpu_shares=512, cpu_period=100000, cpu_quota=50000,
                          unified={"memory.min": "1048576"})
    state = SimpleNamespace(id="c" * 64, image_ref="registry.local/app:v1", created_at=AT - 10**10,
                            config=SimpleNamespace(name="app", resources=resources))
    container = ContainerReading(SimpleNamespace(state=state), Sample("c" * 64, AT, usage, 4096, 3),  # type: ignore[arg-type]
                                 Filesystem(10 << 30, 1000, 900), Processes(2, 7, 1))
    pod = SimpleNamespace(state=SimpleNamespace(id="p" * 64, config=SimpleNamespace(namespace="ns", name="web")))
    interfaces = tuple(i for i in procfs.parse_net_dev(NET_DEV) if i.name != "lo")
    return PodReading(pod, AT + 5, interfaces, (container,))  # type: ignore[arg-type]


USAGE = Usage(cpu_ns=7_900_000_000, cpu_user_ns=5_000_000_000, cpu_system_ns=2_900_000_000, cpu_periods=40,
              cpu_throttled_periods=0, memory_bytes=10 << 20, working_set_bytes=8 << 20, rss_bytes=4 << 20,
              processes=3, processes_limit=None, swap_bytes=None, io_devices=(DeviceIo(8, 0, 4096, 0, 1, 0),),
              hugetlb_bytes=(("2MB", 0),), cpu_pressure=Pressure(PressureLine(total_us=3_500_000), PressureLine(total_us=1_000_000)))


def _decoded(reading: PodReading, groups: frozenset[str] = ALL) -> cri.PodSandboxMetrics:
    (pod,) = cri.ListPodSandboxMetricsResponse().parse(mconv.pod_item(reading, groups)).pod_metrics
    return pod


def test_the_wire_encoding_reads_back() -> None:
    pod = _decoded(_reading(USAGE))
    assert pod.pod_sandbox_id == "p" * 64
    rx = next(m for m in pod.metrics if m.name == "container_network_receive_bytes_total")
    assert rx.label_values == ["p" * 64, "", "ns", "web", "POD", "eth0"]  # an empty label is still a value
    assert (rx.value.value, rx.metric_type, rx.timestamp) == (5_000_000, cri.MetricType.COUNTER, AT + 5)
    (ctr,) = pod.container_metrics
    assert ctr.container_id == "c" * 64
    by = {(m.name, tuple(m.label_values[5:])): m for m in ctr.metrics}
    assert all(m.label_values[:5] == ["c" * 64, "registry.local/app:v1", "ns", "web", "app"] for m in ctr.metrics)
    assert by[("container_cpu_usage_seconds_total", ("total",))].value.value == 7  # whole seconds, as CRI-O
    throttled = by[("container_cpu_cfs_throttled_periods_total", ())]
    assert throttled.value.value == 0 and throttled.is_set("value")  # 0 is a value, not an absent one
    ws = by[("container_memory_working_set_bytes", ())]
    assert (ws.value.value, ws.metric_type, ws.timestamp) == (8 << 20, cri.MetricType.GAUGE, AT)
    assert by[("container_memory_failures_total", ("pgfault", "hierarchy"))].metric_type == cri.MetricType.COUNTER
    assert ("container_memory_swap", ()) not in by  # swap not accounted
    assert by[("container_blkio_device_usage_total", ("8:0", "8", "0", "read"))].value.value == 4096
    assert by[("container_fs_usage_bytes", ())].value.value == 4096
    assert by[("container_processes", ())].value.value == 2 and by[("container_threads", ())].value.value == 3
    assert by[("container_threads_max", ())].value.value == 0  # no pids limit
    assert by[("container_spec_cpu_quota", ())].value.value == 50000
    assert by[("container_spec_memory_reservation_limit_bytes", ())].value.value == 1 << 20
    assert by[("container_pressure_cpu_waiting_seconds_total", ())].value.value == 3  # the "some" line
    assert ("container_pressure_io_stalled_seconds_total", ()) not in by  # no io.pressure
    assert by[("container_last_seen", ())].value.value == AT // 10**9


def test_every_metric_matches_its_descriptor() -> None:
    """The kubelet drops a metric without a descriptor, or whose values are not one per key."""
    described = {d.name: d for d in mconv.descriptors(ALL)}
    pod = _decoded(_reading(USAGE))
    metrics = [*pod.metrics, *pod.container_metrics[0].metrics]
    for m in metrics:
        assert len(m.label_values) == len(described[m.name].label_keys), m.name
    emitted = {m.name for m in metrics}
    missing = set(described) - emitted - {"container_memory_swap", "container_pressure_memory_stalled_seconds_total",
                                          "container_pressure_memory_waiting_seconds_total",
                                          "container_pressure_io_stalled_seconds_total",
                                          "container_pressure_io_waiting_seconds_total"}
    assert not missing  # and nothing is described that is never served (but what this host lacks)


def test_the_groups_are_cri_os() -> None:
    assert set(mconv.CONTAINER_GROUPS) | {"network"} == set(POD_METRIC_GROUPS) == set(names.GROUPS) - {names.ALWAYS}
    only_cpu = _decoded(_reading(USAGE), frozenset({"cpu"}))
    assert not only_cpu.metrics
    assert {m.name for m in only_cpu.container_metrics[0].metrics} == {d.name for d in names.GROUPS["cpu"]} | {"container_last_seen"}
    assert [d.name for d in mconv.descriptors(frozenset())] == ["container_last_seen"]
    assert not _decoded(_reading(None)).container_metrics  # its cgroup gone meanwhile: it exited


def test_net_dev() -> None:
    lo, eth0 = procfs.parse_net_dev(NET_DEV)
    assert lo.name == "lo" and eth0 == procfs.NetDev("eth0", 5000000, 3500, 1, 4, 9000, 70, 2, 3)
    assert procfs.parse_net_dev("h\nh\nbad: 1 2\n") == []
    assert procfs.net_dev(2**22 + 7, "/proc/self/ns/net") is None  # no such process


async def test_one_pass_serves_its_period_and_concurrent_callers() -> None:
    passes = 0
    gate = asyncio.Event()

    async def collect() -> int:
        nonlocal passes
        passes += 1
        await gate.wait()
        return passes

    recent = Recent(collect, 30.0, "test")
    waiting = [asyncio.ensure_future(recent.get()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [1] * 5 and passes == 1
    assert await recent.get() == 1  # within the period
    fresh = Recent(collect, 0.0, "test")
    assert await fresh.get() == 2 and await fresh.get() == 3  # no period: each call a pass


async def test_a_failed_pass_is_not_kept() -> None:
    calls = 0

    async def collect() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("first")
        return calls

    recent = Recent(collect, 30.0, "test")
    with pytest.raises(OSError):
        await recent.get()
    assert await recent.get() == 2

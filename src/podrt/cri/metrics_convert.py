"""Readings (container/metrics.py) -> ListPodSandboxMetrics' wire bytes.

A hundred pods with every group are ~5000 Metric messages; betterproto builds
and encodes one in tens of microseconds, so they are written here straight
to the wire (as cri/listcache.py joins list items), in the worker thread that
read them. Each PodSandboxMetrics comes out as an element of field 1 of
List- and StreamPodSandboxMetricsResponse, which share that field.

Values are what CRI-O reports: integers (CRI's UInt64Value), so times are
whole seconds; CPU usage carries cpu="total" (the kubelet's cAdvisor reports
no per-CPU usage); network counters are the pod's, labelled container="POD".
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from podrt.api.runtime import v1 as cri
from podrt.container.metrics import ContainerReading, PodReading
from podrt.cri import metric_names as n
from podrt.cri.listcache import entry
from podrt.cri.wire import varint
from podrt.host.cgroups import Usage

NS = 1_000_000_000
COUNTER, GAUGE = 0, 1  # cri.MetricType
_GAUGE = b"\x18\x01"  # Metric.metric_type, field 3 (COUNTER, 0, is proto3's default: not written)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


@functools.lru_cache(maxsize=4096)  # the extra labels repeat: "total", "eth0", a device, a page size
def _label(value: str) -> bytes:
    return _field(b"\x22", value.encode())  # Metric.label_values, field 4


@functools.cache
def _name(name: str) -> bytes:
    return _field(b"\x0a", name.encode())  # Metric.name, field 1


def _value(value: int) -> bytes:
    """Metric.value (field 5), a UInt64Value: set, even when 0."""
    value = max(0, value)
    return _field(b"\x2a", b"\x08" + varint(value) if value else b"")


class Metrics:
    """Metric messages of one pod or container: its base labels, one timestamp."""

    def __init__(self, at: int, base: tuple[str, ...]) -> None:
        self.at = at
        self._head = b"\x10" + varint(at)  # Metric.timestamp, field 2, ns
        self._base = b"".join(_label(v) for v in base)
        self.parts: list[bytes] = []

    def add(self, desc: n.Desc, kind: int, value: int, *extra: str) -> None:
        body = [_name(desc.name), self._head, _GAUGE if kind == GAUGE else b"", self._base]
        body.extend(map(_label, extra))
        body.append(_value(value))
        data = b"".join(body)
        self.parts.append(b"\x12" + varint(len(data)) + data)  # field 2 of both PodSandboxMetrics and ContainerMetrics


def _cpu(m: Metrics, u: Usage, _r: ContainerReading) -> None:
    m.add(n.CPU_USER, COUNTER, u.cpu_user_ns // NS)
    m.add(n.CPU_SYSTEM, COUNTER, u.cpu_system_ns // NS)
    m.add(n.CPU_USAGE, COUNTER, u.cpu_ns // NS, "total")
    m.add(n.CFS_PERIODS, COUNTER, u.cpu_periods)
    m.add(n.CFS_THROTTLED_PERIODS, COUNTER, u.cpu_throttled_periods)
    m.add(n.CFS_THROTTLED_SECONDS, COUNTER, u.cpu_throttled_ns // NS)


def _disk(m: Metrics, _u: Usage, r: ContainerReading) -> None:
    if r.filesystem is not None:
        m.add(n.FS_INODES_FREE, GAUGE, r.filesystem.inodes_free)
        m.add(n.FS_INODES_TOTAL, GAUGE, r.filesystem.inodes_total)
        m.add(n.FS_LIMIT, GAUGE, r.filesystem.capacity_bytes)
    m.add(n.FS_USAGE, GAUGE, r.sample.writable_bytes)


def _disk_io(m: Metrics, u: Usage, _r: ContainerReading) -> None:
    """Per device, named "major:minor" as CRI-O names it (cAdvisor resolves a /dev name)."""
    for d in u.io_devices:
        device, major, minor = f"{d.major}:{d.minor}", str(d.major), str(d.minor)
        m.add(n.FS_READ_BYTES, COUNTER, d.read_bytes, device)
        m.add(n.FS_READS, COUNTER, d.reads, device)
        m.add(n.FS_WRITE_BYTES, COUNTER, d.write_bytes, device)
        m.add(n.FS_WRITES, COUNTER, d.writes, device)
        m.add(n.BLKIO_USAGE, COUNTER, d.read_bytes, device, major, minor, "read")
        m.add(n.BLKIO_USAGE, COUNTER, d.write_bytes, device, major, minor, "write")


def _hugetlb(m: Metrics, u: Usage, _r: ContainerReading) -> None:
    for size, used in u.hugetlb_bytes:
        m.add(n.HUGETLB_USAGE, GAUGE, used, size)


def _memory(m: Metrics, u: Usage, _r: ContainerReading) -> None:
    m.add(n.MEMORY_CACHE, GAUGE, u.cache_bytes)
    m.add(n.MEMORY_RSS, GAUGE, u.rss_bytes)
    m.add(n.MEMORY_MAPPED_FILE, GAUGE, u.mapped_file_bytes)
    if u.swap_bytes is not None:  # not accounted on this host: nothing to tell
        m.add(n.MEMORY_SWAP, GAUGE, u.swap_bytes)
    m.add(n.MEMORY_FAILCNT, COUNTER, u.limit_hits)
    m.add(n.MEMORY_USAGE, GAUGE, u.memory_bytes)
    m.add(n.MEMORY_MAX_USAGE, GAUGE, u.memory_max_bytes)
    m.add(n.MEMORY_WORKING_SET, GAUGE, u.working_set_bytes)
    for kind, count in (("pgfault", u.page_faults), ("pgmajfault", u.major_page_faults)):
        for scope in ("container", "hierarchy"):
            m.add(n.MEMORY_FAILURES, COUNTER, count, kind, scope)


def _oom(m: Metrics, u: Usage, _r: ContainerReading) -> None:
    m.add(n.OOM_EVENTS, COUNTER, u.oom_kills)


def _process(m: Metrics, u: Usage, r: ContainerReading) -> None:
    if r.processes is not None:
        m.add(n.FILE_DESCRIPTORS, GAUGE, r.processes.descriptors)
        m.add(n.PROCESSES, GAUGE, r.processes.count)
        m.add(n.SOCKETS, GAUGE, r.processes.sockets)
    m.add(n.THREADS, GAUGE, u.processes)  # pids.current counts tasks
    m.add(n.THREADS_MAX, GAUGE, u.processes_limit or 0)


def _spec(m: Metrics, _u: Usage, r: ContainerReading) -> None:
    """From the container's resources as last set (CreateContainer, UpdateContainerResources); 0 is none."""
    res = r.view.state.config.resources
    m.add(n.SPEC_MEMORY_LIMIT, GAUGE, res.memory_limit)
    m.add(n.SPEC_SWAP_LIMIT, GAUGE, res.memory_swap_limit)
    reservation = res.unified.get("memory.min", "0")
    m.add(n.SPEC_RESERVATION, GAUGE, int(reservation) if reservation.isdigit() else 0)
    m.add(n.SPEC_CPU_SHARES, GAUGE, res.cpu_shares)
    m.add(n.SPEC_CPU_PERIOD, GAUGE, res.cpu_period)
    if res.cpu_quota > 0:
        m.add(n.SPEC_CPU_QUOTA, GAUGE, res.cpu_quota)
    m.add(n.START_TIME, GAUGE, r.view.state.created_at // NS)


def _pressure(m: Metrics, u: Usage, _r: ContainerReading) -> None:
    """v2 with PSI: stalled is the "full" line's total, waiting the "some" one's."""
    for pressure, (stalled, waiting) in ((u.cpu_pressure, n.PSI_CPU), (u.memory_pressure, n.PSI_MEMORY),
                                         (u.io_pressure, n.PSI_IO)):
        if pressure is not None:
            m.add(stalled, COUNTER, pressure.full.total_us // 1_000_000)
            m.add(waiting, COUNTER, pressure.some.total_us // 1_000_000)


CONTAINER_GROUPS: dict[str, Callable[[Metrics, Usage, ContainerReading], None]] = {
    "cpu": _cpu, "disk": _disk, "diskIO": _disk_io, "hugetlb": _hugetlb, "memory": _memory,
    "oom": _oom, "process": _process, "spec": _spec, "pressure": _pressure,
}


def _network(m: Metrics, r: PodReading) -> None:
    for i in r.interfaces:
        for desc, value in ((n.NET_RX_BYTES, i.rx_bytes), (n.NET_RX_PACKETS, i.rx_packets),
                            (n.NET_RX_DROPPED, i.rx_dropped), (n.NET_RX_ERRORS, i.rx_errors),
                            (n.NET_TX_BYTES, i.tx_bytes), (n.NET_TX_PACKETS, i.tx_packets),
                            (n.NET_TX_DROPPED, i.tx_dropped), (n.NET_TX_ERRORS, i.tx_errors)):
            m.add(desc, COUNTER, value, i.name)


def container_metrics(r: ContainerReading, namespace: str, pod: str, groups: frozenset[str]) -> bytes | None:
    """A ContainerMetrics (field 3 of PodSandboxMetrics); None once its cgroup is gone (it exited meanwhile)."""
    usage = r.sample.cgroup
    if usage is None:
        return None
    s = r.view.state
    m = Metrics(r.sample.at, (s.id, s.image_ref, namespace, pod, s.config.name))
    m.add(n.LAST_SEEN, GAUGE, m.at // NS)
    for group, emit in CONTAINER_GROUPS.items():
        if group in groups:
            emit(m, usage, r)
    return _field(b"\x1a", _field(b"\x0a", s.id.encode()) + b"".join(m.parts))


def pod_item(r: PodReading, groups: frozenset[str]) -> bytes:
    """A PodSandboxMetrics as an element of field 1 of either response."""
    s = r.view.state
    ns, name = s.config.namespace, s.config.name
    m = Metrics(r.at, (s.id, "", ns, name, "POD"))
    if "network" in groups:
        _network(m, r)
    containers = [c for c in (container_metrics(x, ns, name, groups) for x in r.containers) if c is not None]
    return entry(b"".join((_field(b"\x0a", s.id.encode()), *m.parts, *containers)))


def descriptors(groups: frozenset[str]) -> list[cri.MetricDescriptor]:
    return [cri.MetricDescriptor(name=d.name, help=d.help, label_keys=list(d.label_keys)) for d in n.described(groups)]

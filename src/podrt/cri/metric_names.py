"""The metrics of ListPodSandboxMetrics: cAdvisor's names and help texts (those
the kubelet serves on /metrics/cadvisor), grouped as CRI-O groups them for its
`included_pod_metrics` (config.schema.POD_METRIC_GROUPS). Every metric has
CRI-O's label keys, "id", "image", "namespace", "pod", "container", then its
own: the kubelet turns each descriptor into a Prometheus description and
drops a metric whose label values do not match its keys one for one.
"""

from __future__ import annotations

import attrs

BASE_LABELS = ("id", "image", "namespace", "pod", "container")
ALWAYS = ""  # the group of what every configuration reports


@attrs.frozen
class Desc:
    name: str
    help: str
    extra: tuple[str, ...] = ()  # label keys after BASE_LABELS

    @property
    def label_keys(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra


def _d(name: str, help_text: str, *extra: str) -> Desc:
    return Desc(name, help_text, extra)


LAST_SEEN = _d("container_last_seen", "Last time a container was seen by the exporter")

CPU_USER = _d("container_cpu_user_seconds_total", "Cumulative user CPU time consumed in seconds.")
CPU_SYSTEM = _d("container_cpu_system_seconds_total", "Cumulative system CPU time consumed in seconds.")
CPU_USAGE = _d("container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", "cpu")
CFS_PERIODS = _d("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.")
CFS_THROTTLED_PERIODS = _d("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.")
CFS_THROTTLED_SECONDS = _d("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.")

FS_INODES_FREE = _d("container_fs_inodes_free", "Number of free inodes.")
FS_INODES_TOTAL = _d("container_fs_inodes_total", "Total number of inodes.")
FS_LIMIT = _d("container_fs_limit_bytes", "Filesystem limit in bytes.")
FS_USAGE = _d("container_fs_usage_bytes", "Current filesystem usage in bytes.")

FS_READ_BYTES = _d("container_fs_reads_bytes_total", "Cumulative count of bytes read", "device")
FS_READS = _d("container_fs_reads_total", "Cumulative count of reads completed", "device")
FS_WRITE_BYTES = _d("container_fs_writes_bytes_total", "Cumulative count of bytes written", "device")
FS_WRITES = _d("container_fs_writes_total", "Cumulative count of writes completed", "device")
BLKIO_USAGE = _d("container_blkio_device_usage_total", "Blkio Device bytes usage", "device", "major", "minor", "operation")

HUGETLB_USAGE = _d("container_hugetlb_usage_bytes", "Current hugepage usage", "pagesize")

MEMORY_CACHE = _d("container_memory_cache", "Number of bytes of page cache memory.")
MEMORY_RSS = _d("container_memory_rss", "Size of RSS in bytes.")
MEMORY_MAPPED_FILE = _d("container_memory_mapped_file", "Size of memory mapped files in bytes.")
MEMORY_SWAP = _d("container_memory_swap", "Container swap usage in bytes.")
MEMORY_FAILCNT = _d("container_memory_failcnt", "Number of memory usage hits limits")
MEMORY_USAGE = _d("container_memory_usage_bytes",
                  "Current memory usage in bytes, including all memory regardless of when it was accessed")
MEMORY_MAX_USAGE = _d("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes")
MEMORY_WORKING_SET = _d("container_memory_working_set_bytes", "Current working set in bytes.")
MEMORY_FAILURES = _d("container_memory_failures_total", "Cumulative count of memory allocation failures.",
                     "failure_type", "scope")


def _net(direction: str, what: str, help_text: str) -> Desc:
    return _d(f"container_network_{direction}_{what}_total", help_text, "interface")


NET_RX_BYTES = _net("receive", "bytes", "Cumulative count of bytes received")
NET_RX_PACKETS = _net("receive", "packets", "Cumulative count of packets received")
NET_RX_DROPPED = _net("receive", "packets_dropped", "Cumulative count of packets dropped while receiving")
NET_RX_ERRORS = _net("receive", "errors", "Cumulative count of errors encountered while receiving")
NET_TX_BYTES = _net("transmit", "bytes", "Cumulative count of bytes transmitted")
NET_TX_PACKETS = _net("transmit", "packets", "Cumulative count of packets transmitted")
NET_TX_DROPPED = _net("transmit", "packets_dropped", "Cumulative count of packets dropped while transmitting")
NET_TX_ERRORS = _net("transmit", "errors", "Cumulative count of errors encountered while transmitting")

OOM_EVENTS = _d("container_oom_events_total", "Count of out of memory events observed for the container")

FILE_DESCRIPTORS = _d("container_file_descriptors", "Number of open file descriptors for the container.")
PROCESSES = _d("container_processes", "Number of processes running inside the container.")
SOCKETS = _d("container_sockets", "Number of open sockets for the container.")
THREADS = _d("container_threads", "Number of threads running inside the container")
THREADS_MAX = _d("container_threads_max",
                 "Maximum number of threads allowed inside the container, infinity if value is zero")

SPEC_MEMORY_LIMIT = _d("container_spec_memory_limit_bytes", "Memory limit for the container in bytes.")
SPEC_SWAP_LIMIT = _d("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.")
SPEC_RESERVATION = _d("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.")
SPEC_CPU_SHARES = _d("container_spec_cpu_shares", "CPU share of the container.")
SPEC_CPU_PERIOD = _d("container_spec_cpu_period", "CPU period of the container.")
SPEC_CPU_QUOTA = _d("container_spec_cpu_quota", "CPU quota of the container.")
START_TIME = _d("container_start_time_seconds", "Start time of the container since unix epoch in seconds.")


def _psi(resource: str, label: str) -> tuple[Desc, Desc]:
    return (_d(f"container_pressure_{resource}_stalled_seconds_total",
               f"Total time duration no tasks in the container could make progress due to {label} congestion."),
            _d(f"container_pressure_{resource}_waiting_seconds_total",
               f"Total time duration tasks in the container have waited due to {label} congestion."))


PSI_CPU, PSI_MEMORY, PSI_IO = _psi("cpu", "CPU"), _psi("memory", "memory"), _psi("io", "IO")

GROUPS: dict[str, tuple[Desc, ...]] = {
    ALWAYS: (LAST_SEEN,),
    "cpu": (CPU_USER, CPU_SYSTEM, CPU_USAGE, CFS_PERIODS, CFS_THROTTLED_PERIODS, CFS_THROTTLED_SECONDS),
    "disk": (FS_INODES_FREE, FS_INODES_TOTAL, FS_LIMIT, FS_USAGE),
    "diskIO": (FS_READ_BYTES, FS_READS, FS_WRITE_BYTES, FS_WRITES, BLKIO_USAGE),
    "hugetlb": (HUGETLB_USAGE,),
    "memory": (MEMORY_CACHE, MEMORY_RSS, MEMORY_MAPPED_FILE, MEMORY_SWAP, MEMORY_FAILCNT, MEMORY_USAGE,
               MEMORY_MAX_USAGE, MEMORY_WORKING_SET, MEMORY_FAILURES),
    "network": (NET_RX_BYTES, NET_RX_PACKETS, NET_RX_DROPPED, NET_RX_ERRORS,
                NET_TX_BYTES, NET_TX_PACKETS, NET_TX_DROPPED, NET_TX_ERRORS),
    "oom": (OOM_EVENTS,),
    "process": (FILE_DESCRIPTORS, PROCESSES, SOCKETS, THREADS, THREADS_MAX),
    "spec": (SPEC_MEMORY_LIMIT, SPEC_SWAP_LIMIT, SPEC_RESERVATION, SPEC_CPU_SHARES, SPEC_CPU_PERIOD, SPEC_CPU_QUOTA,
             START_TIME),
    "pressure": (*PSI_CPU, *PSI_MEMORY, *PSI_IO),
}


def described(groups: frozenset[str]) -> list[Desc]:
    """The descriptors of `groups` and of what is always reported, in the table's order."""
    return [d for group, descs in GROUPS.items() if group == ALWAYS or group in groups for d in descs]

"""Usage samples -> CRI stats messages (ContainerStats, PodSandboxStats, FilesystemUsage)."""

from __future__ import annotations

from pathlib import Path

from podrt.api.runtime import v1 as cri
from podrt.container.manager import ContainerView
from podrt.container.stats import PodSample, Sample
from podrt.cri import sandbox_convert
from podrt.cri.fields import or_unset
from podrt.host import cgroups
from podrt.network.links import Interface
from podrt.sandbox.manager import SandboxView

DEFAULT_INTERFACE = "eth0"  # what CNI's bridge plugin names the pod's end, as the kubelet assumes


def _u64(value: int) -> cri.UInt64Value:
    return cri.UInt64Value(value=max(0, value))


def fs_usage(where: Path, used: int, inodes: int, at: int) -> cri.FilesystemUsage:
    return cri.FilesystemUsage(timestamp=at, fs_id=cri.FilesystemIdentifier(mountpoint=str(where)),
                               used_bytes=_u64(used), inodes_used=_u64(inodes))


def _psi_data(line: cgroups.PressureLine) -> cri.PsiData:
    return cri.PsiData(total=line.total_us, avg10=line.avg10, avg60=line.avg60, avg300=line.avg300)


def _psi(p: cgroups.Pressure | None) -> cri.PsiStats | None:
    """v2 pressure (kernel PSI), as the kubelet's KubeletPSI feature reads it. The
    total is the kernel's microseconds, as cAdvisor and containerd pass it on."""
    return cri.PsiStats(full=_psi_data(p.full), some=_psi_data(p.some)) if p is not None else None


def _cpu(at: int, usage: cgroups.Usage | None, nano_cores: int | None) -> cri.CpuUsage | None:
    if usage is None:
        return None
    return cri.CpuUsage(timestamp=at, usage_core_nano_seconds=_u64(usage.cpu_ns),
                        usage_nano_cores=or_unset(_u64(nano_cores) if nano_cores is not None else None),
                        psi=or_unset(_psi(usage.cpu_pressure)))


def _memory(at: int, usage: cgroups.Usage | None) -> cri.MemoryUsage | None:
    if usage is None:
        return None
    available = _u64(usage.limit_bytes - usage.working_set_bytes) if usage.limit_bytes is not None else None
    return cri.MemoryUsage(timestamp=at, working_set_bytes=_u64(usage.working_set_bytes), available_bytes=or_unset(available),
                           usage_bytes=_u64(usage.memory_bytes), rss_bytes=_u64(usage.rss_bytes),
                           page_faults=_u64(usage.page_faults), major_page_faults=_u64(usage.major_page_faults),
                           psi=or_unset(_psi(usage.memory_pressure)))


def _swap(at: int, usage: cgroups.Usage | None) -> cri.SwapUsage | None:
    """Only where the host accounts for swap (v2 memory.swap.*, v1 memsw)."""
    if usage is None or usage.swap_bytes is None:
        return None
    available = _u64(usage.swap_limit_bytes - usage.swap_bytes) if usage.swap_limit_bytes is not None else None
    return cri.SwapUsage(timestamp=at, swap_usage_bytes=_u64(usage.swap_bytes), swap_available_bytes=or_unset(available))


def _io(at: int, usage: cgroups.Usage | None) -> cri.IoUsage | None:
    """CRI's IoUsage carries pressure alone (v2)."""
    if usage is None or usage.io_pressure is None:
        return None
    return cri.IoUsage(timestamp=at, psi=or_unset(_psi(usage.io_pressure)))


def container_stats(view: ContainerView, sample: Sample, writable_fs: Path) -> cri.ContainerStats:
    s = view.state
    return cri.ContainerStats(
        attributes=cri.ContainerAttributes(id=s.id, metadata=cri.ContainerMetadata(name=s.config.name, attempt=s.config.attempt),
                                           labels=dict(s.config.labels), annotations=dict(s.config.annotations)),
        cpu=or_unset(_cpu(sample.at, sample.cgroup, sample.nano_cores)),
        memory=or_unset(_memory(sample.at, sample.cgroup)),
        writable_layer=fs_usage(writable_fs, sample.writable_bytes, sample.writable_inodes, sample.at),
        swap=or_unset(_swap(sample.at, sample.cgroup)), io=or_unset(_io(sample.at, sample.cgroup)))


def _interface(i: Interface) -> cri.NetworkInterfaceUsage:
    return cri.NetworkInterfaceUsage(name=i.name, rx_bytes=_u64(i.rx_bytes), rx_errors=_u64(i.rx_errors),
                                     tx_bytes=_u64(i.tx_bytes), tx_errors=_u64(i.tx_errors))


def pod_stats(view: SandboxView, sample: PodSample, containers: list[cri.ContainerStats]) -> cri.PodSandboxStats:
    cfg = view.state.config
    wired = [i for i in sample.interfaces if i.name != "lo"]
    default = next((i for i in wired if i.name == DEFAULT_INTERFACE), wired[0] if wired else None)
    network = None
    if sample.interfaces:
        network = cri.NetworkUsage(timestamp=sample.at, default_interface=or_unset(_interface(default) if default else None),
                                   interfaces=[_interface(i) for i in wired])
    process = cri.ProcessUsage(timestamp=sample.at, process_count=_u64(sample.cgroup.processes)) if sample.cgroup else None
    return cri.PodSandboxStats(
        attributes=cri.PodSandboxAttributes(id=view.state.id, metadata=sandbox_convert.metadata(cfg),
                                            labels=sandbox_convert.labels(view), annotations=dict(cfg.annotations)),
        linux=cri.LinuxPodSandboxStats(cpu=or_unset(_cpu(sample.at, sample.cgroup, sample.nano_cores)),
                                       memory=or_unset(_memory(sample.at, sample.cgroup)),
                                       network=or_unset(network), process=or_unset(process), containers=containers,
                                       io=or_unset(_io(sample.at, sample.cgroup))))

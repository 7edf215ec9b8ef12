"""What the stats say on this host's cgroup hierarchy, for one fixed workload,
so v1 and v2 can be set side by side (run it on the host, and in the cgroup-v2
guest: `tests/vm/lane.py run --command '.venv/bin/python benchmarks/bench_cgroups.py'`).

One pod (host network) with three containers: `spin` (a shell loop held to half
a core by a CFS quota), `mem` (40 MiB written to /dev/shm, charged to it,
under a 128 MiB limit) and `idle` (sleep). After --settle seconds it
prints each container's ContainerStats and the pod's PodSandboxStats, then times
ContainerStats, ListContainerStats and PodSandboxStats (p50/p90).

Run as root: .venv/bin/python benchmarks/bench_cgroups.py [--settle 5] [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from betterproto import serialized_on_wire
from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from bench_containers import IMAGE_REPO, container_config, pod_config  # noqa: E402  beside this script
from common import busybox_daemon, pct  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from podrt.host import cgroups  # noqa: E402

MiB = 1 << 20
WORKLOADS = {
    "spin": (("/bin/sh", "-c", "while :; do :; done"), cri.LinuxContainerResources(cpu_quota=50000, cpu_period=100000)),
    "mem": (("/bin/sh", "-c", "head -c 41943040 /dev/zero > /dev/shm/f; exec sleep 100000"),
            cri.LinuxContainerResources(memory_limit_in_bytes=128 * MiB)),
    "idle": (("/bin/sleep", "100000"), cri.LinuxContainerResources()),
}


def _v(value: cri.UInt64Value) -> str:
    return str(value.value) if serialized_on_wire(value) else "-"


def _row(name: str, cpu: cri.CpuUsage, mem: cri.MemoryUsage, extra: str) -> str:
    return (f"{name:>6} | {_v(cpu.usage_nano_cores):>11} | {cpu.usage_core_nano_seconds.value / 1e9:8.2f} | "
            f"{mem.working_set_bytes.value / MiB:8.1f} | {mem.usage_bytes.value / MiB:8.1f} | {mem.rss_bytes.value / MiB:6.1f} | "
            f"{_v(mem.page_faults):>8} | {_v(mem.available_bytes):>10} | {extra}")


async def _timed(calls: int, call) -> str:  # type: ignore[no-untyped-def]
    took = []
    for _ in range(calls):
        t = time.perf_counter()
        await call()
        took.append(time.perf_counter() - t)
    return f"p50 {pct(took, .5) * 1000:.2f} ms, p90 {pct(took, .9) * 1000:.2f} ms"


async def bench(sock: Path, image: str, settle: float, calls: int) -> None:
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    try:
        await cri.ImageServiceStub(ch).pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
        cfg = pod_config()
        pod = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
        ids = {}
        for name, (command, resources) in WORKLOADS.items():
            config = container_config(image, name, command)
            config.linux.resources = resources
            ids[name] = (await rt.create_container(cri.CreateContainerRequest(
                pod_sandbox_id=pod, config=config, sandbox_config=cfg))).container_id
            await rt.start_container(cri.StartContainerRequest(container_id=ids[name]))
        await rt.list_container_stats(cri.ListContainerStatsRequest())  # the first sample of each: no rate yet
        await asyncio.sleep(settle)
        print(f"hierarchy: {cgroups.mode().value}; stats {settle:.0f} s after start")
        print("  name | nano cores  |  CPU s   |  WS MiB  | use MiB  | RSS MiB | faults  | avail B    | swap / psi")
        for st in (await rt.list_container_stats(cri.ListContainerStatsRequest())).stats:
            psi = f"cpu some {st.cpu.psi.some.total} us" if serialized_on_wire(st.cpu.psi) else "no psi"
            swap = f"swap {_v(st.swap.swap_usage_bytes)} B" if serialized_on_wire(st.swap) else "no swap"
            print(_row(st.attributes.metadata.name, st.cpu, st.memory, f"{swap}, {psi}"))
        linux = (await rt.pod_sandbox_stats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod))).stats.linux
        print(_row("pod", linux.cpu, linux.memory, f"processes {_v(linux.process.process_count)}"))
        one = ids["mem"]
        print("ContainerStats:", await _timed(calls, lambda: rt.container_stats(cri.ContainerStatsRequest(container_id=one))))
        print("ListContainerStats (3):", await _timed(calls, lambda: rt.list_container_stats(cri.ListContainerStatsRequest())))
        print("PodSandboxStats:", await _timed(calls, lambda: rt.pod_sandbox_stats(cri.PodSandboxStatsRequest(pod_sandbox_id=pod))))
        await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    finally:
        ch.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    with busybox_daemon(IMAGE_REPO, ready_timeout=300) as (sock, image, _pid):  # 300: the TCG guest is slow
        asyncio.run(bench(sock, image, args.settle, args.calls))

if __name__ == "__main__":
    main()

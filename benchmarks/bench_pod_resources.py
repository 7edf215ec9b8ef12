"""UpdatePodSandboxResources with 100 pods present: ms per call (p50/p90) and
the daemon's CPU per call, one call at a time and 100 at once.

Each pod (host network: no CNI) runs in a cgroup parent of its own, as the
kubelet's `pod<uid>`; the calls go round the pods, alternating two sizes so
every call changes the files (shares or weight, quota, memory). Verbose
PodSandboxStatus and Version (what any call costs over grpclib) are timed
beside it for scale.

Run as root: .venv/bin/python benchmarks/bench_pod_resources.py [--pods 100] [--calls 1000]
(in the test lock when the suite may run: flock -o /work/tmp/pytest.lock ...)
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from common import cpu_seconds, pct, socket_path, wait_ready, write_config  # noqa: E402  beside this script

from podrt.api.runtime import v1 as cri  # noqa: E402
from podrt.host import cgroups  # noqa: E402
from tests.support.daemon import DaemonDirs  # noqa: E402
from tests.support.leaks import scrub_daemon_dirs  # noqa: E402
from tests.support.pods import host_ns, pod_config  # noqa: E402

MiB = 1 << 20
SIZES = [cri.LinuxContainerResources(cpu_shares=512, cpu_quota=50000, cpu_period=100000, memory_limit_in_bytes=256 * MiB),
         cri.LinuxContainerResources(cpu_shares=1024, cpu_quota=80000, cpu_period=100000, memory_limit_in_bytes=384 * MiB)]
OVERHEAD = cri.LinuxContainerResources(cpu_shares=102, cpu_quota=10000, cpu_period=100000, memory_limit_in_bytes=32 * MiB)


async def timed(pid: int, calls: list[Callable[[], Awaitable[object]]], burst: int = 1) -> tuple[list[float], float]:
    """(seconds per call, daemon CPU seconds per call), `burst` calls at a time."""
    took: list[float] = []
    cpu0 = cpu_seconds(pid)

    async def one(call: Callable[[], Awaitable[object]]) -> None:
        t = time.perf_counter()
        await call()
        took.append(time.perf_counter() - t)

    for i in range(0, len(calls), burst):
        await asyncio.gather(*(one(c) for c in calls[i:i + burst]))
    return took, (cpu_seconds(pid) - cpu0) / len(calls)


def row(name: str, took: list[float], cpu: float) -> str:
    return (f"{name:<42} p50 {pct(took, .5) * 1000:7.2f} ms  p90 {pct(took, .9) * 1000:7.2f} ms  "
            f"daemon CPU {cpu * 1000:6.2f} ms/call")


async def bench(sock: Path, pid: int, pods: int, calls: int) -> None:
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    ids = []
    try:
        for _ in range(pods):
            linux = host_ns(network=True)
            linux.cgroup_parent = f"/podrtbench-{uuid.uuid4().hex[:12]}"
            ids.append((await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config(linux=linux)))).pod_sandbox_id)
        print(f"hierarchy {cgroups.mode().value}; {pods} pods, each in a cgroup parent of its own")

        def update(n: int) -> Callable[[], Awaitable[object]]:
            req = cri.UpdatePodSandboxResourcesRequest(pod_sandbox_id=ids[n % pods], resources=SIZES[(n // pods) % 2],
                                                       overhead=OVERHEAD)
            return lambda: rt.update_pod_sandbox_resources(req)

        def status(n: int) -> Callable[[], Awaitable[object]]:
            return lambda: rt.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=ids[n % pods], verbose=True))

        def version() -> Awaitable[object]:
            return rt.version(cri.VersionRequest())

        await timed(pid, [update(n) for n in range(pods)])  # warm: first writes, first records
        print(row("UpdatePodSandboxResources, one at a time", *await timed(pid, [update(n) for n in range(calls)])))
        print(row(f"UpdatePodSandboxResources, {pods} at once", *await timed(pid, [update(n) for n in range(calls)], pods)))
        print(row("PodSandboxStatus verbose, one at a time", *await timed(pid, [status(n) for n in range(calls)])))
        print(row("Version (the floor of any call)", *await timed(pid, [version] * calls)))
    finally:
        for pod_id in ids:
            await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        ch.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="podrt-bench-"))
    (base / "cni").mkdir()
    cfg = write_config(base)
    proc = subprocess.Popen([sys.executable, "-m", "podrt.cli", "serve", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(base / "daemon.log", "wb"))
    try:
        asyncio.run(wait_ready(socket_path(base)))
        asyncio.run(bench(socket_path(base), proc.pid, args.pods, args.calls))
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        scrub_daemon_dirs(DaemonDirs(base))
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""RunPodSandbox / StopPodSandbox / RemovePodSandbox latency over the socket,
concurrent creation wall time, and ListPodSandbox with many pods.

Run as root: .venv/bin/python benchmarks/bench_sandbox.py [--cycles 50] [--list-pods 1000] [--pid pod]
Uses its own CNI network (bridge podrtbench0, 10.233.128.0/22) for the pods it makes.
Pods are as the kubelet sends them without shareProcessNamespace (pid
CONTAINER: no infra process); `--pid pod` shares it (an infra process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from common import call_raw, pct, socket_path, wait_ready, write_config  # noqa: E402  beside this script

from podrt.api.runtime import v1 as cri  # noqa: E402
from tests.support.daemon import DaemonDirs  # noqa: E402
from tests.support.leaks import scrub_daemon_dirs  # noqa: E402


def setup(base: Path) -> Path:
    (base / "cni").mkdir(parents=True)
    (base / "cni" / "10-bench.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "podrt-bench",
        "plugins": [
            {"type": "bridge", "bridge": "podrtbench0", "isGateway": False, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.233.128.0/22"}]], "dataDir": str(base / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }))
    return write_config(base)


PID = {"container": cri.NamespaceMode.CONTAINER, "pod": cri.NamespaceMode.POD}
pid_mode = PID["container"]  # --pid


def config(host_network: bool = False) -> cri.PodSandboxConfig:
    mode = cri.NamespaceMode.NODE if host_network else cri.NamespaceMode.POD
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=f"b-{uuid.uuid4().hex[:8]}", uid=uuid.uuid4().hex, namespace="bench"),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(network=mode, pid=pid_mode))),
    )


async def list_raw(ch: Channel) -> bytes:
    return await call_raw(ch, "/runtime.v1.RuntimeService/ListPodSandbox", cri.ListPodSandboxRequest())


async def timed(coro) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    await coro
    return time.perf_counter() - t


async def bench(sock: Path, cycles: int, list_pods: int) -> None:
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    try:
        run, stop, rm = [], [], []
        for _ in range(cycles):
            t = time.perf_counter()
            pid = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=config()))).pod_sandbox_id
            run.append(time.perf_counter() - t)
            stop.append(await timed(rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pid))))
            rm.append(await timed(rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pid))))
        for name, v in (("RunPodSandbox", run), ("StopPodSandbox", stop), ("RemovePodSandbox", rm)):
            print(f"{name}: p50 {pct(v, .5) * 1000:.1f} ms, p90 {pct(v, .9) * 1000:.1f} ms over {cycles} sequential cycles")
        for n in (10, 50):
            t = time.perf_counter()
            ids = await asyncio.gather(*(rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=config())) for _ in range(n)))
            print(f"{n} concurrent RunPodSandbox: {(time.perf_counter() - t) * 1000:.0f} ms wall")
            for r in ids:
                await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=r.pod_sandbox_id))
                await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=r.pod_sandbox_id))
        if list_pods:
            ids = []
            for i in range(0, list_pods, 10):
                batch = await asyncio.gather(*(rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=config(True))) for _ in range(min(10, list_pods - i))))
                ids += [r.pod_sandbox_id for r in batch]
            raw = []
            for _ in range(50):
                t = time.perf_counter()
                data = await list_raw(ch)
                raw.append(time.perf_counter() - t)
            assert len(cri.ListPodSandboxResponse().parse(data).items) >= len(ids)
            print(f"ListPodSandbox with {len(ids)} pods: p50 {pct(raw, .5) * 1000:.1f} ms, p90 {pct(raw, .9) * 1000:.1f} ms"
                  f" ({len(data)} bytes; round trip without client-side decoding)")
            dec = [await timed(rt.list_pod_sandbox(cri.ListPodSandboxRequest())) for _ in range(5)]
            print(f"  the same decoded by a betterproto client: p50 {pct(dec, .5) * 1000:.1f} ms")
            for i in range(0, len(ids), 10):
                await asyncio.gather(*(rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=p)) for p in ids[i:i + 10]))
    finally:
        ch.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--list-pods", type=int, default=1000)
    ap.add_argument("--pid", choices=sorted(PID), default="container", help="the pods' PID namespace mode")
    args = ap.parse_args()
    global pid_mode
    pid_mode = PID[args.pid]
    base = Path(tempfile.mkdtemp(prefix="podrt-bench-"))
    proc = subprocess.Popen([sys.executable, "-m", "podrt.cli", "serve", "--config", str(setup(base))],
                            stdout=subprocess.DEVNULL, stderr=open(base / "daemon.log", "wb"))
    try:
        asyncio.run(wait_ready(socket_path(base)))
        asyncio.run(bench(socket_path(base), args.cycles, args.list_pods))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        scrub_daemon_dirs(DaemonDirs(base))  # pods a failed run left: they outlive the daemon
        subprocess.run(["ip", "link", "del", "podrtbench0"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

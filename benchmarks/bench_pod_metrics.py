"""ListPodSandboxMetrics and StreamPodSandboxMetrics at --pods running pods
(one sleeping container each, in network namespaces on the tests' CNI bridge),
every metric group on (--groups): ms per call (p50, p90), the daemon's CPU per call
(utime + stime from /proc/<pid>/stat over the calls), the answer's size, and
what --concurrent simultaneous calls cost together (one shared pass).

collection_period is 0 (each call collects afresh) unless --period is given:
with a period, calls within it are answered from the pass's encoding.

Run as root, under the tests' lock (it creates pods and the tests' bridge):
  flock -o /work/tmp/pytest.lock .venv/bin/python benchmarks/bench_pod_metrics.py [--pods 100] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

from grpclib.client import Channel
from grpclib.const import Cardinality

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from bench_containers import IMAGE_REPO, run  # noqa: E402  beside this script
from common import RawReply, busybox_daemon, call_raw, cpu_seconds, pct  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from podrt.host import cgroups  # noqa: E402
from tests.integration.conftest import remove_test_bridge  # noqa: E402

LIST = "/runtime.v1.RuntimeService/ListPodSandboxMetrics"
STREAM = "/runtime.v1.RuntimeService/StreamPodSandboxMetrics"


def pod_config() -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=f"m-{uuid.uuid4().hex[:8]}", uid=uuid.uuid4().hex, namespace="bench"),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption())))


async def stream_raw(ch: Channel) -> list[bytes]:
    async with ch.request(STREAM, Cardinality.UNARY_STREAM, cri.StreamPodSandboxMetricsRequest,
                          RawReply) as stream:  # type: ignore[arg-type]
        await stream.send_message(cri.StreamPodSandboxMetricsRequest(), end=True)
        return [m async for m in stream]  # type: ignore[misc]


async def timed(name: str, calls: int, pid: int, call) -> None:  # type: ignore[no-untyped-def]
    took = []
    cpu = cpu_seconds(pid)
    for _ in range(calls):
        t = time.perf_counter()
        await call()
        took.append(time.perf_counter() - t)
    per_call = (cpu_seconds(pid) - cpu) / calls
    print(f"{name}: p50 {pct(took, .5) * 1000:.1f} ms, p90 {pct(took, .9) * 1000:.1f} ms, "
          f"daemon CPU {per_call * 1000:.1f} ms each ({calls} of them)")


async def bench(sock: Path, image: str, pid: int, pods: int, calls: int, concurrent: int) -> None:
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    made = []
    try:
        await cri.ImageServiceStub(ch).pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
        t = time.perf_counter()
        for _ in range(pods):
            cfg = pod_config()
            pod = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
            made.append(pod)
            await run(rt, pod, cfg, image, "app")
        print(f"hierarchy {cgroups.mode().value}; {pods} pods with a container each made in {time.perf_counter() - t:.0f} s")
        answer = await rt.list_pod_sandbox_metrics(cri.ListPodSandboxMetricsRequest())
        metrics = sum(len(p.metrics) + sum(len(c.metrics) for c in p.container_metrics) for p in answer.pod_metrics)
        size = len(await call_raw(ch, LIST, cri.ListPodSandboxMetricsRequest()))
        chunks = await stream_raw(ch)
        print(f"answer: {len(answer.pod_metrics)} pods, {metrics} metrics, {size} bytes; "
              f"the stream: {len(chunks)} message(s), largest {max(map(len, chunks), default=0)} bytes")
        await timed("ListPodSandboxMetrics", calls, pid, lambda: call_raw(ch, LIST, cri.ListPodSandboxMetricsRequest()))
        await timed("StreamPodSandboxMetrics", calls, pid, lambda: stream_raw(ch))

        async def together() -> None:
            await asyncio.gather(*(call_raw(ch, LIST, cri.ListPodSandboxMetricsRequest()) for _ in range(concurrent)))
        await timed(f"rounds of {concurrent} concurrent ListPodSandboxMetrics", max(1, calls // 5), pid, together)
    finally:
        for pod in made:
            await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
            await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
        ch.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--concurrent", type=int, default=10)
    ap.add_argument("--period", type=float, default=0.0)
    ap.add_argument("--groups", default="all", help="included_pod_metrics, comma-separated")
    args = ap.parse_args()
    stats = {"included_pod_metrics": args.groups.split(",") if args.groups else [], "collection_period": args.period}
    try:
        with busybox_daemon(IMAGE_REPO, ready_timeout=300, stats=stats, test_network=True) as (sock, image, pid):
            asyncio.run(bench(sock, image, pid, args.pods, args.calls, args.concurrent))
    finally:
        remove_test_bridge()


if __name__ == "__main__":
    main()

"""The kubelet's pod cycle with a busybox container, on the pod network (the
tests' CNI bridge): RunPodSandbox, CreateContainer, StartContainer, ExecSync
of `true`, StopPodSandbox, RemovePodSandbox; sequential cycles (p50 of each
call and of the whole) and 10 concurrent cycles (wall). Pods are as the
kubelet sends them without shareProcessNamespace (pid CONTAINER): no infra
process, unless --infra (podrt.runtime.drop_infra_ctr = false) or --pid pod.

Run as root: .venv/bin/python benchmarks/bench_pod_cycle.py [--cycles 30] [--infra] [--pid pod]
Uses the tests' bridge (podrttest0): not beside a test run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from common import busybox_daemon, pct, pod_cycle  # noqa: E402  beside this script

from podrt.api.runtime import v1 as cri  # noqa: E402

CALLS = ("run", "create", "start", "exec", "stop", "remove")  # common.pod_cycle's laps


def pod_config(pid: cri.NamespaceMode) -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=f"c-{uuid.uuid4().hex[:8]}", uid=uuid.uuid4().hex, namespace="bench"),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(pid=pid))))


async def cycle(rt: cri.RuntimeServiceStub, image: str, pid: cri.NamespaceMode) -> dict[str, float]:
    sc = cri.LinuxContainerSecurityContext(namespace_options=cri.NamespaceOption(pid=pid))
    ctr = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="app"), image=cri.ImageSpec(image=image),
                              command=["/bin/sleep", "100000"], log_path="app.log",
                              linux=cri.LinuxContainerConfig(security_context=sc))
    return await pod_cycle(rt, pod_config(pid), ctr)


async def bench(sock: Path, image: str, cycles: int, pid: cri.NamespaceMode) -> None:
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    try:
        await cri.ImageServiceStub(ch).pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
        await cycle(rt, image, pid)  # warm: the first pod pays for imports and caches
        runs = [await cycle(rt, image, pid) for _ in range(cycles)]
        whole = [r["cycle"] for r in runs]
        parts = ", ".join(f"{name} {pct([r[name] for r in runs], .5) * 1000:.1f}" for name in CALLS)
        print(f"pod cycle over {cycles} sequential: p50 {pct(whole, .5) * 1000:.0f} ms, p90 {pct(whole, .9) * 1000:.0f} ms "
              f"(p50 ms: {parts})")
        t = time.perf_counter()
        await asyncio.gather(*(cycle(rt, image, pid) for _ in range(10)))
        print(f"10 concurrent pod cycles: {(time.perf_counter() - t) * 1000:.0f} ms wall")
    finally:
        ch.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--infra", action="store_true", help="podrt.runtime.drop_infra_ctr = false: an infra process for every pod")
    ap.add_argument("--pid", choices=("container", "pod"), default="container", help="the pod's PID namespace mode")
    args = ap.parse_args()
    pid = cri.NamespaceMode.POD if args.pid == "pod" else cri.NamespaceMode.CONTAINER
    print(f"pods with pid {args.pid.upper()}{', drop_infra_ctr = false' if args.infra else ''}")
    extra = {"runtime": {"drop_infra_ctr": False}} if args.infra else {}  # none: a podrt before the switch runs it too
    try:
        with busybox_daemon("bench/busybox", test_network=True, **extra) as (sock, image, _):
            asyncio.run(bench(sock, image, args.cycles, pid))
    finally:
        from tests.integration.conftest import TEST_BRIDGE
        subprocess.run(["ip", "link", "del", TEST_BRIDGE], capture_output=True)


if __name__ == "__main__":
    main()

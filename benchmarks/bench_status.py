"""Statuses as critest's benchmark asks them, and the cost of a round trip on
the daemon's loop.

critest -benchmark asks a verbose PodSandboxStatus right after each
RunPodSandbox and a verbose ContainerStatus right after each StartContainer:
every ask is the first for that item (nothing cached), while the creation's
own work may still run on the loop. This does the same with this project's
client, one pod (on the tests' CNI bridge) and one busybox container at a
time, and prints the p50 of those statuses, of a verbose ContainerStatus
asked again at once (cached), and, over 300 calls each back to back, the
round trip and the loop thread's CPU per call (/proc/<pid>/task/<pid>/schedstat)
for Version (the floor: gRPC alone) and the statuses.

Run as root: .venv/bin/python benchmarks/bench_status.py [--items 20]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from bench_loop_lag import loop_thread  # noqa: E402  beside this script
from common import busybox_daemon, pct  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from tests.support.client import connect  # noqa: E402

CALLS = 300


def pod_config() -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=f"st-{uuid.uuid4().hex[:8]}", uid=uuid.uuid4().hex, namespace="bench"),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption())))


async def timed(call: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await call
    return time.perf_counter() - started


async def per_call(pid: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """(round trip, loop thread CPU) per call, in seconds, over CALLS calls back to back."""
    for _ in range(20):
        await call()
    cpu0, started = loop_thread(pid)[0], time.perf_counter()
    for _ in range(CALLS):
        await call()
    return (time.perf_counter() - started) / CALLS, (loop_thread(pid)[0] - cpu0) / CALLS


async def floor(rt: cri.RuntimeServiceStub, pid: int, pod: str, cid: str) -> None:
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "Version": lambda: rt.version(cri.VersionRequest()),
        "PodSandboxStatus verbose": lambda: rt.pod_sandbox_status(
            cri.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)),
        "ContainerStatus verbose": lambda: rt.container_status(cri.ContainerStatusRequest(container_id=cid, verbose=True)),
        "ContainerStatus": lambda: rt.container_status(cri.ContainerStatusRequest(container_id=cid)),
    }
    for name, call in calls.items():
        trip, cpu = await per_call(pid, call)
        print(f"{name:28s} back to back: round trip {trip * 1000:.3f} ms, loop CPU {cpu * 1000:.3f} ms a call")


async def run(sock: Path, image: str, pid: int, items: int) -> None:
    times: dict[str, list[float]] = {"PodSandboxStatus verbose, after RunPodSandbox": [],
                                     "ContainerStatus verbose, after StartContainer": [],
                                     "ContainerStatus verbose, asked again": []}
    pod_after, ctr_after, again = times.values()
    async with connect(sock) as c:
        rt = c.runtime
        await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
        ctr = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="app"), image=cri.ImageSpec(image=image),
                                  command=["sleep", "600"], log_path="app.log")
        for n in range(items + 1):  # the first warms up
            config = pod_config()
            pod = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
            took = [await timed(rt.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)))]
            cid = (await rt.create_container(cri.CreateContainerRequest(
                pod_sandbox_id=pod, config=ctr, sandbox_config=config))).container_id
            await rt.start_container(cri.StartContainerRequest(container_id=cid))
            request = cri.ContainerStatusRequest(container_id=cid, verbose=True)
            took += [await timed(rt.container_status(request)), await timed(rt.container_status(request))]
            if n:
                for kept, t in zip((pod_after, ctr_after, again), took):
                    kept.append(t)
            if n == items:
                await floor(rt, pid, pod, cid)
            await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
            await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    for name, values in times.items():
        print(f"{name:48s} p50 {pct(values, 0.5) * 1000:.2f} ms, p90 {pct(values, 0.9) * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20, help="pods (each with one container) measured")
    args = parser.parse_args()
    try:
        with busybox_daemon("bench/busybox", test_network=True) as (sock, image, pid):
            asyncio.run(run(sock, image, pid, args.items))
    finally:
        subprocess.run(["ip", "link", "del", "podrttest0"], capture_output=True)


if __name__ == "__main__":
    main()

"""List* against Stream* (KEP-5825) with many pods: each pod (host network)
runs one busybox container, and the node holds about as many small images.
For each List/Stream pair: the round trip p50 (the answer kept as bytes, no
client-side decoding), the daemon's CPU per call (its utime + stime from
/proc, over all the calls), the bytes and the messages. The same node is
measured with each --chunk-sizes value ([podrt.api] list_chunk_size): the
daemon restarts on the same root between them (pods and containers outlive it).

Then the calls a kubelet and critest's benchmark make most, on the same node:
ListPodSandbox and ListContainers unfiltered and by a label that matches one
item (each pod and container has its own `n` label), by pod and by state;
PodSandboxStatus and ContainerStatus of a pod on a CNI network (bench_sandbox's
bridge) and its container, verbose (as critest asks) and not; and Version, the
floor of a round trip.

Run as root: .venv/bin/python benchmarks/bench_lists.py [--pods 1000] [--images 1000] [--chunk-sizes 4194304,65536]
[--profile daemon.prof] (the daemon under cProfile; the file is written when it stops)
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
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from bench_sandbox import setup as network_setup  # noqa: E402  beside this script
from common import call_raw, cpu_seconds, pct, socket_path, wait_ready, write_config  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from tests.support.daemon import DaemonDirs  # noqa: E402
from tests.support.fuzz import RawCodec  # noqa: E402
from tests.support.leaks import scrub_daemon_dirs  # noqa: E402
from tests.support.registry import Registry, image, push, serve_busybox  # noqa: E402

# what, service, List method, Stream method, calls measured (stats read every cgroup: fewer)
PAIRS = (
    ("pods", "RuntimeService", "ListPodSandbox", "StreamPodSandboxes", 30),
    ("containers", "RuntimeService", "ListContainers", "StreamContainers", 30),
    ("images", "ImageService", "ListImages", "StreamImages", 30),
    ("container stats", "RuntimeService", "ListContainerStats", "StreamContainerStats", 3),
    ("pod stats", "RuntimeService", "ListPodSandboxStats", "StreamPodSandboxStats", 3),
)


async def list_call(ch: Channel, path: str) -> list[bytes]:
    async with ch.request(path, Cardinality.UNARY_UNARY, bytes, bytes) as s:  # type: ignore[type-var]
        await s.send_message(b"", end=True)
        return [await s.recv_message()]  # type: ignore[list-item]


async def stream_call(ch: Channel, path: str) -> list[bytes]:
    async with ch.request(path, Cardinality.UNARY_STREAM, bytes, bytes) as s:  # type: ignore[type-var]
        await s.send_message(b"", end=True)
        return [m async for m in s]


async def measure(pid: int, calls: int, call: Callable[[], Awaitable[list[bytes]]]) -> tuple[float, float, list[bytes]]:
    """(p50 seconds, daemon CPU seconds per call, the last answer's messages)."""
    await call()  # the list cache filled, as in steady state
    times, got = [], []
    cpu = cpu_seconds(pid)
    for _ in range(calls):
        t = time.perf_counter()
        got = await call()
        times.append(time.perf_counter() - t)
    return pct(times, .5), (cpu_seconds(pid) - cpu) / calls, got


def pod_config(n: int, network: cri.NamespaceMode = cri.NamespaceMode.NODE) -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=f"b-{uuid.uuid4().hex[:8]}", uid=uuid.uuid4().hex, namespace="bench"),
        labels={"app": "bench", "n": str(n)}, linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(network=network))))


async def one_pod(rt: cri.RuntimeServiceStub, busybox: str, n: int,
                  network: cri.NamespaceMode = cri.NamespaceMode.NODE) -> tuple[str, str]:
    """(pod, container): a pod labelled n=`n` running a busybox container labelled the same."""
    cfg = pod_config(n, network)
    pod = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
    ctr = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="app"), image=cri.ImageSpec(image=busybox),
                              command=["/bin/sleep", "100000"], log_path="app.log", labels={"app": "bench", "n": str(n)},
                              linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(
                                  namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.CONTAINER))))
    cid = (await rt.create_container(cri.CreateContainerRequest(pod_sandbox_id=pod, config=ctr, sandbox_config=cfg))).container_id
    await rt.start_container(cri.StartContainerRequest(container_id=cid))
    return pod, cid


async def make_node(sock: Path, reg: Registry, busybox: str, pods: int, images: int) -> list[str]:
    ch = Channel(path=str(sock))
    rt, im = cri.RuntimeServiceStub(ch), cri.ImageServiceStub(ch)
    try:
        await im.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=busybox)))
        made: list[str] = []
        t = time.perf_counter()
        for i in range(0, pods, 10):
            made += [p for p, _ in await asyncio.gather(*(one_pod(rt, busybox, i + j) for j in range(min(10, pods - i))))]
        print(f"made {pods} pods with a running container each in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        for i in range(max(0, images - 2)):  # besides busybox and the builtin pause image
            await push(reg, "bench/img", image({"f": b"%d" % i}, cmd=(f"/bin/x{i}",)), f"t{i}")
            await im.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=f"{reg.host}/bench/img:t{i}")))
        print(f"pushed and pulled {max(0, images - 2)} images in {time.perf_counter() - t:.0f} s")
        return made
    finally:
        ch.close()


async def remove_pods(sock: Path, pods: list[str]) -> None:
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    try:
        for i in range(0, len(pods), 10):
            await asyncio.gather(*(rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=p)) for p in pods[i:i + 10]))
            await asyncio.gather(*(rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=p)) for p in pods[i:i + 10]))
    finally:
        ch.close()


def _messages(got: list[bytes]) -> str:
    sizes = [len(m) for m in got]
    if len(sizes) == 1:
        return f"{sizes[0]} bytes in 1 message"
    return f"{sum(sizes)} bytes in {len(sizes)} messages ({min(sizes)}..{max(sizes)} bytes)" if sizes else "no message"


async def bench(sock: Path, pid: int, chunk: int) -> None:
    print(f"-- list_chunk_size {chunk} bytes")
    ch = Channel(path=str(sock), codec=RawCodec())
    try:
        for what, service, list_method, stream_method, calls in PAIRS:
            for kind, method, call in (("List", list_method, list_call), ("Stream", stream_method, stream_call)):
                path = f"/runtime.v1.{service}/{method}"
                p50, cpu, got = await measure(pid, calls, lambda c=call, p=path: c(ch, p))  # type: ignore[misc]
                print(f"{what:15} {kind:6}: p50 {p50 * 1000:7.1f} ms, daemon CPU {cpu * 1000:6.1f} ms/call, {_messages(got)}")
    finally:
        ch.close()


RT = "/runtime.v1.RuntimeService/"


async def round_trips(ch: Channel, method: str, request: Any, calls: int = 200) -> tuple[float, float, int]:
    """(p50, p90 seconds, the answer's bytes) of `calls` unary calls, the answer kept as bytes."""
    data = await call_raw(ch, RT + method, request)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        data = await call_raw(ch, RT + method, request)
        times.append(time.perf_counter() - t)
    return pct(times, .5), pct(times, .9), len(data)


async def bench_calls(sock: Path, busybox: str, pods: int) -> list[str]:
    """What a kubelet and critest ask most; the networked pod made for the statuses (to remove)."""
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    try:
        pod, cid = await one_pod(rt, busybox, pods, cri.NamespaceMode.POD)  # label n=pods: one more match for none
        one = {"n": str(pods // 2)}
        calls: list[tuple[str, str, Any]] = [
            ("Version (the floor)", "Version", cri.VersionRequest()),
            ("ListPodSandbox, all", "ListPodSandbox", cri.ListPodSandboxRequest()),
            ("ListPodSandbox, label 1 of all", "ListPodSandbox",
             cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector=one))),
            ("ListPodSandbox, state ready", "ListPodSandbox", cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(
                state=cri.PodSandboxStateValue(state=cri.PodSandboxState.SANDBOX_READY)))),
            ("ListPodSandbox, id prefix", "ListPodSandbox",
             cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(id=pod[:12]))),
            ("ListContainers, all", "ListContainers", cri.ListContainersRequest()),
            ("ListContainers, label 1 of all", "ListContainers",
             cri.ListContainersRequest(filter=cri.ContainerFilter(label_selector=one))),
            ("ListContainers, of a pod", "ListContainers",
             cri.ListContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id=pod))),
            ("ListContainers, state running", "ListContainers", cri.ListContainersRequest(filter=cri.ContainerFilter(
                state=cri.ContainerStateValue(state=cri.ContainerState.CONTAINER_RUNNING)))),
            ("PodSandboxStatus", "PodSandboxStatus", cri.PodSandboxStatusRequest(pod_sandbox_id=pod)),
            ("PodSandboxStatus verbose", "PodSandboxStatus", cri.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)),
            ("ContainerStatus", "ContainerStatus", cri.ContainerStatusRequest(container_id=cid)),
            ("ContainerStatus verbose", "ContainerStatus", cri.ContainerStatusRequest(container_id=cid, verbose=True)),
        ]
        print(f"-- single calls ({pods + 1} pods and containers; the statuses' pod on a CNI network)")
        for what, method, request in calls:
            p50, p90, size = await round_trips(ch, method, request)
            print(f"{what:32}: p50 {p50 * 1000:6.2f} ms, p90 {p90 * 1000:6.2f} ms, {size} bytes")
        return [pod]
    finally:
        ch.close()


def start(cfg: Path, base: Path, profile: str | None = None) -> subprocess.Popen[bytes]:
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    proc = subprocess.Popen([sys.executable, *prof, "-m", "podrt.cli", "serve", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(base / "daemon.log", "ab"))
    asyncio.run(wait_ready(socket_path(base), timeout=300))
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--images", type=int, default=None, help="default: as many as pods")
    ap.add_argument("--chunk-sizes", default="4194304,65536")
    ap.add_argument("--profile", help="run the daemon under cProfile, writing this file (when it stops)")
    args = ap.parse_args()
    chunks = [int(c) for c in args.chunk_sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="podrt-bench-"))
    reg, conf = serve_busybox(base, "bench/busybox")
    pods: list[str] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        network_setup(base)  # bench_sandbox's CNI network, for the statuses' pod
        settings: dict[str, Any] = {"image": {"registries_conf": str(conf)}}
        busybox = f"{reg.host}/bench/busybox:v1"
        for n, chunk in enumerate(chunks):
            cfg = write_config(base, api={"list_chunk_size": chunk}, **settings)
            proc = start(cfg, base, args.profile)
            if n == 0:
                pods = asyncio.run(make_node(socket_path(base), reg, busybox, args.pods,
                                             args.pods if args.images is None else args.images))
                pods += asyncio.run(bench_calls(socket_path(base), busybox, args.pods))
            asyncio.run(bench(socket_path(base), proc.pid, chunk))
            if n < len(chunks) - 1:
                proc.terminate()
                proc.wait(timeout=120)
        assert proc is not None
        asyncio.run(remove_pods(socket_path(base), pods))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=120)
        scrub_daemon_dirs(DaemonDirs(base))  # what a failed run left: containers outlive the daemon
        subprocess.run(["ip", "link", "del", "podrtbench0"], capture_output=True)
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

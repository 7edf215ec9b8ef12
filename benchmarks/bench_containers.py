"""Container figures on the real parts, with a busybox-static image from a
registry on 127.0.0.1: CreateContainer + StartContainer over sequential
containers, StopContainer and RemoveContainer, ExecSync of `true`, how soon an exit reaches GetContainerEvents
subscribers, ListContainers and ListContainerStats with many containers, and the daemon's RSS with
pods of 3 containers each.

Run as root: .venv/bin/python benchmarks/bench_containers.py [--cycles 50] [--list 1000] [--pods 100]
Pods are on the host network (no CNI in the way); the containers sleep.
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

from common import busybox_daemon, call_raw, pct  # noqa: E402  beside this script

from podrt.api.runtime import v1 as cri  # noqa: E402
from tests.support.fuzz import RawCodec  # noqa: E402

IMAGE_REPO = "bench/busybox"


def pod_config() -> cri.PodSandboxConfig:
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=f"b-{uuid.uuid4().hex[:8]}", uid=uuid.uuid4().hex, namespace="bench"),
        linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(network=cri.NamespaceMode.NODE))))


def container_config(image: str, name: str, command: tuple[str, ...] = ("/bin/sleep", "100000")) -> cri.ContainerConfig:
    sc = cri.LinuxContainerSecurityContext(namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.CONTAINER))
    return cri.ContainerConfig(metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=image),
                               command=list(command), log_path=f"{name}.log",
                               linux=cri.LinuxContainerConfig(security_context=sc))


async def run(rt: cri.RuntimeServiceStub, pod: str, cfg: cri.PodSandboxConfig, image: str, name: str,
              command: tuple[str, ...] = ("/bin/sleep", "100000")) -> str:
    cid = (await rt.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(image, name, command), sandbox_config=cfg))).container_id
    await rt.start_container(cri.StartContainerRequest(container_id=cid))
    return cid


def event_head(data: bytes) -> tuple[str, int]:
    """(container_id, event type) from the first two fields of a ContainerEventResponse
    (fields 1 and 2, written first): a Python client decoding the whole message
    (every container status of the pod, ~0.6 ms each in betterproto) would
    measure itself, not podrt; the kubelet decodes in Go."""
    assert data[0] == 0x0A and data[1] < 0x80  # field 1, length-delimited, a 64-char id
    end = 2 + data[1]
    container_id = data[2:end].decode()
    kind = data[end + 1] if end < len(data) and data[end] == 0x10 else 0  # field 2 varint; absent = 0
    return container_id, kind


async def exit_events(sock: Path, rt: cri.RuntimeServiceStub, pod: str, cfg: cri.PodSandboxConfig, image: str,
                      count: int = 20) -> None:
    """Containers that exit 0.2 s after start, two subscribers: from the exit (conmon's exit file
    time, ContainerStatus.finished_at) to the STOPPED event's creation in podrt,
    and to its arrival at each subscriber."""
    stopped = cri.ContainerEventType.CONTAINER_STOPPED_EVENT.value
    raw = Channel(path=str(sock), codec=RawCodec())
    try:
        async with raw.request("/runtime.v1.RuntimeService/GetContainerEvents", Cardinality.UNARY_STREAM,
                               bytes, bytes) as a, \
                raw.request("/runtime.v1.RuntimeService/GetContainerEvents", Cardinality.UNARY_STREAM,
                            bytes, bytes) as b:
            for stream in (a, b):
                await stream.send_message(b"", end=True)
                await stream.recv_initial_metadata()
            to_client, data = [], b""
            for n in range(count):
                cid = await run(rt, pod, cfg, image, f"e{n}", ("/bin/sleep", "0.2"))  # exits after StartContainer answered
                for stream in (a, b):
                    while True:
                        data = await asyncio.wait_for(stream.recv_message(), 10)
                        if event_head(data) == (cid, stopped):
                            break
                    to_client.append(time.time_ns())
                st = (await rt.container_status(cri.ContainerStatusRequest(container_id=cid))).status
                to_client[-2:] = [(t - st.finished_at) / 1e6 for t in to_client[-2:]]
                await rt.remove_container(cri.RemoveContainerRequest(container_id=cid))
            made = cri.ContainerEventResponse().parse(data)  # the last STOPPED event, whole
            for stream in (a, b):
                await stream.cancel()
    finally:
        raw.close()
    finished = next(s.finished_at for s in made.containers_statuses if s.id == cid)
    print(f"exit -> STOPPED event ({count} containers, 2 subscribers, {len(made.containers_statuses)} containers in the pod): "
          f"received p50 {pct(to_client, .5):.1f} ms, p90 {pct(to_client, .9):.1f} ms "
          f"(last one made {(made.created_at - finished) / 1e6:.1f} ms after the exit)")


async def stop_remove(rt: cri.RuntimeServiceStub, pod: str, cfg: cri.PodSandboxConfig, image: str, cycles: int) -> None:
    """StopContainer (no grace) and RemoveContainer of running containers, one at a time, as critest's benchmark does."""
    stop, remove = [], []
    for n in range(cycles):
        cid = await run(rt, pod, cfg, image, f"s{n}")
        t = time.perf_counter()
        await rt.stop_container(cri.StopContainerRequest(container_id=cid, timeout=0))
        stop.append(time.perf_counter() - t)
        t = time.perf_counter()
        await rt.remove_container(cri.RemoveContainerRequest(container_id=cid))
        remove.append(time.perf_counter() - t)
    print(f"StopContainer (timeout 0) p50 {pct(stop, .5) * 1000:.1f} ms, RemoveContainer (exited) p50 "
          f"{pct(remove, .5) * 1000:.1f} ms over {cycles} sequential containers")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def bench(sock: Path, image: str, cycles: int, listed: int, pods: int, daemon_pid: int) -> None:
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    try:
        await cri.ImageServiceStub(ch).pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
        at_start = rss_kib(daemon_pid)
        cfg = pod_config()
        pod = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
        create, start = [], []
        for n in range(cycles):
            t = time.perf_counter()
            cid = (await rt.create_container(cri.CreateContainerRequest(
                pod_sandbox_id=pod, config=container_config(image, f"c{n}"), sandbox_config=cfg))).container_id
            create.append(time.perf_counter() - t)
            t = time.perf_counter()
            await rt.start_container(cri.StartContainerRequest(container_id=cid))
            start.append(time.perf_counter() - t)
        both = [a + b for a, b in zip(create, start)]
        print(f"CreateContainer + StartContainer over {cycles} sequential containers: p50 {pct(both, .5) * 1000:.0f} ms, "
              f"p90 {pct(both, .9) * 1000:.0f} ms (create p50 {pct(create, .5) * 1000:.1f} ms, start p50 "
              f"{pct(start, .5) * 1000:.1f} ms; the runc create runs after CreateContainer answered, and "
              "StartContainer waits for it)")
        await stop_remove(rt, pod, cfg, image, cycles)
        execs = []
        for _ in range(100):
            t = time.perf_counter()
            r = await rt.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10))
            execs.append(time.perf_counter() - t)
            assert r.exit_code == 0
        print(f"ExecSync of `true`: p50 {pct(execs, .5) * 1000:.1f} ms, p90 {pct(execs, .9) * 1000:.1f} ms")
        await exit_events(sock, rt, pod, cfg, image)
        for n in range(cycles, listed, 10):
            await asyncio.gather(*(run(rt, pod, cfg, image, f"c{m}") for m in range(n, min(n + 10, listed))))
        raw = []
        for _ in range(30):
            t = time.perf_counter()
            data = await call_raw(ch, "/runtime.v1.RuntimeService/ListContainers", cri.ListContainersRequest())
            raw.append(time.perf_counter() - t)
        count = len(cri.ListContainersResponse().parse(data).containers)
        print(f"ListContainers with {count} containers: p50 {pct(raw, .5) * 1000:.1f} ms, p90 {pct(raw, .9) * 1000:.1f} ms "
              f"({len(data)} bytes, without client-side decoding)")
        stats = []
        for _ in range(5):
            t = time.perf_counter()
            data = await call_raw(ch, "/runtime.v1.RuntimeService/ListContainerStats", cri.ListContainerStatsRequest())
            stats.append(time.perf_counter() - t)
        print(f"ListContainerStats with {count} containers: p50 {pct(stats, .5) * 1000:.0f} ms, p90 {pct(stats, .9) * 1000:.0f} ms "
              f"({len(data)} bytes; a cgroup read and a walk of the writable layer each)")
        with_list = rss_kib(daemon_pid)
        await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
        made = []
        for _ in range(pods):
            cfg = pod_config()
            p = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
            await asyncio.gather(*(run(rt, p, cfg, image, f"w{n}") for n in range(3)))
            made.append(p)
        print(f"daemon RSS: {at_start / 1024:.0f} MiB with one image and nothing running, {with_list / 1024:.0f} MiB "
              f"with {count} containers in one pod, {rss_kib(daemon_pid) / 1024:.0f} MiB after that with {pods} pods "
              "of 3 running containers (Python keeps what it once allocated)")
        for p in made:
            await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=p))
            await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=p))
    finally:
        ch.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--list", type=int, default=1000)
    ap.add_argument("--pods", type=int, default=100)
    args = ap.parse_args()
    with busybox_daemon(IMAGE_REPO) as (sock, image, pid):
        asyncio.run(bench(sock, image, args.cycles, args.list, args.pods, pid))

if __name__ == "__main__":
    main()

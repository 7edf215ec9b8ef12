"""Streaming figures on the real parts, with the project's own SPDY client
(tests/support/streamclient.py): the round trip of an exec of `true` (Exec
RPC + HTTP upgrade + streams + exit status), the throughput of a 100 MB
stdout, and port-forward throughput against a direct connection made in
the same netns, both fetching one file from a busybox httpd in the pod.

Run as root: .venv/bin/python benchmarks/bench_streaming.py [--execs 100] [--mb 100]
Uses bench_sandbox's CNI network (bridge podrtbench0) for its one pod.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from bench_containers import IMAGE_REPO, run  # noqa: E402  beside this script
from bench_sandbox import config as pod_config  # noqa: E402
from bench_sandbox import setup
from common import pct, socket_path, wait_ready  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from podrt.network.nssocket import netns_socket  # noqa: E402
from tests.support import streamclient as sc  # noqa: E402
from tests.support.daemon import DaemonDirs  # noqa: E402
from tests.support.leaks import scrub_daemon_dirs  # noqa: E402
from tests.support.registry import serve_busybox  # noqa: E402

PORT = 8080


async def exec_round_trips(rt: cri.RuntimeServiceStub, cid: str, count: int) -> None:
    times = []
    for _ in range(count):
        t = time.perf_counter()
        url = (await rt.exec(cri.ExecRequest(container_id=cid, cmd=["true"], stdout=True, stderr=True))).url
        result = await sc.spdy_exec(url)
        times.append((time.perf_counter() - t) * 1000)
        assert result.exit_code == 0, result
    print(f"exec `true` round trip (RPC + upgrade + exit), {count} sequential: "
          f"p50 {pct(times, 0.5):.1f} ms, p90 {pct(times, 0.9):.1f} ms")


async def exec_throughput(rt: cri.RuntimeServiceStub, cid: str, mb: int) -> None:
    """Two writers: dd's 1 MB writes measure podrt; busybox head's 4 KiB writes (alone it makes
    ~190 MB/s into a pipe on these machines) measure the per-chunk cost."""
    size = mb * 1_000_000
    for what, cmd in (("dd bs=1M", ["dd", "if=/dev/zero", "bs=1000000", f"count={mb}"]),
                      ("head -c (4 KiB writes)", ["head", "-c", str(size), "/dev/zero"])):
        received = 0

        def sink(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)

        url = (await rt.exec(cri.ExecRequest(container_id=cid, cmd=cmd, stdout=True, stderr=False))).url
        t, cpu = time.perf_counter(), time.process_time()
        result = await sc.spdy_exec(url, sink=sink, stderr=False, timeout=600)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        assert result.exit_code == 0 and received == size, (result.exit_code, received)
        print(f"exec stdout, {mb} MB from {what}: {size / seconds / 1e6:.0f} MB/s ({seconds:.2f} s; "
              f"the Python client itself used {cpu:.2f} s of CPU)")


async def _fetch(read, write, close_write) -> int:  # type: ignore[no-untyped-def]
    await write(b"GET /tmp/big HTTP/1.0\r\nHost: pod\r\n\r\n")
    await close_write()
    total = 0
    while chunk := await read():
        total += len(chunk)
    return total


async def port_forward_throughput(rt: cri.RuntimeServiceStub, pod: str, netns: str, mb: int) -> None:
    url = (await rt.port_forward(cri.PortForwardRequest(pod_sandbox_id=pod, port=[PORT]))).url
    pf = await sc.spdy_port_forward(url)
    try:
        data, _ = await pf.connect(PORT)
        t = time.perf_counter()
        got = await _fetch(data.read, data.write, data.close_write)
        forwarded = time.perf_counter() - t
    finally:
        await pf.close()
    sock = await asyncio.to_thread(netns_socket, netns, socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", PORT))
    reader, writer = await asyncio.open_connection(sock=sock)

    async def write(b: bytes) -> None:
        writer.write(b)
        await writer.drain()

    async def close_write() -> None:
        writer.write_eof()

    t = time.perf_counter()
    direct_got = await _fetch(lambda: reader.read(1 << 16), write, close_write)
    direct = time.perf_counter() - t
    writer.close()
    size = mb * 1_000_000
    assert got > size and direct_got > size, (got, direct_got)
    print(f"port-forward, {mb} MB from httpd: {got / forwarded / 1e6:.0f} MB/s through podrt; "
          f"{direct_got / direct / 1e6:.0f} MB/s direct in the netns (same asyncio client)")


async def bench(sock: Path, image: str, execs: int, mb: int) -> None:
    channel = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(channel)
    try:
        cfg = pod_config()
        pod = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
        try:
            app = await run(rt, pod, cfg, image, "app")
            httpd = await run(rt, pod, cfg, image, "httpd", ("busybox", "httpd", "-f", "-p", str(PORT), "-h", "/"))
            made = await rt.exec_sync(cri.ExecSyncRequest(
                container_id=httpd, cmd=["sh", "-c", f"head -c {mb * 1_000_000} /dev/zero > /tmp/big"], timeout=120))
            assert made.exit_code == 0, made.stderr
            status = await rt.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True))
            netns = json.loads(status.info["info"])["netnsPath"]
            await exec_round_trips(rt, app, execs)
            await exec_throughput(rt, app, mb)
            await port_forward_throughput(rt, pod, netns, mb)
        finally:
            await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
            await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    finally:
        channel.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=100)
    ap.add_argument("--mb", type=int, default=100)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="podrt-bench-"))
    reg, conf = serve_busybox(base, IMAGE_REPO)
    try:
        cfg = setup(base)
        cfg.write_text(cfg.read_text() + f'\n[podrt.image]\nregistries_conf = "{conf}"\n')
        proc = subprocess.Popen([sys.executable, "-m", "podrt.cli", "serve", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=open(base / "daemon.log", "wb"))
        try:
            asyncio.run(wait_ready(socket_path(base)))
            asyncio.run(_pull(socket_path(base), f"{reg.host}/{IMAGE_REPO}:v1"))
            asyncio.run(bench(socket_path(base), f"{reg.host}/{IMAGE_REPO}:v1", args.execs, args.mb))
        finally:
            proc.terminate()
            proc.wait(timeout=120)
            scrub_daemon_dirs(DaemonDirs(base))
            subprocess.run(["ip", "link", "del", "podrtbench0"], capture_output=True)
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)


async def _pull(sock: Path, ref: str) -> None:
    channel = Channel(path=str(sock))
    try:
        await cri.ImageServiceStub(channel).pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=ref)))
    finally:
        channel.close()


if __name__ == "__main__":
    main()

"""Daemon start time, idle RSS and Version round-trip latency over the socket.

Run as root:  .venv/bin/python benchmarks/bench_daemon.py [--calls 2000] [--starts 5]
Prints one line per figure. Client-side latency includes grpclib's client.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import pct, socket_path, wait_ready, write_config  # beside this script
from grpclib.client import Channel

from podrt.api.runtime import v1 as cri


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def latency(sock: Path, calls: int) -> list[float]:
    channel = Channel(path=str(sock))
    stub = cri.RuntimeServiceStub(channel)
    try:
        for _ in range(50):  # warm up
            await stub.version(cri.VersionRequest())
        out = []
        for _ in range(calls):
            t = time.perf_counter()
            await stub.version(cri.VersionRequest())
            out.append(time.perf_counter() - t)
        return out
    finally:
        channel.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()
    starts, rss = [], []
    lat: list[float] = []
    for i in range(args.starts):
        base = Path(tempfile.mkdtemp(prefix="podrt-bench-"))
        cfg = write_config(base)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "podrt.cli", "serve", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            asyncio.run(wait_ready(socket_path(base)))
            starts.append(time.perf_counter() - t0)
            time.sleep(1.0)
            rss.append(rss_kib(proc.pid))
            if i == 0:
                lat = asyncio.run(latency(socket_path(base), args.calls))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(base, ignore_errors=True)
    print(f"start to first Version answer: median {statistics.median(starts) * 1000:.0f} ms over {len(starts)} starts (min {min(starts) * 1000:.0f}, max {max(starts) * 1000:.0f})")
    print(f"idle RSS: median {statistics.median(rss) / 1024:.1f} MiB")
    print(f"Version round trip over {args.calls} calls: p50 {pct(lat, 0.5) * 1e6:.0f} us, p99 {pct(lat, 0.99) * 1e6:.0f} us, mean {statistics.mean(lat) * 1e6:.0f} us")


if __name__ == "__main__":
    main()

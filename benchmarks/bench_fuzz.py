"""The long fuzz run: fuzzed bodies (tests/support/fuzz.py) to every CRI RPC of a
real daemon. Prints requests/s, the status histogram, every distinct INTERNAL /
UNKNOWN / unanswered call, daemon log growth, daemon RSS before and after, and
the leak audit once all pods are removed.

Run as root: .venv/bin/python benchmarks/bench_fuzz.py [--count 100000] [--seed 1] [--concurrency 4]
Pods that valid-shaped requests create use bench_sandbox's network (bridge podrtbench0).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from bench_daemon import rss_kib  # noqa: E402  beside this script
from bench_sandbox import setup  # noqa: E402
from common import socket_path, wait_ready  # noqa: E402
from grpclib.client import Channel  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from tests.integration.conftest import remove_all_pods  # noqa: E402
from tests.support.daemon import DaemonDirs  # noqa: E402
from tests.support.fuzz import Fuzzer, FuzzResult, run_fuzz  # noqa: E402
from tests.support.leaks import audit_daemon_dirs, scrub_daemon_dirs  # noqa: E402


def report(result: FuzzResult) -> None:
    print(f"requests: {result.sent} in {result.seconds:.1f} s = {result.sent / result.seconds:.0f} requests/s")
    print("statuses: " + ", ".join(f"{s} {n}" for s, n in result.statuses.most_common() if n))
    per_rpc: dict[str, list[str]] = defaultdict(list)
    for (rpc, status), n in sorted(result.by_rpc.items()):
        if n:
            per_rpc[rpc].append(f"{status} {n}")
    for rpc, counts in per_rpc.items():
        print(f"  {rpc}: {', '.join(counts)}")
    print("slowest calls: " + ", ".join(f"{rpc} [{kind}] {status} {sec:.2f} s" for sec, rpc, kind, status in result.slowest))
    groups = result.distinct()
    print(f"INTERNAL/UNKNOWN/unanswered: {len(result.offenders)} answers, {len(groups)} distinct")
    for n, o in groups.values():
        print(f"  {n}x {o}")


async def version_ok(sock: Path) -> bool:
    channel = Channel(path=str(sock))
    try:
        await cri.RuntimeServiceStub(channel).version(cri.VersionRequest(), timeout=10)
        return True
    except Exception:
        return False
    finally:
        channel.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="podrt-bench-"))
    cfg, sock, log_path = setup(base), socket_path(base), base / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "podrt.cli", "serve", "--config", str(cfg)], stdout=log, stderr=log)
    try:
        asyncio.run(wait_ready(sock))
        rss0, log0 = rss_kib(proc.pid), log_path.stat().st_size

        def progress(r: FuzzResult) -> None:
            print(f"  ... {r.sent} sent, {dict(r.statuses)}, RSS {rss_kib(proc.pid)} KiB", flush=True)

        result = asyncio.run(run_fuzz(sock, Fuzzer(args.seed, base / "fuzz-scratch"), args.count, concurrency=args.concurrency,
                                      between_batches=lambda: remove_all_pods(sock), progress=progress))
        alive = proc.poll() is None and asyncio.run(version_ok(sock))
        rss1 = rss_kib(proc.pid) if proc.poll() is None else 0
        report(result)
        print(f"daemon alive and answering Version: {alive}")
        if alive:
            asyncio.run(remove_all_pods(sock))
        grown = log_path.stat().st_size - log0
        log = log_path.read_bytes()[log0:]
        print(f"daemon log growth: {grown} bytes ({grown / max(result.sent, 1):.1f} per request), tracebacks: {log.count(b'Traceback')}")
        print(f"daemon RSS: {rss0} KiB before, {rss1} KiB after ({rss1 - rss0:+d} KiB)")
        print(f"leak audit after removing all pods: {audit_daemon_dirs(DaemonDirs(base)) or 'nothing left'}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        scrub_daemon_dirs(DaemonDirs(base))  # only acts on what a failed run left
        subprocess.run(["ip", "link", "del", "podrtbench0"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

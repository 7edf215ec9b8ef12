"""The long run of the semi-valid CreateContainer fuzzer (tests/support/ctrfuzz.py):
a valid pod and the busybox image from a registry on 127.0.0.1, then one odd
field per request; each container made is started, exec'd, stopped and
removed. Prints the status histogram, every distinct server-side answer,
containers that failed their life, requests/s, the daemon's log growth and
tracebacks, and the leak audit.

Run as root: .venv/bin/python benchmarks/bench_create_fuzz.py [--count 2000] [--seed 1]
The pod is on the host network (no CNI in the way).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from bench_containers import pod_config  # noqa: E402  beside this script
from common import busybox_daemon  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from tests.support.client import connect  # noqa: E402
from tests.support.ctrfuzz import CreateFuzzer, CreateResult, run_create_fuzz  # noqa: E402
from tests.support.daemon import DaemonDirs  # noqa: E402
from tests.support.leaks import audit_daemon_dirs  # noqa: E402


def report(result: CreateResult) -> None:
    print(f"requests: {result.sent} in {result.seconds:.1f} s = {result.sent / result.seconds:.1f} requests/s, "
          f"{result.created} containers made")
    for key, n in sorted(result.statuses.items()):
        print(f"  {key}: {n}")
    print(f"INTERNAL/UNKNOWN answers: {len(result.offenders)}")
    for line in result.offenders:
        print(f"  {line}")
    print(f"containers that did not start, exec, stop or go: {len(result.failures)}")
    for line in result.failures:
        print(f"  {line}")


async def run(sock: Path, image: str, seed: int, count: int) -> CreateResult:
    config = pod_config()
    async with connect(sock) as c:
        await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
        pod = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
        with tempfile.TemporaryDirectory(prefix="podrt-create-fuzz-") as scratch:
            result = await run_create_fuzz(c, pod, config, CreateFuzzer(seed, Path(scratch), image), count)
        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with busybox_daemon("fuzz/busybox") as (sock, image, _pid):
        log_path = sock.parents[1] / "daemon.log"
        log0 = log_path.stat().st_size
        result = asyncio.run(run(sock, image, args.seed, args.count))
        report(result)
        log = log_path.read_bytes()[log0:]
        print(f"daemon log growth: {len(log)} bytes ({len(log) / max(result.sent, 1):.0f} per request), "
              f"tracebacks: {log.count(b'Traceback')}, unretrieved task exceptions: {log.count(b'never retrieved')}")
        print(f"leak audit after removing the pod: {audit_daemon_dirs(DaemonDirs(sock.parents[1])) or 'nothing left'}")


if __name__ == "__main__":
    main()

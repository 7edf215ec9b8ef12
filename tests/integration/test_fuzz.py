"""Fuzzed request bodies to every CRI RPC of the real daemon (tests/support/fuzz.py):
whatever arrives, the daemon stays up, answers with a client-side status (never
INTERNAL or UNKNOWN), keeps its log small and free of tracebacks, and leaves
nothing behind once the pods some requests created are removed.

PODRT_FUZZ_COUNT sets the number of requests (small by default, for CI);
PODRT_FUZZ_SEED the seed. benchmarks/bench_fuzz.py is the long run.
"""

from __future__ import annotations

import os

import pytest

from podrt.api.runtime import v1 as cri
from tests.integration.conftest import remove_all_pods
from tests.support.client import connect
from tests.support.daemon import DaemonProcess
from tests.support.fuzz import Fuzzer, run_fuzz
from tests.support.leaks import audit_daemon_dirs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the fuzz test runs real pods: needs root")]

COUNT = int(os.environ.get("PODRT_FUZZ_COUNT", "2000"))
SEED = int(os.environ.get("PODRT_FUZZ_SEED", "20250101"))
LOG_BYTES_PER_REQUEST = 70  # about 200 KB for 3000 requests: rate-limited lines, no values echoed at length
LOG_BYTES_BASE = 16 * 1024  # start-up and pod lines


@pytest.mark.timeout(300 + COUNT // 10)  # ~3 s for 2000 requests here: a long run's COUNT gets its time
async def test_fuzzed_requests_are_answered_cleanly(pod_daemon: DaemonProcess) -> None:
    d = pod_daemon.dirs
    log_start = pod_daemon.log_path.stat().st_size
    result = await run_fuzz(d.socket, Fuzzer(SEED, d.base / "fuzz-scratch"), COUNT,
                            between_batches=lambda: remove_all_pods(d.socket))
    problems = []
    assert pod_daemon.proc is not None
    if pod_daemon.proc.poll() is not None:
        pytest.fail(f"the daemon died (exit {pod_daemon.proc.returncode}) after {result.statuses}:\n{pod_daemon.log()[-4000:]}")
    async with connect(d.socket) as c:
        await c.runtime.version(cri.VersionRequest())
    if result.offenders:
        groups = list(result.distinct().values())
        shown = "\n  ".join(f"{n}x {o}" for n, o in groups[:20])
        problems.append(f"{len(result.offenders)} answers with a server-side status, {len(groups)} distinct"
                        f" ({dict(result.statuses)}); the first 20 kinds:\n  {shown}")
    await remove_all_pods(d.socket)
    with open(pod_daemon.log_path, "rb") as f:
        f.seek(log_start)
        log = f.read()
    bound = LOG_BYTES_BASE + LOG_BYTES_PER_REQUEST * COUNT
    if len(log) >= bound:
        problems.append(f"the daemon log grew by {len(log)} bytes (bound {bound}); its end:\n{log[-3000:].decode(errors='replace')}")
    if b"Traceback" in log:
        at = log.index(b"Traceback")
        problems.append(f"the daemon logged a traceback:\n{log[max(0, at - 500):at + 3000].decode(errors='replace')}")
    leftovers = audit_daemon_dirs(d)
    if leftovers:
        problems.append(f"removed pods left resources behind: {leftovers}")
    assert not problems, "\n\n".join(problems)

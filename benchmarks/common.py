"""What the benchmark scripts share: a daemon config in a temp dir, waiting for
the daemon's first answer, percentiles, a process's CPU, the pod + container
cycle, and the daemon's loop-lag histogram."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w
from grpclib.client import Channel
from grpclib.const import Cardinality
from prometheus_client.parser import text_string_to_metric_families

from podrt.api.runtime import v1 as cri


def write_config(base: Path, **extra: Any) -> Path:
    """A config keeping every path of the daemon inside base; `extra` adds [podrt] keys."""
    podrt: dict[str, Any] = {
        "root": str(base / "root"),
        "runroot": str(base / "run"),
        "log_dir": str(base / "logs"),
        "api": {"listen": str(base / "run" / "podrt.sock")},
        "network": {"network_dir": str(base / "cni"), "netns_dir": str(base / "run" / "netns")},
        "runtime": {"runtimes": {"runc": {"runtime_path": "/usr/sbin/runc", "runtime_root": str(base / "run" / "runc")}}},
    }
    for key, value in extra.items():  # a table merges into the one above (runtime keys beside runtimes)
        podrt[key] = {**podrt[key], **value} if isinstance(value, dict) and key in podrt else value
    path = base / "podrt.toml"
    path.write_text(tomli_w.dumps({"podrt": podrt}))
    return path


def socket_path(base: Path) -> Path:
    return base / "run" / "podrt.sock"


async def wait_ready(sock: Path, timeout: float = 20.0) -> None:
    """Until the daemon answers Version."""
    deadline = time.monotonic() + timeout
    while True:
        if sock.exists():
            channel = Channel(path=str(sock))
            try:
                await cri.RuntimeServiceStub(channel).version(cri.VersionRequest())
                return
            except (ConnectionError, OSError):
                pass
            finally:
                channel.close()
        if time.monotonic() > deadline:
            raise TimeoutError("daemon did not answer")
        await asyncio.sleep(0.005)


class RawReply:
    """Keeps the reply's bytes: measures the server, not the client's decoder."""

    @classmethod
    def FromString(cls, data: bytes) -> bytes:  # noqa: N802 (grpclib's codec calls this name)
        return data


async def call_raw(ch: Channel, path: str, request: Any) -> bytes:
    """A unary call whose answer is kept as bytes (no client-side decoding)."""
    async with ch.request(path, Cardinality.UNARY_UNARY, type(request), RawReply) as stream:  # type: ignore[arg-type]
        await stream.send_message(request, end=True)
        return await stream.recv_message()  # type: ignore[return-value]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


TICK = os.sysconf("SC_CLK_TCK")
LAG = "podrt_event_loop_lag_seconds"
LAG_MAX = "podrt_event_loop_lag_max_seconds"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


async def pod_cycle(stub: cri.RuntimeServiceStub, pod: cri.PodSandboxConfig, ctr: cri.ContainerConfig) -> dict[str, float]:
    """The kubelet's pod cycle with one container: RunPodSandbox, CreateContainer,
    StartContainer, ExecSync(true), StopPodSandbox, RemovePodSandbox. Seconds per
    call (run, create, start, exec, stop, remove) and in all (cycle)."""
    times: dict[str, float] = {}
    t0 = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name], t = now - t, now

    pod_id = (await stub.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    lap("run")
    cid = (await stub.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=ctr, sandbox_config=pod))).container_id
    lap("create")
    await stub.start_container(cri.StartContainerRequest(container_id=cid))
    lap("start")
    r = await stub.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10))
    lap("exec")
    assert r.exit_code == 0, r
    await stub.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    lap("stop")
    await stub.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    lap("remove")
    times["cycle"] = t - t0
    return times


def loop_thread(pid: int) -> tuple[float, float]:
    """The daemon's main (loop) thread: (CPU seconds, seconds waiting for a CPU)."""
    on_cpu, waiting, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def lag_metrics(url: str | None) -> tuple[dict[float, float], float | None] | None:
    """podrt's loop-lag histogram buckets (le -> cumulative count) and its max gauge (since the
    daemon started); None where absent. Over a phase: the difference of two readings."""
    if url is None:
        return None
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    buckets: dict[float, float] = {}
    top = None
    for family in text_string_to_metric_families(text):
        if family.name == LAG:
            buckets = {float(s.labels["le"]): s.value for s in family.samples if s.name == LAG + "_bucket"}
        elif family.name == LAG_MAX and family.samples:
            top = family.samples[0].value
    return (buckets, top) if buckets else None


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of a cumulative histogram, linear within the bucket it falls in
    (Prometheus' histogram_quantile); the last finite bound if it falls in +Inf."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank, low, below = q * total, 0.0, 0.0
    for bound in sorted(buckets):
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return low
            return low + (bound - low) * (rank - below) / (count - below) if count > below else bound
        low, below = bound, count
    return low


@contextlib.contextmanager
def busybox_daemon(repo: str, ready_timeout: float = 20.0, test_network: bool = False,
                   **extra: Any) -> Iterator[tuple[Path, str, int]]:
    """A registry on 127.0.0.1 serving busybox as `repo`:v1 and a daemon that may
    pull from it (`extra`: more [podrt] keys; `test_network`: the tests' CNI
    bridge network, whose bridge the caller removes), in a temp dir: yields (socket, image, daemon pid); afterwards
    whatever a failed run left is scrubbed (containers outlive the daemon).
    Needs the repo root on sys.path (tests.support), as the scripts set it."""
    from tests.support.daemon import DaemonDirs
    from tests.support.leaks import scrub_daemon_dirs
    from tests.support.registry import serve_busybox

    base = Path(tempfile.mkdtemp(prefix="podrt-bench-"))
    reg, conf = serve_busybox(base, repo)
    try:
        (base / "cni").mkdir()
        if test_network:
            from tests.integration.conftest import write_test_conflist
            write_test_conflist(base / "cni")
        cfg = write_config(base, image={"registries_conf": str(conf)}, **extra)
        proc = subprocess.Popen([sys.executable, "-m", "podrt.cli", "serve", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=open(base / "daemon.log", "wb"),
                                start_new_session=True)  # its own session, as a service manager starts it
        try:
            asyncio.run(wait_ready(socket_path(base), timeout=ready_timeout))
            yield socket_path(base), f"{reg.host}/{repo}:v1", proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=120)
            scrub_daemon_dirs(DaemonDirs(base))
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)

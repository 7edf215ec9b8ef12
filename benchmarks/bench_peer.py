"""podrt beside containerd (issue 20's peer): the same workload over the same
client (the project's grpclib stubs) against both runtimes, up side by side, one
run, one table with the ratio podrt/containerd per row and the issue's targets.
The sequential cycles alternate between the runtimes, so both see the same load
on a shared machine.

Run as root: .venv/bin/python benchmarks/bench_peer.py [--cycles 30] [--concurrent 10]
    [--pods 1000] [--containers N] [--only podrt|containerd]
or, for another client (critest -benchmark): bench_peer.py --serve podrt|containerd [--mirror 127.0.0.1:5000]
starts that runtime alone as here, prints its socket and keeps it until Ctrl-C (or SIGTERM).
Needs Debian's containerd (apt-get install containerd; it is started here on a
private config, never the system's service). See peer_runtimes.py for what each
runtime gets and how host CPU is measured.

The workload: a pod on the pod network (each runtime's own CNI bridge) with one
busybox container sleeping; a cycle is RunPodSandbox, CreateContainer,
StartContainer, ExecSync(true), StopPodSandbox, RemovePodSandbox. Then --pods
host-network pods (made 16 at a time) for ListPodSandbox, its label filter, the
daemons' memory, and one running container in each of --containers of them for
ListContainers. List calls keep the reply as bytes (the server is measured, not
the client's decoder).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from common import bucket_quantile, call_raw, lag_metrics, loop_thread, pct, pod_cycle  # noqa: E402  beside this script
from peer_runtimes import (  # noqa: E402
    Runtime,
    containerd_runtime,
    mirror_registries_conf,
    missing_containerd,
    podrt_runtime,
)

from podrt.api.runtime import v1 as cri  # noqa: E402
from tests.support.leaks import snapshot  # noqa: E402
from tests.support.registry import busybox_image, serve_busybox  # noqa: E402

IMAGE_REPO = "bench/busybox"
WARMUP = 3
Figures = dict[str, Any]


def pod_config(rt: Runtime, host_network: bool, labels: dict[str, str] | None = None) -> cri.PodSandboxConfig:
    """As the kubelet sends it: a log directory it made, a cgroup parent (here, in the runtime's bench cgroup),
    a hostname unless on the host's network."""
    name, uid = f"p-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    log_dir = rt.log_root / f"bench_{name}_{uid}"
    log_dir.mkdir(parents=True)
    mode = cri.NamespaceMode.NODE if host_network else cri.NamespaceMode.POD
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="bench"),
        hostname="" if host_network else name,
        log_directory=str(log_dir), labels=labels or {},
        linux=cri.LinuxPodSandboxConfig(cgroup_parent=rt.cgroup.pods_parent, security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(network=mode, pid=cri.NamespaceMode.CONTAINER))))


def container_config(image: str) -> cri.ContainerConfig:
    sc = cri.LinuxContainerSecurityContext(namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.CONTAINER))
    return cri.ContainerConfig(metadata=cri.ContainerMetadata(name="sleeper"), image=cri.ImageSpec(image=image),
                               command=["/bin/sleep", "100000"], log_path="sleeper_0.log",
                               linux=cri.LinuxContainerConfig(security_context=sc))


async def start_container(stub: cri.RuntimeServiceStub, rt: Runtime, pod: str, cfg: cri.PodSandboxConfig) -> str:
    cid = (await stub.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(rt.image), sandbox_config=cfg))).container_id
    await stub.start_container(cri.StartContainerRequest(container_id=cid))
    return cid


async def cycle(stub: cri.RuntimeServiceStub, rt: Runtime) -> dict[str, float]:
    """One pod + container cycle on the pod network; seconds per call and in all."""
    return await pod_cycle(stub, pod_config(rt, host_network=False), container_config(rt.image))


def memory(rt: Runtime) -> tuple[float, float, int]:
    """(daemon RSS, PSS of the shims or conmons in its cgroup summed, how many): MiB.
    PSS, as 1000 shims share their pages: RSS would count the shared ones 1000 times."""
    def field(path: str, key: str) -> int:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        return 0

    rss = field(f"/proc/{rt.pid}/status", "VmRSS:")
    pss, n = 0, 0
    for pid in rt.cgroup.pids():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm.startswith(("containerd-shim", "conmon")):
                pss += field(f"/proc/{pid}/smaps_rollup", "Pss:")
                n += 1
        except OSError:
            continue
    return rss / 1024, pss / 1024, n


async def timed_calls(n: int, call: Callable[[], Awaitable[bytes]]) -> tuple[float, bytes]:
    """p50 seconds of n calls, and the last reply."""
    times, data = [], b""
    for _ in range(n):
        t = time.perf_counter()
        data = await call()
        times.append(time.perf_counter() - t)
    return pct(times, .5), data


async def bounded(limit: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with sem:
            return await job()
    return await asyncio.gather(*(one(j) for j in jobs))


async def image_id(ch: Channel, rt: Runtime) -> str:
    """busybox's ID in the runtime, pulled first where it is not there (podrt, from the loopback registry)."""
    images = cri.ImageServiceStub(ch)
    spec = cri.ImageSpec(image=rt.image)
    if not (await images.image_status(cri.ImageStatusRequest(image=spec))).image.id:
        await images.pull_image(cri.PullImageRequest(image=spec))
    return (await images.image_status(cri.ImageStatusRequest(image=spec))).image.id


async def measure(rts: list[Runtime], cycles: int, concurrent: int, rounds: int, pods: int, containers: int
                  ) -> dict[str, Figures]:
    """The cycles alternate between the runtimes (a shared machine's load drifts; both see the
    same), CPU counted per cycle in each one's cgroup; the 10-way phases back to back; then
    the pods phase of each in turn."""
    out: dict[str, Figures] = {rt.name: {} for rt in rts}
    chans = {rt.name: Channel(path=str(rt.sock)) for rt in rts}
    stubs = {name: cri.RuntimeServiceStub(ch) for name, ch in chans.items()}
    try:
        for rt in rts:
            out[rt.name]["image id"] = await image_id(chans[rt.name], rt)
        for _ in range(WARMUP):
            for rt in rts:
                await cycle(stubs[rt.name], rt)
        seq: dict[str, list[dict[str, float]]] = {rt.name: [] for rt in rts}
        cpu = dict.fromkeys(seq, 0.0)
        for _ in range(cycles):
            for rt in rts:
                cpu0 = rt.cgroup.cpu_seconds()
                seq[rt.name].append(await cycle(stubs[rt.name], rt))
                cpu[rt.name] += rt.cgroup.cpu_seconds() - cpu0
        for rt in rts:
            o = out[rt.name]
            o["cpu per cycle"] = cpu[rt.name] / cycles
            for key in ("run", "create", "start", "exec", "stop", "remove", "cycle"):
                o[key] = pct([c[key] for c in seq[rt.name]], .5)
            o["cycle p90"] = pct([c["cycle"] for c in seq[rt.name]], .9)
            print(f"  {rt.name}: {cycles} sequential cycles, cycle p50 {o['cycle'] * 1000:.0f} ms", flush=True)
        for rt in rts:
            await concurrent_cycles(stubs[rt.name], rt, concurrent, rounds, out[rt.name])
        for rt in rts:
            if pods:
                await many_pods(rt, stubs[rt.name], chans[rt.name], pods, containers, out[rt.name])
    finally:
        for ch in chans.values():
            ch.close()
    return out


async def concurrent_cycles(stub: cri.RuntimeServiceStub, rt: Runtime, concurrent: int, rounds: int,
                            out: Figures) -> None:
    """`rounds` times `concurrent` cycles at once: the wall's median, CPU per cycle, podrt's loop
    lag over all of them (one round gives ~70 probes of 10 ms: its p99 would be its max)."""
    lag0 = lag_metrics(rt.metrics_url)
    thread0 = loop_thread(rt.pid) if lag0 else (0.0, 0.0)
    cpu0, walls, started = rt.cgroup.cpu_seconds(), [], time.perf_counter()
    for _ in range(rounds):
        t = time.perf_counter()
        await asyncio.gather(*(cycle(stub, rt) for _ in range(concurrent)))
        walls.append(time.perf_counter() - t)
    out["concurrent wall"] = pct(walls, .5)
    out["concurrent cpu per cycle"] = (rt.cgroup.cpu_seconds() - cpu0) / (concurrent * rounds)
    lag1 = lag_metrics(rt.metrics_url)
    if lag0 and lag1:
        diff = {b: lag1[0][b] - lag0[0].get(b, 0.0) for b in lag1[0]}
        out["lag p99"], out["lag max"] = bucket_quantile(diff, .99), lag1[1]
        out["lag samples"] = diff.get(math.inf, 0)
        thread1 = loop_thread(rt.pid)
        out["loop cpu"], out["loop waited"] = thread1[0] - thread0[0], thread1[1] - thread0[1]
        out["loop elapsed"] = time.perf_counter() - started
    print(f"  {rt.name}: {rounds} rounds of {concurrent} concurrent cycles, wall p50 {out['concurrent wall']:.2f} s",
          flush=True)


async def many_pods(rt: Runtime, stub: cri.RuntimeServiceStub, ch: Channel, pods: int, containers: int,
                    out: Figures) -> None:
    """`pods` host-network pods, 16 at a time; lists, memory; containers in the first `containers`; all removed."""
    cfgs = [pod_config(rt, host_network=True, labels={"bench": "peer", "idx": str(i)}) for i in range(pods)]
    t = time.perf_counter()
    made = await bounded(16, [lambda c=c: stub.run_pod_sandbox(cri.RunPodSandboxRequest(config=c)) for c in cfgs])
    ids = [r.pod_sandbox_id for r in made]
    out["pods create wall"] = time.perf_counter() - t
    out["rss"], out["supervisors pss"], out["supervisors"] = memory(rt)
    out["list pods"], data = await timed_calls(50, lambda: call_raw(
        ch, "/runtime.v1.RuntimeService/ListPodSandbox", cri.ListPodSandboxRequest()))
    assert len(cri.ListPodSandboxResponse().parse(data).items) == pods
    one = cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector={"idx": str(pods // 2)}))
    out["list pods label"], data = await timed_calls(50, lambda: call_raw(
        ch, "/runtime.v1.RuntimeService/ListPodSandbox", one))
    assert len(cri.ListPodSandboxResponse().parse(data).items) == 1
    print(f"  {rt.name}: {pods} pods made in {out['pods create wall']:.1f} s; lists done", flush=True)
    if containers:
        t = time.perf_counter()
        await bounded(16, [lambda p=p, c=c: start_container(stub, rt, p, c) for p, c in zip(ids, cfgs[:containers])])
        out["containers create wall"] = time.perf_counter() - t
        out["list containers"], data = await timed_calls(20, lambda: call_raw(
            ch, "/runtime.v1.RuntimeService/ListContainers", cri.ListContainersRequest()))
        assert len(cri.ListContainersResponse().parse(data).containers) == containers
        out["rss with containers"], out["supervisors pss with containers"], _ = memory(rt)
        print(f"  {rt.name}: {containers} containers made in {out['containers create wall']:.1f} s", flush=True)
    t = time.perf_counter()

    async def remove(pod: str) -> None:
        await stub.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        await stub.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    await bounded(16, [lambda p=p: remove(p) for p in ids])
    out["pods remove wall"] = time.perf_counter() - t


# (label, key, unit, target ratio podrt/containerd or None)
ROWS: list[tuple[str, str, str, float | None]] = [
    ("RunPodSandbox p50", "run", "ms", 0.6),
    ("CreateContainer p50", "create", "ms", None),
    ("StartContainer p50", "start", "ms", None),
    ("ExecSync(true) p50", "exec", "ms", None),
    ("StopPodSandbox p50", "stop", "ms", None),
    ("RemovePodSandbox p50", "remove", "ms", None),
    ("whole cycle p50, sequential", "cycle", "ms", 0.7),
    ("whole cycle p90, sequential", "cycle p90", "ms", None),
    ("N concurrent cycles: wall (median of the rounds)", "concurrent wall", "s", 0.7),
    ("host CPU per cycle, sequential", "cpu per cycle", "ms", 0.6),
    ("host CPU per cycle, concurrent", "concurrent cpu per cycle", "ms", None),
    ("create P host-network pods, 16 at a time", "pods create wall", "s", None),
    ("ListPodSandbox, P pods, p50", "list pods", "ms", 1.0),
    ("ListPodSandbox, label matching 1 of P, p50", "list pods label", "ms", 1.0),
    ("daemon RSS with P pods", "rss", "MiB", None),
    ("shims / conmons PSS with P pods", "supervisors pss", "MiB", None),
    ("create + start C containers, 16 at a time", "containers create wall", "s", None),
    ("ListContainers, C containers, p50", "list containers", "ms", None),
    ("daemon RSS with P pods, C containers", "rss with containers", "MiB", None),
    ("shims / conmons PSS, P pods, C containers", "supervisors pss with containers", "MiB", None),
    ("stop + remove P pods, 16 at a time", "pods remove wall", "s", None),
]
SCALE = {"ms": 1000.0, "s": 1.0, "MiB": 1.0}


def show(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    v = value * SCALE[unit]
    return f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"


def table(results: dict[str, Figures], args: argparse.Namespace) -> None:
    p, c = results.get("podrt", {}), results.get("containerd", {})
    print("\n| measure | containerd | podrt | podrt/containerd | target |\n|---|---|---|---|---|")
    for label, key, unit, target in ROWS:
        label = (label.replace("N concurrent", f"{args.concurrent} concurrent").replace(" P ", f" {args.pods} ")
                 .replace(" C ", f" {args.containers} ").replace("of P", f"of {args.pods}"))
        a, b = c.get(key), p.get(key)
        ratio = f"{b / a:.2f}" if a and b is not None else "-"
        goal = "-" if target is None else f"<= {target}" + ("" if ratio == "-" else
                                                            (" ok" if b / a <= target else " missed"))
        print(f"| {label} | {show(a, unit)} | {show(b, unit)} | {ratio} | {goal} |")
    if "podrt" in results:
        lag, top = p.get("lag p99"), p.get("lag max")
        if "lag samples" not in p:
            text, goal = "n/a (no podrt_event_loop_lag_seconds)", "< 5 ms"
        else:
            text = (f"p99 {'-' if lag is None else f'{lag * 1000:.1f} ms'}, max since start "
                    f"{'-' if top is None else f'{top * 1000:.1f} ms'} ({p['lag samples']:.0f} samples; "
                    f"loop thread over {p['loop elapsed']:.1f} s: CPU {p['loop cpu']:.2f} s, "
                    f"waiting for a CPU {p['loop waited']:.2f} s)")
            goal = "< 5 ms" + ("" if lag is None else (" ok" if lag < 0.005 else " missed"))
        print(f"| podrt event-loop lag under {args.concurrent} concurrent cycles | - | {text} | - | {goal} |")
    ids = {name: r.get("image id") for name, r in results.items()}
    print(f"\nbusybox image id per runtime (the same bytes): {ids}")
    print("host CPU: the runtime's cgroup (daemon, CNI plugins, shims / conmons, runc, pod processes)")


def critest_table(containerd_dir: Path, podrt_dir: Path) -> None:
    """p50 per operation of `critest -benchmark --benchmarking-output-dir DIR` for each runtime, with ratios."""
    print("| critest operation p50 | containerd | podrt | podrt/containerd |\n|---|---|---|---|")
    for name in ("pod_benchmark_data.json", "container_benchmark_data.json"):
        runs = [json.loads((d / name).read_text()) for d in (containerd_dir, podrt_dir)]
        for n, op in enumerate(runs[0]["operationsNames"]):
            a, b = (pct([p["operationsDurationsNs"][n] / 1e6 for p in r["datapoints"]], .5) for r in runs)
            print(f"| {op} ({len(runs[1]['datapoints'])}) | {a:.1f} ms | {b:.1f} ms | {b / a:.2f} |")


def serve(runtime: str, cgroup: str, mirror: str | None) -> None:
    """One runtime for another client, until SIGINT or SIGTERM; then its pods go over CRI and the rest as always."""
    base = Path(tempfile.mkdtemp(prefix="podrt-peer-serve-"))
    try:
        if runtime == "podrt":
            conf = base / "registries.conf"
            if mirror:
                mirror_registries_conf(conf, mirror)
            else:
                conf.write_text("")
            ctx = podrt_runtime(conf, "", cgroup)
        else:
            ctx = containerd_runtime(busybox_image(), "podrt.local/bench/busybox:v1", cgroup, mirror)
        with ctx as rt:
            print(f"{runtime} (pid {rt.pid}) serves CRI on unix://{rt.sock}"
                  f"{f', pulling from {mirror}' if mirror else ''}; Ctrl-C ends it", flush=True)
            # blocked only now: the daemon started above must not inherit the mask (a blocked SIGTERM never stops it)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            print("stopping: removing its pods, then the daemon", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=30, help="sequential cycles (after 3 warm-up ones)")
    ap.add_argument("--concurrent", type=int, default=10, help="cycles at once")
    ap.add_argument("--rounds", type=int, default=10, help="rounds of --concurrent cycles (the wall is their median)")
    ap.add_argument("--pods", type=int, default=1000, help="host-network pods for the lists and memory (0: none)")
    ap.add_argument("--containers", type=int, default=None, help="running containers among them (default: --pods)")
    ap.add_argument("--only", choices=("podrt", "containerd"))
    ap.add_argument("--serve", choices=("podrt", "containerd"), help="only start that runtime and keep it until Ctrl-C")
    ap.add_argument("--mirror", help="with --serve: a registry on 127.0.0.1 that every pull goes to")
    ap.add_argument("--critest-table", nargs=2, type=Path, metavar=("CONTAINERD_DIR", "PODRT_DIR"),
                    help="only print the p50s of two critest -benchmark output dirs")
    args = ap.parse_args()
    if args.critest_table:
        critest_table(*args.critest_table)
        return
    args.containers = args.pods if args.containers is None else min(args.containers, args.pods)
    if os.geteuid() != 0:
        sys.exit("run as root")
    if "containerd" in (args.only, args.serve) or not (args.only or args.serve):
        if why := missing_containerd():
            sys.exit(why)
    before = snapshot()
    cgroup = f"podrt-peer-{os.getpid()}"
    if args.serve:
        serve(args.serve, cgroup, args.mirror)
        print(f"left on the host: {before.diff(snapshot()) or 'nothing'}")
        return
    base = Path(tempfile.mkdtemp(prefix="podrt-peer-registry-"))
    reg, conf = serve_busybox(base, IMAGE_REPO)  # podrt pulls it; containerd imports the same bytes
    ref = f"{reg.host}/{IMAGE_REPO}:v1"
    try:
        with contextlib.ExitStack() as stack:
            rts = []
            if args.only != "containerd":
                rts.append(stack.enter_context(podrt_runtime(conf, ref, cgroup)))
            if args.only != "podrt":
                rts.append(stack.enter_context(containerd_runtime(busybox_image(), ref, cgroup)))
            results = asyncio.run(measure(rts, args.cycles, args.concurrent, args.rounds, args.pods, args.containers))
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)
    table(results, args)
    left = before.diff(snapshot())
    print(f"left on the host: {left or 'nothing'}")


if __name__ == "__main__":
    main()

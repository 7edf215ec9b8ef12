"""What a CDI device costs CreateContainer: containers made alternately
without and with one CDI device (an env var, a device node from the host's
/dev/zero, a bind mount: a spec of 0.5.0 in a spec dir of the daemon's own,
beside --specs other spec files the scan reads too), each removed after, in
one pod on the host network. Prints CreateContainer p50/p90 of each kind,
and the cost of the scan and the edits alone, in the daemon's process terms.

Run as root: .venv/bin/python benchmarks/bench_cdi.py [--cycles 30] [--specs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from bench_containers import IMAGE_REPO, container_config, pod_config  # noqa: E402  beside this script
from common import busybox_daemon, pct  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from podrt.oci.cdi import edits, registry  # noqa: E402

DEVICE = "bench.podrt.io/dev=zero0"


def write_specs(spec_dir: Path, data_dir: Path, others: int) -> None:
    edit = {"env": ["BENCH_CDI=1"], "deviceNodes": [{"path": "/dev/bench0", "hostPath": "/dev/zero"}],
            "mounts": [{"hostPath": str(data_dir), "containerPath": "/bench-data", "options": ["ro", "rbind"]}]}
    spec = {"cdiVersion": "0.5.0", "kind": "bench.podrt.io/dev", "devices": [{"name": "zero0", "containerEdits": edit}]}
    (spec_dir / "bench.json").write_text(json.dumps(spec))
    for n in range(others):  # other vendors' files: each is read at every scan
        other = {**spec, "kind": f"other{n}.podrt.io/dev", "devices": [
            {"name": f"d{m}", "containerEdits": edit} for m in range(8)]}
        (spec_dir / f"other{n}.yaml").write_text(json.dumps(other))  # JSON is YAML too


async def bench(sock: Path, image: str, cycles: int) -> None:
    ch = Channel(path=str(sock))
    rt = cri.RuntimeServiceStub(ch)
    try:
        await cri.ImageServiceStub(ch).pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=image)))
        cfg = pod_config()
        pod = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=cfg))).pod_sandbox_id
        took: dict[bool, list[float]] = {False: [], True: []}
        for n in range(cycles * 2):
            with_cdi = n % 2 == 1
            config = container_config(image, f"c{n}")
            if with_cdi:
                config.cdi_devices = [cri.CdiDevice(name=DEVICE)]
            t = time.perf_counter()
            cid = (await rt.create_container(cri.CreateContainerRequest(
                pod_sandbox_id=pod, config=config, sandbox_config=cfg))).container_id
            took[with_cdi].append(time.perf_counter() - t)
            await rt.remove_container(cri.RemoveContainerRequest(container_id=cid))
        for kind, values in (("without CDI", took[False]), ("with one CDI device", took[True])):
            print(f"CreateContainer {kind}: p50 {pct(values, .5) * 1000:.1f} ms, p90 {pct(values, .9) * 1000:.1f} ms "
                  f"({len(values)} containers)")
        await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
    finally:
        ch.close()


def scan_cost(spec_dir: Path, files: int) -> None:
    """The scan (every file read, none parsed again) and the edits, as a creation runs them."""
    cache = registry.SpecCache()
    registry.resolve([DEVICE], [str(spec_dir)], cache)  # the first scan parses
    times = []
    for _ in range(200):
        spec = {"process": {"env": [], "user": {"uid": 0, "gid": 0}}, "mounts": [],
                "linux": {"resources": {"devices": []}}}
        t = time.perf_counter()
        edits.apply(spec, registry.resolve([DEVICE], [str(spec_dir)], cache))
        times.append(time.perf_counter() - t)
    print(f"scan of {files} spec files + edits: p50 {pct(times, .5) * 1e6:.0f} us, p90 {pct(times, .9) * 1e6:.0f} us")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--specs", type=int, default=20, help="other spec files in the dir")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="podrt-bench-cdi-"))
    try:
        spec_dir, data_dir = base / "cdi", base / "data"
        spec_dir.mkdir()
        data_dir.mkdir()
        write_specs(spec_dir, data_dir, args.specs)
        scan_cost(spec_dir, args.specs + 1)
        with busybox_daemon(IMAGE_REPO, runtime={"cdi_spec_dirs": [str(spec_dir)]}) as (sock, image, _pid):
            asyncio.run(bench(sock, image, args.cycles))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Image figures against a registry on 127.0.0.1 (Debian's docker-registry):
a 3-layer image of about 50 MB pulled by podrt and by `skopeo copy ... oci:DIR`
(apt-get install skopeo), unpack throughput against `tar -x`, PullImage of an
image already present, ListImages with 500 images.

Run as root: .venv/bin/python benchmarks/bench_images.py [--runs 3] [--images 500]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.support

from common import call_raw, pct, socket_path, wait_ready, write_config  # noqa: E402  beside this script
from grpclib.client import Channel  # noqa: E402

from podrt.api.runtime import v1 as cri  # noqa: E402
from podrt.images.unpack import unpack_layer  # noqa: E402
from tests.support.registry import Registry, image, push  # noqa: E402

LAYER_MB = 17


def _spec(ref: str) -> cri.ImageSpec:
    return cri.ImageSpec(image=ref)


async def _timed(coro) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    await coro
    return time.perf_counter() - t


async def bench(sock: Path, reg: Registry, runs: int, images: int, work: Path) -> None:
    refs = [f"{reg.host}/bench/big:v{i}" for i in range(runs)]  # a new image each run: no removal's cleanup in the way
    ref = refs[0]
    channel = Channel(path=str(sock))
    stub = cri.ImageServiceStub(channel)
    try:
        pulls = [await _timed(stub.pull_image(cri.PullImageRequest(image=_spec(r)))) for r in refs]
        for r in refs[1:]:
            await stub.remove_image(cri.RemoveImageRequest(image=_spec(r)))
        skopeo = []
        for i, r in enumerate(refs):
            dest = work / f"oci-{i}"
            t = time.perf_counter()
            subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{r}", f"oci:{dest}:v1"],
                           check=True, capture_output=True)
            skopeo.append(time.perf_counter() - t)
            shutil.rmtree(dest)
        p, s = pct(pulls, .5), pct(skopeo, .5)
        print(f"pull of a 3-layer {3 * LAYER_MB} MB image: podrt p50 {p:.2f} s (download, verify, unpack), "
              f"skopeo copy to oci: p50 {s:.2f} s (download, verify, no unpack); ratio {p / s:.2f}")

        image_id = (await stub.pull_image(cri.PullImageRequest(image=_spec(ref)))).image_ref
        by_digest = f"{reg.host}/bench/big@{(await stub.image_status(cri.ImageStatusRequest(image=_spec(image_id)))).image.repo_digests[0].split('@')[1]}"
        present = [await _timed(stub.pull_image(cri.PullImageRequest(image=_spec(by_digest)))) for _ in range(200)]
        by_tag = [await _timed(stub.pull_image(cri.PullImageRequest(image=_spec(ref)))) for _ in range(100)]
        print(f"PullImage of an image already present: by digest p50 {pct(present, .5) * 1000:.1f} ms, "
              f"p90 {pct(present, .9) * 1000:.1f} ms; by tag (asks the registry for the manifest) "
              f"p50 {pct(by_tag, .5) * 1000:.1f} ms")

        small = [image({"base": b"b" * 1000}, cmd=(f"/bin/run{i}",)) for i in range(images)]
        for i, img in enumerate(small):  # one at a time: concurrent uploads of one blob race in the registry
            await push(reg, "bench/small", img, f"t{i}")
        for i in range(images):
            await stub.pull_image(cri.PullImageRequest(image=_spec(f"{reg.host}/bench/small:t{i}")))
        path = "/runtime.v1.ImageService/ListImages"
        raw = [await _timed(call_raw(channel, path, cri.ListImagesRequest())) for _ in range(50)]
        lists = [await _timed(stub.list_images(cri.ListImagesRequest())) for _ in range(20)]
        print(f"ListImages with {images + 1} images: p50 {pct(raw, .5) * 1000:.1f} ms, p90 {pct(raw, .9) * 1000:.1f} ms "
              f"(without client-side decoding); decoded by a betterproto client: p50 {pct(lists, .5) * 1000:.1f} ms")
    finally:
        channel.close()


def unpack_vs_tar(work: Path, rounds: int = 3) -> None:
    """Medians of `rounds`, podrt and tar taking turns (each first in every
    other round): on a busy disk, whoever runs first pays the journal's flushes."""
    big = image({"data/blob": os.urandom(LAYER_MB * 2**20)}, {f"many/f{i}": b"x" * 100 for i in range(5000)})
    for n, layer in enumerate(big.layers):
        mine, tar, size = [], [], 0
        for r in range(rounds):
            for who in (("podrt", "tar") if r % 2 == 0 else ("tar", "podrt")):
                target = work / f"u{n}-{r}-{who}"
                target.mkdir()
                subprocess.run(["sync"], check=True)
                t = time.perf_counter()
                if who == "podrt":
                    size = unpack_layer(io.BytesIO(layer), target, media_type="application/vnd.oci.image.layer.v1.tar+gzip").uncompressed_size
                    mine.append(time.perf_counter() - t)
                else:
                    subprocess.run(["tar", "-xzf", "-", "-C", str(target)], input=layer, check=True)
                    tar.append(time.perf_counter() - t)
                shutil.rmtree(target)
        what = "1 file of 17 MB" if n == 0 else "5000 files of 100 B"
        m, t = pct(mine, .5), pct(tar, .5)
        print(f"unpack of {what} ({size / 1e6:.1f} MB tar), median of {rounds}: podrt {size / 1e6 / m:.0f} MB/s "
              f"({m * 1000:.0f} ms), tar -x {size / 1e6 / t:.0f} MB/s ({t * 1000:.0f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--images", type=int, default=500)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="podrt-bench-"))
    reg = Registry(base / "registry")
    try:
        for run in range(args.runs):
            big = image(*({f"layer{i}/data": os.urandom(LAYER_MB * 2**20)} for i in range(3)))
            asyncio.run(push(reg, "bench/big", big, f"v{run}"))
        conf = base / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
        (base / "cni").mkdir()
        cfg = write_config(base, image={"registries_conf": str(conf)})
        with open(base / "daemon.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "podrt.cli", "serve", "--config", str(cfg)], stdout=log, stderr=log)
        try:
            asyncio.run(wait_ready(socket_path(base)))
            asyncio.run(bench(socket_path(base), reg, args.runs, args.images, base))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        unpack_vs_tar(base)
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

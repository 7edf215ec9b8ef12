"""ImageService on the real daemon, pulling from a registry on 127.0.0.1:
pull by tag, digest and no tag, through a mirror of a made-up name, status,
list, remove, ImageFsInfo, bad references."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from podrt.api.runtime import v1 as cri
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.registry import REGISTRY_BIN, BuiltImage, Registry, image, push
from tests.support.registry import digest as digest_of

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts the daemon, which runs runc, conmon and catatonit: needs root"),
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN),
                       reason="needs Debian's docker-registry (scripts/install-test-deps.sh installs it)"),
]

BASE = {"etc/os-release": b"ID=test\n", "bin/sh": b"\x7fELF" + b"s" * 20000}
APP = image(BASE, {"app/run": b"#!/bin/sh\necho hi\n"}, user="1000")
OTHER = image(BASE, {"app/other": b"other"}, user="nobody")


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry(Path(tempfile.mkdtemp(prefix="podrt-registry-")))
    asyncio.run(push(reg, "test/app", APP, "v1"))
    asyncio.run(push(reg, "test/app", APP, "latest"))
    asyncio.run(push(reg, "test/other", OTHER, "v1"))
    asyncio.run(push(reg, "team/app", APP, "v1"))
    yield reg
    reg.stop()


@pytest.fixture
def image_daemon(dirs: DaemonDirs, registry: Registry) -> Iterator[DaemonProcess]:
    conf = dirs.base / "registries.conf"
    conf.write_text(
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n\n'
        # a made-up name served only by its mirror on loopback: the upstream is blocked, never dialled
        '[[registry]]\nprefix = "registry.example/team"\nlocation = "registry.example/team"\nblocked = true\n'
        f'[[registry.mirror]]\nlocation = "{registry.host}/team"\ninsecure = true\n\n'
        # an unreachable mirror (a closed loopback port) is skipped for the registry itself
        f'[[registry]]\nprefix = "registry.example/fallback"\nlocation = "{registry.host}/team"\ninsecure = true\n'
        '[[registry.mirror]]\nlocation = "127.0.0.1:1/team"\ninsecure = true\n')
    dirs.write_config({"image": {"registries_conf": str(conf), "certs_dirs": [str(dirs.base / "certs.d")]}})
    proc = DaemonProcess(dirs).start()
    yield proc
    proc.kill()


async def _pull(c: CriClient, ref: str) -> str:
    return (await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=ref)))).image_ref


async def _status(c: CriClient, ref: str) -> cri.ImageStatusResponse:
    return await c.image.image_status(cri.ImageStatusRequest(image=cri.ImageSpec(image=ref), verbose=True))


async def test_pull_status_list_remove(image_daemon: DaemonProcess, registry: Registry) -> None:
    host = registry.host
    async with connect(image_daemon.dirs.socket) as c:
        empty = (await c.image.image_fs_info(cri.ImageFsInfoRequest())).image_filesystems[0]
        image_id = await _pull(c, f"{host}/test/app:v1")
        assert image_id == APP.config_digest
        st = await _status(c, f"{host}/test/app:v1")
        assert st.image.id == image_id and st.image.repo_tags == [f"{host}/test/app:v1"]
        assert st.image.repo_digests == [f"{host}/test/app@{APP.digest}"]
        assert st.image.uid.value == 1000 and st.image.username == ""
        assert '"User": "1000"' in st.info["info"]
        assert (await _status(c, image_id)).image.id == image_id  # by ID
        assert (await _status(c, image_id[7:])).image.id == image_id  # by bare hex
        assert (await _status(c, f"{host}/test/app@{APP.digest}")).image.id == image_id  # by digest
        assert (await _pull(c, f"{host}/test/app")) == image_id  # no tag: :latest, the same image
        assert sorted((await _status(c, image_id)).image.repo_tags) == [f"{host}/test/app:latest", f"{host}/test/app:v1"]
        other = await _pull(c, f"{host}/test/other@{(OTHER.digest)}")  # by digest
        assert (await _status(c, other)).image.username == "nobody"
        listed = (await c.image.list_images(cri.ListImagesRequest())).images
        pause = [i for i in listed if i.pinned]
        assert [i.repo_tags for i in pause] == [["podrt.local/pause:builtin"]]  # the builtin pause image, pinned
        assert {i.id for i in listed if not i.pinned} == {image_id, other}
        with pytest.raises(GRPCError) as err:
            await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image="podrt.local/pause:builtin")))
        assert err.value.status == Status.FAILED_PRECONDITION and "pinned" in (err.value.message or "")
        only = await c.image.list_images(cri.ListImagesRequest(filter=cri.ImageFilter(image=cri.ImageSpec(image=other))))
        assert [i.id for i in only.images] == [other]
        full = (await c.image.image_fs_info(cri.ImageFsInfoRequest())).image_filesystems[0]
        assert full.used_bytes.value > empty.used_bytes.value and full.inodes_used.value > empty.inodes_used.value

        await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=f"{host}/test/app:v1")))
        assert (await _status(c, image_id)).image is None or not (await _status(c, image_id)).image.id
        await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=f"{host}/test/app:v1")))  # unknown: fine
        await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=other)))
        after = (await c.image.image_fs_info(cri.ImageFsInfoRequest())).image_filesystems[0]
        assert after.used_bytes.value < full.used_bytes.value
    store = image_daemon.dirs.root / "images"  # only the pause image's layer and blobs are left
    assert len(list((store / "layers").iterdir())) == 1 and len(list((store / "blobs" / "sha256").iterdir())) == 3
    assert len(list((store / "l").iterdir())) == 1 and list((store / "ingest").iterdir()) == []


async def test_a_pull_by_digest_restores_a_missing_layer(image_daemon: DaemonProcess, registry: Registry) -> None:
    """A digest names fixed content, so a present image is not asked for again,
    unless a layer of it is gone from disk."""
    import shutil

    from podrt.images.store import ImageStore

    ref = f"{registry.host}/test/other@{OTHER.digest}"
    async with connect(image_daemon.dirs.socket) as c:
        await _pull(c, ref)
        store = ImageStore(image_daemon.dirs.root / "images")
        store.load_records()
        top = store.layer_dir(store.get(OTHER.config_digest).layers[-1])  # type: ignore[union-attr]
        shutil.rmtree(top)
        assert await _pull(c, ref) == OTHER.config_digest
        assert (top / "diff" / "app" / "other").read_bytes() == b"other"


async def test_pull_through_a_mirror_records_the_asked_name(image_daemon: DaemonProcess) -> None:
    async with connect(image_daemon.dirs.socket) as c:
        image_id = await _pull(c, "registry.example/team/app:v1")
        st = await _status(c, "registry.example/team/app:v1")
    assert image_id == APP.config_digest
    assert st.image.repo_tags == ["registry.example/team/app:v1"]
    assert st.image.repo_digests == [f"registry.example/team/app@{APP.digest}"]


async def test_an_unreachable_mirror_is_skipped(image_daemon: DaemonProcess) -> None:
    async with connect(image_daemon.dirs.socket) as c:
        assert await _pull(c, "registry.example/fallback/app:v1") == APP.config_digest
        assert (await _status(c, "registry.example/fallback/app:v1")).image.repo_tags == ["registry.example/fallback/app:v1"]
    assert "127.0.0.1:1 for registry.example/fallback/app:v1 failed" in image_daemon.log()


async def test_layers_are_unpacked_and_shared(image_daemon: DaemonProcess, registry: Registry) -> None:
    """20 concurrent pulls of two images sharing a layer: each blob downloaded once."""
    mark = registry.log_size()
    async with connect(image_daemon.dirs.socket) as c:
        await asyncio.gather(*(_pull(c, f"{registry.host}/test/{name}:v1") for name in ("app", "other") for _ in range(10)))
    gets = registry.blob_gets(mark)
    assert len(gets) == len(set(gets)) == 5, gets  # 2 configs + 3 distinct layers
    layers = image_daemon.dirs.root / "images" / "layers"
    diffs = sorted(p / "diff" for p in layers.iterdir() if not (p / "diff" / "catatonit").exists())  # not the pause layer
    assert len(diffs) == 3  # the shared base once, and one layer of each image
    contents = sorted(str(f.relative_to(d)) for d in diffs for f in d.rglob("*") if f.is_file())
    assert contents == ["app/other", "app/run", "bin/sh", "etc/os-release"]


@pytest.mark.parametrize("ref,fragment", [
    ("UPPER/case", "must be lowercase"),
    ("127.0.0.1:1/x@sha256:abc", "invalid digest"),
    ("", "invalid image reference"),
])
async def test_bad_references(image_daemon: DaemonProcess, ref: str, fragment: str) -> None:
    async with connect(image_daemon.dirs.socket) as c:
        with pytest.raises(GRPCError) as err:
            await _pull(c, ref)
    assert err.value.status == Status.INVALID_ARGUMENT and fragment in (err.value.message or "")


async def test_unknown_image_status_is_empty_and_missing_tag_is_not_found(image_daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(image_daemon.dirs.socket) as c:
        st = await _status(c, f"{registry.host}/test/app:nope")
        assert st.image is None or not st.image.id
        with pytest.raises(GRPCError) as err:
            await _pull(c, f"{registry.host}/test/app:nope")
    assert err.value.status == Status.NOT_FOUND and "manifest unknown" in (err.value.message or "")


async def test_credentials_from_the_request_and_the_global_auth_file(dirs: DaemonDirs) -> None:
    reg = Registry(Path(tempfile.mkdtemp(prefix="podrt-registry-")), users={"alice": "s3cret"})
    try:
        await push(reg, "private/app", APP, "v1", user=("alice", "s3cret"))
        await push(reg, "private/other", OTHER, "v1", user=("alice", "s3cret"))
        conf = dirs.base / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n\n'
                        # a made-up name served by a mirror on loopback: the file's entry for the mirror's host is what it gets
                        '[[registry]]\nprefix = "registry.example/private"\nlocation = "registry.example/private"\nblocked = true\n'
                        f'[[registry.mirror]]\nlocation = "{reg.host}/private"\ninsecure = true\n')
        auth_file = dirs.base / "auth.json"
        auth_file.write_text(f'{{"auths": {{"{reg.host}": {{"auth": "YWxpY2U6czNjcmV0"}}}}}}')  # alice:s3cret
        dirs.write_config({"image": {"registries_conf": str(conf), "global_auth_file": str(auth_file)}})
        daemon = DaemonProcess(dirs).start()
        try:
            async with connect(dirs.socket) as c:
                assert await _pull(c, f"{reg.host}/private/app:v1") == APP.config_digest  # the file's credentials
                assert await _pull(c, "registry.example/private/other:v1") == OTHER.config_digest  # per endpoint host
                with pytest.raises(GRPCError) as err:
                    await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=f"{reg.host}/private/app:v1"),
                                                                  auth=cri.AuthConfig(username="alice", password="wrong")))
                assert err.value.status == Status.PERMISSION_DENIED
                resp = await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=f"{reg.host}/private/app:v1"),
                                                                     auth=cri.AuthConfig(username="alice", password="s3cret")))
                assert resp.image_ref == APP.config_digest
                # the same image at the same moment with other credentials: not one shared pull
                await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=APP.config_digest)))
                wrong, right = await asyncio.gather(*(
                    c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=f"{reg.host}/private/app:v1"),
                                                            auth=cri.AuthConfig(username="alice", password=pw)))
                    for pw in ("wrong", "s3cret")), return_exceptions=True)
                assert isinstance(wrong, GRPCError) and wrong.status == Status.PERMISSION_DENIED, wrong
                assert not isinstance(right, BaseException) and right.image_ref == APP.config_digest, right
        finally:
            daemon.kill()
    finally:
        reg.stop()


BIG = image({"big/blob": os.urandom(24 * 1024 * 1024)}, {"small": b"x"})


def _store_leftovers(root: Path) -> dict[str, list[str]]:
    """Half-made things in an image store: ingest files, temp layers, and layers
    and blobs that no image record needs."""
    from podrt.images.store import ImageStore

    store = ImageStore(root / "images")
    store.load_records()
    layers, blobs = store.referenced()
    found = {
        "ingest": [p.name for p in store.blobs.ingest_dir.iterdir()],
        "temp layers": [p.name for p in store.layers_dir.glob(".tmp-*")],
        "layers": [p.name for p in store.layers_dir.iterdir() if f"sha256:{p.name}" not in layers],
        "blobs": [d for d in store.blobs.digests() if d not in blobs],
    }
    return {k: v for k, v in found.items() if v}


async def test_cancelled_pull_leaves_no_partial_blob(image_daemon: DaemonProcess, registry: Registry) -> None:
    await push(registry, "test/big", BIG, "v1")
    async with connect(image_daemon.dirs.socket) as c:
        pull = asyncio.ensure_future(_pull(c, f"{registry.host}/test/big:v1"))
        store = image_daemon.dirs.root / "images"
        for _ in range(500):  # until the big layer is arriving
            if any((store / "ingest").iterdir()):
                break
            await asyncio.sleep(0.005)
        pull.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pull
        await asyncio.sleep(0.5)  # the daemon unwinds the download it no longer has a waiter for
        left = _store_leftovers(image_daemon.dirs.root)
        assert "ingest" not in left and "temp layers" not in left, left
        assert [i.repo_tags for i in (await c.image.list_images(cri.ListImagesRequest())).images] == [["podrt.local/pause:builtin"]]


async def test_kill_mid_pull_leaves_nothing_after_restart(dirs: DaemonDirs, registry: Registry, image_daemon: DaemonProcess) -> None:
    await push(registry, "test/big", BIG, "v1")
    async with connect(dirs.socket) as c:
        pull = asyncio.ensure_future(_pull(c, f"{registry.host}/test/big:v1"))
        store = dirs.root / "images"
        for _ in range(500):
            if any((store / "ingest").iterdir()):
                break
            await asyncio.sleep(0.005)
        image_daemon.kill()  # SIGKILL
        with pytest.raises((StreamTerminatedError, GRPCError, ConnectionError)):  # the daemon is gone
            await pull
    left = _store_leftovers(dirs.root)  # the crash did leave a partial download, or a layer's blob that
    assert left.keys() & {"ingest", "blobs", "layers", "temp layers"}, left  # finished before the kill, in no image
    restarted = DaemonProcess(dirs).start()
    try:
        assert _store_leftovers(dirs.root) == {}
        async with connect(dirs.socket) as c:  # and the same pull works
            assert await _pull(c, f"{registry.host}/test/big:v1") == BIG.config_digest
    finally:
        restarted.kill()


@contextlib.asynccontextmanager
async def _own_registry(dirs: DaemonDirs, img: BuiltImage, layer: Callable[[web.Request], Awaitable[web.StreamResponse]],
                        config: dict[str, Any] | None = None) -> AsyncIterator[tuple[str, DaemonProcess]]:
    """A registry of the test's own on loopback serving `img`'s manifest and
    config, and its layer blobs through `layer`; a daemon pulling from it."""

    async def manifest(_req: web.Request) -> web.Response:
        return web.Response(body=img.manifest, content_type="application/vnd.oci.image.manifest.v1+json")

    async def blob(req: web.Request) -> web.StreamResponse:
        if req.match_info["digest"] == img.config_digest:
            return web.Response(body=img.config)
        return await layer(req)

    app = web.Application()
    app.router.add_get("/v2/own/app/manifests/{ref}", manifest)
    app.router.add_get("/v2/own/app/blobs/{digest}", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        conf = dirs.base / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
        dirs.write_config({"image": {"registries_conf": str(conf), **(config or {})}})
        daemon = DaemonProcess(dirs).start()
        try:
            yield f"{host}/own/app:v1", daemon
        finally:
            daemon.kill()
    finally:
        await runner.cleanup()


async def test_a_stalled_blob_fails_the_pull_naming_it(dirs: DaemonDirs) -> None:
    """The layer's first bytes, then nothing more."""
    img = image({"f": b"x" * 100000})
    released = asyncio.Event()
    layer_digest = digest_of(img.layers[0])

    async def stall(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(len(img.layers[0]))})
        await resp.prepare(req)
        await resp.write(img.layers[0][:100])
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(released.wait(), 30)  # stalled until the test is done
        return resp

    try:
        async with _own_registry(dirs, img, stall, {"pull_progress_timeout": 1.0}) as (ref, _daemon):
            async with connect(dirs.socket) as c:
                with pytest.raises(GRPCError) as err:
                    await _pull(c, ref)
            assert err.value.status == Status.DEADLINE_EXCEEDED
            assert f"blob {layer_digest}: no progress for 1s" in (err.value.message or "")
            assert "ingest" not in _store_leftovers(dirs.root)
    finally:
        released.set()


@pytest.mark.parametrize("where", ["content", "header"])
async def test_a_blob_that_is_not_its_digest_is_refused_and_nothing_stored(dirs: DaemonDirs, where: str) -> None:
    """The registry sends the layer with one byte changed: inside a stored
    deflate block (a file differs), or the gzip header's OS byte (a valid
    stream of exactly the right tar, so only the blob digest tells). It is
    unpacked as it arrives, but neither it nor its blob may be kept."""
    img = image({"f": os.urandom(50000)})  # random: stored, not compressed
    changed = bytearray(img.layers[0])
    changed[len(changed) // 2 if where == "content" else 9] ^= 0x01
    swapped = bytes(changed)

    async def swap(_req: web.Request) -> web.Response:
        return web.Response(body=swapped)

    async with _own_registry(dirs, img, swap) as (ref, _daemon):
        async with connect(dirs.socket) as c:
            with pytest.raises(GRPCError) as err:
                await _pull(c, ref)
        assert err.value.status == Status.UNAVAILABLE, err.value
        assert f"blob {digest_of(img.layers[0])}: content has digest {digest_of(swapped)}" in (err.value.message or "")
        store = dirs.root / "images"
        assert not [p for p in (store / "layers").iterdir() if p.name != _pause_layer(dirs)]
        assert not (store / "blobs" / "sha256" / digest_of(swapped)[7:]).exists()
        assert not (store / "blobs" / "sha256" / digest_of(img.layers[0])[7:]).exists()
        assert not any((store / "ingest").iterdir())


async def test_a_blob_labelled_content_encoding_gzip_is_taken_as_stored(dirs: DaemonDirs) -> None:
    """Some registries (blob storage behind them) label gzipped layers
    `Content-Encoding: gzip`: the digest covers the stored bytes, so they are
    not decoded (and the request asks for identity)."""
    img = image({"f": b"labelled" * 1000})
    asked: list[str] = []

    async def labelled(req: web.Request) -> web.Response:
        asked.append(req.headers.get("Accept-Encoding", ""))
        return web.Response(body=img.layers[0], headers={"Content-Encoding": "gzip"})

    async with _own_registry(dirs, img, labelled) as (ref, _daemon):
        async with connect(dirs.socket) as c:
            assert await _pull(c, ref) == img.config_digest
    assert asked == ["identity"]


def _pause_layer(dirs: DaemonDirs) -> str:
    from podrt.images.store import ImageStore

    store = ImageStore(dirs.root / "images")
    store.load_records()
    return next(r.layers[0] for r in store.records() if r.pinned)[7:]


async def test_an_index_resolves_to_this_hosts_platform(image_daemon: DaemonProcess, registry: Registry) -> None:
    import aiohttp

    from podrt.images.pull import host_platform
    from tests.support.registry import index, put_manifest

    ours = image({"platform": host_platform()[1].encode()}, arch=host_platform()[1])
    foreign = image({"platform": b"s390x"}, arch="s390x")
    await push(registry, "test/multi", ours, "ours")
    await push(registry, "test/multi", foreign, "foreign")
    body = index((foreign, "s390x"), (ours, host_platform()[1]))
    async with aiohttp.ClientSession() as s:
        await put_manifest(s, registry, "test/multi", "v1", body, "application/vnd.oci.image.index.v1+json")
    async with connect(image_daemon.dirs.socket) as c:
        assert await _pull(c, f"{registry.host}/test/multi:v1") == ours.config_digest
        st = await _status(c, ours.config_digest)  # the repo digest is the index's, as in containerd
        assert st.image.repo_digests == [f"{registry.host}/test/multi@{digest_of(body)}"]
        assert await _pull(c, f"{registry.host}/test/multi@{digest_of(body)}") == ours.config_digest


async def test_podrt_image_ls_lists_the_store(image_daemon: DaemonProcess, registry: Registry) -> None:
    import subprocess

    from tests.support.daemon import podrt_command

    async with connect(image_daemon.dirs.socket) as c:
        image_id = await _pull(c, f"{registry.host}/test/app:v1")
    out = subprocess.run(podrt_command("image", "ls", "--config", str(image_daemon.dirs.config_file)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"{registry.host}/test/app:v1" in out.stdout and image_id[7:19] in out.stdout


async def test_import_beside_a_running_daemon(image_daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    """`podrt image import` writes the store while the daemon serves: the daemon
    sees the image, and its garbage collection keeps what the import brought."""
    import subprocess

    from tests.support.daemon import podrt_command
    from tests.unit.test_image_archive import docker_save, sha

    archive = tmp_path / "saved.tar"
    config, _ = docker_save(archive, ["example.local/imported:v1"])
    out = subprocess.run(podrt_command("image", "import", str(archive), "--config", str(image_daemon.dirs.config_file)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    async with connect(image_daemon.dirs.socket) as c:
        assert (await _status(c, "example.local/imported:v1")).image.id == sha(config)
        other = await _pull(c, f"{registry.host}/test/other:v1")
        await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=other)))  # garbage collection runs
        assert (await _status(c, "example.local/imported:v1")).image.id == sha(config)
    assert "layers" not in _store_leftovers(image_daemon.dirs.root) and "blobs" not in _store_leftovers(image_daemon.dirs.root)
    imported = [r for r in _records(image_daemon.dirs.root) if "example.local/imported:v1" in r.repo_tags]
    assert imported and all((image_daemon.dirs.root / "images" / "layers" / c[7:] / "diff").is_dir() for c in imported[0].layers)


async def test_imported_images_are_found_by_the_names_they_were_given(image_daemon: DaemonProcess, tmp_path: Path) -> None:
    """An OCI layout's ref.names name its images as podman load would, and
    --name names a one-image archive as the kubelet will ask for it."""
    import subprocess

    from tests.support.daemon import podrt_command
    from tests.unit.test_image_archive import Oci, sha

    def imported(*args: str) -> list[str]:
        out = subprocess.run(podrt_command("image", "import", *args, "--config", str(image_daemon.dirs.config_file)),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [line.split()[0] for line in out.stdout.splitlines()]

    layout = Oci()
    bare, config_bare, _ = layout.image(tag=b"bare")
    short, config_short, _ = layout.image(tag=b"short")
    layout.add(bare, **{"org.opencontainers.image.ref.name": "1.36"})
    layout.add(short, **{"org.opencontainers.image.ref.name": "tools/app:2"})
    assert imported(str(layout.write_dir(tmp_path / "layout"))) == ["localhost/1.36:latest", "localhost/tools/app:2"]

    single = Oci()
    one, config_one, _ = single.image(tag=b"one")
    single.add(one, **{"org.opencontainers.image.ref.name": "ignored"})
    assert imported(str(single.write_tar(tmp_path / "one.tar")), "--name", "busybox:air") == ["docker.io/library/busybox:air"]

    async with connect(image_daemon.dirs.socket) as c:
        assert (await _status(c, "localhost/1.36")).image.id == sha(config_bare)
        assert (await _status(c, "localhost/tools/app:2")).image.id == sha(config_short)
        assert (await _status(c, "busybox:air")).image.id == sha(config_one)  # the kubelet's spelling
        ignored = (await _status(c, "localhost/ignored:latest")).image
        assert ignored is None or not ignored.id


def _records(root: Path) -> list:  # type: ignore[type-arg]
    from podrt.images.store import ImageStore

    store = ImageStore(root / "images")
    store.load_records()
    return store.records()


async def test_a_removal_during_a_pull_collects_garbage_after_it(image_daemon: DaemonProcess, registry: Registry) -> None:
    """The pull's blobs have no record yet: the removal's garbage collection
    waits for the pull, then runs (it used to be skipped until the next one)."""
    await push(registry, "test/big", BIG, "v1")
    async with connect(image_daemon.dirs.socket) as c:
        other = await _pull(c, f"{registry.host}/test/other:v1")
        pull = asyncio.ensure_future(_pull(c, f"{registry.host}/test/big:v1"))
        store = image_daemon.dirs.root / "images"
        for _ in range(500):
            if any((store / "ingest").iterdir()):
                break
            await asyncio.sleep(0.005)
        await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=other)))
        assert await pull == BIG.config_digest
        await asyncio.sleep(0.3)
        assert (await _status(c, f"{registry.host}/test/big:v1")).image.id == BIG.config_digest
    assert _store_leftovers(image_daemon.dirs.root) == {}  # other's layers and blobs are gone, big's all kept

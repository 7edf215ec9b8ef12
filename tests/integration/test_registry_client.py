"""The registry client against a real registry on 127.0.0.1: manifests by tag
and digest, indexes, blobs streamed into the blob store, basic auth."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from podrt import errors
from podrt.images.blobs import BlobMismatch, BlobStore
from podrt.images.registry import INDEX_TYPES, AuthError, Credentials, RegistryClient, RegistryError
from tests.support.registry import REGISTRY_BIN, Registry, digest, image, index, push, put_manifest

pytestmark = pytest.mark.skipif(not os.path.exists(REGISTRY_BIN),
                                reason="needs Debian's docker-registry (scripts/install-test-deps.sh installs it)")

IMG = image({"etc/hello": b"hello\n"}, {"bin/tool": b"\x7fELF" + b"x" * 5000})


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry(Path(tempfile.mkdtemp(prefix="podrt-registry-")))
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def auth_registry() -> Iterator[Registry]:
    reg = Registry(Path(tempfile.mkdtemp(prefix="podrt-registry-")), users={"alice": "s3cret"})
    yield reg
    reg.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_manifest_by_tag_and_by_digest(registry: Registry, session: aiohttp.ClientSession) -> None:
    await push(registry, "test/app", IMG, "v1")
    client = RegistryClient(session, registry.host, insecure=True)
    by_tag = await client.manifest("test/app", "v1")
    assert by_tag.body == IMG.manifest and by_tag.digest == IMG.digest
    assert by_tag.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert (await client.manifest("test/app", IMG.digest)).body == IMG.manifest
    with pytest.raises(errors.NotFound, match="manifest unknown"):
        await client.manifest("test/app", "nope")


async def test_index(registry: Registry, session: aiohttp.ClientSession) -> None:
    arm = image({"arch": b"arm64"}, arch="arm64")
    await push(registry, "test/multi", IMG, "amd64-only")
    await push(registry, "test/multi", arm, "arm64-only")
    body = index((IMG, "amd64"), (arm, "arm64"))
    await put_manifest(session, registry, "test/multi", "latest", body, "application/vnd.oci.image.index.v1+json")
    got = await RegistryClient(session, registry.host, insecure=True).manifest("test/multi", "latest")
    assert got.media_type in INDEX_TYPES and got.body == body


async def test_blob_streams_into_the_store_verified(registry: Registry, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    await push(registry, "test/app", IMG, "v1")
    client = RegistryClient(session, registry.host, insecure=True)
    store = BlobStore(tmp_path)
    store.prepare()
    layer_digest = digest(IMG.layers[1])
    path = await store.write(layer_digest, len(IMG.layers[1]), client.blob("test/app", layer_digest))
    assert path.read_bytes() == IMG.layers[1]
    other = digest(IMG.layers[0])  # the bytes of one blob offered as another: refused, nothing stored
    with pytest.raises(BlobMismatch):
        await store.write(other, len(IMG.layers[1]), client.blob("test/app", layer_digest))
    assert not store.has(other) and list(store.ingest_dir.iterdir()) == []
    with pytest.raises(errors.NotFound, match="blob sha256:0000"):
        async for _ in client.blob("test/app", "sha256:" + "0" * 64):
            pass


async def test_basic_auth(auth_registry: Registry, session: aiohttp.ClientSession) -> None:
    await push(auth_registry, "private/app", IMG, "v1", user=("alice", "s3cret"))
    good = RegistryClient(session, auth_registry.host, insecure=True, credentials=Credentials("alice", "s3cret"))
    assert (await good.manifest("private/app", "v1")).digest == IMG.digest
    from_auth = Credentials.from_docker("YWxpY2U6czNjcmV0")  # base64("alice:s3cret"), docker config.json style
    assert (await RegistryClient(session, auth_registry.host, insecure=True, credentials=from_auth)
            .manifest("private/app", "v1")).digest == IMG.digest
    for creds in (Credentials("alice", "wrong"), Credentials()):
        with pytest.raises(AuthError):
            await RegistryClient(session, auth_registry.host, insecure=True, credentials=creds).manifest("private/app", "v1")


async def test_insecure_plain_http_registry_is_found_and_remembered(registry: Registry, session: aiohttp.ClientSession) -> None:
    from podrt.images import registry as client_module

    client_module._PLAIN_HTTP.discard(registry.host)
    first = RegistryClient(session, registry.host, insecure=True)
    assert first.base.startswith("https://")  # TLS is tried first
    await first.manifest("test/app", "v1")
    assert first.base.startswith("http://")
    assert RegistryClient(session, registry.host, insecure=True).base.startswith("http://")  # no second TLS attempt
    assert RegistryClient(session, registry.host).base.startswith("https://")  # never for a secure one


async def test_unreachable_registry_is_unavailable(session: aiohttp.ClientSession) -> None:
    with pytest.raises(RegistryError) as err:
        await RegistryClient(session, "127.0.0.1:1", insecure=True).manifest("x/y", "latest")
    assert isinstance(err.value, errors.Unavailable)


async def test_a_manifest_sent_in_small_writes_is_read_whole(session: aiohttp.ClientSession) -> None:
    """read(n) gives only what is buffered: a 100 KB manifest arriving in 8 KB
    writes was cut at 8 KB (a test server of our own, on loopback)."""
    import asyncio

    from aiohttp import web

    body = b'{"schemaVersion": 2, "pad": "' + b"x" * 100_000 + b'"}'

    async def manifest(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        await resp.prepare(req)
        for i in range(0, len(body), 8192):
            await resp.write(body[i:i + 8192])
            await asyncio.sleep(0.001)
        return resp

    app = web.Application()
    app.router.add_get("/v2/x/y/manifests/{ref}", manifest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        got = await RegistryClient(session, host, insecure=True).manifest("x/y", "v1")
        assert got.body == body
    finally:
        await runner.cleanup()

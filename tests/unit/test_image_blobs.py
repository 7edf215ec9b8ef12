"""The blob store: only verified content lands; partial downloads never do;
concurrent needs of one blob share one download."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from podrt.images.blobs import BlobMismatch, BlobStore, parse_digest

DATA = b"layer bytes " * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


async def chunks(data: bytes, size: int = 1000, pause: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if pause is not None and i:
            await pause.wait()
        yield data[i:i + size]


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    s = BlobStore(tmp_path / "images")
    s.prepare()
    return s


def _ingest_files(store: BlobStore) -> list[Path]:
    return list(store.ingest_dir.iterdir())


async def test_verified_blob_lands(store: BlobStore) -> None:
    seen: list[int] = []
    path = await store.write(DIGEST, len(DATA), chunks(DATA), progress=seen.append)
    assert path.read_bytes() == DATA and store.has(DIGEST)
    assert sum(seen) == len(DATA)
    assert _ingest_files(store) == []
    assert store.digests() == [DIGEST]


@pytest.mark.parametrize("digest,size,fragment", [
    ("sha256:" + "0" * 64, len(DATA), "content has digest " + DIGEST),
    (DIGEST, len(DATA) - 1, "more than the"),
    (DIGEST, len(DATA) + 1, "got 12000 bytes"),
])
async def test_mismatch_stores_nothing(store: BlobStore, digest: str, size: int, fragment: str) -> None:
    with pytest.raises(BlobMismatch, match=fragment):
        await store.write(digest, size, chunks(DATA))
    assert not store.has(digest) and _ingest_files(store) == []


def test_only_sha256_digests() -> None:
    for bad in ("sha256:abc", "sha512:" + "0" * 128, "md5:x", "sha256:" + "A" * 64, "../../x"):
        with pytest.raises(ValueError):
            parse_digest(bad)


def test_prepare_removes_what_a_crash_left(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "images")
    store.prepare()
    (store.ingest_dir / "half-written").write_bytes(b"x" * 10)
    BlobStore(tmp_path / "images").prepare()  # the next start
    assert _ingest_files(store) == []


async def test_concurrent_needs_share_one_download(store: BlobStore) -> None:
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> Path:
        nonlocal calls
        calls += 1
        return await store.write(DIGEST, len(DATA), chunks(DATA, pause=gate))

    waiters = [asyncio.ensure_future(store.fetch_once(DIGEST, fetch)) for _ in range(20)]
    await asyncio.sleep(0.01)
    gate.set()
    paths = await asyncio.gather(*waiters)
    assert calls == 1 and set(paths) == {store.path(DIGEST)}
    assert await store.fetch_once(DIGEST, fetch) == store.path(DIGEST) and calls == 1  # present: no fetch


async def test_last_waiter_leaving_cancels_and_leaves_no_partial_blob(store: BlobStore) -> None:
    gate = asyncio.Event()

    async def fetch() -> Path:
        return await store.write(DIGEST, len(DATA), chunks(DATA, pause=gate))

    first = asyncio.ensure_future(store.fetch_once(DIGEST, fetch))
    second = asyncio.ensure_future(store.fetch_once(DIGEST, fetch))
    await asyncio.sleep(0.01)
    first.cancel()  # one client goes away: the other still wants the blob
    await asyncio.sleep(0.01)
    assert _ingest_files(store) != [] and not second.done()
    second.cancel()  # the last one goes too: the download is cancelled, its file removed
    with pytest.raises(asyncio.CancelledError):
        await second
    assert _ingest_files(store) == [] and not store.has(DIGEST)


async def test_usage_counts_blobs(store: BlobStore) -> None:
    assert store.usage() == (0, 0)
    await store.write(DIGEST, len(DATA), chunks(DATA))
    used, inodes = store.usage()
    assert inodes == 1 and used >= len(DATA)


async def test_a_newcomer_after_everyone_left_starts_afresh() -> None:
    """Client A leaves (the shared work is being cancelled); B, arriving while
    it unwinds, must get a new run, not A's cancellation."""
    from podrt.aio import SharedTask

    runs = 0
    unwinding = asyncio.Event()

    async def work() -> str:
        nonlocal runs
        runs += 1
        try:
            await asyncio.sleep(0.05 if runs > 1 else 60)
            return f"run {runs}"
        except asyncio.CancelledError:
            unwinding.set()
            await asyncio.sleep(0.05)  # its cleanup takes a while
            raise

    first = SharedTask(work(), name="w")
    a = asyncio.ensure_future(first.wait())
    await asyncio.sleep(0.01)
    a.cancel()
    await asyncio.sleep(0)
    assert first.done()  # abandoned: not to be joined
    second = SharedTask(work(), name="w") if first.done() else first
    assert await second.wait() == "run 2"

"""A pull whose layers fail together: every layer task's error is retrieved.

A hostile image (here two layers with `../` names) fails the pull with the
first layer's error; the other layer's unpack, cancelled by that failure
while it was finishing, fails as well. Its error must be retrieved (asyncio
logs "Task exception was never retrieved" with a traceback otherwise), and
the pull returns only once every layer's work has unwound.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from podrt import errors
from podrt.aio import SharedTask
from podrt.images import pull
from podrt.images import store as store_module
from podrt.images.registry import Manifest
from podrt.images.store import ImageStore, chain_ids
from podrt.oci.reference import parse
from tests.support.registry import OCI_MANIFEST, digest, image, layer

HOSTILE_A = {"../escape-a": b"a"}
HOSTILE_B = {"../escape-b": b"b"}


class FakeClient:
    """Serves `img`; layer A's bytes only once layer B's blob is wholly sent,
    so B's download is over (B waits on its unpack) when A fails the pull."""

    def __init__(self, img: Any) -> None:
        self.img = img
        self.b_sent = asyncio.Event()

    async def manifest(self, _repo: str, _ref: str) -> Manifest:
        return Manifest(OCI_MANIFEST, self.img.manifest, digest(self.img.manifest))

    async def blob(self, _repo: str, want: str) -> AsyncIterator[bytes]:
        a, b = self.img.layers
        if want == digest(self.img.config):
            yield self.img.config
        elif want == digest(b):
            yield b
            self.b_sent.set()
        else:
            await self.b_sent.wait()
            yield a


def _b_cancelled(name: str) -> bool:
    """Whether the shared download task `name` has been asked to cancel (no reference kept)."""
    return any(t.get_name() == name and t.cancelling() for t in asyncio.all_tasks())


async def test_two_failing_layers_leave_no_unretrieved_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = image(HOSTILE_A, HOSTILE_B)
    b_chain = chain_ids([digest(layer(HOSTILE_A)[1]), digest(layer(HOSTILE_B)[1])])[1]
    store = ImageStore(tmp_path / "images")
    store.prepare()
    client = FakeClient(img)
    puller = pull.Puller(store, pull.PullSettings(tmp_path / "registries.conf", ()), None)  # type: ignore[arg-type]

    async def manifest(_ref: Any, _creds: Any) -> tuple[Any, str, Manifest]:
        return client, "own/app", await client.manifest("own/app", "v1")

    monkeypatch.setattr(puller, "_manifest", manifest)

    # B's unpack (on a thread of its own) starts reading only once A's failure
    # has cancelled B's download task, which then waits on it
    b_cancelled = threading.Event()
    real_unpack, real_add = store_module.unpack_layer, ImageStore._add_layer
    adding = threading.local()  # the chain ID whose layer this thread adds

    def add_layer(self: ImageStore, chain_id: str, *args: Any) -> None:
        adding.chain_id = chain_id
        real_add(self, chain_id, *args)

    def unpack(stream: BinaryIO, target: Path, *, media_type: str) -> Any:
        if getattr(adding, "chain_id", None) == b_chain:
            assert b_cancelled.wait(30), "layer B's task was never cancelled"
        return real_unpack(stream, target, media_type=media_type)

    monkeypatch.setattr(ImageStore, "_add_layer", add_layer)
    monkeypatch.setattr(store_module, "unpack_layer", unpack)

    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(f"{ctx.get('message')}: {ctx.get('future')}"))
    try:
        pulling = asyncio.ensure_future(puller.pull(parse("127.0.0.1:1/own/app:v1")))
        shared_name = f"blob {digest(img.layers[1])}"
        while not pulling.done():
            if _b_cancelled(shared_name):
                b_cancelled.set()
            await asyncio.sleep(0.01)
        assert b_cancelled.is_set(), "the pull ended before B's download was cancelled: the test proves nothing"
        error = pulling.exception()
        assert isinstance(error, errors.InvalidArgument) and "escape-a" in str(error), error
        del pulling, error
        for _ in range(3):  # an unretrieved exception is reported when its task is collected
            gc.collect()
            await asyncio.sleep(0)
    finally:
        b_cancelled.set()
        loop.set_exception_handler(previous)
    assert reported == []
    assert list(store.layers_dir.iterdir()) == []
    assert list(store.blobs.ingest_dir.iterdir()) == []


async def test_an_abandoned_shared_task_is_awaited_and_its_error_taken() -> None:
    """The last waiter leaves (cancelled, then cancelled again while it waits
    for the work to unwind): it returns only after the work has ended, and the
    work's own error is retrieved, not reported as never retrieved."""
    release = asyncio.Event()
    ended = False

    async def work() -> None:
        nonlocal ended
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()  # unwinding takes a while, then fails
            ended = True
            raise ValueError("failed while cancelled")

    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(f"{ctx.get('message')}: {ctx.get('future')}"))
    try:
        waiter = asyncio.ensure_future(SharedTask(work(), name="shared work").wait())
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.sleep(0.01)
        waiter.cancel()  # a second cancel while it waits for the unwinding
        await asyncio.sleep(0.01)
        assert not waiter.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert ended
        del waiter
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []

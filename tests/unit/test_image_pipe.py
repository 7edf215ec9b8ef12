"""The loop-to-thread pipe a pull unpacks through: order, bounds, EOF, abort."""

from __future__ import annotations

import asyncio
import io

import pytest

from podrt.images.pipe import PipeAborted, ThreadPipe


def _read_all(pipe: ThreadPipe, size: int) -> bytes:
    out = io.BytesIO()
    while chunk := pipe.read(size):
        out.write(chunk)
    return out.getvalue()


@pytest.mark.parametrize("size", [1, 7, 512, 1 << 20, -1])
async def test_bytes_arrive_whole_and_in_order_whatever_the_read_size(size: int) -> None:
    pipe = ThreadPipe(asyncio.get_running_loop(), limit=64)
    data = bytes(range(256)) * 40
    reader = asyncio.ensure_future(asyncio.to_thread(_read_all, pipe, size))
    for i in range(0, len(data), 100):
        await pipe.put(data[i:i + 100])
    pipe.close()
    assert await reader == data


async def test_a_full_pipe_holds_the_writer_until_the_reader_takes_some() -> None:
    pipe = ThreadPipe(asyncio.get_running_loop(), limit=10)
    await pipe.put(b"x" * 10)
    second = asyncio.ensure_future(pipe.put(b"y"))
    await asyncio.sleep(0.05)
    assert not second.done()  # bounded: a slow unpack slows the download, not memory
    assert await asyncio.to_thread(pipe.read, 4) == b"xxxx"
    await asyncio.wait_for(second, 2)


async def test_abort_wakes_a_waiting_reader_with_pipe_aborted() -> None:
    pipe = ThreadPipe(asyncio.get_running_loop())
    reader = asyncio.ensure_future(asyncio.to_thread(pipe.read, 10))
    await asyncio.sleep(0.05)
    pipe.abort()
    with pytest.raises(PipeAborted):
        await asyncio.wait_for(reader, 2)


async def test_puts_after_the_reader_left_are_dropped_not_blocking() -> None:
    pipe = ThreadPipe(asyncio.get_running_loop(), limit=4)
    with pipe:
        pass  # a reader that failed (an unsafe layer) or found the layer present
    for _ in range(10):
        await asyncio.wait_for(pipe.put(b"12345678"), 1)


async def test_a_gzip_layer_arriving_a_byte_at_a_time_is_still_seen_as_gzip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The compression is sniffed from the first 4 bytes: a pipe may hand
    over fewer in one read, and a gzip layer must not be taken for a tar."""
    from podrt.images.unpack import unpack_layer
    from tests.support.registry import layer

    gz, plain = layer({"f": b"x" * 1000})
    pipe = ThreadPipe(asyncio.get_running_loop())
    unpack = asyncio.ensure_future(asyncio.to_thread(unpack_layer, pipe, tmp_path, media_type=""))
    for i in range(len(gz)):
        await pipe.put(gz[i:i + 1])
    pipe.close()
    stats = await unpack
    assert (tmp_path / "f").read_bytes() == b"x" * 1000 and stats.uncompressed_size == len(plain)

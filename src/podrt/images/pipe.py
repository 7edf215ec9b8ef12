"""Bytes from the event loop to a blocking reader in a thread, bounded.

A pull unpacks a layer while its blob downloads: the download (on the loop)
puts each chunk here as it also writes it to the blob store, and the unpack
(in a thread, reading like a file) takes them. The buffer is bounded, so a
slow disk slows the download instead of filling memory. The layer is put in
place only after the blob's digest is verified, so unpacking early changes
nothing about what a crash or a bad blob leaves behind.
"""

from __future__ import annotations

import asyncio
import collections
import threading


class PipeAborted(OSError):
    """The writer gave up (download failed or cancelled): the reader stops."""


class ThreadPipe:
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = 8 << 20) -> None:
        self._loop, self._limit = loop, limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._offset = 0  # into the first chunk: slicing its tail off again and again would copy it each time
        self._lock = threading.Condition()
        self._space = asyncio.Event()
        self._space.set()
        self._closed = False  # the writer is done: EOF once drained
        self._aborted = False
        self._reader_gone = False

    # ---- the writer (event loop) -------------------------------------------

    async def put(self, data: bytes) -> None:
        """Queue `data`, waiting while the buffer is full; dropped once the reader has gone."""
        while True:
            with self._lock:
                if self._reader_gone:
                    return
                if self._buffered < self._limit:
                    self._chunks.append(data)
                    self._buffered += len(data)
                    self._lock.notify()
                    return
                self._space.clear()  # under the lock: a reader's wake-up comes after it
            await self._space.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            self._lock.notify()

    # ---- the reader (a thread) -----------------------------------------------

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes (all, when negative), blocking until some come;
        b"" at the end; PipeAborted when the writer gave up."""
        if size == 0:
            return b""
        if size < 0:  # to the end, taken piece by piece: the writer waits for room
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        with self._lock:
            while True:
                if self._aborted:
                    raise PipeAborted("the layer's download stopped")
                if self._chunks:
                    break
                if self._closed:
                    return b""
                self._lock.wait()
            was_full = self._buffered >= self._limit
            head, start = self._chunks[0], self._offset
            out = head[start:start + size]
            self._offset += len(out)
            if self._offset == len(head):
                self._chunks.popleft()
                self._offset = 0
            self._buffered -= len(out)
            if was_full and self._buffered < self._limit:
                self._loop.call_soon_threadsafe(self._space.set)
            return out

    def __enter__(self) -> ThreadPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        """The reader is done (finished or failed): the writer's puts are dropped from now on."""
        with self._lock:
            self._reader_gone = True
            self._chunks.clear()
            self._buffered = self._offset = 0
        self._loop.call_soon_threadsafe(self._space.set)

"""Our own grpclib CRI client for tests (no crictl in the repo's tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
from grpclib.client import Channel

from podrt.api.runtime import v1 as cri


@attrs.frozen
class CriClient:
    channel: Channel
    runtime: cri.RuntimeServiceStub
    image: cri.ImageServiceStub


@asynccontextmanager
async def connect(socket_path: Path) -> AsyncIterator[CriClient]:
    channel = Channel(path=str(socket_path))
    try:
        yield CriClient(channel, cri.RuntimeServiceStub(channel), cri.ImageServiceStub(channel))
    finally:
        channel.close()

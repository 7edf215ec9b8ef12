"""What the benchmark scripts share: a daemon config in a temp dir, waiting for
the daemon's first answer, percentiles."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import tomli_w
from grpclib.client import Channel
from grpclib.const import Cardinality

from podrt.api.runtime import v1 as cri


def write_config(base: Path, **extra: Any) -> Path:
    """A config keeping every path of the daemon inside base; `extra` adds [podrt] keys."""
    podrt: dict[str, Any] = {
        "root": str(base / "root"),
        "runroot": str(base / "run"),
        "log_dir": str(base / "logs"),
        "api": {"listen": str(base / "run" / "podrt.sock")},
        "network": {"network_dir": str(base / "cni"), "netns_dir": str(base / "run" / "netns")},
        "runtime": {"runtimes": {"runc": {"runtime_path": "/usr/sbin/runc", "runtime_root": str(base / "run" / "runc")}}},
    }
    podrt.update(extra)
    path = base / "podrt.toml"
    path.write_text(tomli_w.dumps({"podrt": podrt}))
    return path


def socket_path(base: Path) -> Path:
    return base / "run" / "podrt.sock"


async def wait_ready(sock: Path, timeout: float = 20.0) -> None:
    """Until the daemon answers Version."""
    deadline = time.monotonic() + timeout
    while True:
        if sock.exists():
            channel = Channel(path=str(sock))
            try:
                await cri.RuntimeServiceStub(channel).version(cri.VersionRequest())
                return
            except (ConnectionError, OSError):
                pass
            finally:
                channel.close()
        if time.monotonic() > deadline:
            raise TimeoutError("daemon did not answer")
        await asyncio.sleep(0.005)


class RawReply:
    """Keeps the reply's bytes: measures the server, not the client's decoder."""

    @classmethod
    def FromString(cls, data: bytes) -> bytes:  # noqa: N802 (grpclib's codec calls this name)
        return data


async def call_raw(ch: Channel, path: str, request: Any) -> bytes:
    """A unary call whose answer is kept as bytes (no client-side decoding)."""
    async with ch.request(path, Cardinality.UNARY_UNARY, type(request), RawReply) as stream:  # type: ignore[arg-type]
        await stream.send_message(request, end=True)
        return await stream.recv_message()  # type: ignore[return-value]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

"""The gRPC server on a unix socket: both CRI services, unknown methods, socket file.

grpclib answers an unknown RPC path with a bare HTTP/2 header block without
content-type, which Go gRPC clients (kubelet, crictl) report as Unknown
"malformed header: missing HTTP content-type". A newer kubelet calls RPCs we
do not know yet, so unknown paths are routed to a handler that answers
UNIMPLEMENTED through the normal response path (with content-type).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import betterproto
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from podrt.errors import FailedPrecondition


@dataclass(eq=False, repr=False)
class _AnyMessage(betterproto.Message):
    """Accepts any payload (unknown fields are skipped); never inspected."""


def _unimplemented(method_name: str) -> Handler:
    async def answer(stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, f"unknown method {method_name}")

    return Handler(answer, Cardinality.STREAM_STREAM, _AnyMessage, _AnyMessage)


class _MethodTable(dict):  # type: ignore[type-arg]
    """The server's path -> handler table; unknown paths get UNIMPLEMENTED."""

    def get(self, key: str, default: Any = None) -> Handler:  # type: ignore[override]
        found = super().get(key)
        return found if found is not None else _unimplemented(key)


class CriServer(Server):
    def __init__(self, handlers: Collection[Any], **kwargs: Any) -> None:
        super().__init__(handlers, **kwargs)
        self._mapping = _MethodTable(self._mapping)


def prepare_socket_path(path: Path) -> None:
    """Create parent dirs and remove a stale socket; refuse a live or foreign one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FailedPrecondition(f"{path} exists and is not a socket; remove it or choose another --listen path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        path.unlink(missing_ok=True)  # stale: nobody listens on it
        return
    finally:
        probe.close()
    raise FailedPrecondition(f"{path} is in use by a running server (another podrt?); stop it or choose another --listen path")


async def listen_unix(server: Server, path: Path, mode: int) -> None:
    """Bind the socket with `mode` from the first moment (umask, then chmod)."""
    prepare_socket_path(path)
    old = os.umask(0o777 & ~mode)
    try:
        await server.start(path=str(path))
    finally:
        os.umask(old)
    os.chmod(path, mode)


def remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

"""Per-RPC metrics and error mapping for every method.

The server wraps each method's handler once (CriServer.wrap_handlers), so no
handler needs a decorator and methods added later are covered automatically.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.cri.errors import to_grpc_error
from podrt.errors import SHUTTING_DOWN
from podrt.node.metrics import Metrics
from podrt.rpc.call import CallFunc
from podrt.server import CriServer

KNOWN_PREFIXES = ("/runtime.v1.RuntimeService/", "/runtime.v1.ImageService/")


def operation_name(method_name: str) -> str:
    """'/runtime.v1.RuntimeService/Version' -> 'Version'; other paths -> 'unknown'
    (bounded label cardinality whatever a client sends)."""
    for prefix in KNOWN_PREFIXES:
        if method_name.startswith(prefix):
            return method_name[len(prefix):]
    return "unknown"


MAX_MESSAGE = 1024  # characters of an error message sent back


def bounded(error: GRPCError) -> GRPCError:
    """Messages echo request values: a 90 KB one would block the loop while
    it is percent-encoded, and overflow the client's header limit (the
    connection drops, with every other call on it)."""
    message = error.message or ""
    if len(message) <= MAX_MESSAGE:
        return error
    cut = f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"
    return GRPCError(error.status, cut, error.details)


def _wrap(func: CallFunc, operation: str, metrics: Metrics, server: CriServer) -> CallFunc:
    async def handler(stream: Any) -> None:
        start = time.perf_counter()
        code = "OK"
        try:
            if server.draining:  # arrived on an open connection after SIGTERM
                raise GRPCError(Status.UNAVAILABLE, SHUTTING_DOWN)
            await func(stream)
        except GRPCError as exc:
            code = exc.status.name
            raise bounded(exc) from None
        except asyncio.CancelledError:
            code = "CANCELLED"  # client deadline passed or stream reset
            raise
        except Exception as exc:
            error = to_grpc_error(exc, operation)
            code = error.status.name
            raise bounded(error) from None
        finally:
            metrics.observe_operation(operation, time.perf_counter() - start, code)

    return handler


def install(server: CriServer, metrics: Metrics) -> None:
    server.wrap_handlers(lambda func, path: _wrap(func, operation_name(path), metrics, server))

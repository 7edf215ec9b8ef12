"""Domain error -> gRPC status. The one place that knows both."""

from __future__ import annotations

import errno
import logging
import os
import re

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt import errors
from podrt.logutil import RateLimited

log = logging.getLogger(__name__)
_refusals: dict[tuple[str, Status], RateLimited] = {}  # a budget per operation and status: probes' noise hides no create
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Answers worth a line in the daemon's log: why a request was refused or could
# not be done. NotFound and AlreadyExists are routine (the kubelet polls and retries).
_LOGGED = frozenset({Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION, Status.RESOURCE_EXHAUSTED,
                     Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.PERMISSION_DENIED})
LOGGED_CHARS = 300

_STATUS: dict[type[errors.PodrtError], Status] = {
    errors.InvalidArgument: Status.INVALID_ARGUMENT,
    errors.NotFound: Status.NOT_FOUND,
    errors.AlreadyExists: Status.ALREADY_EXISTS,
    errors.FailedPrecondition: Status.FAILED_PRECONDITION,
    errors.Unavailable: Status.UNAVAILABLE,
    errors.DeadlineExceeded: Status.DEADLINE_EXCEEDED,
    errors.ResourceExhausted: Status.RESOURCE_EXHAUSTED,
    errors.PermissionDenied: Status.PERMISSION_DENIED,
}
_FULL = (errno.ENOSPC, errno.EDQUOT)


def loggable(text: str) -> str:
    """A client's text in one log line: bounded, its control characters escaped
    (a host_path with a newline must not forge a record, or a traceback)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text[:LOGGED_CHARS])


def _exhausted(exc: Exception) -> errors.ResourceExhausted | None:
    """A full disk anywhere below (state, journal, host files) is the host's
    condition, not a bug: ResourceExhausted naming what could not be written."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        reason = exc.strerror or os.strerror(exc.errno)
        return errors.ResourceExhausted(f"cannot write {exc.filename}: {reason}" if exc.filename else str(exc) or reason)
    return None


def to_grpc_error(exc: Exception, operation: str) -> GRPCError:
    """Turn any exception from a handler into a GRPCError with a readable message.

    A refusal is one rate-limited log line (the client made it, and may
    repeat it); unexpected exceptions are logged with their traceback here,
    on the server; the client gets INTERNAL and one line, never a traceback.
    """
    if isinstance(exc, GRPCError):
        return exc
    exc = _exhausted(exc) or exc
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            if status in _LOGGED:
                limiter = _refusals.setdefault((operation, status), RateLimited(log))
                limiter.warning("%s: %s: %s", operation, status.name, loggable(str(exc)))
            return GRPCError(status, str(exc))
    log.error("%s failed unexpectedly", operation, exc_info=exc)
    return GRPCError(Status.INTERNAL, f"{operation}: internal error: {type(exc).__name__}: {exc}")

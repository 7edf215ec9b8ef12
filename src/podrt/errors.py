"""Domain errors: what went wrong, in terms a caller can act on.

Managers and steps raise these; only cri/ turns them into gRPC statuses, so the
domain stays testable without gRPC.
"""


SHUTTING_DOWN = "podrt is shutting down; retry against the restarted daemon"


class PodrtError(Exception):
    """Base of every error podrt reports to a client on purpose."""


class InvalidArgument(PodrtError):
    """The request is malformed or asks for something not allowed."""


class NotFound(PodrtError):
    """The request names an object podrt does not have."""


class AlreadyExists(PodrtError):
    """The request would create an object whose name is taken."""


class FailedPrecondition(PodrtError):
    """The object or host is not in a state where the request can proceed."""


class Unavailable(PodrtError):
    """The host is not ready (missing binary, daemon shutting down); retry later."""


class PermissionDenied(PodrtError):
    """The caller (or the credentials it gave) may not do this."""


class DeadlineExceeded(PodrtError):
    """An operation did not finish in its time budget."""


class ResourceExhausted(PodrtError):
    """The host ran out of something (disk space, inodes); says what could not be written."""


class StartError(PodrtError):
    """The daemon cannot start; the message is the one line it exits with."""

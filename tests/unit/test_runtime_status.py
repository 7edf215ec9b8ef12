"""Node-level runtime state and the error -> gRPC status mapping."""

from __future__ import annotations

import pytest
from grpclib.const import Status

from podrt import errors
from podrt.config import Config
from podrt.cri.errors import to_grpc_error
from podrt.cri.hooks import operation_name
from podrt.node.status import RuntimeStatusManager
from podrt.server import _MethodTable


def test_pod_cidr_normalised_and_dual_stack() -> None:
    m = RuntimeStatusManager(Config())
    m.update_pod_cidr("10.244.1.7/24, fd00:1::/64")
    assert m.pod_cidrs == ("10.244.1.0/24", "fd00:1::/64")
    m.update_pod_cidr("")  # kubelet's empty update keeps what we have
    assert m.pod_cidrs == ("10.244.1.0/24", "fd00:1::/64")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "banana", "10.0.0.0/8,"])
def test_bad_pod_cidr_is_invalid_argument(bad: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        RuntimeStatusManager(Config()).update_pod_cidr(bad)


@pytest.mark.parametrize(
    "exc,status,message",
    [
        (errors.InvalidArgument("bad x"), Status.INVALID_ARGUMENT, "bad x"),
        (errors.NotFound("no x"), Status.NOT_FOUND, "no x"),
        (errors.AlreadyExists("x exists"), Status.ALREADY_EXISTS, "x exists"),
        (errors.FailedPrecondition("x stopped"), Status.FAILED_PRECONDITION, "x stopped"),
        (errors.Unavailable("x busy"), Status.UNAVAILABLE, "x busy"),
        (errors.DeadlineExceeded("x slow"), Status.DEADLINE_EXCEEDED, "x slow"),
        (errors.ResourceExhausted("x full"), Status.RESOURCE_EXHAUSTED, "x full"),
        (errors.PermissionDenied("x denied"), Status.PERMISSION_DENIED, "x denied"),
        (ValueError("boom"), Status.INTERNAL, "Op: internal error: ValueError: boom"),
    ],
)
def test_error_mapping(exc: Exception, status: Status, message: str) -> None:
    """A typed error's message reaches the client as it is; anything else is INTERNAL naming the operation."""
    err = to_grpc_error(exc, "Op")
    assert (err.status, err.message) == (status, message)


def test_operation_names_are_bounded() -> None:
    assert operation_name("/runtime.v1.RuntimeService/Version") == "Version"
    assert operation_name("/runtime.v1.ImageService/PullImage") == "PullImage"
    assert operation_name("/evil.Service/" + "x" * 100) == "unknown"


def test_method_table_routes_unknown_paths_to_unimplemented() -> None:
    known = object()
    table = _MethodTable({"/a/B": known})
    assert table.get("/a/B") is known
    fallback = table.get("/a/C")
    assert fallback is not None and fallback is not known


def test_refusals_are_one_line_and_bugs_a_traceback(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request's refusal is a warning without traceback (routine NotFound: nothing); INTERNAL keeps its traceback."""
    import logging

    from podrt.cri import errors as cri_errors

    monkeypatch.setattr(cri_errors, "_refusals", {})  # budgets of its own
    with caplog.at_level(logging.WARNING, logger="podrt.cri.errors"):
        to_grpc_error(errors.FailedPrecondition("runc said no"), "CreateContainer")
        to_grpc_error(errors.NotFound("container x not found"), "ContainerStatus")
        for _ in range(10):  # a probe's noise uses its own budget ...
            to_grpc_error(errors.DeadlineExceeded("probe"), "ExecSync")
        to_grpc_error(errors.InvalidArgument("mounts[0].host_path /x\n2025-01-01 ERROR forged"), "CreateContainer")
        to_grpc_error(KeyError("bug"), "CreateContainer")
    refusal, *probes, forged, bug = caplog.records
    assert refusal.levelno == logging.WARNING and refusal.exc_info is None
    assert refusal.getMessage() == "CreateContainer: FAILED_PRECONDITION: runc said no"
    assert len(probes) == 5  # ... of 5 lines in 10 s
    assert forged.getMessage() == "CreateContainer: INVALID_ARGUMENT: mounts[0].host_path /x\\x0a2025-01-01 ERROR forged"
    assert bug.levelno == logging.ERROR and bug.exc_info is not None

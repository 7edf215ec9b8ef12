"""Node-level runtime state and the error -> gRPC status mapping."""

from __future__ import annotations

import pytest
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError

from podrt import errors
from podrt.api.runtime import v1 as cri
from podrt.config import Config
from podrt.cri.errors import to_grpc_error
from podrt.cri.hooks import operation_name
from podrt.node.status import RuntimeStatusManager
from podrt.server import SHARED_BYTES, SHARED_REQUESTS, CriCodec, _MethodTable


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


def _handler(func: object) -> Handler:
    return Handler(func, Cardinality.UNARY_UNARY, cri.VersionRequest, cri.VersionResponse)


def test_method_table_routes_unknown_paths_to_unimplemented() -> None:
    known = _handler(object())
    table = _MethodTable({"/a/B": known})
    assert table.get("/a/B") == known
    fallback = table.get("/a/C")
    assert fallback is not None and fallback.func is not known.func


def test_method_table_wraps_every_method_once_unknown_ones_too() -> None:
    """The hooks (metrics, error mapping) wrap each method when the table is made, not at each call."""
    wrapped: list[str] = []

    def wrap(func: object, path: str) -> tuple[str, object]:
        wrapped.append(path)
        return ("wrapped", func)

    func = object()
    table = _MethodTable({"/a/B": _handler(func)}, wrap)
    assert wrapped == ["/a/B"]
    for _ in range(3):
        assert table.get("/a/B").func == ("wrapped", func)
    assert wrapped == ["/a/B"]
    assert table.get("/a/C").func[0] == "wrapped" and wrapped[-1] == "/a/C"


def test_codec_decodes_a_shared_request_once_per_body() -> None:
    """Requests of the types a servicer only reads are decoded once per body;
    others each time; bad bytes stay the client's error."""
    codec = CriCodec([cri.ListPodSandboxRequest])
    body = bytes(cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector={"n": "1"})))
    first = codec.decode(body, cri.ListPodSandboxRequest)
    assert first.filter.label_selector == {"n": "1"}
    assert codec.decode(body, cri.ListPodSandboxRequest) is first
    other = bytes(cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector={"n": "2"})))
    assert codec.decode(other, cri.ListPodSandboxRequest).filter.label_selector == {"n": "2"}
    version = bytes(cri.VersionRequest(version="v1"))
    assert codec.decode(version, cri.VersionRequest) is not codec.decode(version, cri.VersionRequest)
    with pytest.raises(GRPCError) as err:
        codec.decode(b"\x0a\xff", cri.ListPodSandboxRequest)
    assert err.value.status == Status.INVALID_ARGUMENT


def test_codec_keeps_a_bounded_number_of_requests() -> None:
    codec = CriCodec([cri.PodSandboxStatusRequest])
    bodies = [bytes(cri.PodSandboxStatusRequest(pod_sandbox_id=f"{i:064x}")) for i in range(SHARED_REQUESTS + 10)]
    for b in bodies:
        codec.decode(b, cri.PodSandboxStatusRequest)
    assert len(codec._decoded) == SHARED_REQUESTS
    big = bytes(cri.PodSandboxStatusRequest(pod_sandbox_id="x" * SHARED_BYTES))
    assert codec.decode(big, cri.PodSandboxStatusRequest) is not codec.decode(big, cri.PodSandboxStatusRequest)


def test_the_shared_requests_are_those_of_read_only_methods() -> None:
    """A guard on the list: each shared type is the request of a method that only reads it."""
    from podrt.api.runtime.v1 import RuntimeServiceBase
    from podrt.cri.runtime import RuntimeService

    read_only = {"Version", "ListPodSandbox", "ListContainers", "PodSandboxStatus", "ContainerStatus"}
    mapping = RuntimeServiceBase.__mapping__(object.__new__(RuntimeService))
    types = {h.request_type for path, h in mapping.items() if path.rsplit("/", 1)[1] in read_only}
    assert set(RuntimeService.shared_requests) == types

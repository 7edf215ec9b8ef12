"""api/lean_decode reads the two largest requests as betterproto does: the same
values and is_set answers field by field, the same refusals of bad bytes, and
the same results (or InvalidArgument messages) from the converters the handlers
call. The bodies are the fuzzer's: valid, mutated, random, truncated, garbage
and wrong-wire ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import betterproto
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.lean_decode import LEAN_REQUESTS, Decoded, DecodeError, decode
from podrt.api.runtime import v1 as cri
from podrt.cri import container_convert, sandbox_convert
from podrt.errors import InvalidArgument
from podrt.server import CriCodec
from tests.support.fuzz import RPCS, Fuzzer

BODIES = 300  # per request type (the fuzzer's bodies take most of the test's few seconds)


def _same(lean: Any, full: Any, where: str) -> None:
    """Every field of `full` (a betterproto message), read from `lean` too; is_set
    first, as betterproto's answer changes once a field was read."""
    assert isinstance(lean, Decoded) and bool(lean) == bool(full), where
    for name in full._betterproto.meta_by_field_name:
        assert lean.is_set(name) == full.is_set(name), f"{where}.{name} is_set"
        _same_value(getattr(lean, name), getattr(full, name), f"{where}.{name}")


def _same_value(lean: Any, full: Any, where: str) -> None:
    if isinstance(full, betterproto.Message):
        _same(lean, full, where)
    elif isinstance(full, list):
        assert isinstance(lean, list) and len(lean) == len(full), where
        for n, (a, b) in enumerate(zip(lean, full)):
            _same_value(a, b, f"{where}[{n}]")
    elif isinstance(full, dict):
        assert isinstance(lean, dict) and lean.keys() == full.keys(), where
        for key in full:
            _same_value(lean[key], full[key], f"{where}[{key!r}]")
    else:
        assert type(lean) is type(full) and (lean == full or lean != lean and full != full), \
            f"{where}: {lean!r} != {full!r}"


def _converted(convert: Any, request: Any) -> Any:
    try:
        return convert(request)
    except InvalidArgument as exc:
        return f"InvalidArgument: {exc}"


CASES = [(cri.CreateContainerRequest, container_convert.container_config),
         (cri.RunPodSandboxRequest, sandbox_convert.sandbox_config),
         # the small ones: what their handlers read (cri/containers.py, cri/pods.py)
         (cri.StartContainerRequest, lambda r: r.container_id),
         (cri.StopContainerRequest, lambda r: (r.container_id, float(max(r.timeout, 0)))),
         (cri.RemoveContainerRequest, lambda r: r.container_id),
         (cri.ContainerStatusRequest, lambda r: (r.container_id, bool(r.verbose))),
         (cri.StopPodSandboxRequest, lambda r: r.pod_sandbox_id),
         (cri.RemovePodSandboxRequest, lambda r: r.pod_sandbox_id),
         (cri.PodSandboxStatusRequest, lambda r: (r.pod_sandbox_id, bool(r.verbose)))]


def test_every_lean_request_is_tested() -> None:
    assert {cls for cls, _ in CASES} == set(LEAN_REQUESTS)


@pytest.mark.parametrize(("cls", "convert"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_a_request_reads_and_converts_as_betterproto_reads_it(cls: Any, convert: Any, tmp_path: Path) -> None:
    rpc = next(r for r in RPCS if r.request is cls)
    fuzzer = Fuzzer(seed=20, scratch=tmp_path)
    decoded = refused = 0
    for n in range(BODIES):
        kind, body = fuzzer.body(rpc)
        try:
            full = cls().parse(body)
        except Exception:  # betterproto refuses it: so must we
            with pytest.raises(DecodeError):
                decode(body, cls)
            refused += 1
            continue
        lean = decode(body, cls)
        assert _converted(convert, lean) == _converted(convert, full), f"body {n} ({kind})"
        # a read of an unset field sets it, for betterproto's is_set: the walk reads a fresh parse
        _same(decode(body, cls), cls().parse(body), f"body {n} ({kind})")
        decoded += 1
    assert decoded > BODIES // 3 and refused > BODIES // 10  # both paths were walked


def test_unset_fields_read_as_betterprotos_defaults_and_a_message_sent_twice_is_the_last() -> None:
    config = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="a"), command=["x"], labels={"k": "v"})
    later = cri.ContainerConfig(metadata=cri.ContainerMetadata(attempt=2), command=["y"], labels={"l": "w"})
    body = bytes(cri.CreateContainerRequest(pod_sandbox_id="p", config=config)) + \
        bytes(cri.CreateContainerRequest(config=later))
    lean, full = decode(body, cri.CreateContainerRequest), cri.CreateContainerRequest().parse(body)
    _same(lean, full, "request")
    assert lean.config.metadata.name == "" and lean.config.metadata.attempt == 2
    assert lean.config.command == ["y"] and lean.config.labels == {"l": "w"}  # the whole config replaced
    assert not lean.is_set("sandbox_config") and lean.sandbox_config.metadata.name == ""
    assert lean.config.linux.security_context.namespace_options.pid == cri.NamespaceMode.POD


def test_the_codec_hands_the_handlers_a_decoded_request_and_refuses_bad_bytes_as_invalid() -> None:
    body = bytes(cri.RunPodSandboxRequest(config=cri.PodSandboxConfig(hostname="h"), runtime_handler="runc"))
    request = CriCodec().decode(body, cri.RunPodSandboxRequest)
    assert isinstance(request, Decoded) and request.config.hostname == "h" and request.runtime_handler == "runc"
    with pytest.raises(AttributeError):
        request.no_such_field  # noqa: B018
    with pytest.raises(GRPCError) as refused:
        CriCodec().decode(body[:-2], cri.RunPodSandboxRequest)
    assert refused.value.status == Status.INVALID_ARGUMENT and "RunPodSandboxRequest" in (refused.value.message or "")

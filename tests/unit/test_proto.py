"""The generated code speaks exactly the CRI v1 wire schema."""

from __future__ import annotations

import dataclasses
import types

import betterproto
import pytest

from podrt.api.runtime import v1 as cri
from podrt.config import Config
from podrt.container.events import EventBus
from podrt.cri.image import ImageService
from podrt.cri.runtime import RuntimeService
from tests.support.schema import PROTO, SCHEMA, proto_rpcs, schema_fields, schema_rpcs

needs_schema = pytest.mark.skipif(not SCHEMA.exists(), reason=f"schema listing not found at {SCHEMA} (it lives in shared/ beside the repo)")


def _served_paths() -> set[str]:
    paths: set[str] = set()
    for base in (cri.RuntimeServiceBase, cri.ImageServiceBase):
        paths.update(base.__mapping__(base()))  # type: ignore[arg-type]
    return paths


def _expected_paths(rpcs: dict[str, set[str]]) -> set[str]:
    return {f"/runtime.v1.{service}/{rpc}" for service, names in rpcs.items() for rpc in names}


def test_generated_services_match_our_proto_file() -> None:
    expected = _expected_paths(proto_rpcs(PROTO.read_text()))
    assert len(expected) == 41
    assert _served_paths() == expected


@needs_schema
def test_generated_services_expose_every_schema_rpc() -> None:
    assert _served_paths() == _expected_paths(schema_rpcs(SCHEMA.read_text()))


def test_our_services_keep_every_path() -> None:
    """The podrt service classes (not just the bases) serve all 41 paths."""
    # the service installs its event renderer, and reads the metrics' configuration
    containers = types.SimpleNamespace(events=EventBus(1), deps=types.SimpleNamespace(config=Config()))
    paths = set(RuntimeService.__mapping__(RuntimeService(None, None, containers, None, 1)))  # type: ignore[arg-type]
    paths |= set(ImageService(None, None, 1).__mapping__())  # type: ignore[arg-type]
    assert paths == _served_paths()


def _message_class(path: str) -> type[betterproto.Message]:
    """Schema name -> betterproto class (DNSConfig -> DnsConfig, Outer.Inner -> OuterInner)."""
    return getattr(cri, "".join(betterproto.casing.pascal_case(part) for part in path.split(".")))


@needs_schema
def test_every_field_number_matches_the_schema() -> None:
    listing = schema_fields(SCHEMA.read_text())
    assert len(listing) > 150
    mismatches = []
    for path, fields in listing.items():
        cls = _message_class(path)
        generated = {
            f.name: f.metadata["betterproto"].number for f in dataclasses.fields(cls)
        }
        wanted = {betterproto.casing.safe_snake_case(name): n for name, n in fields.items()}
        if generated != wanted:
            mismatches.append((path, generated, wanted))
    assert not mismatches


def test_round_trip_of_a_nested_message() -> None:
    req = cri.RunPodSandboxRequest(
        config=cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name="n", uid="u", namespace="ns", attempt=3),
            labels={"a": "b"},
            port_mappings=[cri.PortMapping(protocol=cri.Protocol.UDP, container_port=53, host_port=5353)],
        ),
        runtime_handler="runc",
    )
    assert cri.RunPodSandboxRequest().parse(bytes(req)) == req

"""Out-of-range enums and numbers in a RunPodSandbox request: InvalidArgument
naming the field, decided in the converter before anything reaches the host."""

from __future__ import annotations

from typing import Any

import pytest

from podrt.api.runtime import v1 as cri
from podrt.cri import sandbox_convert as conv
from podrt.errors import InvalidArgument
from podrt.server import CriCodec
from tests.support.pods import pod_config


def _wire(req: cri.RunPodSandboxRequest) -> cri.RunPodSandboxRequest:
    """Through the bytes, as the daemon gets it (unknown enum values arrive as ints)."""
    codec = CriCodec()
    return codec.decode(codec.encode(req, cri.RunPodSandboxRequest), cri.RunPodSandboxRequest)


def _sc(**kw: Any) -> cri.LinuxPodSandboxConfig:
    kw.setdefault("namespace_options", cri.NamespaceOption())
    return cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(**kw))


CASES = {
    "namespace mode 99": (_sc(namespace_options=cri.NamespaceOption(network=99)), {}, "namespace_options.network: unknown value 99"),
    "pid mode -1": (_sc(namespace_options=cri.NamespaceOption(pid=-1)), {}, "namespace_options.pid: unknown value -1"),
    "seccomp type 7": (_sc(seccomp=cri.SecurityProfile(profile_type=7)), {}, "seccomp.profile_type: unknown value 7"),
    "uid 2^32": (_sc(run_as_user=cri.Int64Value(2**32)), {}, "run_as_user: 4294967296 is out of range"),
    "uid 2^31 (runc's limit)": (_sc(run_as_user=cri.Int64Value(2**31)), {}, "run_as_user: 2147483648 is out of range (0 to 2147483647)"),
    "uid -1": (_sc(run_as_user=cri.Int64Value(-1)), {}, "run_as_user: -1 is out of range"),
    "gid 2^40": (_sc(run_as_group=cri.Int64Value(2**40)), {}, "run_as_group: 1099511627776 is out of range"),
    "supplemental gid": (_sc(supplemental_groups=[5, 2**33]), {}, "supplemental_groups[1]: 8589934592 is out of range"),
    "protocol 5": (None, {"port_mappings": [cri.PortMapping(protocol=5, container_port=80)]}, "port_mappings[0].protocol: unknown value 5"),
    "container port 0": (None, {"port_mappings": [cri.PortMapping(container_port=0)]}, "port_mappings[0].container_port: 0 is out of range"),
    "host port 70000": (None, {"port_mappings": [cri.PortMapping(container_port=80, host_port=70000)]}, "host_port: 70000 is out of range"),
    "negative port": (None, {"port_mappings": [cri.PortMapping(container_port=-80)]}, "container_port: -80 is out of range"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_out_of_range_is_invalid_argument(case: str) -> None:
    linux, extra, fragment = CASES[case]
    req = cri.RunPodSandboxRequest(config=pod_config(linux=linux, **extra))
    with pytest.raises(InvalidArgument) as err:
        conv.sandbox_config(_wire(req))
    assert fragment in str(err.value)


def test_largest_valid_values_pass() -> None:
    linux = _sc(run_as_user=cri.Int64Value(2**31 - 1), run_as_group=cri.Int64Value(0), supplemental_groups=[2**31 - 1])
    ports = [cri.PortMapping(protocol=cri.Protocol.SCTP, container_port=65535, host_port=65535)]
    cfg = conv.sandbox_config(_wire(cri.RunPodSandboxRequest(config=pod_config(linux=linux, port_mappings=ports))))
    assert cfg.run_as_user == 2**31 - 1 and cfg.supplemental_groups == (2**31 - 1,)
    assert cfg.port_mappings[0].protocol == "sctp" and cfg.port_mappings[0].host_port == 65535


def test_undecodable_body_is_invalid_argument() -> None:
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError

    with pytest.raises(GRPCError) as err:
        CriCodec().decode(b"\xff\xff\xff\xff", cri.RunPodSandboxRequest)
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "could not be decoded as RunPodSandboxRequest" in (err.value.message or "")

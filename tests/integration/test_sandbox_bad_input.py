"""Refusals: each bad RunPodSandbox answers InvalidArgument with a message, and
random configs never crash the daemon or leak."""

from __future__ import annotations

import asyncio

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podrt.api.runtime import v1 as cri
from tests.support.client import connect
from tests.support.daemon import DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import host_ns, pod_config

pytestmark = pytest.mark.root


def _linux(**kw: object) -> cri.LinuxPodSandboxConfig:
    sc = kw.pop("security_context", None) or cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption())
    return cri.LinuxPodSandboxConfig(security_context=sc, **kw)  # type: ignore[arg-type]


BAD = {
    "no metadata": (cri.RunPodSandboxRequest(config=cri.PodSandboxConfig()), "metadata.name"),
    "empty name": (cri.RunPodSandboxRequest(config=pod_config(name="")), "metadata.name"),
    "relative log dir": (cri.RunPodSandboxRequest(config=pod_config(log_directory="var/log/x")), "log_directory"),
    "bad label": (cri.RunPodSandboxRequest(config=pod_config(labels={"bad key!": "v"})), "label key"),
    "bad label value": (cri.RunPodSandboxRequest(config=pod_config(labels={"k": "v" * 70})), "label"),
    "bad dns server": (cri.RunPodSandboxRequest(config=pod_config(dns_config=cri.DnsConfig(servers=["not-an-ip"]))), "dns_config.servers"),
    "dns injection": (cri.RunPodSandboxRequest(config=pod_config(dns_config=cri.DnsConfig(searches=["a\nnameserver 1.2.3.4"]))), "dns_config.searches"),
    "node sysctl": (cri.RunPodSandboxRequest(config=pod_config(linux=_linux(sysctls={"vm.swappiness": "1"}))), "not one of a pod's own namespaces"),
    "sysctl value the kernel refuses": (cri.RunPodSandboxRequest(config=pod_config(linux=_linux(sysctls={"net.ipv4.tcp_syncookies": "a b"}))), "refused by the kernel"),
    "sysctl the pod's netns lacks": (cri.RunPodSandboxRequest(config=pod_config(linux=_linux(sysctls={"net.ipv4.tcp_keepalive_tme": "60"}))), "refused by the kernel"),
    "kernel sysctl of no namespace": (cri.RunPodSandboxRequest(config=pod_config(linux=_linux(sysctls={"kernel.shm_next_id": "1"}))), "not one of a pod's own namespaces"),
    "log dir too long": (cri.RunPodSandboxRequest(config=pod_config(log_directory="/var/log/pods/" + "a" * 300)), "longer than 255 bytes"),
    "log dir is a file": (cri.RunPodSandboxRequest(config=pod_config(log_directory="/etc/hostname/x")), "/etc/hostname is not a directory"),
    "zoned host ip": (cri.RunPodSandboxRequest(config=pod_config(port_mappings=[cri.PortMapping(container_port=80, host_port=18080, host_ip="fe80::1%lo")])), "zone"),
    "malformed sysctl": (cri.RunPodSandboxRequest(config=pod_config(linux=_linux(sysctls={"net..x": "1"}))), "sysctl"),
    "escaping cgroup parent": (cri.RunPodSandboxRequest(config=pod_config(linux=_linux(cgroup_parent="/kubepods/../../etc"))), ".."),
    "slice with cgroupfs": (cri.RunPodSandboxRequest(config=pod_config(linux=_linux(cgroup_parent="kubepods.slice"))), "systemd slice"),
    "bad hostname": (cri.RunPodSandboxRequest(config=pod_config(hostname="bad host")), "hostname"),
    "NUL in cgroup parent": (cri.RunPodSandboxRequest(config=pod_config(linux=_linux(cgroup_parent="/\x00"))), "cgroup_parent must not contain a NUL"),
    "NUL in log dir": (cri.RunPodSandboxRequest(config=pod_config(log_directory="/tmp/x\x00y")), "log_directory must not contain a NUL"),
    "NUL in dns search": (cri.RunPodSandboxRequest(config=pod_config(dns_config=cri.DnsConfig(searches=["a\x00b"]))), "NUL"),
    "unknown handler": (cri.RunPodSandboxRequest(config=pod_config(), runtime_handler="kata"), "known: runc"),
    "bad port": (cri.RunPodSandboxRequest(config=pod_config(port_mappings=[cri.PortMapping(container_port=0, host_port=80)])), "port"),
    "relative seccomp": (
        cri.RunPodSandboxRequest(config=pod_config(linux=_linux(security_context=cri.LinuxSandboxSecurityContext(
            namespace_options=cri.NamespaceOption(),
            seccomp=cri.SecurityProfile(profile_type=cri.SecurityProfileProfileType.Localhost, localhost_ref="prof.json"))))),
        "absolute",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
async def test_refusals(pod_daemon: DaemonProcess, case: str) -> None:
    req, fragment = BAD[case]
    async with connect(pod_daemon.dirs.socket) as c:
        with pytest.raises(GRPCError) as err:
            resp = await c.runtime.run_pod_sandbox(req)
            await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=resp.pod_sandbox_id))
    assert err.value.status == Status.INVALID_ARGUMENT, err.value.message
    assert fragment in (err.value.message or "")
    assert "Traceback" not in (err.value.message or "")
    assert audit_daemon_dirs(pod_daemon.dirs) == {}


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_word = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True)


def _random_request(name: str, labels: dict[str, str], ns: tuple[bool, bool, bool], servers: list[str],
                    searches: list[str], sysctls: dict[str, str], hostname: str, ports: list[tuple[int, int, int]],
                    privileged: bool, cgroup_parent: str) -> cri.RunPodSandboxRequest:
    linux = host_ns(*ns)
    linux.sysctls = sysctls
    linux.cgroup_parent = cgroup_parent
    linux.security_context.privileged = privileged
    return cri.RunPodSandboxRequest(config=pod_config(
        name=name, labels=labels, hostname=hostname, linux=linux,
        dns_config=cri.DnsConfig(servers=servers, searches=searches),
        port_mappings=[cri.PortMapping(protocol=cri.Protocol(p), container_port=c, host_port=h) for p, c, h in ports],
    ))


_configs = st.builds(
    _random_request,
    name=st.one_of(_word, _text),
    labels=st.dictionaries(st.one_of(_word, _text), st.one_of(_word, _text), max_size=3),
    ns=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    servers=st.lists(st.sampled_from(["10.0.0.10", "x", "::1", ""]), max_size=4),
    searches=st.lists(st.one_of(_word, _text), max_size=3),
    sysctls=st.dictionaries(st.sampled_from(["net.ipv4.tcp_syncookies", "kernel.shm_rmid_forced", "kernel.foo", "x"]),
                            st.sampled_from(["1", "", "a b"]), max_size=2),
    hostname=st.sampled_from(["", "ok-name", "Bad_Name", "-x"]),
    ports=st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.integers(-1, 70000), st.sampled_from([0, 18081, 70000])), max_size=2),
    privileged=st.booleans(),
    cgroup_parent=st.sampled_from(["", "/podrt-fuzz", "x.slice", "/a/../b"]),
)


def test_random_configs_keep_the_daemon_up_and_leak_nothing(pod_daemon: DaemonProcess) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(req=_configs)
    def one(req: cri.RunPodSandboxRequest) -> None:
        async def go() -> None:
            async with connect(pod_daemon.dirs.socket) as c:
                try:
                    resp = await c.runtime.run_pod_sandbox(req)
                except GRPCError as err:
                    assert err.status in (Status.INVALID_ARGUMENT, Status.ALREADY_EXISTS), err.message
                    return
                await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=resp.pod_sandbox_id))
                await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=resp.pod_sandbox_id))

        asyncio.run(go())

    one()
    assert pod_daemon.proc is not None and pod_daemon.proc.poll() is None
    assert audit_daemon_dirs(pod_daemon.dirs) == {}

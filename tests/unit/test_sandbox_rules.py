"""Rules of RunPodSandbox that need no host: cgroup naming, request checks,
names, log path sanity, resolv.conf rendering."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podrt.config import Config, RuntimeConfig
from podrt.errors import InvalidArgument
from podrt.host import cgroups
from podrt.model.sandbox import DnsConfig, NamespaceOptions, NsMode, PortMapping, SandboxConfig, SeccompProfile
from podrt.sandbox import naming
from podrt.sandbox.validate import check_request, pod_sysctls, seccomp_profile
from podrt.security.seccomp import ProfileType
from podrt.security.selinux import SelinuxOptions, process_label
from podrt.steps.sandbox.files import render_resolv_conf
from podrt.steps.sandbox.storage import ensure_sane_log_path

ID = "ab" * 32


@pytest.mark.parametrize(
    "manager,parent,want",
    [
        ("cgroupfs", "", ("/podrt", f"/podrt/podrt-{ID}")),
        ("cgroupfs", "/kubepods/besteffort/pod1", ("/kubepods/besteffort/pod1", f"/kubepods/besteffort/pod1/podrt-{ID}")),
        ("cgroupfs", "kubepods", ("/kubepods", f"/kubepods/podrt-{ID}")),
        ("systemd", "", ("system.slice", f"system.slice:podrt:{ID}")),
        ("systemd", "kubepods-besteffort-pod1.slice", ("kubepods-besteffort-pod1.slice", f"kubepods-besteffort-pod1.slice:podrt:{ID}")),
        ("systemd", "/kubepods.slice/kubepods-burstable.slice", ("/kubepods.slice/kubepods-burstable.slice", f"kubepods-burstable.slice:podrt:{ID}")),
    ],
)
def test_cgroup_naming(manager: str, parent: str, want: tuple[str, str]) -> None:
    assert cgroups.sandbox_cgroup(manager, parent, ID) == want


@pytest.mark.parametrize(
    "manager,parent,message",
    [
        ("cgroupfs", "kubepods.slice", "cgroupfs cgroup manager, but received systemd slice as parent"),
        ("systemd", "/kubepods/pod1", "systemd cgroup manager, but did not receive slice as parent"),
        ("cgroupfs", "/kubepods/../../etc", "must not contain '..'"),
        ("systemd", "../x.slice", "must not contain '..'"),
    ],
)
def test_cgroup_parent_refusals(manager: str, parent: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(".", r"\.")):
        cgroups.sandbox_cgroup(manager, parent, ID)


def test_conmon_cgroup_beside_the_pods() -> None:
    assert cgroups.conmon_cgroup("/kubepods/pod1", ID) == f"/kubepods/pod1/podrt-conmon-{ID}"


def test_names() -> None:
    cfg = SandboxConfig(name="web", uid="u1", namespace="ns", attempt=2)
    assert naming.pod_name(cfg) == "k8s_web_ns_u1_2"
    assert naming.infra_name(cfg) == "k8s_POD_web_ns_u1_2"
    new = naming.new_id()
    assert len(new) == 64 and int(new, 16) >= 0 and new != naming.new_id()


def _cfg(**kw: object) -> SandboxConfig:
    base: dict[str, object] = {"name": "p", "uid": "u", "namespace": "n"}
    base.update(kw)
    return SandboxConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cfg,fragment",
    [
        (_cfg(name=""), "metadata.name"),
        (_cfg(name="a b"), "metadata.name"),
        (_cfg(namespace="x_y"), "metadata.namespace"),
        (_cfg(name="a;K8S_POD_NAME=b"), "metadata.name"),  # would break CNI_ARGS
        (_cfg(log_directory="rel/dir"), "log_directory"),
        (_cfg(runtime_handler="kata"), "known: runc"),
        (_cfg(labels={"-bad": "v"}), "label key"),
        (_cfg(labels={"example.com/ok": "bad value"}), "label"),
        (_cfg(hostname="x" * 65), "hostname"),
        (_cfg(dns=DnsConfig(servers=("1.1.1.1",) * 4)), "at most 3"),
        (_cfg(dns=DnsConfig(options=("ndots:5 x",))), "dns_config.options"),
        (_cfg(sysctls={"vm.swappiness": "1"}), "not one of a pod's own namespaces"),
        (_cfg(namespaces=NamespaceOptions(pid=NsMode.TARGET)), "namespace_options.pid: TARGET is for containers only"),
        (_cfg(sysctls={"kernel.msgmax": "1"}, namespaces=NamespaceOptions(ipc=NsMode.NODE)), "host IPC"),
        (_cfg(sysctls={"net.ipv4.tcp_syncookies": "1"}, namespaces=NamespaceOptions(network=NsMode.NODE)), "host network"),
        (_cfg(port_mappings=(PortMapping("tcp", 80, 8080, "nope"),)), "host_ip"),
        (_cfg(run_as_group=1000), "security_context.run_as_group needs run_as_user"),  # the CRI: MUST refuse
    ],
)
def test_request_refusals(cfg: SandboxConfig, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_request(cfg, Config())
    assert fragment in str(err.value)


def test_request_accepted_and_unsafe_sysctls_are_the_kubelets_call() -> None:
    cfg = _cfg(labels={"app.kubernetes.io/name": "web", "empty": ""}, hostname="web-0",
               dns=DnsConfig(("10.0.0.10", "fd00::a"), ("svc.cluster.local",), ("ndots:5",)),
               sysctls={"net.core.somaxconn": "1024", "net.ipv4.ping_group_range": "0 0", "fs.mqueue.msg_max": "64"})
    check_request(cfg, Config())  # the kubelet allowed them: applied, as CRI-O and containerd do


def test_unsafe_sysctls_restricted_only_when_configured() -> None:
    cfg = _cfg(sysctls={"net.core.somaxconn": "1024", "net.ipv4.ping_group_range": "0 0"})
    restricted = RuntimeConfig(restrict_unsafe_sysctls=True, allowed_unsafe_sysctls=("net.core.*",))
    check_request(cfg, Config(runtime=restricted))  # allowed by prefix, and the safe one always
    check_request(cfg, Config(runtime=RuntimeConfig(allowed_unsafe_sysctls=("kernel.msgmax",))))  # list alone: no restriction
    with pytest.raises(InvalidArgument, match="net.core.somaxconn is unsafe.*restrict_unsafe_sysctls"):
        check_request(cfg, Config(runtime=RuntimeConfig(restrict_unsafe_sysctls=True)))


def test_privileged_only_when_allowed() -> None:
    check_request(_cfg(privileged=True), Config())
    with pytest.raises(InvalidArgument, match="privileged"):
        check_request(_cfg(privileged=True), Config(runtime=RuntimeConfig(allow_privileged=False)))


def test_resolv_conf() -> None:
    text = render_resolv_conf(DnsConfig(("10.0.0.10",), ("a.local", "b.local"), ("ndots:5", "edns0")))
    assert text == "nameserver 10.0.0.10\nsearch a.local b.local\noptions ndots:5 edns0\n"


def test_log_path_symlink_is_replaced_and_directory_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("secret")
    link = tmp_path / "pod.log"
    os.symlink(outside, link)
    ensure_sane_log_path(link)
    assert not link.exists() and not link.is_symlink()
    assert outside.read_text() == "secret"  # conmon will not write through it
    os.symlink(tmp_path / "missing", link)  # dangling
    ensure_sane_log_path(link)
    assert not link.is_symlink()
    link.mkdir()
    with pytest.raises(InvalidArgument):
        ensure_sane_log_path(link)
    regular = tmp_path / "ok.log"
    regular.write_text("x")
    ensure_sane_log_path(regular)  # an existing log file is kept
    assert regular.read_text() == "x"


def test_default_sysctls_under_the_requests_and_skipped_for_host_namespaces() -> None:
    config = Config(runtime=RuntimeConfig(default_sysctls=("net.ipv4.ping_group_range=0 1", "kernel.shm_rmid_forced=1")))
    assert pod_sysctls(_cfg(sysctls={"kernel.shm_rmid_forced": "0"}), config) == {
        "net.ipv4.ping_group_range": "0 1", "kernel.shm_rmid_forced": "0"}
    host = _cfg(namespaces=NamespaceOptions(network=NsMode.NODE, ipc=NsMode.NODE))
    assert pod_sysctls(host, config) == {}


def test_runtime_default_seccomp_from_the_configured_file(tmp_path: Path) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_LOG", "syscalls": []}')
    cfg = _cfg(seccomp=SeccompProfile(ProfileType.RUNTIME_DEFAULT))
    assert seccomp_profile(cfg, Config(runtime=RuntimeConfig(seccomp_profile=str(profile))))["defaultAction"] == "SCMP_ACT_LOG"
    assert seccomp_profile(cfg, Config())["defaultAction"] == "SCMP_ACT_ERRNO"  # the builtin one
    assert seccomp_profile(cfg, Config(runtime=RuntimeConfig(seccomp_enabled=False))) is None
    with pytest.raises(InvalidArgument, match="seccomp"):
        check_request(cfg, Config(runtime=RuntimeConfig(seccomp_profile=str(tmp_path / "missing.json"))))


def test_selinux_label_only_when_on_and_not_for_host_pid_or_ipc() -> None:
    def label(cfg: SandboxConfig, on: bool) -> str:  # as the infra spec step asks for it
        return process_label(cfg.selinux, shares_host=cfg.host_pid or cfg.host_ipc, selinux_on=on)

    opts = SelinuxOptions(user="u", role="r", type="t", level="s0:c1,c2")
    assert label(_cfg(selinux=opts), True) == "u:r:t:s0:c1,c2"
    assert label(_cfg(selinux=SelinuxOptions(level="s0")), True) == "system_u:system_r:container_t:s0"
    assert label(_cfg(selinux=opts), False) == ""
    assert label(_cfg(selinux=opts, namespaces=NamespaceOptions(pid=NsMode.NODE)), True) == ""
    assert label(_cfg(selinux=opts, namespaces=NamespaceOptions(ipc=NsMode.NODE)), True) == ""
    assert label(_cfg(), True) == ""

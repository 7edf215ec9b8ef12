"""The infra container's OCI spec and the seccomp profiles that go in it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest

import podrt.oci.spec as spec_module
from podrt.host import cgroups
from podrt.model.sandbox import InfraPlan, NamespaceOptions, NsMode, SandboxConfig
from podrt.oci.spec import ALL_CAPABILITIES, DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS
from podrt.sandbox.infra_spec import build_infra_spec
from podrt.security.seccomp import (
    ALLOWED_SYSCALLS,
    CLONE_NAMESPACE_FLAGS,
    ProfileType,
    default_profile,
    load_localhost_profile,
    profile_for,
)

NETNS = "/var/run/netns/podrt-abc"


ARCHITECTURES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]

def make_plan(
    *,
    network: NsMode = NsMode.POD,
    pid: NsMode = NsMode.POD,
    ipc: NsMode = NsMode.POD,
    privileged: bool = False,
    config: dict[str, Any] | None = None,
    **plan: Any,
) -> InfraPlan:
    """A plan as the earlier steps would make it for `network`/`ipc` modes;
    `config` and `plan` override SandboxConfig and InfraPlan fields."""
    cfg = SandboxConfig(
        name="web",
        uid="uid-1",
        namespace="default",
        namespaces=NamespaceOptions(network=network, pid=pid, ipc=ipc),
        privileged=privileged,
        **(config or {}),
    )
    host_net = network == NsMode.NODE
    fields: dict[str, Any] = dict(
        sandbox_id="abc",
        config=cfg,
        rootfs="/var/lib/podrt/infra/rootfs",
        process_args=("/catatonit", "-P"),
        hostname="" if host_net else "web",
        hostname_file="/run/podrt/abc/hostname",
        resolv_conf="/run/podrt/abc/resolv.conf",
        shm_path=None if ipc == NsMode.NODE else "/run/podrt/abc/shm",
        netns_path=None if host_net else NETNS,
        cgroups_path="/kubepods/podrt-abc",
        oom_score_adj=-998,
        cpu_shares=2,
        sysctls={},
        seccomp=default_profile(),
        annotations={"io.podrt.sandbox-id": "abc"},
    )
    fields.update(plan)
    return InfraPlan(**fields)


def ns_types(spec: dict) -> list[str]:
    return [ns["type"] for ns in spec["linux"]["namespaces"]]


def mount(spec: dict, destination: str) -> dict:
    found = [m for m in spec["mounts"] if m["destination"] == destination]
    assert len(found) == 1, f"{destination}: {found}"
    return found[0]


# --- namespaces and the mounts that depend on them ---


@pytest.fixture(autouse=True)
def cgroup_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    """These hosts' hierarchy, wherever the unit tests run; v2 is asked for by name."""
    monkeypatch.setattr(cgroups, "unified", lambda: False)


def test_a_cgroup_namespace_on_v2_unless_privileged(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "cgroup" not in ns_types(build_infra_spec(make_plan()))
    monkeypatch.setattr(cgroups, "unified", lambda: True)
    assert "cgroup" in ns_types(build_infra_spec(make_plan()))
    assert "cgroup" not in ns_types(build_infra_spec(make_plan(privileged=True)))  # the host's, as containerd


def test_default_pod_namespaces() -> None:
    spec = build_infra_spec(make_plan())
    assert sorted(ns_types(spec)) == ["ipc", "mount", "network", "pid", "uts"]
    net = [ns for ns in spec["linux"]["namespaces"] if ns["type"] == "network"]
    assert net == [{"type": "network", "path": NETNS}]
    assert all("path" not in ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network")
    assert spec["hostname"] == "web"
    assert mount(spec, "/sys")["type"] == "sysfs"


def test_host_network_shares_net_and_uts() -> None:
    spec = build_infra_spec(make_plan(network=NsMode.NODE))
    assert sorted(ns_types(spec)) == ["ipc", "mount", "pid"]
    assert "hostname" not in spec
    sys = mount(spec, "/sys")
    assert sys["type"] == "bind" and sys["source"] == "/sys"
    assert "rbind" in sys["options"] and "ro" in sys["options"]


def test_host_network_ignores_a_stray_hostname() -> None:
    spec = build_infra_spec(make_plan(network=NsMode.NODE, hostname="node1"))
    assert "hostname" not in spec


def test_host_ipc_binds_host_dev_shm() -> None:
    spec = build_infra_spec(make_plan(ipc=NsMode.NODE))
    assert "ipc" not in ns_types(spec)
    shm = mount(spec, "/dev/shm")
    assert shm["source"] == "/dev/shm" and shm["type"] == "bind"


def test_host_pid_has_no_pid_namespace() -> None:
    spec = build_infra_spec(make_plan(pid=NsMode.NODE))
    assert "pid" not in ns_types(spec)
    assert "ipc" in ns_types(spec)


def test_container_pid_mode_still_gets_a_pid_namespace() -> None:
    assert "pid" in ns_types(build_infra_spec(make_plan(pid=NsMode.CONTAINER)))


def test_no_user_or_cgroup_namespace() -> None:
    spec = build_infra_spec(make_plan())
    assert not {"user", "cgroup"} & set(ns_types(spec))


def test_pod_network_without_netns_path_is_refused() -> None:
    with pytest.raises(ValueError, match="netns"):
        build_infra_spec(make_plan(netns_path=None))


# --- mounts ---


def test_pod_files_are_bound_read_only() -> None:
    spec = build_infra_spec(make_plan())
    resolv = mount(spec, "/etc/resolv.conf")
    assert resolv["source"] == "/run/podrt/abc/resolv.conf"
    assert resolv["type"] == "bind" and "ro" in resolv["options"] and "bind" in resolv["options"]
    hostname = mount(spec, "/etc/hostname")
    assert hostname["source"] == "/run/podrt/abc/hostname" and "ro" in hostname["options"]
    shm = mount(spec, "/dev/shm")
    assert shm == {"destination": "/dev/shm", "type": "bind", "source": "/run/podrt/abc/shm", "options": ["rw", "bind"]}


def test_no_resolv_conf_mount_without_one() -> None:
    spec = build_infra_spec(make_plan(resolv_conf=None))
    assert "/etc/resolv.conf" not in [m["destination"] for m in spec["mounts"]]


def test_standard_mounts_and_parents_first() -> None:
    spec = build_infra_spec(make_plan())
    dests = [m["destination"] for m in spec["mounts"]]
    for d in ("/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm"):
        assert d in dests
    assert dests.index("/dev") < min(dests.index(d) for d in ("/dev/pts", "/dev/mqueue", "/dev/shm"))
    assert dests.index("/sys") < dests.index("/sys/fs/cgroup")
    assert mount(spec, "/dev")["options"] == ["nosuid", "strictatime", "mode=755", "size=65536k"]
    assert "newinstance" in mount(spec, "/dev/pts")["options"]
    assert "ro" in mount(spec, "/sys/fs/cgroup")["options"]
    assert spec["root"] == {"path": "/var/lib/podrt/infra/rootfs", "readonly": True}


# --- process ---


def test_process_defaults() -> None:
    proc = build_infra_spec(make_plan())["process"]
    assert proc["args"] == ["/catatonit", "-P"]
    assert proc["cwd"] == "/"
    assert proc["env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert proc["user"] == {"uid": 0, "gid": 0}
    assert proc["noNewPrivileges"] is True
    caps = proc["capabilities"]
    assert set(caps) == {"bounding", "effective", "permitted"}
    for s in caps.values():
        assert sorted(s) == sorted(DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in caps["bounding"]
    assert "selinuxLabel" not in proc


def test_run_as_user_group_and_supplemental_groups() -> None:
    plan = make_plan(config={"run_as_user": 1000, "run_as_group": 3000, "supplemental_groups": (4000, 5000)})
    assert build_infra_spec(plan)["process"]["user"] == {"uid": 1000, "gid": 3000, "additionalGids": [4000, 5000]}


def test_oom_score_adj_present_or_absent() -> None:
    assert build_infra_spec(make_plan(oom_score_adj=-998))["process"]["oomScoreAdj"] == -998
    assert build_infra_spec(make_plan(oom_score_adj=0))["process"]["oomScoreAdj"] == 0
    assert "oomScoreAdj" not in build_infra_spec(make_plan(oom_score_adj=None))["process"]


def test_selinux_label() -> None:
    label = "system_u:system_r:container_t:s0:c1,c2"
    assert build_infra_spec(make_plan(selinux_label=label))["process"]["selinuxLabel"] == label


# --- linux ---


def test_cgroups_path_and_cpu_shares() -> None:
    spec = build_infra_spec(make_plan(cgroups_path="kubepods.slice:podrt:abc", cpu_shares=512))
    assert spec["linux"]["cgroupsPath"] == "kubepods.slice:podrt:abc"
    assert spec["linux"]["resources"]["cpu"] == {"shares": 512}
    assert spec["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


def test_sysctls() -> None:
    sysctls = {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"}
    assert build_infra_spec(make_plan(sysctls=sysctls))["linux"]["sysctl"] == sysctls
    assert "sysctl" not in build_infra_spec(make_plan(sysctls={}))["linux"]


def test_annotations_copied() -> None:
    ann = {"io.kubernetes.cri.sandbox-name": "web", "io.podrt.sandbox-id": "abc"}
    spec = build_infra_spec(make_plan(annotations=ann))
    assert spec["annotations"] == ann
    assert isinstance(spec["annotations"], dict)


def test_seccomp_and_paths_for_unprivileged() -> None:
    spec = build_infra_spec(make_plan())
    assert spec["linux"]["seccomp"] == default_profile()
    assert spec["linux"]["maskedPaths"] == list(MASKED_PATHS)
    assert spec["linux"]["readonlyPaths"] == list(READONLY_PATHS)
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    assert "seccomp" not in build_infra_spec(make_plan(seccomp=None))["linux"]


def test_privileged(monkeypatch: pytest.MonkeyPatch) -> None:
    held = frozenset(ALL_CAPABILITIES) - {"CAP_SYS_RESOURCE"}  # as on this host
    monkeypatch.setattr(spec_module, "host_capabilities", lambda: held)
    spec = build_infra_spec(make_plan(privileged=True))
    caps = spec["process"]["capabilities"]
    assert len(ALL_CAPABILITIES) == 41 and len(set(ALL_CAPABILITIES)) == 41
    assert ALL_CAPABILITIES[0] == "CAP_CHOWN" and ALL_CAPABILITIES[21] == "CAP_SYS_ADMIN"
    assert ALL_CAPABILITIES[-1] == "CAP_CHECKPOINT_RESTORE"
    for s in caps.values():
        assert s == [c for c in ALL_CAPABILITIES if c != "CAP_SYS_RESOURCE"]
    assert spec["process"]["noNewPrivileges"] is False
    assert "seccomp" not in spec["linux"]  # even though the plan carries one
    assert "maskedPaths" not in spec["linux"] and "readonlyPaths" not in spec["linux"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_general_builder_devices_paths_apparmor_propagation() -> None:
    """The SpecInput fields only containers use so far."""
    base = spec_module.SpecInput(rootfs="/r", args=("/bin/sh",), namespaces=(), mounts=(), cgroups_path="/c")
    null = spec_module.DeviceNode("/dev/xnull", "c", 1, 3, 0o666, 0, 5, "rw")
    spec = spec_module.build_spec(attrs.evolve(base, devices=(null,), masked_paths=(), readonly_paths=("/proc/sys",),
                                               apparmor_profile="mine", rootfs_propagation="rslave"))
    linux = spec["linux"]
    assert linux["devices"] == [{"path": "/dev/xnull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666,
                                 "uid": 0, "gid": 5}]
    assert linux["resources"]["devices"][1:] == [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]
    assert (linux["maskedPaths"], linux["readonlyPaths"]) == ([], ["/proc/sys"])  # given, even empty: no defaults
    assert spec["process"]["apparmorProfile"] == "mine" and linux["rootfsPropagation"] == "rslave"
    plain = spec_module.build_spec(base)
    assert "devices" not in plain["linux"] and "apparmorProfile" not in plain["process"]
    assert plain["linux"]["maskedPaths"] == list(MASKED_PATHS) and "/sys/devices/virtual/powercap" in MASKED_PATHS


def test_host_capabilities_read_from_bounding_set() -> None:
    held = spec_module.host_capabilities()
    mask = int(next(line for line in open("/proc/self/status") if line.startswith("CapBnd:")).split()[1], 16)
    assert ("CAP_SYS_RESOURCE" in held) == bool(mask >> 24 & 1)
    assert ("CAP_CHOWN" in held) == bool(mask & 1)


def test_spec_is_json() -> None:
    spec = build_infra_spec(make_plan(sysctls={"kernel.shm_rmid_forced": "1"}))
    assert json.loads(json.dumps(spec)) == spec
    assert spec["ociVersion"] == "1.0.2"


# --- seccomp ---


def test_profile_for_matrix(tmp_path: Path) -> None:
    local = tmp_path / "p.json"
    local.write_text(json.dumps({"defaultAction": "SCMP_ACT_LOG", "syscalls": []}))
    rd, lh, unc = ProfileType.RUNTIME_DEFAULT, ProfileType.LOCALHOST, ProfileType.UNCONFINED
    assert profile_for(rd, "", privileged=False, enabled=True) == default_profile()
    assert profile_for(unc, "", privileged=False, enabled=True) is None
    assert profile_for(lh, str(local), privileged=False, enabled=True) == {
        "defaultAction": "SCMP_ACT_LOG",
        "syscalls": [],
    }
    for t in (rd, lh, unc):
        assert profile_for(t, str(local), privileged=True, enabled=True) is None
        assert profile_for(t, str(local), privileged=False, enabled=False) is None


def test_profile_for_localhost_needs_absolute_path() -> None:
    with pytest.raises(ValueError, match="absolute"):
        profile_for(ProfileType.LOCALHOST, "profiles/p.json", privileged=False, enabled=True)
    with pytest.raises(ValueError, match="absolute"):
        profile_for(ProfileType.LOCALHOST, "", privileged=False, enabled=True)


def allowed_names(profile: dict) -> set[str]:
    """Names allowed without argument conditions."""
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}


def test_default_profile_contents() -> None:
    p = default_profile()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["architectures"] == ARCHITECTURES
    allowed = allowed_names(p)
    assert {"read", "write", "openat", "execve", "exit_group", "rt_sigreturn", "arch_prctl"} <= allowed
    for denied in ("reboot", "kexec_load", "mount", "umount2", "unshare", "setns", "bpf", "init_module", "ptrace"):
        assert denied not in allowed
    # clone only without namespace flags
    clone = [r for r in p["syscalls"] if r["names"] == ["clone"]]
    assert clone == [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        }
    ]
    assert CLONE_NAMESPACE_FLAGS == 0x7E020000
    assert "clone" not in allowed
    personalities = sorted(r["args"][0]["value"] for r in p["syscalls"] if r["names"] == ["personality"])
    assert personalities == [0, 8, 131072, 131080, 4294967295]
    assert len(ALLOWED_SYSCALLS) == len(set(ALLOWED_SYSCALLS))


def test_default_profile_is_a_fresh_copy() -> None:
    p = default_profile()
    p["syscalls"][0]["names"].append("reboot")
    assert "reboot" not in allowed_names(default_profile())


def test_load_oci_form(tmp_path: Path) -> None:
    oci = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}],
    }
    path = tmp_path / "oci.json"
    path.write_text(json.dumps(oci))
    assert load_localhost_profile(str(path)) == oci


def test_load_docker_form(tmp_path: Path) -> None:
    docker = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {"name": "read", "action": "SCMP_ACT_ALLOW", "args": []},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW", "comment": "plain"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_CHOWN"]}},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["kill"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_KILL"]}},
        ],
    }
    path = tmp_path / "docker.json"
    path.write_text(json.dumps(docker))
    p = load_localhost_profile(str(path))
    assert p["architectures"] == ARCHITECTURES
    assert "archMap" not in p
    assert p["syscalls"] == [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": []},
        {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["chown"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ]
    json.dumps(p)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        (json.dumps({"syscalls": []}), "no defaultAction"),
        (json.dumps(["SCMP_ACT_ERRNO"]), "no defaultAction"),
        (json.dumps({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": "read"}), "syscalls"),
    ],
)
def test_load_errors_name_the_path(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_localhost_profile(str(path))
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_localhost_load_error_surfaces_through_profile_for(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        profile_for(ProfileType.LOCALHOST, str(tmp_path / "absent.json"), privileged=False, enabled=True)


def test_plan_factory_is_consistent() -> None:
    """Guard for the helper itself: the overrides reach the plan."""
    plan = make_plan(network=NsMode.NODE, cpu_shares=7)
    assert plan.config.host_network and plan.netns_path is None and plan.cpu_shares == 7
    assert attrs.evolve(plan, cpu_shares=8).cpu_shares == 8


@pytest.mark.parametrize("content, fragment", [
    ({"defaultAction": "SCMP_ACT_ALLOW", "archMap": ["x86"]}, "malformed archMap"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "includes": ["caps"]}]}, "malformed"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"], "includes": {"minKernel": 4.8}}]}, "malformed"),
])
def test_profiles_of_odd_shape_are_refused_as_profiles(tmp_path: Path, content: object, fragment: str) -> None:
    """A Docker-form profile's extensions of the wrong type: ValueError (InvalidArgument), not AttributeError."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=fragment):
        load_localhost_profile(str(path))


def test_a_fifo_or_device_named_as_a_profile_does_not_block(tmp_path: Path) -> None:
    """Opened without blocking and refused: a FIFO with no writer would stall the daemon's loop."""
    os.mkfifo(tmp_path / "fifo")
    for path in (str(tmp_path / "fifo"), "/dev/zero", str(tmp_path)):
        with pytest.raises(ValueError, match="not a regular file"):
            load_localhost_profile(path)
    big = tmp_path / "big.json"
    big.write_text(" " * (2 << 20) + "{}")
    with pytest.raises(ValueError, match="larger than"):
        load_localhost_profile(str(big))

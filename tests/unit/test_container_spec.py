"""The container spec's rules, without a host: command and args over the
image's entrypoint and cmd, env merging, users and groups from the image's
files, capability adds and drops; devices, resources, sysctls, masked paths,
AppArmor, PID namespace modes and mount propagation; the CRI conversion of
those fields and their round trip through the state file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest

from podrt.api.runtime import v1 as cri
from podrt.config import Config, RuntimeConfig
from podrt.container import hostfit
from podrt.container import spec as spec_mod
from podrt.container.devices import device_nodes
from podrt.container.hostfit import page_size
from podrt.container.spec import (
    build_container_spec,
    capabilities,
    check_propagation,
    environment,
    oci_resources,
    process_args,
    resolve_user,
    rootfs_propagation,
)
from podrt.container.validate import check_host_fit, check_request, check_resources
from podrt.cri import container_convert as cconv
from podrt.errors import FailedPrecondition, InvalidArgument
from podrt.host import cgroups, mountinfo
from podrt.images.manager import ImageView
from podrt.images.store import ImageRecord
from podrt.model.container import (
    ContainerConfig,
    ContainerUser,
    Device,
    GroupsPolicy,
    HugepageLimit,
    Mount,
    Propagation,
    Resources,
    spec_user,
)
from podrt.model.sandbox import NamespaceOptions, NsMode, SandboxConfig
from podrt.oci.spec import DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS, DeviceNode
from podrt.security import apparmor
from podrt.security.seccomp import ProfileType
from podrt.state.format import config_to_dict
from podrt.state.format import container_config_from_dict as config_from_dict
from podrt.state.records import SandboxState
from podrt.steps.container.context import ContainerContext

IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["--default"], "Env": ["PATH=/image/bin", "A=image", "B=image"]}


@pytest.mark.parametrize("command, args, expected", [
    ((), (), ("/entry", "--default")),  # neither: entrypoint + cmd
    ((), ("--mine",), ("/entry", "--mine")),  # args replace cmd only
    (("/bin/app",), (), ("/bin/app",)),  # command replaces entrypoint, and the image's cmd goes with it
    (("/bin/app",), ("-v",), ("/bin/app", "-v")),
])
def test_command_and_args_over_the_image(command: tuple[str, ...], args: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert process_args(ContainerConfig(name="c", command=command, args=args), IMAGE) == expected


def test_environment_request_wins_and_hostname_is_set() -> None:
    env = environment(ContainerConfig(name="c", envs=(("B", "request"), ("C", "new"))), IMAGE, "pod-host")
    assert env == ("PATH=/image/bin", "A=image", "B=request", "HOSTNAME=pod-host", "C=new")
    assert environment(ContainerConfig(name="c"), {}, "")[0].startswith("PATH=/usr/local/sbin")  # a PATH always


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app\nvideo:x:44:other,app\n")
    return tmp_path


@pytest.mark.parametrize("cfg, image_user, expected", [
    (ContainerConfig(name="c"), "", (0, 0, (0,))),
    (ContainerConfig(name="c"), "app", (1000, 1000, (10, 44, 1000))),
    (ContainerConfig(name="c"), "1000:44", (1000, 44, (10, 44))),  # the primary group once
    (ContainerConfig(name="c"), "app:wheel", (1000, 10, (10, 44))),
    (ContainerConfig(name="c", run_as_user=1000), "root", (1000, 1000, (10, 44, 1000))),  # the request over the image
    (ContainerConfig(name="c", run_as_user=5, run_as_group=6, supplemental_groups=(7,)), "", (5, 6, (6, 7))),
    (ContainerConfig(name="c", run_as_username="app", supplemental_groups=(99, 10)), "", (1000, 1000, (10, 44, 99, 1000))),
    # Strict: the image's /etc/group adds nothing (critest: [1000, 1234] for uid 1000 and group 1234)
    (ContainerConfig(name="c", groups_policy=GroupsPolicy.STRICT, supplemental_groups=(99,)), "app", (1000, 1000, (99, 1000))),
    (ContainerConfig(name="c", groups_policy=GroupsPolicy.STRICT, run_as_user=1000), "", (1000, 1000, (1000,))),
])
def test_users_and_groups(rootfs: Path, cfg: ContainerConfig, image_user: str, expected: tuple[int, int, tuple[int, ...]]) -> None:
    assert resolve_user(cfg, {"User": image_user}, rootfs) == expected


def test_unknown_names_are_refused(rootfs: Path) -> None:
    with pytest.raises(InvalidArgument, match="user 'ghost'"):
        resolve_user(ContainerConfig(name="c", run_as_username="ghost"), {}, rootfs)
    with pytest.raises(InvalidArgument, match="group 'nope'"):
        resolve_user(ContainerConfig(name="c"), {"User": "app:nope"}, rootfs)
    with pytest.raises(InvalidArgument, match="user '²'"):  # str.isdigit() says yes; int() refuses
        resolve_user(ContainerConfig(name="c", run_as_username="²"), {}, rootfs)
    with pytest.raises(InvalidArgument, match="user '99999999999999999999' is out of range"):
        resolve_user(ContainerConfig(name="c", run_as_username="99999999999999999999"), {}, rootfs)
    with pytest.raises(InvalidArgument, match="group '2147483648' is out of range"):
        resolve_user(ContainerConfig(name="c"), {"User": "0:2147483648"}, rootfs)


def test_an_etc_passwd_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").symlink_to("/etc/passwd")  # would read the host's
    with pytest.raises(InvalidArgument):
        resolve_user(ContainerConfig(name="c", run_as_username="root"), {}, tmp_path)


def test_capabilities_adds_drops_and_all() -> None:
    assert set(capabilities(ContainerConfig(name="c"))) == set(DEFAULT_CAPABILITIES)
    assert capabilities(ContainerConfig(name="c", drop_capabilities=("ALL",), add_capabilities=("net_bind_service",))) == (
        "CAP_NET_BIND_SERVICE",)
    with_admin = capabilities(ContainerConfig(name="c", add_capabilities=("CAP_SYS_ADMIN",), drop_capabilities=("KILL",)))
    assert "CAP_SYS_ADMIN" in with_admin and "CAP_KILL" not in with_admin
    with pytest.raises(InvalidArgument, match="add_capabilities: unknown capability 'BOGUS'"):
        check_request(ContainerConfig(name="c", image="i", add_capabilities=("BOGUS",)), _pod())
    with pytest.raises(InvalidArgument, match="drop_capabilities: unknown capability ''"):
        check_request(ContainerConfig(name="c", image="i", drop_capabilities=("",)), _pod())
    check_request(ContainerConfig(name="c", image="i", add_capabilities=("all", "cap_net_raw", "NET_ADMIN")), _pod())


# ---- the whole spec ---------------------------------------------------------------

def _pod(**config: Any) -> SandboxState:
    cfg = SandboxConfig(name="web", uid="u1", namespace="ns", **config)
    return SandboxState(
        id="p" * 64, config=cfg, runtime_handler="runc", created_at=1, pod_name="", infra_name="",
        log_directory="/var/log/pods/x", hostname="web", shm_path="/run/podrt/shm", resolv_conf=None,
        hostname_file="", cgroup_parent="/kubepods", cgroups_path="", conmon_cgroup="", netns_path="/run/netns/x",
        ips=[], infra_pid=4242, conmon_pid=0, steps=())


def _ctx(rootfs: Path, cfg: ContainerConfig, pod: SandboxState | None = None, **fields: Any) -> ContainerContext:
    image = ImageView(ImageRecord("sha256:i", (), (), "", (), 0), {"config": {"Cmd": ["/bin/sh"]}})
    return ContainerContext(id="c" * 64, config=cfg, sandbox=pod or _pod(), name="k8s_c", image=image, image_ref="i",
                            lowers=(), created_at=1, log_path="/x.log", stop_signal="SIGTERM", rootfs=str(rootfs), **fields)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host as these machines are: cgroup v1 with swap accounting, 2MB and 1GB pages (and
    the hugetlb controller, which these machines lack), podrt at score 0."""
    monkeypatch.setattr(cgroups, "unified", lambda: False)
    monkeypatch.setattr(cgroups, "swap_accounting", lambda: True)
    monkeypatch.setattr(cgroups, "available", lambda controller: True)
    monkeypatch.setattr(hostfit, "hugepage_sizes", lambda: frozenset({"2MB", "1GB"}))
    monkeypatch.setattr(spec_mod, "current_oom_score_adj", lambda: 0)


def test_spec_defaults_sysctls_and_oom(rootfs: Path, host: None, monkeypatch: pytest.MonkeyPatch) -> None:
    pod = _pod(sysctls={"fs.mqueue.msg_max": "64"})
    config = Config(runtime=RuntimeConfig(default_sysctls=("net.ipv4.ping_group_range=0 1",)))
    cfg = ContainerConfig(name="c", image="i", resources=Resources(oom_score_adj=-997))
    spec = build_container_spec(_ctx(rootfs, cfg, pod), config)
    assert spec["linux"]["sysctl"] == {"net.ipv4.ping_group_range": "0 1", "fs.mqueue.msg_max": "64"}  # the pod's
    assert spec["process"]["oomScoreAdj"] == 0  # not below podrt's own
    assert spec["linux"]["maskedPaths"] == list(MASKED_PATHS) and "/sys/devices/virtual/powercap" in MASKED_PATHS
    assert spec["linux"]["readonlyPaths"] == list(READONLY_PATHS)
    assert "apparmorProfile" not in spec["process"] and "rootfsPropagation" not in spec["linux"]
    assert "devices" not in spec["linux"]
    assert spec_user(spec) == ContainerUser(0, 0, (0,))  # the primary group among them, as in containerd
    monkeypatch.setattr(spec_mod, "current_oom_score_adj", lambda: -999)
    assert spec_mod.oom_score_adj(-997) == -997 and spec_mod.oom_score_adj(5000) == 1000


def test_spec_masked_and_readonly_paths_from_the_request(rootfs: Path, host: None) -> None:
    cfg = ContainerConfig(name="c", image="i", masked_paths=("/proc/kcore",), readonly_paths=("/proc/sys",))
    linux = build_container_spec(_ctx(rootfs, cfg), Config())["linux"]
    assert (linux["maskedPaths"], linux["readonlyPaths"]) == (["/proc/kcore"], ["/proc/sys"])
    privileged = build_container_spec(_ctx(rootfs, attrs.evolve(cfg, privileged=True), _pod(privileged=True)), Config())
    assert "maskedPaths" not in privileged["linux"] and "readonlyPaths" not in privileged["linux"]


def _pid_ns(spec: dict[str, Any]) -> list[dict[str, str]]:
    return [ns for ns in spec["linux"]["namespaces"] if ns["type"] == "pid"]


def test_pid_namespace_modes(rootfs: Path, host: None) -> None:
    def pid(mode: NsMode, pod: SandboxState | None = None, **fields: Any) -> list[dict[str, str]]:
        cfg = ContainerConfig(name="c", image="i", pid_mode=mode, pid_target_id="t" * 64)
        return _pid_ns(build_container_spec(_ctx(rootfs, cfg, pod, **fields), Config()))

    assert pid(NsMode.CONTAINER) == [{"type": "pid"}]
    assert pid(NsMode.POD) == [{"type": "pid", "path": "/proc/4242/ns/pid"}]
    me = os.getpid()  # a live process stands for the running target
    assert pid(NsMode.TARGET, target_pid=me) == [{"type": "pid", "path": f"/proc/{me}/ns/pid"}]
    assert pid(NsMode.NODE) == []  # the host's, as CRI-O does
    assert pid(NsMode.CONTAINER, _pod(namespaces=NamespaceOptions(pid=NsMode.NODE))) == []
    with pytest.raises(FailedPrecondition, match="target_id: container t+ is not running"):
        pid(NsMode.TARGET)  # the manager found no running target
    with pytest.raises(FailedPrecondition, match="not running"):
        pid(NsMode.TARGET, target_pid=2**22 + 1)  # it exited since (above pid_max)


def test_a_pod_without_infra_is_joined_by_its_pins(rootfs: Path, host: None) -> None:
    """Its IPC and UTS namespaces where podrt pinned them, its netns; no pod PID namespace to join."""
    pod = attrs.evolve(_pod(), infra_pid=0, ipc_path="/run/podrt/ipcns/p", uts_path="/run/podrt/utsns/p")
    cfg = ContainerConfig(name="c", image="i", pid_mode=NsMode.POD)
    namespaces = build_container_spec(_ctx(rootfs, cfg, pod), Config())["linux"]["namespaces"]
    assert [ns for ns in namespaces if ns["type"] in ("pid", "network", "ipc", "uts")] == [
        {"type": "pid"}, {"type": "network", "path": "/run/netns/x"}, {"type": "uts", "path": "/run/podrt/utsns/p"},
        {"type": "ipc", "path": "/run/podrt/ipcns/p"}]


def test_a_cgroup_namespace_on_v2_unless_privileged(rootfs: Path, host: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def types(cfg: ContainerConfig) -> list[str]:
        return [ns["type"] for ns in build_container_spec(_ctx(rootfs, cfg, _pod(privileged=True)), Config())["linux"]["namespaces"]]

    cfg = ContainerConfig(name="c", image="i")
    assert "cgroup" not in types(cfg)
    monkeypatch.setattr(cgroups, "unified", lambda: True)
    assert "cgroup" in types(cfg)
    assert "cgroup" not in types(attrs.evolve(cfg, privileged=True))


def test_devices_in_the_spec(rootfs: Path, host: None, tmp_path: Path) -> None:
    link = tmp_path / "mynull"
    link.symlink_to("/dev/null")  # followed, as CRI-O does
    cfg = ContainerConfig(name="c", image="i", devices=(Device("/dev/xnull", str(link), "rw"),))
    linux = build_container_spec(_ctx(rootfs, cfg), Config())["linux"]
    st = os.stat("/dev/null")
    assert linux["devices"] == [{"path": "/dev/xnull", "type": "c", "major": 1, "minor": 3, "fileMode": st.st_mode & 0o7777,
                                 "uid": st.st_uid, "gid": st.st_gid}]
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"},
                                             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}]


def test_device_resolution(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "null").symlink_to("/dev/null")  # a link inside a directory is skipped (runc lstats)
    with pytest.raises(InvalidArgument, match=r"devices\[0\].host_path .*: no such device"):
        device_nodes([Device("/dev/x", str(tmp_path / "missing"))])
    with pytest.raises(InvalidArgument, match="not a character or block device"):
        device_nodes([Device("/dev/x", str(tmp_path / "file"))])
    with pytest.raises(InvalidArgument, match="directory without device nodes"):
        device_nodes([Device("/dev/x", str(tmp_path / "dir"))])
    (tmp_path / "dir" / "sub").mkdir()
    zero = tmp_path / "dir" / "sub" / "zero"
    try:
        os.mknod(zero, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    os.chmod(zero, 0o620)
    st = zero.stat()
    assert device_nodes([Device("/dev/mine", str(tmp_path / "dir"), "")]) == (  # "" is all access
        DeviceNode("/dev/mine/sub/zero", "c", 1, 5, 0o620, st.st_uid, st.st_gid, "rwm"),)


def test_device_checks(rootfs: Path) -> None:
    def refusal(device: Device) -> str:
        with pytest.raises(InvalidArgument) as err:
            check_request(ContainerConfig(name="c", image="i", devices=(device,)), _pod())
        return str(err.value)

    assert "devices[0].permissions 'rwx'" in refusal(Device("/dev/a", "/dev/null", "rwx"))
    assert "devices[0].permissions 'rr'" in refusal(Device("/dev/a", "/dev/null", "rr"))
    assert "devices[0].container_path 'dev/a'" in refusal(Device("dev/a", "/dev/null"))
    assert "devices[0].host_path /dev/podrt-none: no such device" in refusal(Device("/dev/a", "/dev/podrt-none"))
    check_request(ContainerConfig(name="c", image="i", devices=(Device("/dev/a", "/dev/null", "mrw"),)), _pod())


def test_security_checks() -> None:
    def refusal(**fields: Any) -> str:
        with pytest.raises(InvalidArgument) as err:
            check_request(ContainerConfig(name="c", image="i", **fields), _pod())
        return str(err.value)

    assert "masked_paths[0]" in refusal(masked_paths=("proc/kcore",))
    assert "readonly_paths[1]" in refusal(readonly_paths=("/proc/sys", "/proc/../etc"))
    assert "target_id must name a container" in refusal(pid_mode=NsMode.TARGET)
    assert "apparmor.localhost_ref" in refusal(apparmor=ProfileType.LOCALHOST, apparmor_localhost_ref="localhost/")
    assert "run_as_group needs run_as_user or run_as_username" in refusal(run_as_group=1002)  # critest's case
    for user in ({"run_as_user": 1000}, {"run_as_username": "app"}):
        check_request(ContainerConfig(name="c", image="i", run_as_group=1002, **user), _pod())  # type: ignore[arg-type]


def test_process_and_path_checks(tmp_path: Path) -> None:
    """What execve, the kernel's path limits or the log dir would refuse later, named up front."""
    pod = attrs.evolve(_pod(), log_directory=str(tmp_path / "logs"))
    (tmp_path / "logs" / "sub").mkdir(parents=True)

    def refusal(**fields: Any) -> str:
        with pytest.raises(InvalidArgument) as err:
            check_request(ContainerConfig(name="c", image="i", **fields), pod)
        return str(err.value)

    assert "command[0] must name an executable" in refusal(command=("",))
    assert "args[1] must not contain a NUL" in refusal(args=("a", "b\0"))
    assert "envs[0].value of 'A' must not contain a NUL" in refusal(envs=(("A", "x\0"),))
    assert "working_dir 'rel' must be absolute" in refusal(working_dir="rel")
    assert "longer than a path may be" in refusal(working_dir="/x" * 2100)
    assert "component is longer than 255" in refusal(working_dir="/" + "n" * 256)
    assert "names a directory" in refusal(log_path="dir/")
    assert "names a directory" in refusal(log_path=".")
    assert "is a directory in the pod's log directory" in refusal(log_path="sub")
    assert "component is longer than 255" in refusal(log_path="x" * 256 + ".log")
    assert "longer than a path may be" in refusal(log_path="s/" * 2100 + "x.log")
    assert "must not contain a NUL" in refusal(log_path="a\0b")
    assert "mounts[0].host_path" in refusal(mounts=(Mount("/data", str(tmp_path) + "\0x"),))  # not a ValueError from lexists
    assert "mounts[0].container_path" in refusal(mounts=(Mount("/" + "n" * 300, str(tmp_path)),))
    (tmp_path / "logs" / "file").write_text("")
    (tmp_path / "logs" / "link").symlink_to(tmp_path)
    assert "logs/file is not a directory" in refusal(log_path="file/1.log")  # mkdir would raise FileExistsError
    assert "logs/link is not a directory" in refusal(log_path="link/1.log")  # conmon would write outside the log dir
    with pytest.raises(InvalidArgument, match="component is longer than 255"):  # the name podrt makes, checked too
        check_request(ContainerConfig(name="n" * 253, image="i"), pod)
    check_request(ContainerConfig(name="c", image="i", log_path="sub/app.log", working_dir="/a/../b",
                                  command=("/bin/sh",), envs=(("A", "é"),)), pod)


def test_host_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPUs, nodes, page sizes and controllers the host lacks are refused by field name."""
    monkeypatch.setattr(hostfit, "online_cpus", lambda: frozenset({0, 1}))
    monkeypatch.setattr(hostfit, "online_nodes", lambda: frozenset({0}))
    monkeypatch.setattr(hostfit, "hugepage_sizes", lambda: frozenset({"2MB"}))
    monkeypatch.setattr(cgroups, "unified", lambda: True)
    monkeypatch.setattr(cgroups, "available", lambda controller: controller in ("cpu", "memory"))

    def refusal(r: Resources) -> str:
        with pytest.raises(InvalidArgument) as err:
            check_host_fit("linux", r)
        return str(err.value)

    assert "cpuset_cpus '0-3': this host has no CPUs 2,3 (online: 0,1)" in refusal(Resources(cpuset_cpus="0-3"))
    assert "cpuset_mems '1': this host has no memory nodes 1" in refusal(Resources(cpuset_mems="1"))
    assert "page_size 1GB: this host has no such huge pages (it has: 2MB)" in refusal(
        Resources(hugepage_limits=(HugepageLimit("1GB", 0),)))
    assert "cgroup.procs is the cgroup's own interface" in refusal(Resources(unified={"cgroup.procs": "1"}))
    assert "pids.max: this host has no pids controller" in refusal(Resources(unified={"pids.max": "10"}))
    check_host_fit("linux", Resources(cpuset_cpus="1,0", cpuset_mems="0", hugepage_limits=(HugepageLimit("2MB", 0),),
                                      unified={"memory.high": "max"}))
    monkeypatch.setattr(cgroups, "unified", lambda: False)
    assert "cgroup v2 only" in refusal(Resources(unified={"memory.high": "max"}))


@pytest.mark.parametrize("text, ids", [("0", {0}), ("0-2,5", {0, 1, 2, 5}), ("3,1", {1, 3}), ("7-7", {7})])
def test_id_lists(text: str, ids: set[int]) -> None:
    assert hostfit.id_list(text) == ids


@pytest.mark.parametrize("text", ["", "0-", "-1", "/dev/sda", "é", "1-0", "0,,1", "0-1-2", " 0", "0x1", "99999", "a-b"])
def test_id_list_refusals(text: str) -> None:
    with pytest.raises(ValueError):
        hostfit.id_list(text)
    with pytest.raises(InvalidArgument, match="cpuset_cpus"):
        check_resources("linux", Resources(cpuset_cpus=text or ","))


# ---- resources ----------------------------------------------------------------------

def test_oci_resources_memory_swap_hugepages_unified(host: None, monkeypatch: pytest.MonkeyPatch) -> None:
    r = Resources(memory_limit=64 << 20, hugepage_limits=(HugepageLimit("2MB", 1 << 21), HugepageLimit("64KB", 0)))
    out = oci_resources(r)
    assert out["memory"] == {"limit": 64 << 20, "swap": 64 << 20}  # no swap unless asked for
    assert out["hugepageLimits"] == [{"pageSize": "2MB", "limit": 1 << 21}]  # sizes this host lacks are left out
    assert oci_resources(attrs.evolve(r, memory_swap_limit=-1))["memory"]["swap"] == -1
    assert oci_resources(attrs.evolve(r, memory_swap_limit=128 << 20))["memory"]["swap"] == 128 << 20
    monkeypatch.setattr(cgroups, "swap_accounting", lambda: False)
    monkeypatch.setattr(cgroups, "unified", lambda: True)
    out = oci_resources(attrs.evolve(r, unified={"memory.high": "1000000"}))
    assert out["memory"] == {"limit": 64 << 20} and out["unified"] == {"memory.high": "1000000"}
    monkeypatch.setattr(cgroups, "available", lambda controller: controller != "hugetlb")
    assert "hugepageLimits" not in oci_resources(r)  # no hugetlb controller: no limits for runc to fail on
    assert oci_resources(Resources(oom_score_adj=500)) == {}  # a process setting, not for runc update


def test_page_size_names() -> None:
    assert (page_size(2048), page_size(1 << 20), page_size(64)) == ("2MB", "1GB", "64KB")


@pytest.mark.parametrize("r, fragment", [
    (Resources(memory_swap_limit=1 << 30), "needs memory_limit_in_bytes"),
    (Resources(memory_limit=4096), "4096 is too low: a container needs at least 12582912"),
    (Resources(memory_limit=32 << 20, memory_swap_limit=16 << 20), "at least memory_limit_in_bytes"),
    (Resources(hugepage_limits=(HugepageLimit("2M", 0),)), "hugepage_limits[0].page_size '2M'"),
    (Resources(hugepage_limits=(HugepageLimit("2MB", 0), HugepageLimit("2MB", 1))), "given twice"),
    (Resources(unified={"../memory.high": "1"}), "not a cgroup v2 file name"),
    (Resources(unified={"memory.high": "1\n2"}), "one line"),
])
def test_resource_refusals(r: Resources, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_resources("linux", r)
    assert fragment in str(err.value)


# ---- mounts: propagation -------------------------------------------------------------

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 27 0:25 / /mnt/private rw,relatime - tmpfs tmpfs rw
31 27 0:26 / /mnt/slave rw,relatime master:7 - tmpfs tmpfs rw
32 30 0:27 / /mnt/private/with\\040space rw shared:9 - tmpfs tmpfs rw
33 30 0:28 / /mnt/private rw - tmpfs tmpfs rw
bogus line
"""


def test_mountinfo_parse_and_lookup() -> None:
    entries = mountinfo.parse(MOUNTINFO)
    assert len(entries) == 6 and entries[4].mount_point == "/mnt/private/with space" and entries[4].shared
    assert mountinfo.mount_of("/var/lib/x", entries).mount_point == "/"
    assert mountinfo.mount_of("/mnt/slave/a/b", entries).slave
    assert mountinfo.mount_of("/mnt/slaveish", entries).mount_point == "/"  # a prefix, not a parent
    top = mountinfo.mount_of("/mnt/private/d", entries)
    assert top is entries[5]  # the topmost of two stacked on one point
    assert mountinfo.mount_of("/mnt/private/with space/x", entries) is entries[4]


def test_propagation_checks(tmp_path: Path) -> None:
    entries = mountinfo.parse(MOUNTINFO)

    def check(host_path: str, propagation: Propagation) -> None:
        check_propagation([Mount("/a", "/"), Mount("/data", host_path, propagation=propagation)], entries)

    check("/var/lib/x", Propagation.BIDIRECTIONAL)  # / is shared
    check("/mnt/slave/x", Propagation.HOST_TO_CONTAINER)
    check("/mnt/private/x", Propagation.PRIVATE)
    with pytest.raises(FailedPrecondition, match=r"config.mounts\[1\] \(/data\) has rshared .* /mnt/slave, which is not a shared mount"):
        check("/mnt/slave/x", Propagation.BIDIRECTIONAL)
    with pytest.raises(FailedPrecondition, match="neither a shared nor a slave mount"):
        check("/mnt/private/x", Propagation.HOST_TO_CONTAINER)
    assert rootfs_propagation([Mount("/a", "/a"), Mount("/b", "/b", propagation=Propagation.HOST_TO_CONTAINER)]) == "rslave"
    assert rootfs_propagation([Mount("/b", "/b", propagation=Propagation.HOST_TO_CONTAINER),
                               Mount("/c", "/c", propagation=Propagation.BIDIRECTIONAL)]) == "rshared"
    assert rootfs_propagation([Mount("/a", "/a")]) == ""


def test_propagation_in_the_spec(rootfs: Path, host: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mountinfo, "read", lambda: mountinfo.parse("27 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n"))
    cfg = ContainerConfig(name="c", image="i", mounts=(Mount("/data", str(rootfs), propagation=Propagation.BIDIRECTIONAL),))
    spec = build_container_spec(_ctx(rootfs, cfg), Config())
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    assert spec["mounts"][-1]["options"] == ["rbind", "rw", "rshared"]


# ---- AppArmor --------------------------------------------------------------------

def test_apparmor_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profiles = tmp_path / "profiles"
    profiles.write_text("mine (enforce)\ndocker-default (enforce)\n")
    monkeypatch.setattr(apparmor, "PROFILES", profiles)
    local = ProfileType.LOCALHOST
    assert apparmor.process_profile(local, "mine", apparmor_on=False) == ""  # no AppArmor: accepted, not applied
    assert apparmor.process_profile(local, "mine", apparmor_on=True) == "mine"
    assert apparmor.process_profile(local, "localhost/mine", apparmor_on=True) == "mine"
    assert apparmor.process_profile(ProfileType.RUNTIME_DEFAULT, "", apparmor_on=True) == ""
    with pytest.raises(FailedPrecondition, match="profile 'other' is not loaded"):
        apparmor.process_profile(local, "other", apparmor_on=True)


# ---- the CRI request -----------------------------------------------------------------

def _request(**linux_sc: Any) -> cri.CreateContainerRequest:
    return cri.CreateContainerRequest(config=cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name="c"), image=cri.ImageSpec(image="i"),
        linux=cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(**linux_sc))))


def test_convert_new_fields() -> None:
    req = _request(supplemental_groups_policy=cri.SupplementalGroupsPolicy.Strict, masked_paths=["/proc/kcore"],
                   readonly_paths=["/proc/sys"], apparmor=cri.SecurityProfile(
                       profile_type=cri.SecurityProfileProfileType.Localhost, localhost_ref="mine"),
                   namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.TARGET, target_id="t1"))
    req.config.devices = [cri.Device(container_path="/dev/a", host_path="/dev/null", permissions="rw")]
    req.config.mounts = [cri.Mount(container_path="/d", host_path="/tmp", selinux_relabel=True)]
    req.config.linux.resources = cri.LinuxContainerResources(
        memory_limit_in_bytes=1 << 30, memory_swap_limit_in_bytes=2 << 30, oom_score_adj=-997,
        hugepage_limits=[cri.HugepageLimit(page_size="2MB", limit=1 << 21)], unified={"memory.high": "max"})
    cfg = cconv.container_config(req)
    assert (cfg.groups_policy, cfg.masked_paths, cfg.readonly_paths) == (GroupsPolicy.STRICT, ("/proc/kcore",), ("/proc/sys",))
    assert (cfg.apparmor, cfg.apparmor_localhost_ref, cfg.pid_mode, cfg.pid_target_id) == (
        ProfileType.LOCALHOST, "mine", NsMode.TARGET, "t1")
    assert cfg.devices == (Device("/dev/a", "/dev/null", "rw"),)
    assert cfg.mounts[0].selinux_relabel
    assert cfg.resources == Resources(memory_limit=1 << 30, memory_swap_limit=2 << 30, oom_score_adj=-997,
                                      hugepage_limits=(HugepageLimit("2MB", 1 << 21),), unified={"memory.high": "max"})
    assert config_from_dict(config_to_dict(cfg)) == cfg  # the state file keeps them
    assert config_from_dict({k: v for k, v in config_to_dict(ContainerConfig(name="c")).items()
                             if k not in ("devices", "apparmor", "groups_policy", "masked_paths")}) == ContainerConfig(name="c")


@pytest.mark.parametrize("legacy, expected", [
    ("", (ProfileType.RUNTIME_DEFAULT, "")), ("runtime/default", (ProfileType.RUNTIME_DEFAULT, "")),
    ("unconfined", (ProfileType.UNCONFINED, "")), ("localhost/mine", (ProfileType.LOCALHOST, "mine")),
])
def test_convert_deprecated_apparmor_profile(legacy: str, expected: tuple[ProfileType, str]) -> None:
    cfg = cconv.container_config(_request(apparmor_profile=legacy))
    assert (cfg.apparmor, cfg.apparmor_localhost_ref) == expected


def test_convert_refusals() -> None:
    def refusal(req: cri.CreateContainerRequest) -> str:
        with pytest.raises(InvalidArgument) as err:
            cconv.container_config(req)
        return str(err.value)

    req = _request()
    req.config.mounts = [cri.Mount(container_path="/d", host_path="/tmp", image=cri.ImageSpec(image="busybox"))]
    assert "config.mounts[0]: an image volume has no host_path" in refusal(req)
    req.config.mounts = [cri.Mount(container_path="/d", host_path="/tmp", image_sub_path="x")]
    assert "config.mounts[0].image_sub_path needs an image" in refusal(req)
    req.config.mounts = [cri.Mount(container_path="/d", host_path="/tmp", uid_mappings=[cri.IdMapping(0, 1000, 1)])]
    assert "ID-mapped" in refusal(req)
    assert "apparmor_profile 'docker/weird'" in refusal(_request(apparmor_profile="docker/weird"))
    assert "supplemental_groups_policy: unknown value 7" in refusal(_request(supplemental_groups_policy=7))
    req = _request()
    req.config.linux.resources = cri.LinuxContainerResources(oom_score_adj=-1001)
    assert "oom_score_adj: -1001 is out of range" in refusal(req)
    req.config.linux.resources = cri.LinuxContainerResources(memory_swap_limit_in_bytes=-2)
    assert "memory_swap_limit_in_bytes: -2" in refusal(req)


def test_container_user_message() -> None:
    msg = cconv.container_user(ContainerUser(1000, 1000, (10, 44)))
    assert msg.linux == cri.LinuxContainerUser(uid=1000, gid=1000, supplemental_groups=[10, 44])

"""Pods with a user namespace of their own (userns_options mode POD) on the
real parts: runc joins the pinned namespace, the pod's files are ID-mapped
into it. What critest v1.32 asks (uid_map "0 1000 100000"; NODE as the
host's; refusals), and what a pod needs beyond it: its root writes its
rootfs, /dev/shm and a volume, reads its hostname and resolv.conf; exec;
a daemon restart; faults at each new step; a SIGKILL mid-creation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.container.create import STEP_NAMES
from podrt.host.idmap import IdmapSupport, clone_into
from podrt.host.nspin import create_userns
from podrt.sandbox.run import STEP_CLASSES
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.integration.test_containers import (
    _config,
    _create,
    _exec,
    _log_lines,
    _module_daemon,
    _remove_pod,
    _start,
    _status,
    _wait_exit,
)
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry

HOST_ID, LENGTH = 1000, 100000  # critest's mapping


def _idmap_problem() -> str | None:
    """What podrt's own probe says of a test daemon's root (under the temp dir)."""
    with tempfile.TemporaryDirectory(prefix="podrt-probe-") as d:
        Path(d).chmod(0o711)  # as the test daemons' bases are (daemon fixture)
        return asyncio.run(IdmapSupport(Path(d)).problem())


IDMAP_PROBLEM = _idmap_problem() if os.geteuid() == 0 else "needs root"
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]
needs_idmap = pytest.mark.skipif(IDMAP_PROBLEM is not None, reason=f"ID-mapped mounts fail here: {IDMAP_PROBLEM}")


def userns(mode: cri.NamespaceMode = cri.NamespaceMode.POD, ranges: list[tuple[int, int, int]] | None = None) -> cri.UserNamespace:
    ranges = [(0, HOST_ID, LENGTH)] if ranges is None and mode == cri.NamespaceMode.POD else ranges or []
    maps = [cri.IdMapping(container_id=c, host_id=h, length=n) for c, h, n in ranges]
    return cri.UserNamespace(mode=mode, uids=maps, gids=list(maps))


def userns_pod(u: cri.UserNamespace | None = None, *, host_network: bool = False,
               pid: cri.NamespaceMode = cri.NamespaceMode.POD, **kw: object) -> cri.PodSandboxConfig:
    """`pid`: POD, an infra process (its PID namespace's init); CONTAINER, none (podrt pins IPC and UTS in the user namespace)."""
    ns = cri.NamespaceOption(userns_options=userns() if u is None else u, pid=pid,
                             network=cri.NamespaceMode.NODE if host_network else cri.NamespaceMode.POD)
    return pod_config(linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(namespace_options=ns)), **kw)


def in_pod_config(registry: Registry, pod: cri.PodSandboxConfig, name: str = "app", **kw: object) -> cri.ContainerConfig:
    """As critest and the kubelet send it: the pod's namespace options in the container's security context."""
    sc = cri.LinuxContainerSecurityContext(namespace_options=pod.linux.security_context.namespace_options)
    return _config(registry, name, linux=cri.LinuxContainerConfig(security_context=sc), **kw)


async def run_pod(c: CriClient, config: cri.PodSandboxConfig) -> tuple[str, cri.PodSandboxConfig]:
    return (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id, config


def _host_ids(pid: int) -> tuple[int, int]:
    """The process's real uid and gid as the host sees them."""
    lines = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(lines["Uid"].split()[0]), int(lines["Gid"].split()[0])


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    with _module_daemon(registry) as proc:
        proc.dirs.base.chmod(0o711)  # a temp dir is 0700: the pods' roots, unprivileged host IDs, must pass through
        yield proc


@pytest.mark.cgroups  # on v2 the container has a cgroup namespace, made in the pod's user namespace
@needs_idmap
@pytest.mark.parametrize("pid", [cri.NamespaceMode.POD, cri.NamespaceMode.CONTAINER], ids=["infra", "no-infra"])
async def test_pod_root_is_the_mapped_range_and_owns_its_files(daemon: DaemonProcess, registry: Registry,
                                                               tmp_path: Path, pid: cri.NamespaceMode) -> None:
    """The container's root is host uid 1000 (its /proc/<pid>/status from the
    host), with critest's uid_map; it writes its rootfs (stored in the upper
    dir with its host id 1000: the upper is not ID-mapped, the layers are),
    /dev/shm (the pod's tmpfs, owned by 1000) and a volume (an ID-mapped clone:
    what it writes as 0 lands on the host as 0); the image's files and the pod's
    hostname and resolv.conf show as root's inside; exec runs in the same namespace."""
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "from-host").write_text("host\n")
    async with connect(daemon.dirs.socket) as c:
        pod = await run_pod(c, userns_pod(dns_config=cri.DnsConfig(servers=["10.0.0.10"]), hostname="userns-pod", pid=pid))
        script = ("cat /proc/self/uid_map /proc/self/gid_map; id -u; echo made > /made-here && stat -c '%u:%g %n' /made-here; "
                  "stat -c '%u:%g %n' /bin/busybox /etc/hostname /etc/resolv.conf /dev/shm /vol/from-host; cat /etc/hostname; "
                  "cat /etc/resolv.conf; echo shm > /dev/shm/s && stat -c '%u %n' /dev/shm/s; "
                  "echo vol > /vol/by-pod && stat -c '%u %n' /vol/by-pod; exec sleep 1000")
        cid = await _create(c, pod, in_pod_config(registry, pod[1], command=["/bin/sh", "-c", script],
                                                  mounts=[cri.Mount(container_path="/vol", host_path=str(volume))]))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        st = await _status(c, cid)
        for _ in range(100):
            out = _log_lines(st.log_path) if Path(st.log_path).exists() else []
            if len(out) >= 14:
                break
            await asyncio.sleep(0.05)
        assert [line.split() for line in out[:2]] == [["0", "1000", "100000"]] * 2  # critest's regex: \s+0\s+1000\s+100000
        assert out[2:] == ["0", "0:0 /made-here", "0:0 /bin/busybox", "0:0 /etc/hostname", "0:0 /etc/resolv.conf",
                           "0:0 /dev/shm", "0:0 /vol/from-host", "userns-pod", "nameserver 10.0.0.10", "0 /dev/shm/s",
                           "0 /vol/by-pod"], out
        proc_pid = _container_pid(daemon.dirs, cid)
        assert _host_ids(proc_pid) == (HOST_ID, HOST_ID)
        if pid == cri.NamespaceMode.CONTAINER:  # podrt's pins, made in the pod's user namespace, are the container's
            for kind in ("ipc", "uts"):
                assert os.stat(f"/proc/{proc_pid}/ns/{kind}").st_ino == os.stat(daemon.dirs.runroot / f"{kind}ns" / pod[0]).st_ino
        assert (await _exec(c, cid, "cat", "/proc/sys/kernel/hostname")).stdout.decode().strip() == "userns-pod"  # its UTS namespace's
        assert Path(f"/proc/{proc_pid}/uid_map").read_text().split() == ["0", "1000", "100000"]
        upper = daemon.dirs.root / "containers" / cid / "rootfs" / "upper"
        assert (upper / "made-here").stat().st_uid == HOST_ID  # the rootfs's writes keep the host id
        assert (volume / "by-pod").stat().st_uid == 0  # through the ID-mapped volume: the pod's 0 is the disk's 0
        shm = daemon.dirs.runroot / "sandboxes" / pod[0] / "shm"
        assert (shm / "s").stat().st_uid == HOST_ID
        res = await _exec(c, cid, "/bin/sh", "-c", "id -u; cat /proc/self/uid_map; touch /by-exec && echo ok")
        assert res.exit_code == 0 and res.stdout.decode().split() == ["0", "0", "1000", "100000", "ok"]
        status = await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod[0]))
        options = status.status.linux.namespaces.options.userns_options
        assert options.mode == cri.NamespaceMode.POD and [(m.container_id, m.host_id, m.length) for m in options.uids] == [(0, 1000, 100000)]
        await _remove_pod(c, pod[0])
    assert not list((daemon.dirs.runroot / "userns").iterdir()) and not (daemon.dirs.runroot / "idmap" / cid).exists()


def _container_pid(dirs: DaemonDirs, cid: str) -> int:
    return int(json.loads((dirs.runroot / "runc" / cid / "state.json").read_text())["init_process_pid"])


async def test_node_mode_is_the_hosts_user_namespace(daemon: DaemonProcess, registry: Registry) -> None:
    """critest's NODE spec: the container's uid_map is the host's."""
    async with connect(daemon.dirs.socket) as c:
        pod = await run_pod(c, userns_pod(userns(cri.NamespaceMode.NODE)))
        cid = await _create(c, pod, in_pod_config(registry, pod[1], command=["cat", "/proc/self/uid_map"]))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        st = await _wait_exit(c, cid)
        assert [line.split() for line in _log_lines(st.log_path)] == [Path("/proc/self/uid_map").read_text().split()]
        assert not (daemon.dirs.runroot / "userns").exists() or not list((daemon.dirs.runroot / "userns").iterdir())
        await _remove_pod(c, pod[0])


BAD = {  # critest's four, and the rest of CRI's rules
    "more than one mapping": (userns(ranges=[(0, 1000, 100000), (0, 2000, 100000)]), "exactly one mapping, got 2"),
    "container ID 0 not mapped": (userns(ranges=[(1, 1000, 100000)]), "must start at container ID 0"),
    "mode CONTAINER": (userns(cri.NamespaceMode.CONTAINER), "CONTAINER is not supported"),
    "mode TARGET": (userns(cri.NamespaceMode.TARGET), "TARGET is not supported"),
    "no gid mapping": (cri.UserNamespace(mode=cri.NamespaceMode.POD, uids=[cri.IdMapping(host_id=1000, length=10)]),
                       "gids: mode POD takes exactly one mapping, got 0"),
    "mappings for NODE": (userns(cri.NamespaceMode.NODE, [(0, 1000, 100000)]), "mode NODE takes no uids or gids"),
    "zero length": (userns(ranges=[(0, 1000, 0)]), "length must be > 0"),
    "past the last ID": (userns(ranges=[(0, 2**32 - 5, 100)]), "beyond the last ID"),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_refusals(daemon: DaemonProcess, case: str) -> None:
    u, fragment = BAD[case]
    async with connect(daemon.dirs.socket) as c:
        with pytest.raises(GRPCError) as err:
            await run_pod(c, userns_pod(u))
    assert err.value.status == Status.INVALID_ARGUMENT and fragment in (err.value.message or ""), err.value.message
    assert "namespace_options.userns_options" in (err.value.message or "")


@needs_idmap
async def test_status_says_so_and_a_container_must_be_in_its_pods_user_namespace(daemon: DaemonProcess,
                                                                                  registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        status = await c.runtime.status(cri.StatusRequest())
        assert status.runtime_handlers and all(h.features.user_namespaces for h in status.runtime_handlers)
        assert status.features.user_namespaces_host_network
        pod = await run_pod(c, userns_pod())
        for other in (userns(cri.NamespaceMode.NODE), userns(ranges=[(0, 5000, 100000)])):
            config = in_pod_config(registry, userns_pod(other), command=["true"])
            with pytest.raises(GRPCError) as err:
                await _create(c, pod, config)
            assert err.value.status == Status.INVALID_ARGUMENT and "userns_options must be the pod's" in (err.value.message or "")
        await _remove_pod(c, pod[0])


@needs_idmap
async def test_host_network_pod_with_a_user_namespace(daemon: DaemonProcess, registry: Registry) -> None:
    """What RuntimeFeatures.user_namespaces_host_network promises: the host's
    netns (its /sys bound read-only, as runc does without a netns of the pod's)
    from the pod's user namespace."""
    async with connect(daemon.dirs.socket) as c:
        pod = await run_pod(c, userns_pod(host_network=True))
        script = "cat /proc/self/uid_map; readlink /proc/self/ns/net; ls /sys/class/net | grep -c .; id -u"
        cid = await _create(c, pod, in_pod_config(registry, pod[1], command=["/bin/sh", "-c", script]))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        out = _log_lines((await _wait_exit(c, cid)).log_path)
        assert out[0].split() == ["0", "1000", "100000"] and out[1] == os.readlink("/proc/self/ns/net")
        assert int(out[2]) == len(os.listdir("/sys/class/net")) and out[3] == "0"
        await _remove_pod(c, pod[0])


@needs_idmap
async def test_after_a_restart_new_containers_join_the_pinned_namespace(registry: Registry) -> None:
    """The pod outlives the daemon (SIGKILL); a container made by the next one
    joins the same user namespace (the pin, and the mappings in the record)."""
    with _network_dirs() as d:
        d.base.chmod(0o711)
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await run_pod(c, userns_pod())
                first = await _create(c, pod, in_pod_config(registry, pod[1], "first", command=["sleep", "1000"]))
                await c.runtime.start_container(cri.StartContainerRequest(container_id=first))
                before = os.readlink(f"/proc/{_container_pid(d, first)}/ns/user")
            proc.stop(signal.SIGKILL)
        finally:
            proc.kill()
        proc = DaemonProcess(d).start()
        try:
            async with connect(d.socket) as c:
                second = await _create(c, pod, in_pod_config(registry, pod[1], "second", command=["sleep", "1000"]))
                await c.runtime.start_container(cri.StartContainerRequest(container_id=second))
                assert os.readlink(f"/proc/{_container_pid(d, second)}/ns/user") == before
                assert (await _exec(c, second, "cat", "/proc/self/uid_map")).stdout.split() == [b"0", b"1000", b"100000"]
            await remove_all_pods(d.socket)
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


@pytest.mark.cgroups  # the v2 lane's kernel (6.1) cannot ID-map its tmpfs: there the probe fails anyway
async def test_a_host_without_what_it_takes_refuses_them(registry: Registry) -> None:
    """Where the probe fails (here: podrt's root below a dir others cannot
    search, as a temp dir is), Status says no user namespaces, and such a pod
    is refused with FailedPrecondition saying why; nothing is made for it."""
    with _network_dirs() as d:
        d.base.chmod(0o700)
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                status = await c.runtime.status(cri.StatusRequest())
                assert not any(h.features.user_namespaces for h in status.runtime_handlers)
                assert not status.features.user_namespaces_host_network
                with pytest.raises(GRPCError) as err:
                    await run_pod(c, userns_pod())
                assert err.value.status == Status.FAILED_PRECONDITION
                assert f"{d.base} is not searchable by others (mode 700)" in (err.value.message or "")
                assert "userns_without_idmap" in (err.value.message or "")
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


SANDBOX_STEPS = [cls.kind for cls in STEP_CLASSES]
USERNS_CONTAINER_STEPS = [s for s in STEP_NAMES if s in ("ctr-storage", "ctr-rootfs", "ctr-volumes", "ctr-idmap", "ctr-create")]


@needs_idmap
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", SANDBOX_STEPS)
async def test_fault_at_every_pod_step_leaks_nothing(registry: Registry, step: str, when: str) -> None:
    with _network_dirs() as d:
        d.base.chmod(0o711)
        proc = await _start(d, registry, {"debug": {"fault_points": [f"{step}:{when}"]}})
        try:
            async with connect(d.socket) as c:
                # no infra process but for the infra's own step, as the kubelet's pods without shareProcessNamespace
                config = userns_pod(pid=cri.NamespaceMode.POD if step == "infra" else cri.NamespaceMode.CONTAINER)
                with pytest.raises(GRPCError) as err:
                    await run_pod(c, config)
                assert f"injected fault {when} {step}" in (err.value.message or "")
                assert audit_daemon_dirs(d) == {}
                pod = await run_pod(c, config)  # the fault fired once
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


@needs_idmap
@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", USERNS_CONTAINER_STEPS)
async def test_fault_at_each_container_step_leaks_nothing(registry: Registry, tmp_path: Path, step: str, when: str) -> None:
    """With an image volume and a host volume, so each ID-mapping step has something to undo."""
    with _network_dirs() as d:
        d.base.chmod(0o711)
        proc = await _start(d, registry, {"debug": {"fault_points": [f"{step}:{when}"]}})
        try:
            async with connect(d.socket) as c:
                pod = await run_pod(c, userns_pod())
                mounts = [cri.Mount(container_path="/img", image=cri.ImageSpec(image=f"{registry.host}/test/busybox:v1"), readonly=True),
                          cri.Mount(container_path="/vol", host_path=str(tmp_path))]
                with pytest.raises(GRPCError) as err:
                    await _create(c, pod, in_pod_config(registry, pod[1], command=["true"], mounts=mounts))
                assert f"injected fault {when} {step}" in (err.value.message or "")
                assert not (d.runroot / "idmap").exists() or not list((d.runroot / "idmap").iterdir())
                assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if "/idmap/" in m]
                cid = await _create(c, pod, in_pod_config(registry, pod[1], command=["ls", "/img/bin/busybox", "/vol"], mounts=mounts))
                await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
                assert (await _wait_exit(c, cid)).exit_code == 0
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


@needs_idmap
@pytest.mark.parametrize("delay_ms", [5, 15, 30, 60])
async def test_sigkill_mid_creation_then_restart_leaks_nothing(registry: Registry, delay_ms: int) -> None:
    with _network_dirs() as d:
        d.base.chmod(0o711)
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                call = asyncio.ensure_future(run_pod(c, userns_pod()))
                await asyncio.sleep(delay_ms / 1000)
                proc.stop(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await call
        finally:
            proc.kill()
        restarted = DaemonProcess(d).start()
        try:
            await remove_all_pods(d.socket)
            assert list((d.root / "journal").iterdir()) == []
        finally:
            restarted.stop()
        assert audit_daemon_dirs(d) == {}


@needs_idmap
async def test_the_start_up_sweep_releases_what_no_record_owns(registry: Registry) -> None:
    """A pod whose record is lost (its user namespace pinned, its container's
    volume ID-mapped; the container's record kept) and a pin and clone of an
    ID no record names: the next daemon releases every one of them."""
    stray = "e" * 64
    with _network_dirs() as d:
        d.base.chmod(0o711)
        (d.base / "vol").mkdir()
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await run_pod(c, userns_pod())
                config = in_pod_config(registry, pod[1], command=["sleep", "1000"],
                                       mounts=[cri.Mount(container_path="/vol", host_path=str(d.base / "vol"))])
                cid = await _create(c, pod, config)
                await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
            proc.stop(signal.SIGKILL)
        finally:
            proc.kill()
        (d.root / "sandboxes" / pod[0] / "state.json").unlink()
        await create_userns(d.runroot / "userns" / stray, "0 1000 10\n", "0 1000 10\n")
        clone_into(d.runroot / "idmap" / stray / "binds", "0", str(d.base / "vol"), str(d.runroot / "userns" / stray))
        assert [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if f"/idmap/{cid}/binds/0 " in m]
        proc = DaemonProcess(d).start()
        try:
            log = proc.log()
            assert f"user namespace {d.runroot / 'userns' / pod[0]}" in log and f"ID-mapped mounts {d.runroot / 'idmap' / stray}" in log
            assert not list((d.runroot / "userns").iterdir()) and not list((d.runroot / "idmap").iterdir())
            await remove_all_pods(d.socket)
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


@needs_idmap
@pytest.mark.skipif(not os.path.exists("/usr/bin/crun"), reason="needs Debian's crun, a handler without `features`")
async def test_a_handler_that_cannot_join_one_is_refused(registry: Registry) -> None:
    """crun 1.8.1 has no `features` document: Status claims no user namespaces
    for it, and a pod asking for one on it is refused before anything is made."""
    with _network_dirs() as d:
        d.base.chmod(0o711)
        runtimes = {"crun": {"runtime_path": "/usr/bin/crun", "runtime_root": str(d.runroot / "crun")},
                    "runc": {"runtime_path": "/usr/sbin/runc", "runtime_root": str(d.runroot / "runc")}}
        proc = await _start(d, registry, {"runtime": {"runtimes": runtimes}})
        try:
            async with connect(d.socket) as c:
                found = {h.name: h.features.user_namespaces for h in (await c.runtime.status(cri.StatusRequest())).runtime_handlers}
                assert found == {"": True, "runc": True, "crun": False}
                with pytest.raises(GRPCError) as err:
                    await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=userns_pod(), runtime_handler="crun"))
                assert err.value.status == Status.FAILED_PRECONDITION
                assert "runtime handler 'crun' (/usr/bin/crun) cannot run pods in a user namespace" in (err.value.message or "")
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}

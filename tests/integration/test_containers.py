"""Containers on the real parts: a busybox image from a registry on
127.0.0.1, created in a real pod, started by runc under conmon, stopped,
removed; what the process sees (args, env, cwd, user, groups, mounts,
capabilities, read-only root); exits; bad input; faults at every step.
Cgroup limits, stats and OOM kills: test_cgroups.py (run on v1 and v2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.container.create import STEP_NAMES
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonDirs, DaemonProcess, podrt_command
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, BUSYBOX_IMG, REGISTRY_BIN, Registry
from tests.support.slow import FACTOR

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]

EXEC_MAX = 1 << 20


def _configure(d: DaemonDirs, registry: Registry, extra: dict[str, Any] | None = None) -> None:
    conf = d.base / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    d.write_config({"image": {"registries_conf": str(conf)}, **(extra or {})})


@contextlib.contextmanager
def _module_daemon(registry: Registry, extra: dict[str, Any] | None = None) -> Iterator[DaemonProcess]:
    """One daemon for a module, the busybox image pulled; at the end every pod
    and container gone, nothing left, and no traceback in its log."""
    with _network_dirs() as d:
        _configure(d, registry, extra)
        proc = DaemonProcess(d).start()
        asyncio.run(_pull(d.socket, f"{registry.host}/test/busybox:v1"))
        yield proc
        asyncio.run(remove_all_pods(d.socket))
        proc.stop()
        leftovers = audit_daemon_dirs(d)
        assert not leftovers, f"containers left resources behind: {leftovers}"
        _no_traceback(proc)


def _no_traceback(proc: DaemonProcess) -> None:
    log = proc.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    with _module_daemon(registry, {"runtime": {"exec_sync_max_output": EXEC_MAX}}) as proc:
        yield proc


async def _start(d: DaemonDirs, registry: Registry, extra: dict[str, Any] | None = None) -> DaemonProcess:
    """A daemon of its own for a test, with the busybox image pulled."""
    _configure(d, registry, extra)
    proc = DaemonProcess(d).start()
    try:
        await _pull(d.socket, f"{registry.host}/test/busybox:v1")
    except BaseException:
        proc.kill()
        raise
    return proc


async def _pull(sock: Path, ref: str) -> None:
    async with connect(sock) as c:
        await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=ref)))


def _config(registry: Registry, name: str = "app", **kw: Any) -> cri.ContainerConfig:
    kw.setdefault("linux", cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext()))
    sc = kw["linux"].security_context
    if not sc.is_set("namespace_options"):  # as the kubelet sends it without shareProcessNamespace
        sc.namespace_options = cri.NamespaceOption(pid=cri.NamespaceMode.CONTAINER)
    kw.setdefault("log_path", f"{name}.log")
    return cri.ContainerConfig(metadata=cri.ContainerMetadata(name=name), image=cri.ImageSpec(image=f"{registry.host}/test/busybox:v1"),
                               **kw)


async def _pod(c: CriClient) -> tuple[str, cri.PodSandboxConfig]:
    config = pod_config()
    pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
    return pod_id, config


async def _create(c: CriClient, pod: tuple[str, cri.PodSandboxConfig], config: cri.ContainerConfig) -> str:
    req = cri.CreateContainerRequest(pod_sandbox_id=pod[0], config=config, sandbox_config=pod[1])
    return (await c.runtime.create_container(req)).container_id


async def _status(c: CriClient, container_id: str) -> cri.ContainerStatus:
    return (await c.runtime.container_status(cri.ContainerStatusRequest(container_id=container_id))).status


async def _wait_exit(c: CriClient, container_id: str, timeout: float = 10) -> cri.ContainerStatus:
    timeout *= FACTOR
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await _status(c, container_id)
        if st.state == cri.ContainerState.CONTAINER_EXITED:
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"container {container_id} did not exit in {timeout}s")


async def _remove_pod(c: CriClient, pod_id: str) -> None:
    await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def _torn_down(d: DaemonDirs, cid: str, timeout: float = 10.0) -> None:
    """RemoveContainer answers before the teardown is done (container/removals.py): until it is."""
    deadline = time.monotonic() + timeout * FACTOR
    while (d.root / "containers" / cid).exists() or (d.runroot / "containers" / cid).exists():
        assert time.monotonic() < deadline, f"container {cid} not torn down after {timeout}s"
        time.sleep(0.01)


def _empty(directory: Path) -> bool:
    return not directory.exists() or not any(directory.iterdir())


def _log_lines(path: str) -> list[str]:
    """The lines of a CRI-format log (<RFC3339Nano> stdout|stderr F|P <text>):
    P records are pieces of a line that the next F record ends, as the kubelet reads them."""
    lines, partial = [], ""
    for record in Path(path).read_text().splitlines():
        stamp, stream, tag, text = (record.split(" ", 3) + [""])[:4]
        assert "T" in stamp and stream in ("stdout", "stderr") and tag in ("F", "P"), record
        partial += text
        if tag == "F":
            lines.append(partial)
            partial = ""
    return lines


async def test_lifecycle_and_what_the_process_sees(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        script = ("trap 'echo got INT; exit 42' INT; echo args $0 $1; id; env | sort; pwd; cat /etc/hostname; "
                  "while true; do sleep 0.1; done")
        config = _config(registry, command=["/bin/sh", "-c", script], args=["first", "second"],
                         envs=[cri.KeyValue(key="OVERRIDE", value=b"request"), cri.KeyValue(key="MINE", value=b"1")],
                         labels={"tier": "web"})
        container_id = await _create(c, pod, config)
        st = await _status(c, container_id)
        assert st.state == cri.ContainerState.CONTAINER_CREATED and st.created_at > 0 and st.started_at == 0
        assert st.image_ref == BUSYBOX_IMG.config_digest and st.labels == {"tier": "web"}
        await c.runtime.start_container(cri.StartContainerRequest(container_id=container_id))
        st = await _status(c, container_id)
        assert st.state == cri.ContainerState.CONTAINER_RUNNING and st.started_at >= st.created_at
        assert Path(st.log_path).name == "app.log" and Path(st.log_path).parent.name == pod[0]
        for _ in range(100):
            if Path(st.log_path).exists() and "/home/app" in _log_lines(st.log_path):
                break
            await asyncio.sleep(0.05)
        out = _log_lines(st.log_path)
        assert out[0] == "args first second"
        assert out[1].startswith("uid=0(root) gid=0(root)")
        assert "FROM_IMAGE=yes" in out and "OVERRIDE=request" in out and "MINE=1" in out  # the request wins
        assert "/home/app" in out  # the image's working dir
        listed = (await c.runtime.list_containers(cri.ListContainersRequest())).containers
        assert [x.id for x in listed] == [container_id] and listed[0].pod_sandbox_id == pod[0]
        by_label = cri.ListContainersRequest(filter=cri.ContainerFilter(label_selector={"tier": "db"}))
        assert (await c.runtime.list_containers(by_label)).containers == []
        running = cri.ListContainersRequest(filter=cri.ContainerFilter(
            state=cri.ContainerStateValue(state=cri.ContainerState.CONTAINER_RUNNING)))
        assert [x.id for x in (await c.runtime.list_containers(running)).containers] == [container_id]

        t = time.monotonic()
        await c.runtime.stop_container(cri.StopContainerRequest(container_id=container_id, timeout=1))
        st = await _status(c, container_id)
        # the image's StopSignal (SIGINT, which the script traps), not SIGTERM: no wait for the timeout
        assert st.state == cri.ContainerState.CONTAINER_EXITED and st.exit_code == 42 and st.reason == "Error"
        assert time.monotonic() - t < 0.9 and st.finished_at >= st.started_at
        assert _log_lines(st.log_path)[-1] == "got INT"
        await c.runtime.stop_container(cri.StopContainerRequest(container_id=container_id, timeout=1))  # idempotent
        await c.runtime.remove_container(cri.RemoveContainerRequest(container_id=container_id))
        await c.runtime.remove_container(cri.RemoveContainerRequest(container_id=container_id))  # unknown: fine
        with pytest.raises(GRPCError) as err:
            await _status(c, container_id)
        assert err.value.status == Status.NOT_FOUND
        _torn_down(daemon.dirs, container_id)
        assert _log_lines(st.log_path)[-1] == "got INT"  # the log stays: the kubelet's, as with CRI-O and containerd
        await _remove_pod(c, pod[0])
        assert not Path(st.log_path).parent.exists()  # podrt's own log dir (the pod named none) goes with the pod


async def test_exits_are_reported_with_code_and_reason(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        ok = await _create(c, pod, _config(registry, "ok", command=["/bin/true"]))
        bad = await _create(c, pod, _config(registry, "bad", command=["/bin/sh", "-c", "echo oops >&2; exit 3"]))
        for cid in (ok, bad):
            await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        done = await _wait_exit(c, ok)
        assert (done.exit_code, done.reason) == (0, "Completed")
        failed = await _wait_exit(c, bad)
        assert (failed.exit_code, failed.reason) == (3, "Error")
        assert _log_lines(failed.log_path) == ["oops"] and "stderr" in Path(failed.log_path).read_text()
        with pytest.raises(GRPCError) as err:  # an exited container cannot start again
            await c.runtime.start_container(cri.StartContainerRequest(container_id=ok))
        assert err.value.status == Status.FAILED_PRECONDITION
        stubborn = await _running(c, registry, pod, "stubborn")  # sleep as PID 1: no handler, the stop signal does nothing
        t = time.monotonic()
        await c.runtime.stop_container(cri.StopContainerRequest(container_id=stubborn, timeout=1))
        killed = await _status(c, stubborn)
        assert (killed.exit_code, killed.reason) == (137, "Error") and 1 <= time.monotonic() - t < 8
        await _remove_pod(c, pod[0])  # removes its containers first
        assert (await c.runtime.list_containers(cri.ListContainersRequest())).containers == []


async def test_log_rotation_through_reopen_container_log(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        cid = await _create(c, pod, _config(registry, "chatty", command=["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done"]))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        log_path = Path((await _status(c, cid)).log_path)
        await asyncio.sleep(0.3)
        rotated = log_path.with_name(log_path.name + ".1")
        log_path.rename(rotated)  # what the kubelet's rotation does first
        await c.runtime.reopen_container_log(cri.ReopenContainerLogRequest(container_id=cid))
        assert log_path.exists()
        await asyncio.sleep(0.3)
        old, new = _log_lines(str(rotated)), _log_lines(str(log_path))
        assert old and new and int(new[0].split()[1]) > int(old[-1].split()[1])  # it goes on in the new file
        rotated.unlink()
        await c.runtime.stop_container(cri.StopContainerRequest(container_id=cid, timeout=0))
        with pytest.raises(GRPCError) as err:  # not running: no new file (CRI)
            await c.runtime.reopen_container_log(cri.ReopenContainerLogRequest(container_id=cid))
        assert err.value.status == Status.FAILED_PRECONDITION
        await _remove_pod(c, pod[0])


async def test_user_groups_read_only_root_and_mounts(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("from the host")
    tmp_path.chmod(0o755)  # the container runs as uid 1000
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        sc = cri.LinuxContainerSecurityContext(run_as_username="app", readonly_rootfs=True, supplemental_groups=[4242],
                                               capabilities=cri.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"]),
                                               no_new_privs=True)
        script = ("id; grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status; cat /data/data.txt; echo; "
                  "touch /rootfile 2>/dev/null || echo root read-only; touch /data/new 2>/dev/null || echo data read-only")
        config = _config(registry, "who", command=["/bin/sh", "-c", script],
                         mounts=[cri.Mount(container_path="/data", host_path=str(tmp_path), readonly=True)],
                         linux=cri.LinuxContainerConfig(security_context=sc))
        cid = await _create(c, pod, config)
        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        st = await _wait_exit(c, cid)
        out = _log_lines(st.log_path)
        assert out[0] == "uid=1000(app) gid=1000(app) groups=10(wheel),44(video),1000(app),4242"  # the primary among them
        assert out[1] == "CapBnd:\t0000000000000400"  # CAP_NET_BIND_SERVICE (bit 10) alone
        assert out[2] == "NoNewPrivs:\t1"
        assert out[3] == "from the host"
        assert out[4:] == ["root read-only", "data read-only"]
        assert st.mounts[0].host_path == str(tmp_path) and st.mounts[0].readonly
        await _remove_pod(c, pod[0])


@pytest.mark.cgroups  # device rules are a cgroup (v1 devices.allow, v2 an eBPF program runc loads)
async def test_devices_sysctls_paths_oom_score_strict_groups_and_target_pid(daemon: DaemonProcess, registry: Registry) -> None:
    """A host device with read access only; the pod's sysctls (one the old
    default policy refused) in the container; the request's masked paths
    over the defaults; oom_score_adj; Strict groups reported in
    ContainerStatus.user; a container in another one's PID namespace."""
    async with connect(daemon.dirs.socket) as c:
        linux = cri.LinuxPodSandboxConfig(sysctls={"net.core.somaxconn": "777"},
                                          security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption()))
        config = pod_config(linux=linux)
        pod = ((await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id, config)
        sc = cri.LinuxContainerSecurityContext(
            run_as_username="app", supplemental_groups=[4242], masked_paths=["/proc/cpuinfo"], readonly_paths=["/proc/sys"],
            supplemental_groups_policy=cri.SupplementalGroupsPolicy.Strict)
        dev = await _running(c, registry, pod, "dev", devices=[cri.Device(container_path="/dev/podrt-fuse", host_path="/dev/fuse", permissions="r")])
        opened = "(exec 3</dev/podrt-fuse) && echo read ok; (exec 3>/dev/podrt-fuse) 2>/dev/null || echo write refused"
        assert (await _exec(c, dev, "/bin/sh", "-c", opened)).stdout == b"read ok\nwrite refused\n"  # fuse is no runc default
        cid = await _running(c, registry, pod, "extras",
                             linux=cri.LinuxContainerConfig(security_context=sc, resources=cri.LinuxContainerResources(oom_score_adj=500)))
        script = ("cat /proc/sys/net/core/somaxconn; wc -c < /proc/cpuinfo; cat /proc/self/oom_score_adj; id -G; "
                  "echo $(( $(cat /sys/class/net/lo/flags) & 1 ))")
        out = (await _exec(c, cid, "/bin/sh", "-c", script)).stdout.decode().split("\n")
        assert [line.strip() for line in out[:5]] == ["777", "0", "500", "1000 4242", "1"]  # Strict: not the image's wheel, video; lo up
        verbose = await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod[0], verbose=True))
        ip = verbose.status.network.ip
        assert json.loads(verbose.info["info"])["ips"] == [ip]
        addresses = (await _exec(c, cid, "/bin/busybox", "ip", "-o", "addr")).stdout.decode()
        assert re.search(r"^\d+: lo +inet 127\.0\.0\.1/8 ", addresses, re.M), addresses  # lo up: podrt's, no plugin
        assert re.search(rf"^\d+: eth0(@\S+)? +inet {re.escape(ip)}/", addresses, re.M), addresses
        st = await _status(c, cid)
        assert (st.user.linux.uid, st.user.linux.gid, st.user.linux.supplemental_groups) == (1000, 1000, [1000, 4242])
        assert "fuse" not in (await _exec(c, cid, "/bin/ls", "/dev")).stdout.decode()  # only where asked
        joined = cri.LinuxContainerSecurityContext(namespace_options=cri.NamespaceOption(pid=cri.NamespaceMode.TARGET, target_id=cid))
        peer = await _running(c, registry, pod, "peer", linux=cri.LinuxContainerConfig(security_context=joined))
        init = (await _exec(c, peer, "/bin/sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline")).stdout.decode()
        assert init.strip() == "/bin/sleep 1000"  # the target's init is pid 1 here
        with pytest.raises(GRPCError) as err:  # a target that is not running
            await c.runtime.stop_container(cri.StopContainerRequest(container_id=cid, timeout=0))
            await _create(c, pod, _config(registry, "late", linux=cri.LinuxContainerConfig(security_context=joined)))
        assert err.value.status == Status.FAILED_PRECONDITION and "not running" in (err.value.message or "")
        await _remove_pod(c, pod[0])


@contextlib.contextmanager
def _shared_mount(where: Path) -> Iterator[Path]:
    """A bind mount of a test dir, made shared (the host's / is private here); gone afterwards."""
    where.mkdir()
    subprocess.run(["mount", "--bind", str(where), str(where)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-R", str(where)], check=True)


async def test_mount_propagation_and_its_host_side_checks(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    """rslave and rshared need a host mount that propagates (as CRI-O checks);
    with one, a mount the host makes later shows up in the container."""
    private = tmp_path / "private"
    private.mkdir()
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        for propagation in (cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER, cri.MountPropagation.PROPAGATION_BIDIRECTIONAL):
            with pytest.raises(GRPCError) as err:
                await _create(c, pod, _config(registry, "refused", mounts=[
                    cri.Mount(container_path="/data", host_path=str(private), propagation=propagation)]))
            assert err.value.status == Status.FAILED_PRECONDITION and "propagation" in (err.value.message or "")
        with _shared_mount(tmp_path / "shared") as shared:
            slave = await _running(c, registry, pod, "slave", mounts=[
                cri.Mount(container_path="/data", host_path=str(shared), propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER)])
            both = await _running(c, registry, pod, "both", mounts=[
                cri.Mount(container_path="/data", host_path=str(shared), propagation=cri.MountPropagation.PROPAGATION_BIDIRECTIONAL)])
            (shared / "later").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "later", str(shared / "later")], check=True)
            (shared / "later" / "file").write_text("mounted after start")
            for cid in (slave, both):
                assert (await _exec(c, cid, "/bin/cat", "/data/later/file")).stdout == b"mounted after start"
            await _remove_pod(c, pod[0])


async def test_image_volumes(daemon: DaemonProcess, registry: Registry) -> None:
    """An image mounted read-only in a container (whole, or a path in it), as
    the kubelet's ImageVolume sends it; the image cannot be removed while
    mounted; a missing image or a sub path outside it is refused."""
    ref = f"{registry.host}/test/volume:v1"
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        missing = _config(registry, "nope", mounts=[cri.Mount(container_path="/vol", image=cri.ImageSpec(image=ref), readonly=True)])
        with pytest.raises(GRPCError) as err:
            await _create(c, pod, missing)
        assert err.value.status == Status.NOT_FOUND and "image volume" in (err.value.message or "")
        await c.image.pull_image(cri.PullImageRequest(image=cri.ImageSpec(image=ref)))
        outside = _config(registry, "outside", mounts=[cri.Mount(container_path="/vol", image=cri.ImageSpec(image=ref),
                                                                 image_sub_path="bin/../../../etc")])
        with pytest.raises(GRPCError) as err:
            await _create(c, pod, outside)
        assert err.value.status == Status.INVALID_ARGUMENT
        mounts = [cri.Mount(container_path="/vol", image=cri.ImageSpec(image=ref), readonly=True),
                  cri.Mount(container_path="/volbin", image=cri.ImageSpec(image=ref), image_sub_path="bin", readonly=True)]
        cid = await _running(c, registry, pod, "vols", mounts=mounts)
        script = "test -x /vol/bin/busybox && test -x /volbin/busybox && echo both; touch /vol/new 2>/dev/null || echo read-only"
        assert (await _exec(c, cid, "/bin/sh", "-c", script)).stdout == b"both\nread-only\n"
        st = await _status(c, cid)
        assert [(m.container_path, m.image.image, m.image_sub_path) for m in st.mounts] == [("/vol", ref, ""), ("/volbin", ref, "bin")]
        with pytest.raises(GRPCError) as err:
            await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=ref)))
        assert err.value.status == Status.FAILED_PRECONDITION and cid in (err.value.message or "")
        await _remove_pod(c, pod[0])
        await c.image.remove_image(cri.RemoveImageRequest(image=cri.ImageSpec(image=ref)))  # free once the container is gone


async def _exec(c: CriClient, cid: str, *cmd: str, timeout: int = 10) -> cri.ExecSyncResponse:
    return await c.runtime.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=int(timeout * FACTOR)))


async def _running(c: CriClient, registry: Registry, pod: tuple[str, cri.PodSandboxConfig], name: str, **kw: Any) -> str:
    cid = await _create(c, pod, _config(registry, name, command=["/bin/sleep", "1000"], **kw))
    await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
    return cid


async def _processes(c: CriClient, cid: str) -> list[str]:
    """The container's live processes but the ps asking. Killed ones whose
    parent died are zombies of the container's PID 1 ("[sleep]"): reaping
    them is its init's job (the pod's catatonit does, a bare sleep does not)."""
    out = (await _exec(c, cid, "ps", "-o", "pid,args")).stdout.decode().splitlines()[1:]
    return [line for line in out if "ps -o" not in line and not line.split(None, 1)[1].startswith("[")]


async def test_exec_sync_runs_as_the_container_and_reports_output_and_code(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        sc = cri.LinuxContainerSecurityContext(run_as_user=cri.Int64Value(1000))
        cid = await _running(c, registry, pod, "probed", envs=[cri.KeyValue(key="GREETING", value=b"hi")],
                             linux=cri.LinuxContainerConfig(security_context=sc))
        r = await _exec(c, cid, "/bin/sh", "-c", "echo $GREETING; id -u; pwd; echo err >&2; exit 5")
        assert (r.stdout, r.stderr, r.exit_code) == (b"hi\n1000\n/home/app\n", b"err\n", 5)
        assert (await _exec(c, cid, "true")).exit_code == 0
        big = await _exec(c, cid, "head", "-c", str(3 * EXEC_MAX), "/dev/zero")
        assert big.exit_code == 0 and len(big.stdout) == EXEC_MAX  # bounded, the rest read and dropped
        assert await _processes(c, cid) == ["    1 /bin/sleep 1000"]
        await _remove_pod(c, pod[0])


async def test_exec_sync_timeout_kills_what_it_started(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        cid = await _running(c, registry, pod, "slow")
        t = time.monotonic()
        with pytest.raises(GRPCError) as err:
            await _exec(c, cid, "/bin/sh", "-c", "sleep 300 & sleep 301 & wait", timeout=1)
        assert err.value.status == Status.DEADLINE_EXCEEDED and "timed out after 1s" in (err.value.message or "")
        assert time.monotonic() - t < 5
        assert await _processes(c, cid) == ["    1 /bin/sleep 1000"]  # no probe left behind
        await _remove_pod(c, pod[0])


async def test_fifty_concurrent_probes_leave_no_process(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        cid = await _running(c, registry, pod, "busy")
        results = await asyncio.gather(*(_exec(c, cid, "/bin/sh", "-c", f"echo {n}") for n in range(50)))
        assert sorted(int(r.stdout) for r in results) == list(range(50)) and {r.exit_code for r in results} == {0}
        slow = await asyncio.gather(*(_exec(c, cid, "sleep", "30", timeout=1) for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, GRPCError) and r.status == Status.DEADLINE_EXCEEDED for r in slow)
        assert await _processes(c, cid) == ["    1 /bin/sleep 1000"]
        with pytest.raises(GRPCError) as err:  # not running
            exited = await _create(c, pod, _config(registry, "never", command=["/bin/true"]))
            await _exec(c, exited, "true")
        assert err.value.status == Status.FAILED_PRECONDITION
        await _remove_pod(c, pod[0])


@contextlib.contextmanager
def _overlay_dir(base: Path) -> Iterator[Path]:
    """A directory on overlayfs (as / is in a container or the VM lane's guest), unmounted afterwards."""
    for part in ("lower", "upper", "work", "merged"):
        (base / part).mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work", str(base / "merged")], check=True)
    try:
        yield base / "merged"
    finally:
        subprocess.run(["umount", "-l", str(base / "merged")], check=True)


async def test_a_root_on_overlayfs_is_named_not_an_internal_error(registry: Registry) -> None:
    """An overlay upper dir cannot live on overlayfs: `podrt check` fails the
    container storage, and CreateContainer answers FAILED_PRECONDITION naming
    the filesystem (not INTERNAL with EINVAL), leaving nothing behind."""
    with _network_dirs() as d, _overlay_dir(d.base / "ovl") as merged:
        root = merged / "root"
        check = subprocess.run(podrt_command("check", "--config", str(d.config_file), "--root", str(root)),
                               capture_output=True, text=True, timeout=60 * FACTOR)
        assert f"[FAIL] container storage: {root}/containers is on overlay, which cannot hold an overlay upper dir" in check.stdout
        assert check.returncode == 1 and "fix: put" in check.stdout
        proc = await _start(d, registry, {"root": str(root)})
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                with pytest.raises(GRPCError) as err:
                    await _create(c, pod, _config(registry, command=["/bin/true"]))
                assert err.value.status == Status.FAILED_PRECONDITION
                assert "upper dir is on overlay" in (err.value.message or "") and "Traceback" not in proc.log()
                assert not any((root / "containers").iterdir())
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()


@pytest.mark.parametrize("change, status, fragment", [
    ({"image": cri.ImageSpec(image="127.0.0.1:1/absent:v1")}, Status.NOT_FOUND, "not found in the image store"),
    ({"mounts": [cri.Mount(container_path="data", host_path="/tmp")]}, Status.INVALID_ARGUMENT, "must be absolute"),
    ({"mounts": [cri.Mount(container_path="/data", host_path="/nonexistent/podrt")]}, Status.INVALID_ARGUMENT, "does not exist"),
    ({"linux": cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(run_as_username="ghost"))},
     Status.INVALID_ARGUMENT, "'ghost' is not in the image's /etc/passwd"),
    ({"linux": cri.LinuxContainerConfig(security_context=cri.LinuxContainerSecurityContext(privileged=True))},
     Status.INVALID_ARGUMENT, "privileged pod"),
    ({"log_path": "../escape.log"}, Status.INVALID_ARGUMENT, "without '..'"),
    ({"working_dir": "relative"}, Status.INVALID_ARGUMENT, "must be absolute"),
    ({"linux": cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(cpu_period=10, cpu_quota=5))},
     Status.INVALID_ARGUMENT, "cpu_quota: 5 is out of range"),
    # each class of exception bad input used to raise below the checks (INTERNAL, with a traceback):
    # OSError from a path
    ({"log_path": "x" * 5000}, Status.INVALID_ARGUMENT, "longer than a path may be (4095)"),
    ({"log_path": "x" * 300}, Status.INVALID_ARGUMENT, "component is longer than 255 bytes"),
    ({"log_path": "."}, Status.INVALID_ARGUMENT, "names a directory"),
    # ValueError from a path (os.lexists) and from a list only the kernel parsed
    ({"mounts": [cri.Mount(container_path="/data", host_path="/tmp\0x")]}, Status.INVALID_ARGUMENT, "without a NUL byte"),
    ({"linux": cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(cpuset_cpus="0-1-2"))},
     Status.INVALID_ARGUMENT, "cpuset_cpus '0-1-2': not a list like 0-3,8"),
    ({"linux": cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(cpuset_cpus="4095"))},
     Status.INVALID_ARGUMENT, "this host has no CPUs 4095"),
    ({"linux": cri.LinuxContainerConfig(resources=cri.LinuxContainerResources(
        hugepage_limits=[cri.HugepageLimit(page_size="16GB", limit=0)]))}, Status.INVALID_ARGUMENT, "no such huge pages"),
    # UnicodeError: an environment value that is not UTF-8
    ({"envs": [cri.KeyValue(key="A", value=b"\xff")]}, Status.INVALID_ARGUMENT, "envs[0].value: not UTF-8"),
    # what only runc finds out, from the image, is StartContainer's: test_container_runtime_create.py
])
async def test_bad_input_is_refused_and_nothing_is_made(daemon: DaemonProcess, registry: Registry, change: dict[str, Any],
                                                        status: Status, fragment: str) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        fields = {"command": ["/bin/true"], **{k: v for k, v in change.items() if k != "image"}}
        config = _config(registry, **fields)
        if "image" in change:
            config.image = change["image"]
        with pytest.raises(GRPCError) as err:
            await _create(c, pod, config)
        assert err.value.status == status and fragment in (err.value.message or ""), err.value
        assert _empty(daemon.dirs.root / "containers")
        cid = await _create(c, pod, _config(registry, command=["/bin/true"]))  # the name was not kept
        assert cid
        await _remove_pod(c, pod[0])


async def test_a_duplicate_name_and_an_unknown_pod(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        await _create(c, pod, _config(registry, command=["/bin/true"]))
        with pytest.raises(GRPCError) as err:
            await _create(c, pod, _config(registry, command=["/bin/true"]))
        assert err.value.status == Status.ALREADY_EXISTS
        with pytest.raises(GRPCError) as err:
            await _create(c, ("0" * 64, pod[1]), _config(registry, command=["/bin/true"]))
        assert err.value.status == Status.NOT_FOUND
        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod[0]))
        with pytest.raises(GRPCError) as err:
            await _create(c, pod, _config(registry, "late", command=["/bin/true"]))
        assert err.value.status == Status.FAILED_PRECONDITION and "not ready" in (err.value.message or "")
        await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod[0]))


async def test_a_container_keeps_running_across_a_daemon_restart(registry: Registry) -> None:
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                # it exits when told (a file the test creates), not after a time the restart could outlast
                gate = "until [ -e /tmp/go ]; do sleep 0.1; done; exit 7"
                cid = await _create(c, pod, _config(registry, command=["/bin/sh", "-c", gate]))
                await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
            proc.stop()
            proc = DaemonProcess(d).start()
            async with connect(d.socket) as c:
                st = await _status(c, cid)
                assert st.state == cri.ContainerState.CONTAINER_RUNNING  # conmon kept it while podrt was away
                assert (await _exec(c, cid, "touch", "/tmp/go")).exit_code == 0
                assert (await _wait_exit(c, cid)).exit_code == 7  # and its later exit is seen
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


def _as_previous_podrt_wrote_it(state_file: Path) -> None:
    """Rewrite a state file in the format of podrt before the typed store
    (version 1, no kind, the steps as [name, kind, data] lists): what a daemon
    upgraded in place finds (tests/unit/state_v1 holds files it wrote)."""
    doc = json.loads(state_file.read_bytes())
    assert doc.pop("version") == 2 and doc.pop("kind") in ("sandbox", "container")
    doc["records"] = [[s["name"], s["kind"], s["data"]] for s in doc.pop("steps")]
    state_file.write_text(json.dumps({**doc, "version": 1}))


async def test_a_daemon_upgraded_in_place_takes_over_the_previous_ones_pods_and_containers(registry: Registry) -> None:
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                runs = await _create(c, pod, _config(registry, "runs", command=["/bin/sleep", "100"]))
                await c.runtime.start_container(cri.StartContainerRequest(container_id=runs))
                done = await _create(c, pod, _config(registry, "done", command=["/bin/sh", "-c", "exit 3"]))
                await c.runtime.start_container(cri.StartContainerRequest(container_id=done))
                await _wait_exit(c, done)
                before = {cid: await _status(c, cid) for cid in (runs, done)}
            proc.stop()
            files = [d.root / "sandboxes" / pod[0] / "state.json",
                     *(d.root / "containers" / cid / "state.json" for cid in (runs, done))]
            for state_file in files:
                _as_previous_podrt_wrote_it(state_file)
            proc = DaemonProcess(d).start()
            async with connect(d.socket) as c:
                ready = (await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod[0]))).status
                assert ready.state == cri.PodSandboxState.SANDBOX_READY
                assert await _status(c, runs) == before[runs]
                assert (await _status(c, done)).exit_code == 3 and await _status(c, done) == before[done]
                await c.runtime.stop_container(cri.StopContainerRequest(container_id=runs, timeout=0))
                assert json.loads(files[1].read_bytes())["version"] == 2  # written anew at its next change
                await _remove_pod(c, pod[0])
            _no_traceback(proc)
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


@pytest.mark.parametrize("delay_ms", [0, 30, 80])
async def test_creations_racing_the_pods_removal_leave_no_container(daemon: DaemonProcess, registry: Registry, delay_ms: int) -> None:
    """RemovePodSandbox while CreateContainer calls run: the pod waits for
    them, refuses new ones, and takes every container with it."""
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        calls = [asyncio.ensure_future(_create(c, pod, _config(registry, f"r{n}", command=["/bin/sleep", "100"])))
                 for n in range(6)]
        await asyncio.sleep(delay_ms / 1000)
        await _remove_pod(c, pod[0])
        results = await asyncio.gather(*calls, return_exceptions=True)
        for r in results:  # made (then removed with the pod), or refused cleanly
            assert isinstance(r, str) or (isinstance(r, GRPCError) and r.status in (
                Status.FAILED_PRECONDITION, Status.NOT_FOUND)), r
        listed = (await c.runtime.list_containers(cri.ListContainersRequest(
            filter=cri.ContainerFilter(pod_sandbox_id=pod[0])))).containers
        assert listed == []
        assert not any((daemon.dirs.root / "containers" / r).exists() for r in results if isinstance(r, str))


@contextlib.asynccontextmanager
async def _events(c: CriClient) -> AsyncIterator[Any]:
    """A GetContainerEvents stream, subscribed once its headers arrive."""
    async with c.channel.request("/runtime.v1.RuntimeService/GetContainerEvents", Cardinality.UNARY_STREAM,
                                 cri.GetEventsRequest, cri.ContainerEventResponse) as stream:
        await stream.send_message(cri.GetEventsRequest(), end=True)
        await asyncio.wait_for(stream.recv_initial_metadata(), 10)
        yield stream
        if not stream._recv_trailing_metadata_done:  # grpclib would wait for the end of an endless stream
            await stream.cancel()


async def _next_events(stream: Any, cid: str, count: int) -> list[cri.ContainerEventResponse]:
    got = []
    while len(got) < count:
        event = await asyncio.wait_for(stream.recv_message(), 10)
        assert event is not None, "the event stream ended"
        if event.container_id == cid:
            got.append(event)
    return got


async def test_two_subscribers_see_each_event_with_the_statuses(daemon: DaemonProcess, registry: Registry) -> None:
    """Created, started, stopped (the container ends by itself: the exit
    watch sees it, nobody asks) and deleted, in order, with the pod's status
    and its containers' as they were then."""
    async with connect(daemon.dirs.socket) as c, _events(c) as first, _events(c) as second:
        pod = await _pod(c)
        cid = await _create(c, pod, _config(registry, command=["/bin/sh", "-c", "sleep 0.3; exit 3"]))
        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        for stream in (first, second):
            created, started, stopped = await _next_events(stream, cid, 3)
            assert [e.container_event_type for e in (created, started, stopped)] == [
                cri.ContainerEventType.CONTAINER_CREATED_EVENT, cri.ContainerEventType.CONTAINER_STARTED_EVENT,
                cri.ContainerEventType.CONTAINER_STOPPED_EVENT]
            assert created.pod_sandbox_status.id == pod[0]
            assert created.pod_sandbox_status.state == cri.PodSandboxState.SANDBOX_READY
            assert [(s.id, s.state) for s in created.containers_statuses] == [(cid, cri.ContainerState.CONTAINER_CREATED)]
            assert [(s.state, s.exit_code) for s in stopped.containers_statuses] == [(cri.ContainerState.CONTAINER_EXITED, 3)]
            assert created.created_at < started.created_at < stopped.created_at
        await c.runtime.remove_container(cri.RemoveContainerRequest(container_id=cid))
        for stream in (first, second):
            (deleted,) = await _next_events(stream, cid, 1)
            assert deleted.container_event_type == cri.ContainerEventType.CONTAINER_DELETED_EVENT
            assert deleted.containers_statuses == []
        await _remove_pod(c, pod[0])


async def test_event_streams_end_when_the_daemon_stops(registry: Registry) -> None:
    """A subscriber does not hold up a graceful stop (its stream ends with OK)."""
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c, _events(c) as stream:
                began = time.monotonic()
                proc.proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(stream.recv_message(), 10) is None
                await stream.recv_trailing_metadata()
                assert time.monotonic() - began < 5  # not the 30 s grace period
            assert proc.proc.wait(10) == 0
        finally:
            proc.kill()


async def test_a_container_whose_conmon_died_with_the_daemon_is_reported(registry: Registry) -> None:
    """As after a reboot: podrt and the container's conmon are gone. A
    container that still runs is UNKNOWN (and can be stopped and removed);
    one that exited unseen is EXITED with 255, ContainerStatusUnknown."""
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                runs = await _running(c, registry, pod, "runs")
                ends = await _running(c, registry, pod, "ends")
            proc.stop(signal.SIGKILL)
            saved = {cid: json.loads((d.root / "containers" / cid / "state.json").read_text()) for cid in (runs, ends)}
            for cid in (runs, ends):
                os.kill(saved[cid]["conmon_pid"], signal.SIGKILL)
            os.kill(saved[ends]["pid"], signal.SIGKILL)
            proc = DaemonProcess(d).start()
            async with connect(d.socket) as c:
                assert (await _status(c, runs)).state == cri.ContainerState.CONTAINER_UNKNOWN
                ended = await _status(c, ends)
                assert (ended.state, ended.exit_code, ended.reason) == (
                    cri.ContainerState.CONTAINER_EXITED, 255, "ContainerStatusUnknown")
                assert "conmon" in ended.message
                await c.runtime.stop_container(cri.StopContainerRequest(container_id=runs, timeout=0))
                stopped = await _status(c, runs)
                assert (stopped.state, stopped.reason) == (cri.ContainerState.CONTAINER_EXITED, "ContainerStatusUnknown")
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


@pytest.mark.parametrize("delay_ms", [50, 450, 600, 750, 1600])
async def test_sigkill_amid_20_concurrent_creations_then_restart_leaks_nothing(registry: Registry, delay_ms: int) -> None:
    """Killed while 20 CreateContainer calls run (some done, some mid-step):
    the restart unwinds the unfinished from the journal and restores the rest."""
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                calls = [asyncio.ensure_future(_create(c, pod, _config(registry, f"c{n}", command=["/bin/sleep", "100"])))
                         for n in range(20)]
                await asyncio.sleep(delay_ms / 1000)
                proc.stop(signal.SIGKILL)
                done = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            proc.kill()
        created = {r for r in done if isinstance(r, str)}
        proc = DaemonProcess(d).start()
        try:
            async with connect(d.socket) as c:
                listed = {x.id for x in (await c.runtime.list_containers(cri.ListContainersRequest())).containers}
                assert created <= listed  # every answered creation survived
                on_disk = {p.name for p in (d.root / "containers").iterdir()} if (d.root / "containers").exists() else set()
                assert listed <= on_disk
            await remove_all_pods(d.socket)
            assert list((d.root / "journal").iterdir()) == []
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", [s for s in STEP_NAMES if s != "ctr-idmap"])  # a pod with a user namespace's: test_userns.py
async def test_fault_at_every_step_leaks_nothing(registry: Registry, step: str, when: str) -> None:
    with _network_dirs() as d:
        proc = await _start(d, registry, {"debug": {"fault_points": [f"{step}:{when}"]}})
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                volume = [cri.Mount(container_path="/vol", image=cri.ImageSpec(image=f"{registry.host}/test/busybox:v1"),
                                    readonly=True)]  # so the image-volume step has a mount to undo
                with pytest.raises(GRPCError) as err:
                    await _create(c, pod, _config(registry, command=["/bin/true"], mounts=volume))
                assert f"injected fault {when} {step}" in (err.value.message or "")
                assert (await c.runtime.list_containers(cri.ListContainersRequest())).containers == []
                assert _empty(d.root / "containers") and _empty(d.runroot / "containers")
                cid = await _create(c, pod, _config(registry, command=["/bin/true"]))  # the fault fired once
                await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
                await _wait_exit(c, cid)
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


@pytest.mark.parametrize("deadline", [0.02, 0.06, 0.12, 0.25])
async def test_retry_after_a_create_deadline_makes_one_container(daemon: DaemonProcess, registry: Registry,
                                                                 deadline: float) -> None:
    """The kubelet's CreateContainer times out (its deadline is cut at a
    different step each time) and it sends the same request again: the retry
    succeeds, once the cut creation has unwound, and the pod has one container
    of that name, which runs; nothing of the cut one is left."""
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        req = cri.CreateContainerRequest(pod_sandbox_id=pod[0], config=_config(registry, command=["/bin/sleep", "60"]),
                                         sandbox_config=pod[1])
        try:
            await c.runtime.create_container(req, timeout=deadline)  # fast enough: fine too
        except (TimeoutError, GRPCError) as exc:
            assert not isinstance(exc, GRPCError) or exc.status == Status.DEADLINE_EXCEEDED, exc
        retried, refusals = None, []
        until = time.monotonic() + 20 * FACTOR
        while retried is None and time.monotonic() < until:
            try:
                retried = (await c.runtime.create_container(req, timeout=30 * FACTOR)).container_id
            except GRPCError as exc:  # the name is taken: by the cut creation unwinding, or by a
                refusals.append(exc)  # container made after all, which the kubelet's next sync lists
                assert exc.status == Status.ALREADY_EXISTS, exc
                listed = (await c.runtime.list_containers(cri.ListContainersRequest(
                    filter=cri.ContainerFilter(pod_sandbox_id=pod[0])))).containers
                retried = next((x.id for x in listed if x.metadata.name == "app"), None)
                await asyncio.sleep(0.05)
        assert retried is not None, refusals[-3:]
        listed = (await c.runtime.list_containers(cri.ListContainersRequest(
            filter=cri.ContainerFilter(pod_sandbox_id=pod[0])))).containers
        assert [x.id for x in listed] == [retried]
        await c.runtime.start_container(cri.StartContainerRequest(container_id=retried))
        assert (await _status(c, retried)).state == cri.ContainerState.CONTAINER_RUNNING
        await _remove_pod(c, pod[0])
        assert _empty(daemon.dirs.root / "containers")

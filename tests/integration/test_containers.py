"""Containers on the real parts: a busybox image from a registry on
127.0.0.1, created in a real pod, started by runc under conmon, stopped,
removed; what the process sees (args, env, cwd, user, groups, mounts,
capabilities, read-only root); exits; bad input; faults at every step."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.container.manager import STEP_NAMES
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry, busybox_image, push

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]

EXEC_MAX = 1 << 20
BUSYBOX_IMG = busybox_image(Env=["FROM_IMAGE=yes", "OVERRIDE=image"], WorkingDir="/home/app", StopSignal="SIGINT")


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reg = Registry(Path(tempfile.mkdtemp(prefix="podrt-registry-")))
    asyncio.run(push(reg, "test/busybox", BUSYBOX_IMG, "v1"))
    yield reg
    reg.stop()


def _configure(d: DaemonDirs, registry: Registry, extra: dict[str, Any] | None = None) -> None:
    conf = d.base / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    d.write_config({"image": {"registries_conf": str(conf)}, **(extra or {})})


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    """One daemon for the module; every pod and container gone at the end, nothing left."""
    with _network_dirs() as d:
        _configure(d, registry, {"runtime": {"exec_sync_max_output": EXEC_MAX}})
        proc = DaemonProcess(d).start()
        asyncio.run(_pull(d.socket, f"{registry.host}/test/busybox:v1"))
        yield proc
        asyncio.run(remove_all_pods(d.socket))
        proc.stop()
        leftovers = audit_daemon_dirs(d)
        assert not leftovers, f"containers left resources behind: {leftovers}"


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
        assert not (daemon.dirs.root / "containers" / container_id).exists()
        await _remove_pod(c, pod[0])


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


async def test_resources_reach_the_cgroup_and_can_be_updated(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        limits = cri.LinuxContainerResources(cpu_shares=256, cpu_quota=50000, cpu_period=100000, memory_limit_in_bytes=64 << 20)
        cid = await _running(c, registry, pod, "limited", linux=cri.LinuxContainerConfig(resources=limits))
        cgroup = "/podrt/podrt-" + cid

        def value(controller: str, name: str) -> int:
            return int(Path(f"/sys/fs/cgroup/{controller}{cgroup}/{name}").read_text())

        assert (value("cpu", "cpu.shares"), value("cpu", "cpu.cfs_quota_us"), value("memory", "memory.limit_in_bytes")) == (
            256, 50000, 64 << 20)
        update = cri.LinuxContainerResources(cpu_shares=512, cpu_quota=20000, cpu_period=100000, memory_limit_in_bytes=96 << 20)
        await c.runtime.update_container_resources(cri.UpdateContainerResourcesRequest(container_id=cid, linux=update))
        assert (value("cpu", "cpu.shares"), value("cpu", "cpu.cfs_quota_us"), value("memory", "memory.limit_in_bytes")) == (
            512, 20000, 96 << 20)
        shown = (await _status(c, cid)).resources.linux
        assert (shown.cpu_shares, shown.cpu_quota, shown.memory_limit_in_bytes) == (512, 20000, 96 << 20)
        await _remove_pod(c, pod[0])


async def test_an_oom_kill_is_reported_as_oomkilled(daemon: DaemonProcess, registry: Registry) -> None:
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        limits = cri.LinuxContainerResources(memory_limit_in_bytes=32 << 20)
        hungry = await _create(c, pod, _config(registry, "hungry", command=["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
                                                linux=cri.LinuxContainerConfig(resources=limits)))
        fine = await _create(c, pod, _config(registry, "fine", command=["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1"],
                                              linux=cri.LinuxContainerConfig(resources=limits)))
        for cid in (hungry, fine):
            await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        st = await _wait_exit(c, hungry)
        assert (st.exit_code, st.reason) == (137, "OOMKilled")
        assert st.resources.linux.memory_limit_in_bytes == 32 << 20
        assert (await _wait_exit(c, fine)).reason == "Completed"
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
        assert out[0] == "uid=1000(app) gid=1000(app) groups=10(wheel),44(video),4242"
        assert out[1] == "CapBnd:\t0000000000000400"  # CAP_NET_BIND_SERVICE (bit 10) alone
        assert out[2] == "NoNewPrivs:\t1"
        assert out[3] == "from the host"
        assert out[4:] == ["root read-only", "data read-only"]
        assert st.mounts[0].host_path == str(tmp_path) and st.mounts[0].readonly
        await _remove_pod(c, pod[0])


async def _exec(c: CriClient, cid: str, *cmd: str, timeout: int = 10) -> cri.ExecSyncResponse:
    return await c.runtime.exec_sync(cri.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=timeout))


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
                cid = await _create(c, pod, _config(registry, command=["/bin/sh", "-c", "sleep 1.5; exit 7"]))
                await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
            proc.stop()
            proc = DaemonProcess(d).start()
            async with connect(d.socket) as c:
                st = await _status(c, cid)
                assert st.state == cri.ContainerState.CONTAINER_RUNNING  # conmon kept it while podrt was away
                assert (await _wait_exit(c, cid)).exit_code == 7  # and its later exit is seen
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
@pytest.mark.parametrize("step", STEP_NAMES)
async def test_fault_at_every_step_leaks_nothing(registry: Registry, step: str, when: str) -> None:
    with _network_dirs() as d:
        proc = await _start(d, registry, {"debug": {"fault_points": [f"{step}:{when}"]}})
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                with pytest.raises(GRPCError) as err:
                    await _create(c, pod, _config(registry, command=["/bin/true"]))
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

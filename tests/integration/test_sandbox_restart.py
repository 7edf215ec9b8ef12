"""Pods survive a daemon restart; pods whose infra died come back NotReady."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w

from podrt.api.runtime import v1 as cri
from podrt.host import mounts
from podrt.host.cgroups.hierarchy import hierarchies
from tests.integration.conftest import _network_dirs, remove_all_pods
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import host_ns, pod_config
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry
from tests.support.slow import FACTOR

pytestmark = pytest.mark.root


async def _status(dirs: DaemonDirs, pod_id: str) -> cri.PodSandboxStatusResponse:
    async with connect(dirs.socket) as c:
        return await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))


async def test_pods_survive_restart_and_dead_infra_is_not_ready(net_dirs: DaemonDirs) -> None:
    daemon = DaemonProcess(net_dirs).start()
    try:
        async with connect(net_dirs.socket) as c:
            keep = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config(labels={"k": "keep"})))).pod_sandbox_id
            dies = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config(linux=host_ns(network=True))))).pod_sandbox_id
        before = await _status(net_dirs, keep)
        dead_pid = json.loads((await _status(net_dirs, dies)).info["info"])["pid"]
        assert daemon.stop(signal.SIGTERM) == 0
        os.kill(dead_pid, signal.SIGKILL)  # the infra process our daemon started
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{dead_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.kill()
    restarted = DaemonProcess(net_dirs).start()
    try:
        after = await _status(net_dirs, keep)
        assert after.status.state == cri.PodSandboxState.SANDBOX_READY
        assert after.status.network.ip == before.status.network.ip
        assert after.status.labels == before.status.labels
        assert after.status.created_at == before.status.created_at
        assert json.loads(after.info["info"])["pid"] == json.loads(before.info["info"])["pid"]
        assert (await _status(net_dirs, dies)).status.state == cri.PodSandboxState.SANDBOX_NOTREADY
        async with connect(net_dirs.socket) as c:  # names are reserved again: same request, same pod
            resp = await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector={"k": "keep"})))
            assert [p.id for p in resp.items] == [keep]
        await remove_all_pods(net_dirs.socket)
        assert audit_daemon_dirs(net_dirs) == {}
    finally:
        restarted.kill()


async def _pod_of_a_killed_daemon(dirs: DaemonDirs) -> str:
    """A pod made by a daemon that then dies by SIGKILL (its pod runs on)."""
    daemon = DaemonProcess(dirs).start()
    try:
        async with connect(dirs.socket) as c:
            pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod_config()))).pod_sandbox_id
        daemon.stop(signal.SIGKILL)
    finally:
        daemon.kill()
    return pod_id


def _cgroups_of(object_id: str) -> list[Path]:
    """The cgroups named for a pod or container (podrt-<id>, podrt-conmon-<id>) in every hierarchy."""
    return [cg for h in hierarchies() for cg in h.glob(f"**/podrt-*{object_id}")]


def _wait_clean(dirs: DaemonDirs) -> None:
    deadline = time.monotonic() + 10 * FACTOR  # conmon leaves once its container is gone
    while audit_daemon_dirs(dirs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert audit_daemon_dirs(dirs) == {}


async def test_restart_releases_what_belongs_to_no_sandbox(net_dirs: DaemonDirs) -> None:
    """A pod whose state file is lost: its container, netns, IP lease and dirs are released."""
    pod_id = await _pod_of_a_killed_daemon(net_dirs)
    (net_dirs.root / "sandboxes" / pod_id / "state.json").unlink()
    assert audit_daemon_dirs(net_dirs) != {}
    restarted = DaemonProcess(net_dirs).start()
    try:
        assert f"container {pod_id}" in restarted.log()
        async with connect(net_dirs.socket) as c:
            assert (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items == []
        _wait_clean(net_dirs)
    finally:
        restarted.kill()


async def test_restart_releases_a_pod_whose_state_and_run_dir_are_lost(net_dirs: DaemonDirs) -> None:
    """Nothing of the pod but its runc container is left: that container's bundle
    says it is ours, and its conmon cgroup and default log dir go with it."""
    pod_id = await _pod_of_a_killed_daemon(net_dirs)
    run_dir = net_dirs.runroot / "sandboxes" / pod_id
    mounts.umount(str(run_dir / "shm"))
    shutil.rmtree(run_dir)
    shutil.rmtree(net_dirs.root / "sandboxes" / pod_id)
    conmon_cgroups = [cg for cg in _cgroups_of(pod_id) if cg.name.startswith("podrt-conmon-")]
    assert conmon_cgroups and (net_dirs.runroot / "runc" / pod_id).is_dir()
    restarted = DaemonProcess(net_dirs).start()
    try:
        assert f"container {pod_id}" in restarted.log() and f"cgroups of {pod_id}" in restarted.log()
        _wait_clean(net_dirs)
        assert [cg for cg in conmon_cgroups if cg.exists()] == []
    finally:
        restarted.kill()


async def test_restart_sweeps_the_dirs_of_a_container_creation_cut_before_its_record(dirs: DaemonDirs) -> None:
    """A container creation's journal is volatile: after a power loss its dirs may be
    all that is left of it, an overlay maybe still mounted (state lost by hand), or
    its record empty (written, not yet synced: steps/container/state.py). A restart
    removes them, without a word of an unreadable record; a dir holding a record,
    even an unreadable one, stays."""
    cut, kept, empty = "a" * 64, "b" * 64, "c" * 64
    (dirs.root / "containers" / empty).mkdir(parents=True)
    (dirs.root / "containers" / empty / "state.json").write_bytes(b"")
    merged = dirs.root / "containers" / cut / "rootfs" / "merged"
    merged.mkdir(parents=True)
    (dirs.runroot / "containers" / cut).mkdir(parents=True)
    (dirs.runroot / "containers" / cut / "config.json").write_text("{}")
    (dirs.root / "containers" / kept).mkdir()
    (dirs.root / "containers" / kept / "state.json").write_text("not a record")
    mounts.mount("tmpfs", str(merged), "tmpfs", 0, "size=1m")
    try:
        daemon = DaemonProcess(dirs).start()
        try:
            log = daemon.log()
            assert f"dir {dirs.root / 'containers' / cut} of a container never created" in log
            assert f"dir {dirs.runroot / 'containers' / cut} of a container never created" in log
            assert not (dirs.root / "containers" / cut).exists() and not (dirs.runroot / "containers" / cut).exists()
            assert (dirs.root / "containers" / kept / "state.json").read_text() == "not a record"
            assert f"dir {dirs.root / 'containers' / empty} of a container never created" in log
            assert not (dirs.root / "containers" / empty).exists() and empty not in log.replace(
                f"dir {dirs.root / 'containers' / empty} of a container never created", "")
            assert str(merged) not in Path("/proc/self/mountinfo").read_text()
        finally:
            daemon.kill()
    finally:
        while mounts.umount(str(merged)):
            pass
        shutil.rmtree(dirs.root / "containers" / kept)


# ------------------------------------------------- two daemons on one node

def _without_state_paths(dirs: DaemonDirs, runc_root: Path | None) -> None:
    """Rewrite a test daemon's config as an operator's: root and runroot of its own,
    the runc root and netns dir left to their defaults (or one runc root given for all)."""
    conf = tomllib.loads(dirs.config_file.read_text())
    del conf["podrt"]["network"]["netns_dir"]
    runc = conf["podrt"]["runtime"]["runtimes"]["runc"]
    del runc["runtime_root"]
    if runc_root is not None:
        runc["runtime_root"] = str(runc_root)
    dirs.config_file.write_text(tomli_w.dumps(conf))


async def _busybox_container(c: CriClient, registry: Registry) -> tuple[str, str]:
    """A pod and a started `sleep` container in it, from the loopback registry's busybox."""
    image = cri.ImageSpec(image=f"{registry.host}/test/busybox:v1")
    await c.image.pull_image(cri.PullImageRequest(image=image))
    config = pod_config()
    pod_id = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
    ctr = cri.ContainerConfig(metadata=cri.ContainerMetadata(name="app"), image=image, command=["/bin/sleep", "1000"],
                              log_path="app.log")
    cid = (await c.runtime.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=ctr, sandbox_config=config))).container_id
    await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
    return pod_id, cid


def _force_delete_all(runc_root: Path) -> None:
    """After a failed test: the containers both daemons left in the runc root they shared."""
    for state in runc_root.iterdir() if runc_root.is_dir() else []:
        subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", state.name], capture_output=True)


@pytest.mark.skipif(not os.path.exists(REGISTRY_BIN) or not BUSYBOX.is_file(),
                    reason="needs docker-registry and busybox-static (scripts/install-test-deps.sh)")
@pytest.mark.parametrize("runc_root", ["derived", "shared"])
async def test_a_restart_sweeps_only_its_own_daemons_containers(registry: Registry, runc_root: str) -> None:
    """Daemons A and B with their own root and runroot run at once; B restarts
    after losing a pod's state, and its orphan sweep releases that pod only:
    A's pod and container run on with their cgroups. "derived": each runc root
    is its runroot's (the default); "shared": both are given one runc root
    (as CRI-O's /run/runc), where the bundle tells A's containers from B's."""
    shared = Path(tempfile.mkdtemp(prefix="podrt-test-runc-")) if runc_root == "shared" else None
    conf = tempfile.NamedTemporaryFile("w", prefix="podrt-test-registries-", suffix=".conf")
    conf.write(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    conf.flush()
    daemons: list[DaemonProcess] = []
    try:
        with _network_dirs() as a, _network_dirs() as b:
            for d in (a, b):
                d.write_config({"image": {"registries_conf": conf.name}})
                _without_state_paths(d, shared)
                daemons.append(DaemonProcess(d).start())
            da, db = daemons
            async with connect(a.socket) as c:
                a_pod, a_ctr = await _busybox_container(c, registry)
                a_pid = (await c.runtime.container_status(cri.ContainerStatusRequest(container_id=a_ctr, verbose=True))).info
            a_init = json.loads(a_pid["info"])["pid"]
            async with connect(b.socket) as c:  # host network: no second user of the test subnet
                b_pod = (await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(
                    config=pod_config(linux=host_ns(network=True))))).pod_sandbox_id
            a_runc = shared or a.runroot / "runc"
            assert (a_runc / a_ctr).is_dir() and (a_runc / a_pod).is_dir()
            assert (a.runroot / "netns" / a_pod).exists()  # the netns dir is the runroot's
            assert ((shared or b.runroot / "runc") / b_pod).is_dir()
            a_cgroups = _cgroups_of(a_pod) + _cgroups_of(a_ctr)
            assert any(cg.name.startswith("podrt-conmon-") for cg in a_cgroups)

            db.stop(signal.SIGKILL)
            (b.root / "sandboxes" / b_pod / "state.json").unlink()
            db = daemons[1] = DaemonProcess(b).start()
            sweep = [line for line in db.log().splitlines() if "release" in line]
            assert any(f"container {b_pod}" in line for line in sweep)  # its own orphan is released ...
            assert not [line for line in sweep if a_pod in line or a_ctr in line]  # ... A's are not touched
            if shared is not None:  # seen, and left alone
                assert f"container {a_ctr} is not this daemon's" in db.log()
            _wait_clean(b)

            async with connect(a.socket) as c:
                status = (await c.runtime.container_status(cri.ContainerStatusRequest(container_id=a_ctr))).status
                assert status.state == cri.ContainerState.CONTAINER_RUNNING
                pod = (await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=a_pod))).status
                assert pod.state == cri.PodSandboxState.SANDBOX_READY
            os.kill(a_init, 0)
            assert [cg for cg in a_cgroups if not cg.is_dir()] == []
            await remove_all_pods(a.socket)
            _wait_clean(a)
            if shared is not None:
                assert list(shared.iterdir()) == []
    finally:
        for proc in daemons:
            proc.kill()
        if shared is not None:
            _force_delete_all(shared)
            shutil.rmtree(shared, ignore_errors=True)
        conf.close()

"""What current kubelets ask of a container beyond the basics (issue 18), on
the real parts: the primary group among the supplemental ones (critest's
SupplementalGroupsPolicy specs), a group without a user refused, the
request's stop signal (kept across a daemon restart), recursive read-only
volumes over a nested mount."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.integration.conftest import _network_dirs
from tests.integration.test_containers import (
    _config,
    _create,
    _exec,
    _log_lines,
    _module_daemon,
    _pod,
    _remove_pod,
    _running,
    _start,
    _status,
)
from tests.integration.test_containers import pytestmark as containers_marks
from tests.support.client import connect
from tests.support.daemon import DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.pods import pod_config
from tests.support.registry import Registry

pytestmark = containers_marks


@pytest.fixture(scope="module")
def daemon(registry: Registry) -> Iterator[DaemonProcess]:
    with _module_daemon(registry) as proc:
        yield proc


@pytest.mark.parametrize("policy, groups", [
    (cri.SupplementalGroupsPolicy.Merge, [10, 44, 1000, 1234]),  # the image's wheel and video for uid 1000 (app)
    (cri.SupplementalGroupsPolicy.Strict, [1000, 1234]),
])
async def test_supplemental_groups_hold_the_primary_group(daemon: DaemonProcess, registry: Registry,
                                                          policy: cri.SupplementalGroupsPolicy, groups: list[int]) -> None:
    """critest's shape: run_as_user 1000 (primary gid 1000 from the image's
    /etc/passwd) and group 1234; the status lists gid 1000 too, as containerd's
    and runc's additionalGids do, and the process has exactly those groups."""
    sc = cri.LinuxContainerSecurityContext(run_as_user=cri.Int64Value(1000), supplemental_groups=[1234],
                                           supplemental_groups_policy=policy)
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        cid = await _running(c, registry, pod, "groups", linux=cri.LinuxContainerConfig(security_context=sc))
        user = (await _status(c, cid)).user.linux
        assert (user.uid, user.gid, user.supplemental_groups) == (1000, 1000, groups)
        status_line = (await _exec(c, cid, "/bin/grep", "^Groups:", "/proc/self/status")).stdout.decode()
        assert [int(g) for g in status_line.split()[1:]] == groups  # the kernel's list, sorted
        id_g = [1000] + [g for g in groups if g != 1000]  # id -G: the primary group first, then the others
        assert (await _exec(c, cid, "/bin/id", "-G")).stdout.decode() == " ".join(map(str, id_g)) + "\n"
        await _remove_pod(c, pod[0])


async def test_a_group_without_a_user_is_refused(daemon: DaemonProcess, registry: Registry) -> None:
    """The CRI: run_as_group without run_as_user (or run_as_username) MUST be
    an error, for a container and for a pod."""
    async with connect(daemon.dirs.socket) as c:
        pod = await _pod(c)
        sc = cri.LinuxContainerSecurityContext(run_as_group=cri.Int64Value(1002))
        with pytest.raises(GRPCError) as err:
            await _create(c, pod, _config(registry, "nouser", linux=cri.LinuxContainerConfig(security_context=sc)))
        assert err.value.status == Status.INVALID_ARGUMENT and "run_as_group needs run_as_user" in (err.value.message or "")
        await _remove_pod(c, pod[0])
        group_only = cri.LinuxSandboxSecurityContext(run_as_group=cri.Int64Value(1002), namespace_options=cri.NamespaceOption())
        config = pod_config(linux=cri.LinuxPodSandboxConfig(security_context=group_only))
        with pytest.raises(GRPCError) as err:
            await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))
        assert err.value.status == Status.INVALID_ARGUMENT and "run_as_group needs run_as_user" in (err.value.message or "")
        assert not (await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items



async def test_the_requests_stop_signal_stops_it_after_a_restart(registry: Registry) -> None:
    """ContainerConfig.stop_signal over the image's StopSignal (SIGINT), shown
    in ContainerStatus, kept in the state across a daemon restart; a real-time
    signal reaches the process too (runc's kill knows no RT names: podrt sends
    the number). Each script traps its signal only: as its pid namespace's init
    the shell ignores any other, so a wrong signal means a 137 after the timeout."""
    scripts = {cri.Signal.SIGUSR1: "USR1", cri.Signal.SIGRTMINPLUS3: "37"}  # busybox's trap takes RT signals by number
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                plain = await _running(c, registry, pod, "plain")
                assert (await _status(c, plain)).stop_signal == cri.Signal.SIGINT  # the image's, in effect
                ids = {}
                for sig, trapped in scripts.items():
                    script = f"trap 'echo got {trapped}; exit 43' {trapped}; echo ready; while true; do sleep 0.1; done"
                    ids[sig] = await _create(c, pod, _config(registry, f"sig{trapped}", command=["/bin/sh", "-c", script],
                                                             stop_signal=sig))
                    await c.runtime.start_container(cri.StartContainerRequest(container_id=ids[sig]))
                    assert (await _status(c, ids[sig])).stop_signal == sig
            proc.stop()
            proc = DaemonProcess(d).start()
            async with connect(d.socket) as c:
                for sig, trapped in scripts.items():
                    st = await _status(c, ids[sig])
                    assert st.stop_signal == sig and st.state == cri.ContainerState.CONTAINER_RUNNING
                    await _wait_for_line(st.log_path, "ready")  # the trap is set
                    t = time.monotonic()
                    await c.runtime.stop_container(cri.StopContainerRequest(container_id=ids[sig], timeout=10))
                    st = await _status(c, ids[sig])
                    assert (st.exit_code, _log_lines(st.log_path)[-1]) == (43, f"got {trapped}")
                    assert time.monotonic() - t < 5  # the signal, not the timeout's SIGKILL
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}


async def _wait_for_line(log_path: str, line: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not (Path(log_path).exists() and line in _log_lines(log_path)):
        assert time.monotonic() < deadline, f"{line!r} not in {log_path}"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def _volume_with_a_nested_mount(top: Path) -> Iterator[Path]:
    """A host dir with a file and a tmpfs mounted below it (as critest's
    createHostPathForRROMount makes); the tmpfs is gone afterwards."""
    top.mkdir()
    (top / "file").write_text("top")
    nested = top / "nested"
    nested.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "podrt-test-rro", str(nested)], check=True)
    try:
        yield nested
    finally:
        subprocess.run(["umount", str(nested)], check=True)


async def test_recursive_read_only_volumes_reach_their_submounts(daemon: DaemonProcess, registry: Registry, tmp_path: Path) -> None:
    """`rro`: the volume and the tmpfs below it are read-only in the container;
    with plain `ro` the tmpfs stays writable (what rro is for). The forms the
    CRI forbids are refused before anything is made."""
    async with connect(daemon.dirs.socket) as c:
        handlers = {h.name: h.features for h in (await c.runtime.status(cri.StatusRequest())).runtime_handlers}
        if not handlers[""].recursive_read_only_mounts:
            pytest.skip("this host's runc or kernel has no recursive read-only mounts")
        pod = await _pod(c)
        with _volume_with_a_nested_mount(tmp_path / "vol"):
            writes = "touch /data/x 2>&1; touch /data/nested/y 2>&1 && echo nested written; cat /data/file"
            seen = {}
            for rro in (True, False):
                mount = cri.Mount(container_path="/data", host_path=str(tmp_path / "vol"), readonly=True,
                                  recursive_read_only=rro, selinux_relabel=True)  # critest sets selinux_relabel too
                cid = await _running(c, registry, pod, f"rro-{rro}".lower(), mounts=[mount])
                seen[rro] = (await _exec(c, cid, "/bin/sh", "-c", writes)).stdout.decode().splitlines()
                assert (await _status(c, cid)).mounts[0].recursive_read_only is rro
            assert seen[True] == ["touch: /data/x: Read-only file system", "touch: /data/nested/y: Read-only file system", "top"]
            assert seen[False] == ["touch: /data/x: Read-only file system", "nested written", "top"]
            assert (tmp_path / "vol" / "nested" / "y").exists()  # the host's tmpfs, written through plain ro
            for bad, fragment in ((dict(readonly=False), "needs readonly: true"),
                                  (dict(readonly=True, propagation=cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER),
                                   "needs propagation PROPAGATION_PRIVATE")):
                mount = cri.Mount(container_path="/data", host_path=str(tmp_path / "vol"), recursive_read_only=True, **bad)
                with pytest.raises(GRPCError) as err:
                    await _create(c, pod, _config(registry, "refused", mounts=[mount]))
                assert err.value.status == Status.INVALID_ARGUMENT and fragment in (err.value.message or "")
            await _remove_pod(c, pod[0])

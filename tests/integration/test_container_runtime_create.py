"""The runc create of CreateContainer, run after the answer (container/runtime_create.py),
on the real parts: a daemon killed between CreateContainer and StartContainer
comes back with the container created (its conmon adopted, or the create made
again) and it starts; a create runc refuses is StartContainer's
FAILED_PRECONDITION with runc's words, the container EXITED with nothing of
runc's left; a removal racing the create leaves nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.oci import conmon
from podrt.oci.exitfile import read as read_exit
from tests.integration.conftest import _network_dirs
from tests.integration.test_containers import (
    _config,
    _create,
    _exec,
    _pod,
    _remove_pod,
    _start,
    _status,
    _torn_down,
    _wait_exit,
)
from tests.integration.test_containers import daemon as daemon  # noqa: F401  the module's daemon
from tests.support.client import connect
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.leaks import audit_daemon_dirs
from tests.support.registry import BUSYBOX, REGISTRY_BIN, Registry
from tests.support.slow import FACTOR

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BIN), reason="needs Debian's docker-registry (scripts/install-test-deps.sh)"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs Debian's busybox-static (scripts/install-test-deps.sh)"),
]


def _runc_knows(d: DaemonDirs, cid: str) -> bool:
    return (d.runroot / "runc" / cid).exists()


def _conmon_of(d: DaemonDirs, cid: str, timeout: float = 10.0) -> int:
    """The pid of the container's conmon, once its create wrote the pidfiles."""
    persist = d.runroot / "containers" / cid / "conmon"
    deadline = time.monotonic() + timeout * FACTOR
    while time.monotonic() < deadline:
        pid = conmon.read_pidfile(persist / conmon.CONMON_PIDFILE)
        if pid and conmon.read_pidfile(persist / conmon.CONTAINER_PIDFILE) and conmon.monitors(pid, cid):
            return pid
        time.sleep(0.02)
    raise AssertionError(f"no conmon of {cid} after {timeout}s")


@pytest.mark.parametrize("conmon_lives", [True, False])
async def test_a_restart_between_create_and_start_still_starts_it(registry: Registry, conmon_lives: bool) -> None:
    """Killed right after CreateContainer answered: its record holds no pid (none
    is saved before the start). With its conmon alive the runc container is
    adopted; with it gone (as a kill of both would leave it) what is left is
    removed and the create made again. Either way the container starts, runs
    and exits as asked, and nothing is left."""
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                cid = await _create(c, pod, _config(registry, command=["/bin/sh", "-c", "exit 5"]))
            if conmon_lives:  # its create done: the pid is in memory only
                _conmon_of(d, cid)
                proc.stop(signal.SIGKILL)
            else:  # cut mid-create, or its conmon killed with the daemon
                proc.stop(signal.SIGKILL)
                await asyncio.sleep(0.3)
                for pid in conmon.find_conmon_pids(cid):
                    assert await conmon.kill_and_wait(pid)
            assert '"pid": 0' in (d.root / "containers" / cid / "state.json").read_text()
            proc = DaemonProcess(d).start()
            said = "adopted the runc container" if conmon_lives else "making it again"
            assert said in proc.log(), proc.log()[-3000:]
            async with connect(d.socket) as c:
                assert (await _status(c, cid)).state == cri.ContainerState.CONTAINER_CREATED
                await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
                assert (await _wait_exit(c, cid)).exit_code == 5
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}
        assert "Traceback" not in proc.log()


@pytest.mark.parametrize("command, said", [
    (["nosuch"], 'exec: "nosuch": executable file not found in $PATH'),
    (["/etc"], "the OCI runtime refused the container as configured"),
])
async def test_a_create_runc_refuses_is_told_at_start_and_leaves_nothing(daemon: DaemonProcess,  # noqa: F811
                                                                         registry: Registry, command: list[str],
                                                                         said: str) -> None:
    """What only runc finds out, from the image: CreateContainer answers (its
    create runs after), StartContainer is FAILED_PRECONDITION with runc's
    words, and the container is EXITED (StartError, 128) with no conmon, runc
    state or exit file of its own; its removal leaves nothing."""
    d = daemon.dirs
    async with connect(d.socket) as c:
        pod = await _pod(c)
        cid = await _create(c, pod, _config(registry, "refused", command=command))
        with pytest.raises(GRPCError) as err:
            await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        assert err.value.status == Status.FAILED_PRECONDITION and said in (err.value.message or ""), err.value
        assert cid in (err.value.message or "")
        st = await _status(c, cid)
        assert (st.state, st.exit_code, st.reason) == (cri.ContainerState.CONTAINER_EXITED, 128, "StartError")
        assert said in st.message
        assert not _runc_knows(d, cid) and not conmon.find_conmon_pids(cid) and read_exit(d.runroot / "exits", cid) is None
        with pytest.raises(GRPCError) as again:  # told the same way every time
            await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        assert again.value.status == Status.FAILED_PRECONDITION and said in (again.value.message or "")
        await c.runtime.stop_container(cri.StopContainerRequest(container_id=cid, timeout=0))
        await c.runtime.remove_container(cri.RemoveContainerRequest(container_id=cid))
        _torn_down(d, cid)
        ok = await _create(c, pod, _config(registry, "refused", command=["/bin/true"]))  # the name is free again
        await c.runtime.start_container(cri.StartContainerRequest(container_id=ok))
        assert (await _wait_exit(c, ok)).exit_code == 0
        await _remove_pod(c, pod[0])


async def test_a_removal_during_the_create_leaves_nothing(daemon: DaemonProcess, registry: Registry) -> None:  # noqa: F811
    """RemoveContainer right after CreateContainer (its runc create still
    running, or just done), for 8 containers at once, and StopContainer then
    RemoveContainer for 4 more: no container, conmon, runc state or dir is left."""
    d = daemon.dirs
    async with connect(d.socket) as c:
        pod = await _pod(c)

        async def made_and_removed(n: int, stop_first: bool) -> str:
            cid = await _create(c, pod, _config(registry, f"r{n}", command=["/bin/sleep", "100"]))
            if stop_first:
                await c.runtime.stop_container(cri.StopContainerRequest(container_id=cid, timeout=0))
            await c.runtime.remove_container(cri.RemoveContainerRequest(container_id=cid))
            return cid

        cids = await asyncio.gather(*(made_and_removed(n, n >= 8) for n in range(12)))
        assert (await c.runtime.list_containers(cri.ListContainersRequest())).containers == []
        for cid in cids:
            _torn_down(d, cid)
            assert not _runc_knows(d, cid) and not conmon.find_conmon_pids(cid), cid
            assert not (d.root / "containers" / cid).exists() and not (d.runroot / "containers" / cid).exists()
            assert not Path(d.runroot / "exits" / cid).exists()
        cid = await _create(c, pod, _config(registry, "r0", command=["/bin/sleep", "100"]))  # the names are free
        await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
        assert (await _exec(c, cid, "true")).exit_code == 0
        await _remove_pod(c, pod[0])


async def test_a_daemon_killed_after_a_removal_answered_finishes_its_teardown(registry: Registry) -> None:
    """RemoveContainer answers once the record is retired (removing.json) and
    tears the running container down after; killed right after the answer,
    the daemon finishes the teardown at its next start, before it serves: the
    container is not restored, and no runc container, conmon or dir is left."""
    with _network_dirs() as d:
        proc = await _start(d, registry)
        try:
            async with connect(d.socket) as c:
                pod = await _pod(c)
                cid = await _create(c, pod, _config(registry, command=["/bin/sleep", "100"]))
                await c.runtime.start_container(cri.StartContainerRequest(container_id=cid))
                await c.runtime.remove_container(cri.RemoveContainerRequest(container_id=cid))
                proc.stop(signal.SIGKILL)
            assert (d.root / "containers" / cid / "removing.json").exists()  # cut before the teardown's end
            assert not (d.root / "containers" / cid / "state.json").exists()
            proc = DaemonProcess(d).start()
            assert "finished the removal of container" in proc.log(), proc.log()[-3000:]
            assert not _runc_knows(d, cid) and not conmon.find_conmon_pids(cid)
            assert not (d.root / "containers" / cid).exists() and not (d.runroot / "containers" / cid).exists()
            async with connect(d.socket) as c:
                assert (await c.runtime.list_containers(cri.ListContainersRequest())).containers == []
                with pytest.raises(GRPCError) as err:
                    await c.runtime.container_status(cri.ContainerStatusRequest(container_id=cid))
                assert err.value.status == Status.NOT_FOUND
                await _remove_pod(c, pod[0])
        finally:
            proc.stop()
        assert audit_daemon_dirs(d) == {}
        assert "Traceback" not in proc.log()

"""Version, Status, RuntimeConfig, UpdateRuntimeConfig, and every CRI v1 RPC
implemented (an unknown path is UNIMPLEMENTED), over the real socket of a real
`podrt serve`."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from podrt.host.idmap import IdmapSupport
from tests.integration.conftest import write_test_conflist
from tests.support.client import connect
from tests.support.ctrfuzz import SERVER_SIDE
from tests.support.daemon import DaemonDirs, DaemonProcess
from tests.support.fuzz import RPCS, Rpc
from tests.support.h2raw import raw_unary

CRUN = "/usr/bin/crun"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts the daemon, which runs runc, conmon and catatonit: needs root"),
]


async def test_version(shared_daemon: DaemonProcess) -> None:
    async with connect(shared_daemon.dirs.socket) as c:
        resp = await c.runtime.version(cri.VersionRequest(version="v1"))
    assert resp.runtime_name == "podrt"
    assert resp.runtime_api_version == "v1"
    assert resp.runtime_version == "0.1.0"


async def test_status_network_not_ready_without_cni_config(shared_daemon: DaemonProcess) -> None:
    async with connect(shared_daemon.dirs.socket) as c:
        resp = await c.runtime.status(cri.StatusRequest())
    conditions = {cond.type: cond for cond in resp.status.conditions}
    assert conditions["RuntimeReady"].status is True
    assert conditions["NetworkReady"].status is False
    assert conditions["NetworkReady"].reason == "NetworkPluginNotReady"
    assert str(shared_daemon.dirs.cni_dir) in conditions["NetworkReady"].message
    assert resp.info == {}
    assert [h.name for h in resp.runtime_handlers] == ["", "runc"]  # "": the default handler, as containerd lists it


async def test_status_network_ready_with_cni_config_and_verbose_info(daemon: DaemonProcess) -> None:
    conf = write_test_conflist(daemon.dirs.cni_dir)
    async with connect(daemon.dirs.socket) as c:
        resp = await c.runtime.status(cri.StatusRequest(verbose=True))
    conditions = {cond.type: cond for cond in resp.status.conditions}
    assert conditions["NetworkReady"].status is True
    cni = json.loads(resp.info["cniconfig"])
    assert cni["path"] == str(conf)
    assert cni["config"]["name"] == "podrt-test"
    assert f'root = "{daemon.dirs.root}"' in resp.info["config"]


def _runc_has_rro() -> bool:
    """What this host's runc and kernel say, asked here without podrt's code."""
    doc = json.loads(subprocess.run(["/usr/sbin/runc", "features"], capture_output=True, check=True, text=True).stdout)
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return "rro" in doc["mountOptions"] and (major, minor) >= (5, 12)


@pytest.mark.skipif(not os.path.exists(CRUN), reason="needs Debian's crun, a handler without `features`")
async def test_status_gives_each_handler_and_the_default_its_features(dirs: DaemonDirs) -> None:
    """critest looks up the "" handler (its default) for recursive read-only
    mounts and user namespaces; crun 1.8.1 has no `features` command, so podrt
    claims nothing for it. User namespaces also need ID-mapped mounts in podrt's
    root, whose parents others must search (a temp dir is 0700: opened here)."""
    runtimes = {"crun": {"runtime_path": CRUN, "runtime_root": str(dirs.runroot / "crun")},
                "runc": {"runtime_path": "/usr/sbin/runc", "runtime_root": str(dirs.runroot / "runc")}}
    dirs.write_config({"runtime": {"default_runtime": "runc", "runtimes": runtimes}})
    dirs.base.chmod(0o711)
    proc = DaemonProcess(dirs).start()
    try:
        async with connect(dirs.socket) as c:
            resp = await c.runtime.status(cri.StatusRequest())
    finally:
        proc.kill()
    found = {h.name: (h.features.recursive_read_only_mounts, h.features.user_namespaces) for h in resp.runtime_handlers}
    rro = _runc_has_rro()  # true here: runc 1.1.5, a 6.x kernel
    userns = await IdmapSupport(dirs.root).problem() is None  # true here: ext4, 6.18
    assert found == {"": (rro, userns), "runc": (rro, userns), "crun": (False, False)}
    assert resp.features.supplemental_groups_policy and resp.features.user_namespaces_host_network == userns


async def test_runtime_config_reports_cgroup_driver(shared_daemon: DaemonProcess) -> None:
    async with connect(shared_daemon.dirs.socket) as c:
        resp = await c.runtime.runtime_config(cri.RuntimeConfigRequest())
    assert resp.linux.cgroup_driver == cri.CgroupDriver.CGROUPFS


async def test_update_runtime_config_remembers_pod_cidr(daemon: DaemonProcess) -> None:
    async with connect(daemon.dirs.socket) as c:
        await c.runtime.update_runtime_config(
            cri.UpdateRuntimeConfigRequest(
                runtime_config=cri.RuntimeConfig(network_config=cri.NetworkConfig(pod_cidr="10.244.1.0/24,fd00:1::/64"))
            )
        )
        resp = await c.runtime.status(cri.StatusRequest(verbose=True))
    assert json.loads(resp.info["podCIDRs"]) == ["10.244.1.0/24", "fd00:1::/64"]


async def test_update_runtime_config_rejects_bad_cidr(shared_daemon: DaemonProcess) -> None:
    async with connect(shared_daemon.dirs.socket) as c:
        with pytest.raises(GRPCError) as err:
            await c.runtime.update_runtime_config(
                cri.UpdateRuntimeConfigRequest(
                    runtime_config=cri.RuntimeConfig(network_config=cri.NetworkConfig(pod_cidr="10.244.1.0/33"))
                )
            )
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "10.244.1.0/33" in err.value.message


def test_unknown_path_answers_unimplemented_with_content_type(shared_daemon: DaemonProcess) -> None:
    headers = raw_unary(shared_daemon.dirs.socket, "/runtime.v1.RuntimeService/SomeFutureRpc")
    assert headers.get(":status") == "200"
    assert headers.get("content-type", "").startswith("application/grpc"), headers
    assert headers.get("grpc-status") == str(Status.UNIMPLEMENTED.value)
    assert "SomeFutureRpc" in headers.get("grpc-message", "")


def test_known_path_over_raw_h2_is_ok(shared_daemon: DaemonProcess) -> None:
    """The raw client itself works (so the test above can tell a real difference)."""
    headers = raw_unary(shared_daemon.dirs.socket, "/runtime.v1.RuntimeService/Version", bytes(cri.VersionRequest()))
    assert headers.get("grpc-status") == "0"
    assert headers.get("content-type", "").startswith("application/grpc")



@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
async def test_no_rpc_answers_unimplemented(shared_daemon: DaemonProcess, rpc: Rpc) -> None:
    """An empty request to each RPC the generated services route (all 41 of
    proto/api.proto: tests/unit/test_proto.py) gets its answer or a client-side
    status (INVALID_ARGUMENT, NOT_FOUND, ...), never UNIMPLEMENTED or another
    server-side one. Streams are read to their end; GetContainerEvents, which
    never ends, only to its headers."""
    status = Status.OK
    async with connect(shared_daemon.dirs.socket) as c:
        try:
            async with c.channel.request(rpc.path, rpc.cardinality, rpc.request, rpc.reply, timeout=60) as stream:
                await stream.send_message(rpc.request(), end=True)
                if rpc.name == "GetContainerEvents":
                    await stream.recv_initial_metadata()
                    await stream.cancel()
                elif rpc.cardinality is Cardinality.UNARY_STREAM:
                    while await stream.recv_message() is not None:
                        pass
                else:
                    await stream.recv_message()
        except GRPCError as exc:
            status = exc.status
    assert status not in SERVER_SIDE, f"{rpc.path}: {status.name}"

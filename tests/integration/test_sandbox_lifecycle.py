"""RunPodSandbox / Status / List / Stop / Remove on the real parts."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from podrt.api.runtime import v1 as cri
from tests.integration.conftest import TEST_SUBNET
from tests.support.client import CriClient, connect
from tests.support.daemon import DaemonProcess
from tests.support.pods import host_ns, in_pod, pod_config

pytestmark = pytest.mark.root


async def run_pod(c: CriClient, config: cri.PodSandboxConfig) -> str:
    resp = await c.runtime.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))
    assert len(resp.pod_sandbox_id) == 64
    return resp.pod_sandbox_id


async def remove_pod(c: CriClient, pod_id: str) -> None:
    await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


async def status(c: CriClient, pod_id: str, verbose: bool = False) -> cri.PodSandboxStatusResponse:
    return await c.runtime.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose))


def infra_pid(resp: cri.PodSandboxStatusResponse) -> int:
    return int(json.loads(resp.info["info"])["pid"])


async def test_run_status_stop_remove(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        config = pod_config(labels={"app": "web"}, annotations={"a": "b"}, hostname="myhost")
        pod_id = await run_pod(c, config)
        st = await status(c, pod_id, verbose=True)
        assert st.status.state == cri.PodSandboxState.SANDBOX_READY
        assert st.status.metadata.name == config.metadata.name
        assert st.status.labels == {"app": "web", "io.kubernetes.container.name": "POD"}
        assert st.status.annotations == {"a": "b"}
        assert st.status.network.ip.startswith("10.233.64.")
        assert st.status.runtime_handler == "runc"
        info = json.loads(st.info["info"])
        assert info["runtimeState"]["status"] == "running"
        assert info["runtimeSpec"]["annotations"]["io.podrt.ip"] == st.status.network.ip
        pid = infra_pid(st)
        assert in_pod(pid, "hostname", ns="-u").strip() == "myhost"
        assert st.status.network.ip in in_pod(pid, "ip", "-o", "addr")
        # a prefix of the ID works, like CRI-O's truncindex
        assert (await status(c, pod_id[:12])).status.id == pod_id

        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        st = await status(c, pod_id)
        assert st.status.state == cri.PodSandboxState.SANDBOX_NOTREADY
        assert not Path(f"/proc/{pid}").exists()
        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))  # idempotent
        await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        with pytest.raises(GRPCError) as err:
            await status(c, pod_id)
        assert err.value.status == Status.NOT_FOUND
        await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))  # idempotent


async def test_unknown_ids_stop_and_remove_succeed(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id="f" * 64))
        await c.runtime.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id="f" * 64))


async def test_list_filters(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        a = await run_pod(c, pod_config(labels={"tier": "a"}, linux=host_ns(network=True)))
        b = await run_pod(c, pod_config(labels={"tier": "b"}, linux=host_ns(network=True)))
        try:
            await c.runtime.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=b))

            async def ids(f: cri.PodSandboxFilter | None = None) -> set[str]:
                resp = await c.runtime.list_pod_sandbox(cri.ListPodSandboxRequest(filter=f) if f is not None else cri.ListPodSandboxRequest())
                return {p.id for p in resp.items}

            assert {a, b} <= await ids()
            assert await ids(cri.PodSandboxFilter(id=a[:10])) == {a}
            assert await ids(cri.PodSandboxFilter(label_selector={"tier": "b"})) == {b}
            ready = cri.PodSandboxStateValue(state=cri.PodSandboxState.SANDBOX_READY)
            notready = cri.PodSandboxStateValue(state=cri.PodSandboxState.SANDBOX_NOTREADY)
            assert a in await ids(cri.PodSandboxFilter(state=ready)) and b not in await ids(cri.PodSandboxFilter(state=ready))
            assert await ids(cri.PodSandboxFilter(state=notready, label_selector={"tier": "b"})) == {b}
            assert await ids(cri.PodSandboxFilter(id="0000nope")) == set()
        finally:
            await remove_pod(c, a)
            await remove_pod(c, b)


async def test_host_network_pid_ipc(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        pod_id = await run_pod(c, pod_config(linux=host_ns(network=True, pid=True, ipc=True)))
        try:
            st = await status(c, pod_id, verbose=True)
            assert st.status.network.ip == ""
            ns = st.status.linux.namespaces.options
            assert (ns.network, ns.pid, ns.ipc) == (cri.NamespaceMode.NODE,) * 3
            assert infra_pid(st) == 0  # no PID namespace of its own to hold: no infra process, and nothing pinned
            assert not any((pod_daemon.dirs.runroot / f"{kind}ns" / pod_id).exists() for kind in ("net", "ipc", "uts"))
            spec = json.loads(st.info["info"])["runtimeSpec"]
            assert {n["type"] for n in spec["linux"]["namespaces"]} & {"network", "pid", "ipc", "uts"} == set()
            assert any(m["destination"] == "/dev/shm" and m["source"] == "/dev/shm" for m in spec["mounts"])
        finally:
            await remove_pod(c, pod_id)


async def test_dns_hostname_sysctls_shm(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        config = pod_config(
            hostname="dnspod",
            dns_config=cri.DnsConfig(servers=["10.233.64.1"], searches=["svc.cluster.local"], options=["ndots:5"]),
            linux=cri.LinuxPodSandboxConfig(
                sysctls={"net.ipv4.ip_unprivileged_port_start": "80", "kernel.shm_rmid_forced": "1"},
                security_context=cri.LinuxSandboxSecurityContext(namespace_options=cri.NamespaceOption()),
            ),
        )
        pod_id = await run_pod(c, config)
        try:
            pid = infra_pid(await status(c, pod_id, verbose=True))
            root = f"/proc/{pid}/root"
            assert Path(root, "etc/resolv.conf").read_text() == "nameserver 10.233.64.1\nsearch svc.cluster.local\noptions ndots:5\n"
            assert Path(root, "etc/hostname").read_text().strip() == "dnspod"
            assert in_pod(pid, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").strip() == "80"
            mounts = Path(f"/proc/{pid}/mounts").read_text()
            shm = next(line for line in mounts.splitlines() if line.split()[1] == "/dev/shm")
            assert "tmpfs" in shm and "size=65536k" in shm and "noexec" in shm
        finally:
            await remove_pod(c, pod_id)


async def test_two_pods_reach_each_other(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        a, b = await run_pod(c, pod_config()), await run_pod(c, pod_config())
        try:
            sa, sb = await status(c, a, verbose=True), await status(c, b, verbose=True)
            assert sa.status.network.ip != sb.status.network.ip
            out = in_pod(infra_pid(sa), "ping", "-c", "1", "-W", "2", sb.status.network.ip)
            assert "1 received" in out
        finally:
            await remove_pod(c, a)
            await remove_pod(c, b)


async def test_port_mapping_reaches_pod(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        config = pod_config(port_mappings=[cri.PortMapping(protocol=cri.Protocol.TCP, container_port=80, host_port=18080)])
        pod_id = await run_pod(c, config)
        try:
            st = await status(c, pod_id, verbose=True)
            spec = json.loads(st.info["info"])["runtimeSpec"]
            assert json.loads(spec["annotations"]["io.podrt.port-mappings"])[0]["host_port"] == 18080
            nat = (await asyncio.create_subprocess_exec("iptables-save", "-t", "nat", stdout=asyncio.subprocess.PIPE)).stdout
            assert nat is not None
            text = (await nat.read()).decode()
            assert "18080" in text and st.status.network.ip in text
        finally:
            await remove_pod(c, pod_id)
        proc = await asyncio.create_subprocess_exec("iptables-save", "-t", "nat", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert "18080" not in out.decode()


async def test_same_request_twice_gives_same_id(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        config = pod_config(linux=host_ns(network=True))
        first = await run_pod(c, config)
        try:
            assert await run_pod(c, config) == first
        finally:
            await remove_pod(c, first)


async def test_twenty_concurrent_pods(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        ids = await asyncio.gather(*(run_pod(c, pod_config()) for _ in range(20)))
        try:
            assert len(set(ids)) == 20
            ips = {(await status(c, i)).status.network.ip for i in ids}
            assert len(ips) == 20 and all(ip.startswith(TEST_SUBNET.rsplit(".", 1)[0]) for ip in ips)
        finally:
            await asyncio.gather(*(remove_pod(c, i) for i in ids))


async def test_privileged_pod_runs_with_the_hosts_capabilities(pod_daemon: DaemonProcess) -> None:
    async with connect(pod_daemon.dirs.socket) as c:
        linux = host_ns(network=True)
        linux.security_context.privileged = True
        pod_id = await run_pod(c, pod_config(linux=linux))
        try:
            pid = infra_pid(await status(c, pod_id, verbose=True))
            status_lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            caps = {line.split(":")[0]: line.split()[1] for line in status_lines if line.startswith("Cap")}
            own = {line.split(":")[0]: line.split()[1] for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Cap")}
            assert caps["CapBnd"] == own["CapBnd"]
        finally:
            await remove_pod(c, pod_id)


async def test_dead_pods_name_is_taken_over_by_a_new_pod(pod_daemon: DaemonProcess) -> None:
    """The kubelet recreates a pod whose sandbox died (attempt unchanged here): the
    stale sandbox holding the name is stopped and removed, and a new one made."""
    async with connect(pod_daemon.dirs.socket) as c:
        config = pod_config()
        old = await run_pod(c, config)
        pid = infra_pid(await status(c, old, verbose=True))
        os.kill(pid, 9)  # the infra process our daemon started
        for _ in range(100):
            if (await status(c, old)).status.state == cri.PodSandboxState.SANDBOX_NOTREADY:
                break
            await asyncio.sleep(0.05)
        new, again = await asyncio.gather(run_pod(c, config), run_pod(c, config))  # kubelet retries race
        try:
            assert new == again and new != old
            with pytest.raises(GRPCError) as err:
                await status(c, old)
            assert err.value.status == Status.NOT_FOUND
            assert (await status(c, new)).status.state == cri.PodSandboxState.SANDBOX_READY
        finally:
            await remove_pod(c, new)

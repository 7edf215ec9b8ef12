"""Real network namespaces and the real CNI plugins (bridge, host-local, portmap, loopback).

Everything happens on the test bridge podrtcni0 and 10.233.96.0/24, between
namespaces these tests create; the module removes the bridge, any portmap
chains it caused and restores ip_forward (the bridge plugin enables it) at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from podrt.host.nspin import HOLD, create_userns, remove_pin
from podrt.network.cni import CniError, CniInvoker, CniPodInfo, CniResult
from podrt.network.cniconf import CniNetwork, find_network
from podrt.network.netns import create_netns, is_netns_mounted, remove_netns

PLUGIN_DIR = "/usr/lib/cni"
BRIDGE = "podrtcni0"
SUBNET = ip_network("10.233.96.0/24")
NET_NAME = "podrt-cni-test"
HOST_PORT = 38087

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, veth, iptables)"),
    pytest.mark.skipif(not Path(PLUGIN_DIR, "bridge").exists(), reason=f"CNI plugins missing in {PLUGIN_DIR}"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("unshare", "nsenter", "ip", "iptables-save")),
        reason="needs unshare, nsenter, ip and iptables-save",
    ),
]

PING = r"""
import os, socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
dst, ident = sys.argv[1], os.getpid() & 0xFFFF
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.settimeout(1.0)
for seq in range(1, 4):
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    sock.sendto(struct.pack("!BBHHH", 8, 0, csum(head + b"podrt!"), ident, seq) + b"podrt!", (dst, 0))
    try:
        while True:
            data, (src, _) = sock.recvfrom(2048)
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if src == dst and kind == 0 and rid == ident:
                sys.exit(0)
    except socket.timeout:
        continue
sys.exit(1)
"""

TIMINGS: dict[str, list[float]] = {}


def _timed(key: str, seconds: float) -> None:
    TIMINGS.setdefault(key, []).append(seconds * 1000)


def _sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def _nat_rules() -> str:
    return _sh("iptables-save", "-t", "nat")


@pytest.fixture(scope="module", autouse=True)
def host_cleanup() -> Iterator[None]:
    """Undo what the plugins do to the host outside our namespaces."""
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    had_hostport_chains = ":CNI-HOSTPORT-" in _nat_rules()
    yield
    if Path("/sys/class/net", BRIDGE).exists():
        _sh("ip", "link", "del", BRIDGE)
    if not had_hostport_chains:
        _remove_idle_portmap_chains()
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != forward:
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forward)
    for key, values in sorted(TIMINGS.items()):
        print(f"\n{key}: n={len(values)} median={sorted(values)[len(values) // 2]:.1f}ms min={min(values):.1f}ms")


def _remove_idle_portmap_chains() -> None:
    """portmap never deletes its top-level chains; drop them if no pod uses them."""
    rules = _nat_rules()
    if "CNI-DN-" in rules:
        return
    for line in _sh("iptables", "-t", "nat", "-S").splitlines():
        parts = shlex.split(line)
        if parts[:1] == ["-A"] and parts[1] in ("PREROUTING", "OUTPUT", "POSTROUTING") and "CNI-HOSTPORT" in line:
            _sh("iptables", "-t", "nat", "-D", *parts[1:], check=False)
    for chain in ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"):
        if f":{chain}" in rules:
            _sh("iptables", "-t", "nat", "-F", chain, check=False)
            _sh("iptables", "-t", "nat", "-X", chain, check=False)


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="podrt-cnitest-"))
    yield path
    leftover = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line]
    for point in sorted({m for line in leftover for m in line.split()[4:5]}, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)  # a failed test must not leave its pins on the host
    shutil.rmtree(path, ignore_errors=True)
    assert not leftover, f"mounts left behind: {leftover}"


def write_conflist(conf_dir: Path, data_dir: Path, plugins: list[dict] | None = None, version: str = "1.0.0") -> CniNetwork:
    bridge = {
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": True,
        "ipMasq": False,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": str(SUBNET)}]], "dataDir": str(data_dir)},
    }
    if plugins is None:
        plugins = [bridge, {"type": "portmap", "capabilities": {"portMappings": True}}, {"type": "loopback"}]
    else:
        plugins = [bridge if p == "bridge" else p for p in plugins]
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "10-podrt-cni-test.conflist").write_text(
        json.dumps({"cniVersion": version, "name": NET_NAME, "plugins": plugins})
    )
    lookup = find_network(conf_dir)
    assert lookup.network is not None, lookup.message
    return lookup.network


@pytest.fixture
def leases(base: Path) -> Path:
    return base / "ipam"


@pytest.fixture
def net(base: Path, leases: Path) -> CniNetwork:
    return write_conflist(base / "net.d", leases)


@pytest.fixture
def invoker(base: Path) -> CniInvoker:
    return CniInvoker([str(base / "no-plugins-here"), PLUGIN_DIR], base / "cache", timeout=30.0)


Attach = Callable[..., Awaitable[tuple[CniPodInfo, Path, CniResult]]]


@pytest.fixture
async def attach(base: Path, invoker: CniInvoker) -> AsyncIterator[Attach]:
    """ADD a fresh netns to a network; teardown DELs and removes whatever is left."""
    netns: list[Path] = []
    added: list[tuple[CniNetwork, CniPodInfo, Path]] = []

    async def _attach(network: CniNetwork, **kwargs: object) -> tuple[CniPodInfo, Path, CniResult]:
        sid = uuid.uuid4().hex
        pod = CniPodInfo(namespace="podrt-test", name=f"pod-{sid[:6]}", uid=str(uuid.uuid4()), sandbox_id=sid)
        path = await create_netns(base / "netns", sid[:12])
        netns.append(path)
        start = time.perf_counter()
        result = await invoker.add(network, pod, str(path), **kwargs)  # type: ignore[arg-type]
        _timed(f"CNI ADD ({'+'.join(network.plugin_types)})", time.perf_counter() - start)
        added.append((network, pod, path))
        return pod, path, result

    yield _attach
    try:
        for network, pod, path in added:  # a failed ADD has rolled itself back
            await invoker.delete(network, pod, str(path))
    finally:
        for path in netns:
            await remove_netns(path)


def _bridge_ports() -> set[str]:
    brif = Path("/sys/class/net", BRIDGE, "brif")
    return set(os.listdir(brif)) if brif.is_dir() else set()


def _lease_files(leases: Path) -> list[str]:
    d = leases / NET_NAME
    return sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) if d.is_dir() else []


def _in_netns(path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={path}", *args], check=check, capture_output=True, text=True)


def _netns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


# --- netns -------------------------------------------------------------------------------


async def test_netns_create_and_remove(base: Path) -> None:
    own, own_thread = _netns_id("/proc/self/ns/net"), _netns_id("/proc/thread-self/ns/net")
    for i in range(20):
        start = time.perf_counter()
        path = await create_netns(base / "netns", f"ns{i}")
        _timed("netns create", time.perf_counter() - start)
        assert path == base / "netns" / f"ns{i}" and path.is_file()
        assert is_netns_mounted(path)
        mountinfo = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {path} " in line]
        assert len(mountinfo) == 1 and " - nsfs " in mountinfo[0]
        assert _netns_id(str(path)) != own
        # a usable, empty namespace: only lo, up (as the loopback plugin would bring it)
        links = _in_netns(path, "ip", "-o", "link").stdout.splitlines()
        assert len(links) == 1 and ": lo:" in links[0] and "<LOOPBACK,UP," in links[0]
        start = time.perf_counter()
        await remove_netns(path)
        _timed("netns remove", time.perf_counter() - start)
        assert not path.exists() and not is_netns_mounted(path)
        await remove_netns(path)  # idempotent
    assert _netns_id("/proc/self/ns/net") == own
    assert _netns_id("/proc/thread-self/ns/net") == own_thread


async def test_netns_existing_name_is_left_alone(base: Path) -> None:
    path = await create_netns(base / "netns", "taken")
    try:
        with pytest.raises(FileExistsError):
            await create_netns(base / "netns", "taken")
        assert is_netns_mounted(path)
    finally:
        await remove_netns(path)


async def test_netns_failure_leaves_nothing(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import podrt.host.nspin as nspin

    def refused(*_args: object) -> None:
        raise OSError(errno.EPERM, "refused")

    monkeypatch.setattr(nspin.mounts, "mount", refused)
    with pytest.raises(OSError, match="pinning the net namespace at .*broken: refused"):
        await create_netns(base / "netns", "broken")
    assert not (base / "netns" / "broken").exists()
    with pytest.raises(ValueError):
        await create_netns(base / "netns", "../escape")


async def test_netns_cancelled_create_leaves_nothing(base: Path) -> None:
    for delay in (0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01):
        task = asyncio.ensure_future(create_netns(base / "netns", "cancelled"))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            path = await task
        except asyncio.CancelledError:
            assert not (base / "netns" / "cancelled").exists()
            assert not is_netns_mounted(base / "netns" / "cancelled")
        else:  # finished before the cancel landed
            await remove_netns(path)
    await asyncio.sleep(0.05)  # an orphaned unshare helper would have mounted by now
    assert not is_netns_mounted(base / "netns" / "cancelled")


def _holders() -> list[str]:
    """Live helper children of host/nspin.py (their shell waits on its stdin)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if HOLD[-1].encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


async def test_a_user_namespace_and_a_netns_it_owns(base: Path) -> None:
    """Made with the maps given, pinned; the netns is the user namespace's (its
    root may configure it: CAP_NET_ADMIN there counts only in a netns it owns);
    both gone after removal, and no helper child is left."""
    userns = base / "userns" / "pod"
    await create_userns(userns, "0 1000 100000\n", "0 2000 100000\n")
    try:
        netns = await create_netns(base / "netns", "pod", owner=userns)
        try:
            maps = subprocess.run(["nsenter", f"--user={userns}", "cat", "/proc/self/uid_map", "/proc/self/gid_map"],
                                  capture_output=True, text=True, check=True).stdout.split()
            assert maps == ["0", "1000", "100000", "0", "2000", "100000"]
            ip = subprocess.run(["nsenter", f"--user={userns}", f"--net={netns}", "ip", "link", "set", "lo", "up"],
                                capture_output=True, text=True)
            assert ip.returncode == 0, ip.stderr  # CAP_NET_ADMIN over it from inside the user namespace: it owns it
        finally:
            await remove_netns(netns)
    finally:
        await remove_pin(userns)
    assert not userns.exists() and not is_netns_mounted(userns) and not (base / "netns" / "pod").exists()
    assert _holders() == []


async def test_cancelled_user_namespace_creations_leave_nothing(base: Path) -> None:
    userns = base / "userns" / "cancelled"
    for delay in (0, 0.001, 0.002, 0.004, 0.008, 0.015):
        task = asyncio.ensure_future(create_userns(userns, "0 1000 10\n", "0 1000 10\n"))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            assert not userns.exists() and not is_netns_mounted(userns)
        else:
            await remove_pin(userns)
    await asyncio.sleep(0.05)
    assert not userns.exists() and _holders() == []


# --- CNI -----------------------------------------------------------------------------------


async def test_add_and_del(attach: Attach, invoker: CniInvoker, net: CniNetwork, leases: Path) -> None:
    ports_before = _bridge_ports()
    pod, path, result = await attach(net)
    ip = result.primary_ip
    assert ip_address(ip) in SUBNET and result.ips[0].gateway == "10.233.96.1"
    assert result.ips[0].interface == "eth0" and result.ips[0].address == f"{ip}/24"
    assert _lease_files(leases) == [ip]
    assert (leases / NET_NAME / ip).read_text().split()[0] == pod.sandbox_id
    addrs = {(f[1], f[3]) for f in map(str.split, _in_netns(path, "ip", "-o", "-4", "addr").stdout.splitlines())}
    assert addrs == {("lo", "127.0.0.1/8"), ("eth0", f"{ip}/24")}  # loopback plugin ran too
    new_ports = _bridge_ports() - ports_before
    assert len(new_ports) == 1
    cache = invoker.cache_path(NET_NAME, pod.sandbox_id, "eth0")
    assert json.loads(cache.read_text())["result"] == result.raw

    start = time.perf_counter()
    await invoker.delete(net, pod, str(path))
    _timed(f"CNI DEL ({'+'.join(net.plugin_types)})", time.perf_counter() - start)
    assert _lease_files(leases) == []
    assert _bridge_ports() == ports_before
    assert _in_netns(path, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert not cache.exists()
    await invoker.delete(net, pod, str(path))  # DEL twice is fine


async def test_two_pods_can_ping_each_other(attach: Attach, net: CniNetwork) -> None:
    _, ns1, r1 = await attach(net)
    _, ns2, r2 = await attach(net)
    assert r1.primary_ip != r2.primary_ip
    for src, dst in ((ns1, r2.primary_ip), (ns2, r1.primary_ip)):
        ping = _in_netns(src, sys.executable, "-c", PING, dst, check=False)
        assert ping.returncode == 0, f"ICMP echo {src} -> {dst} failed: {ping.stderr}"


async def test_portmap_rules_follow_add_and_del(attach: Attach, invoker: CniInvoker, net: CniNetwork) -> None:
    mapping = {"hostPort": HOST_PORT, "containerPort": 80, "protocol": "tcp", "hostIP": ""}
    pod, path, result = await attach(net, port_mappings=[mapping])
    rules = _nat_rules()
    mine = [line for line in rules.splitlines() if pod.sandbox_id in line or f"{result.primary_ip}:80" in line]
    assert any(pod.sandbox_id in line for line in mine), rules
    assert any(f"--dport {HOST_PORT}" in line and f"{result.primary_ip}:80" in line for line in mine), rules
    await invoker.delete(net, pod, str(path))  # mappings come from the cache
    rules = _nat_rules()
    assert pod.sandbox_id not in rules and f"{result.primary_ip}:80" not in rules


async def test_del_after_netns_removed_releases_lease(
    attach: Attach, invoker: CniInvoker, net: CniNetwork, leases: Path
) -> None:
    ports_before = _bridge_ports()
    pod, path, result = await attach(net)
    assert _lease_files(leases) == [result.primary_ip]
    await remove_netns(path)
    await invoker.delete(net, pod, str(path))
    assert _lease_files(leases) == []
    assert not invoker.cache_path(NET_NAME, pod.sandbox_id, "eth0").exists()
    for _ in range(50):  # the kernel tears the dead netns (and its veth) down asynchronously
        if _bridge_ports() == ports_before:
            break
        time.sleep(0.1)
    assert _bridge_ports() == ports_before


@pytest.mark.parametrize(
    "second",
    [
        {"type": "podrt-no-such-plugin"},
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.podrt_no_such_sysctl": "1"}},
    ],
    ids=["missing-plugin", "failing-plugin"],
)
async def test_half_way_add_failure_is_rolled_back(
    attach: Attach, base: Path, leases: Path, second: dict
) -> None:
    net = write_conflist(base / "broken.d", leases, ["bridge", second, {"type": "loopback"}], version="0.4.0")
    ports_before = _bridge_ports()
    with pytest.raises(CniError) as info:
        await attach(net)
    err = info.value
    assert err.plugin == second["type"] and err.network == NET_NAME and "\n" not in str(err)
    if second["type"] == "tuning":
        assert err.code is not None and "podrt_no_such_sysctl" in str(err)
    else:
        assert PLUGIN_DIR in str(err) and "failed to find plugin" in str(err)
    assert _lease_files(leases) == []
    assert _bridge_ports() == ports_before
    assert not list((base / "cache").glob("*.json"))

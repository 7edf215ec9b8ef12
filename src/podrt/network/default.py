"""The pod network podrt installs on a node that has none, as CRI-O's packages do.

Without a CNI config every pod with its own network fails, so a newcomer's
first `crictl runp` does. `podrt install-network` writes a bridge network
(bridge podrt0, a private /16 the host does not use) into the CNI config dir,
only when that dir holds no network at all: an existing config is never
touched. The host's routes and addresses are read over netlink (pyroute2),
which is also how `podrt check` verifies the subnet is still unused.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable
from pathlib import Path

from podrt.host.fsutil import atomic_write
from podrt.network.cniconf import CniNetwork, find_network

NAME = "podrt"
BRIDGE = "podrt0"
FILE_NAME = "10-podrt-bridge.conflist"
Net = ipaddress.IPv4Network
CANDIDATES = tuple(Net(f"10.{n}.0.0/16") for n in (85, 86, 87, 89, 90, 91, 92, 93, 94, 95))


def host_networks(skip_interface: str = BRIDGE) -> list[Net]:
    """IPv4 networks the host routes or holds addresses in, except on `skip_interface`."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]  # netlink: no `ip` output to parse

    found: list[Net] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.get_routes(family=socket.AF_INET):
            dst, oif = route.get_attr("RTA_DST"), route.get_attr("RTA_OIF")
            if dst and names.get(oif) != skip_interface:
                found.append(Net(f"{dst}/{route['dst_len']}", strict=False))
        for addr in ipr.get_addr(family=socket.AF_INET):
            if names.get(addr["index"]) != skip_interface:
                found.append(Net(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False))
    return found


def pick_subnet(used: Iterable[Net]) -> Net:
    used = list(used)
    for candidate in CANDIDATES:
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError(f"every candidate pod subnet ({CANDIDATES[0]} ...) overlaps a host network; write a CNI config by hand")


def conflist(subnet: Net) -> dict[str, object]:
    """Bridge + host-local + portmap (podrt brings each pod's loopback up
    itself); the gateway and masquerading let pods reach out."""
    return {
        "cniVersion": "1.0.0",
        "name": NAME,
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": str(subnet)}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def install(cni_dir: Path, used: Iterable[Net] | None = None) -> str:
    """Write the default network unless the dir holds any network config; what was done, in one line."""
    existing = sorted(p.name for p in cni_dir.glob("*") if p.suffix in (".conf", ".conflist", ".json")) if cni_dir.is_dir() else []
    if existing:
        return f"kept the CNI config in {cni_dir} ({', '.join(existing)}); no default network installed"
    subnet = pick_subnet(host_networks() if used is None else used)
    cni_dir.mkdir(parents=True, exist_ok=True)
    path = cni_dir / FILE_NAME
    atomic_write(path, json.dumps(conflist(subnet), indent=2).encode() + b"\n", mode=0o644)
    return f"installed the default pod network {NAME} (bridge {BRIDGE}, {subnet}) as {path}"


def default_subnet(network: CniNetwork) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The subnet of podrt's own default network, None for any other network
    (IPv6 only if someone wrote one into it)."""
    if network.name != NAME:
        return None
    for plugin in network.raw.get("plugins", []):
        for rng in plugin.get("ipam", {}).get("ranges", []):
            for entry in rng:
                return ipaddress.ip_network(entry["subnet"])
    return None


def check(cni_dir: Path) -> tuple[bool, str] | None:
    """For `podrt check`: (ok, detail) when the config is podrt's default network."""
    lookup = find_network(cni_dir)
    subnet = default_subnet(lookup.network) if lookup.network else None
    if subnet is None:
        return None
    clash = [str(u) for u in host_networks() if subnet.overlaps(u)]
    if clash:
        return False, f"{subnet} overlaps host network(s) {', '.join(clash)}"
    return True, f"{subnet} is not used by the host"

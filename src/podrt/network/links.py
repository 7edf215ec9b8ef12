"""Work on a pod's network links, in-process: loopback up (no `loopback` CNI
plugin process per pod; an ioctl), and with pyroute2 each interface's
addresses and counters (PodSandboxStatus verbose info).

The netlink socket is opened inside the netns (network/nssocket.py) and
handed to pyroute2 (`use_socket`), which parses the messages.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
from typing import Any

import attrs

from podrt.network.nssocket import netns_socket

NETLINK_ROUTE = 0
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
IFREQ = "16sH22x"  # struct ifreq: the name, then ifr_flags in its 24-byte union



@attrs.frozen
class Interface:
    name: str
    up: bool
    addresses: tuple[str, ...]  # "ip/prefix"
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_errors: int
    tx_errors: int


def netlink_socket(netns_path: str) -> socket.socket:
    """A NETLINK_ROUTE socket in the netns pinned at `netns_path` (blocking: run it in a worker thread)."""
    return netns_socket(netns_path, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)


def _ipr(netns_path: str) -> Any:
    """pyroute2 is imported at the first pod network: it adds ~9 MiB to the daemon's RSS."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    # its import sets its logger to log everything: a debug line per netlink message would drown ours
    logging.getLogger("pyroute2").setLevel(max(logging.INFO, logging.getLogger().level))
    sock = netlink_socket(netns_path)
    try:
        return IPRoute(use_socket=sock)
    except BaseException:
        sock.close()
        raise


def loopback_up() -> None:
    """What the CNI loopback plugin does, without its process, in the calling
    thread's netns (host/nsthread.py): lo's flags with IFF_UP, by ioctl (no netlink)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack(IFREQ, b"lo", 0)))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ, b"lo", flags | IFF_UP))


def interfaces(netns_path: str) -> list[Interface]:
    """Each interface of the netns with its addresses and counters (blocking)."""
    with _ipr(netns_path) as ipr:
        addresses: dict[int, list[str]] = {}
        for addr in ipr.get_addr():
            addresses.setdefault(addr["index"], []).append(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
        found = []
        for link in ipr.get_links():
            stats = link.get_attr("IFLA_STATS64") or {}
            found.append(Interface(
                name=link.get_attr("IFLA_IFNAME"), up=bool(link["flags"] & 1),
                addresses=tuple(addresses.get(link["index"], ())),
                rx_bytes=stats.get("rx_bytes", 0), tx_bytes=stats.get("tx_bytes", 0),
                rx_packets=stats.get("rx_packets", 0), tx_packets=stats.get("tx_packets", 0),
                rx_errors=stats.get("rx_errors", 0), tx_errors=stats.get("tx_errors", 0)))
        return found

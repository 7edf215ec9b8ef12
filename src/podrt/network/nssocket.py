"""Sockets made inside a pod's network namespace, without moving the daemon.

A socket stays bound to the namespace it was created in, so a throwaway
thread (host/nsthread.py) setns(2)es itself into the pod's netns, creates the socket and ends;
the daemon then uses the socket from any thread. No thread that serves the
daemon ever changes namespace, and nothing forks (pyroute2's own netns
support forks the daemon; see network/netns.py). Used for netlink
(network/links.py) and for port forwarding (streaming/portforward.py).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket

from podrt.aio import await_shielded
from podrt.host.nsthread import run_in

CONNECT_TIMEOUT = 10.0


def netns_socket(netns_path: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket made in the netns pinned at `netns_path` (blocking: call it from a worker thread)."""
    return run_in(lambda: socket.socket(family, kind | socket.SOCK_CLOEXEC, proto), enter=[("net", netns_path)])


async def _stream_socket(netns_path: str, family: int) -> socket.socket:
    if not netns_path:  # a pod on the host's network
        return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    made = asyncio.ensure_future(asyncio.to_thread(netns_socket, netns_path, family, socket.SOCK_STREAM))
    if await await_shielded(made):  # cancelled meanwhile: the thread's socket is closed, not orphaned
        if made.exception() is None:
            made.result().close()
        raise asyncio.CancelledError
    return made.result()


async def connect_localhost(netns_path: str, port: int) -> socket.socket:
    """A TCP connection to localhost:`port` inside the netns ("": the host's): 127.0.0.1 first,
    then ::1 (a server may listen on one only), as the kubelet's port forwarding does.
    Raises OSError (ConnectionRefusedError when nothing listens on either)."""
    loop = asyncio.get_running_loop()
    refused: OSError | None = None
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = await _stream_socket(netns_path, family)
        sock.setblocking(False)
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.sock_connect(sock, (host, port))
            except TimeoutError:  # an OSError without errno in 3.11: give it one, and a text
                raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)) from None
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.ENETUNREACH):
                raise
            refused = refused or exc
        except BaseException:
            sock.close()
            raise
    assert refused is not None
    raise refused

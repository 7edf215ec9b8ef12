"""A container's stdio through conmon: its attach socket and its control fifo.

conmon binds a SOCK_SEQPACKET socket `attach` in the bundle. Every packet it
sends is one read of the container's output, led by a byte naming the pipe
(2 stdout, 3 stderr; a tty is all stdout); what a client sends is written to
the container's stdin, when conmon keeps one (`--stdin`). Many clients may
be attached at once; each gets all output from its attach on. The socket is
reached through /proc/self/fd of the bundle, because the bundle's path can
exceed the 108 bytes of a unix socket address.

The control fifo `ctl` takes lines "<kind> <a> <b>": 1 resizes the pty
(height, width), 2 reopens the log. Writes never block: with no reader (conmon
gone) the open fails with ENXIO.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from podrt.oci.conmon import ConmonError

STDOUT, STDERR = 2, 3
PACKET = 8192 + 1  # conmon's buffer and its pipe byte
CTL_RESIZE, CTL_REOPEN_LOG = 1, 2


class AttachSocket:
    """One attach client's connection to conmon."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()

    async def read(self) -> tuple[int, bytes] | None:
        """(pipe, data) of conmon's next packet, None once conmon closed (the container ended)."""
        try:
            packet = await self._loop.sock_recv(self._sock, PACKET)
        except (ConnectionError, OSError):
            return None
        if not packet:
            return None
        return packet[0], packet[1:]

    async def write(self, data: bytes) -> None:
        """Container stdin; conmon drops it if the container has none."""
        view = memoryview(data)
        for offset in range(0, len(view), PACKET - 1):
            await self._loop.sock_sendall(self._sock, view[offset:offset + PACKET - 1])

    def close_write(self) -> None:
        """The client's stdin ended: conmon closes the container's stdin if it was created stdin_once."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._sock.close()


async def open_attach(bundle: Path) -> AttachSocket:
    """Connect to conmon's attach socket in `bundle`; ConmonError if conmon is not there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        dirfd = os.open(bundle, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        sock.close()
        raise ConmonError(f"container bundle {bundle}: {exc.strerror}") from None
    try:
        await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{dirfd}/attach")
    except OSError as exc:
        sock.close()
        raise ConmonError(f"conmon's attach socket in {bundle}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dirfd)
    return AttachSocket(sock)


def write_ctl(bundle: Path, kind: int, a: int = 0, b: int = 0) -> None:
    """One message on conmon's control fifo (ConmonError when conmon is not reading it)."""
    try:
        fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConmonError(f"conmon's control fifo {bundle / 'ctl'}: {exc.strerror}") from None
    try:
        os.write(fd, f"{kind} {a} {b}\n".encode())
    except OSError as exc:
        raise ConmonError(f"conmon's control fifo {bundle / 'ctl'}: {exc.strerror}") from None
    finally:
        os.close(fd)


def resize(bundle: Path, width: int, height: int) -> None:
    """Resize the container's pty (conmon applies it with TIOCSWINSZ); sizes that fit no winsize are ignored."""
    if 0 < width <= 65535 and 0 < height <= 65535:
        write_ctl(bundle, CTL_RESIZE, height, width)

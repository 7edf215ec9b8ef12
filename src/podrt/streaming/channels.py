"""Kubernetes' channel protocols over WebSocket, sans-IO (wsproto carries the
frames): each message starts with its channel, as a byte (`vN.channel.k8s.io`)
or as an ASCII digit before base64 text (`*base64.channel.k8s.io`).

remotecommand channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize.
v5 adds a close signal: channel 255, its one byte the channel the sender
closed (a client's end of stdin). Port forwarding uses channel 2i for port
i's data and 2i+1 for its errors, each opened by two bytes of the port
number, little-endian.
"""

from __future__ import annotations

import base64
import binascii

import attrs

STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
CLOSE = 255  # v5


class ChannelError(ValueError):
    """A message that is not of the negotiated protocol."""


@attrs.frozen
class Protocol:
    name: str
    version: int  # 1 for the unversioned ones
    base64: bool = False

    @property
    def has_close(self) -> bool:
        return self.version >= 5


# The server's preference, newest first (the kubelet's order).
EXEC_PROTOCOLS = (
    Protocol("v5.channel.k8s.io", 5), Protocol("v4.channel.k8s.io", 4), Protocol("v4.base64.channel.k8s.io", 4, True),
    Protocol("v3.channel.k8s.io", 3), Protocol("v2.channel.k8s.io", 2), Protocol("channel.k8s.io", 1),
    Protocol("base64.channel.k8s.io", 1, True),
)
PORT_FORWARD_PROTOCOLS = (
    Protocol("v4.channel.k8s.io", 4), Protocol("v4.base64.channel.k8s.io", 4, True),
    Protocol("channel.k8s.io", 1), Protocol("base64.channel.k8s.io", 1, True),
)


def choose(offered: list[str], supported: tuple[Protocol, ...] = EXEC_PROTOCOLS) -> Protocol | None:
    """Our most preferred protocol among the client's, None when we share none."""
    wanted = {o.strip() for o in offered}
    return next((p for p in supported if p.name in wanted), None)


def encode(protocol: Protocol, channel: int, data: bytes) -> bytes | str:
    """One WebSocket message: bytes for a binary protocol, text for base64."""
    if protocol.base64:
        if channel > 9:
            raise ChannelError(f"channel {channel} has no digit in {protocol.name}")
        return str(channel) + base64.b64encode(data).decode()
    return bytes([channel]) + data


def decode(protocol: Protocol, message: bytes | str) -> tuple[int, bytes]:
    """(channel, data) of one message."""
    if not message:
        raise ChannelError("an empty message has no channel")
    if protocol.base64:
        text = message if isinstance(message, str) else message.decode("ascii", "replace")
        if text[0] not in "0123456789":  # str.isdigit() takes "²" too
            raise ChannelError(f"{protocol.name} message starts with {text[0]!r}, not a channel digit")
        try:
            return int(text[0]), base64.b64decode(text[1:], validate=True)
        except (binascii.Error, ValueError) as exc:  # ValueError: not ASCII
            raise ChannelError(f"{protocol.name} message is not base64: {exc}") from None
    raw = message.encode() if isinstance(message, str) else message
    return raw[0], raw[1:]


def close_signal(channel: int) -> bytes:
    """v5: the sender will send nothing more on `channel`."""
    return bytes([CLOSE, channel])


def port_prefix(port: int) -> bytes:
    """What opens each port-forward channel."""
    return port.to_bytes(2, "little")

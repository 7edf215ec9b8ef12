"""The WebSocket channel protocols and the streaming tokens, without a network."""

from __future__ import annotations

import pytest

from podrt.errors import ResourceExhausted
from podrt.streaming import channels
from podrt.streaming.tokens import TokenCache

V5, B64 = channels.EXEC_PROTOCOLS[0], channels.Protocol("v4.base64.channel.k8s.io", 4, True)


def test_the_newest_shared_protocol_is_chosen() -> None:
    assert channels.choose(["channel.k8s.io", "v4.channel.k8s.io"]).name == "v4.channel.k8s.io"
    assert channels.choose([" v5.channel.k8s.io"]).has_close
    assert channels.choose(["v9.channel.k8s.io"]) is None
    assert channels.choose(["v5.channel.k8s.io"], channels.PORT_FORWARD_PROTOCOLS) is None


@pytest.mark.parametrize("protocol", [V5, B64], ids=["binary", "base64"])
def test_messages_round_trip(protocol: channels.Protocol) -> None:
    for channel, data in ((channels.STDOUT, b"out\x00\xff"), (channels.STDIN, b""), (channels.RESIZE, b'{"Width":80}')):
        message = channels.encode(protocol, channel, data)
        assert isinstance(message, str) == protocol.base64
        assert channels.decode(protocol, message) == (channel, data)


def test_wire_forms() -> None:
    assert channels.encode(V5, channels.STDERR, b"x") == b"\x02x"
    assert channels.encode(B64, channels.STDOUT, b"hi") == "1aGk="
    assert channels.close_signal(channels.STDIN) == b"\xff\x00"
    assert channels.port_prefix(8080) == b"\x90\x1f"


@pytest.mark.parametrize("protocol, message, match", [
    (V5, b"", "empty"),
    (B64, "xaGk=", "channel digit"),
    (B64, "1not base64!", "not base64"),
])
def test_malformed_messages(protocol: channels.Protocol, message: bytes | str, match: str) -> None:
    with pytest.raises(channels.ChannelError, match=match):
        channels.decode(protocol, message)


def test_tokens_are_single_use_and_expire() -> None:
    now = [0.0]
    cache: TokenCache[str] = TokenCache(ttl=60, limit=2, clock=lambda: now[0])
    first, second = cache.issue("exec a"), cache.issue("exec b")
    assert first != second and len(first) >= 32
    assert cache.take(first) == "exec a"
    assert cache.take(first) is None  # used
    assert cache.take("made-up") is None
    now[0] = 61
    assert cache.take(second) is None  # expired


def test_outstanding_tokens_are_bounded() -> None:
    now = [0.0]
    cache: TokenCache[int] = TokenCache(ttl=60, limit=2, clock=lambda: now[0])
    cache.issue(1), cache.issue(2)
    with pytest.raises(ResourceExhausted):
        cache.issue(3)
    now[0] = 61  # the expired make room
    cache.issue(3)
    assert len(cache) == 1

"""SPDY/3.1 framing without a network: every frame type both ways, frames
split anywhere, header compression state shared across frames (as a peer's
zlib stream is), the draft's dictionary, and malformed input refused."""

from __future__ import annotations

import struct
import zlib

import pytest

from podrt.streaming import spdy

FRAMES: list[spdy.Frame] = [
    spdy.SynStream(1, (("streamtype", "error"), ("port", "8080\0extra")), associated_to=0, priority=3, fin=False),
    spdy.SynStream(3, (("streamtype", "stdin"),), fin=True, unidirectional=True),
    spdy.SynReply(1, (("status", "200"),)),
    spdy.SynReply(3, (), fin=True),
    spdy.HeadersFrame(5, (("x", "y"),), fin=True),
    spdy.Data(1, b"hello"),
    spdy.Data(3, b"", fin=True),
    spdy.Data(7, bytes(range(256)) * 300),
    spdy.RstStream(5, spdy.RstStatus.CANCEL),
    spdy.Settings(((0, 7, 65536), (1, 4, 100)), clear=True),
    spdy.Ping(42),
    spdy.GoAway(9, 0),
    spdy.WindowUpdate(1, 1 << 20),
]


def test_the_dictionary_is_the_drafts() -> None:
    """Its length and Adler-32 (the DICTID a peer's zlib stream names): one wrong byte and no header block inflates."""
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_every_frame_round_trips_in_one_buffer_and_byte_by_byte() -> None:
    sender, whole, split = spdy.Codec(), spdy.Codec(), spdy.Codec()
    wire = b"".join(sender.encode(f) for f in FRAMES)
    assert whole.receive(wire) == FRAMES
    got: list[spdy.Frame] = []
    for n in range(len(wire)):
        got += split.receive(wire[n:n + 1])
    assert got == FRAMES


def test_header_blocks_share_one_compression_context() -> None:
    """A second block refers back to the first: a fresh receiver cannot read it alone."""
    sender = spdy.Codec()
    first = sender.encode(spdy.SynStream(1, (("streamtype", "stdout"),)))
    second = sender.encode(spdy.SynStream(3, (("streamtype", "stdout"),)))
    assert len(second) < len(first)
    receiver = spdy.Codec()
    assert [f.stream_id for f in receiver.receive(first + second)] == [1, 3]
    with pytest.raises(spdy.ProtocolError):
        spdy.Codec().receive(second)


def test_header_lookup() -> None:
    headers = (("streamtype", "data"), ("port", "80\081"))
    assert spdy.header(headers, "port") == "80" and spdy.header(headers, "requestid") is None


def _control(kind: int, body: bytes, version: int = 3, flags: int = 0) -> bytes:
    return struct.pack("!HHB", 0x8000 | version, kind, flags) + len(body).to_bytes(3, "big") + body


@pytest.mark.parametrize("wire, match", [
    (_control(1, b"", version=2), "version 2"),
    (_control(3, b"\0\0\0\1"), "RST_STREAM frame of 4 bytes"),
    (_control(4, b"\0\0\0\2" + b"\0" * 8), "SETTINGS of 2 entries"),
    (_control(2, b"\0\0\0\1" + b"not zlib at all"), "header block"),
])
def test_malformed_frames_are_protocol_errors(wire: bytes, match: str) -> None:
    with pytest.raises(spdy.ProtocolError, match=match):
        spdy.Codec().receive(wire)


def test_a_header_block_may_not_inflate_without_bound() -> None:
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    name = b"n" * (spdy.MAX_HEADER_BLOCK + 10)  # a few hundred compressed bytes
    raw = struct.pack("!II", 1, len(name)) + name + struct.pack("!I", 0)
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    assert len(block) < 1000
    with pytest.raises(spdy.ProtocolError, match="inflates past"):
        spdy.Codec().receive(_control(2, struct.pack("!I", 1) + block))


def test_a_header_block_that_lies_about_its_sizes() -> None:
    deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
    raw = struct.pack("!II", 1, 100) + b"short"
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(spdy.ProtocolError, match="ends inside"):
        spdy.Codec().receive(_control(2, struct.pack("!I", 1) + block))


def test_unknown_control_frames_are_skipped() -> None:
    codec = spdy.Codec()
    assert codec.receive(_control(5, b"noop") + codec.encode(spdy.Ping(1))) == [spdy.Ping(1)]

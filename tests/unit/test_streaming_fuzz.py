"""What a hostile client can send the streaming server, fuzzed without a
network: any bytes make the SPDY session raise ProtocolError or yield
events, the request reader answer or wait, a channel message decode or
raise ChannelError. Anything else would be a traceback on a session."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from podrt.streaming import channels, spdy, upgrade
from podrt.streaming.session import Session

VALID = spdy.Codec().encode(spdy.SynStream(1, (("streamtype", "error"),)))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_any_bytes_after_the_upgrade_end_in_events_or_a_protocol_error(pieces: list[bytes], valid_first: bool) -> None:
    session = Session(client=False)
    try:
        if valid_first:  # past the first frame, where the header compression context is live
            session.receive(VALID)
        for piece in pieces:
            session.receive(piece)
    except spdy.ProtocolError:
        return
    session.data_to_send()  # what it answers is always encodable


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["/exec/t", "/attach/t", "/portforward/t"]))
def test_any_request_is_upgraded_refused_or_waited_for(tail: bytes, path: str) -> None:
    for raw in (tail, f"GET {path} HTTP/1.1\r\n".encode() + tail):
        outcome = upgrade.RequestReader().feed(raw)
        assert outcome is None or isinstance(outcome, (upgrade.SpdyUpgrade, upgrade.WebSocketUpgrade, upgrade.Refusal))
        if isinstance(outcome, upgrade.Refusal):
            assert outcome.response.startswith(b"HTTP/1.1 4")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.text(max_size=40)), st.sampled_from(channels.EXEC_PROTOCOLS))
def test_any_channel_message_decodes_or_is_a_channel_error(message: bytes | str, protocol: channels.Protocol) -> None:
    try:
        number, data = channels.decode(protocol, message)
    except channels.ChannelError:
        return
    assert 0 <= number <= 255 and isinstance(data, bytes)

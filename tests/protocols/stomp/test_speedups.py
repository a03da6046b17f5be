"""The C accelerator against the pure-Python reference: on any input, the same frames, the
same NEED_DATA and the same protocol errors; and MESSAGE tails identical byte for byte.

(The conftest runs this module twice; the comparisons need both, so they build both.)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovecote.adapters.stomp_encoding import MessageEncoder
from dovecote.core.message import Message, RoutingType
from dovecote.protocols._errors import ProtocolError
from dovecote.protocols.stomp import NEED_DATA, Command, Frame, FrameDecoder, FrameLimits, speedups
from dovecote.protocols.stomp import _speedups as c_speedups

COMPARE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = FrameLimits(max_header_bytes=48, max_headers=3, max_body_bytes=16)

pytestmark = pytest.mark.skipif(not speedups.AVAILABLE, reason="the C accelerator is not built")

_PIECES = [
    b"\x00",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b":",
    b"\\",
    b"\\c",
    b"\\n",
    b"\xc3\xa9",
    b"\xff",
    b"content-length:",
    b"content-length:0",
    b"content-length:3",
    b"content-length: 3",
    b"content-length:99999999999999",
    b"destination:/queue/a",
    b"receipt:r-1",
    b"abcdefghijklmnopqrstuvwxyz",
    *(c.value.encode() + b"\n" for c in Command),
    b"SEND\ndestination:/queue/a\ncontent-length:3\n\na\x00b\x00",
    b"SEND\ndestination:/queue/a\npersistent:true\n\nbody\x00",
    b"MESSAGE\nsubscription:0\nmessage-id:ID\\cx\ndestination:/topic/t\n\n\x00",
    b"ACK\nid:7\nid:8\n\n\x00\n\n",
]
STREAM = st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=6)), max_size=24).map(
    b"".join
)


def outcome(
    decoder: FrameDecoder, chunks: Iterable[bytes]
) -> tuple[list[tuple[Command, list[tuple[str, str]], bytes]], tuple[str, str, str] | None, int]:
    """Frames (headers in wire order), the error if any, and what stayed buffered."""
    frames = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while (event := decoder.next_event()) is not NEED_DATA:
                assert isinstance(event, Frame)
                frames.append((event.command, list(event.headers.items()), event.body))
    except ProtocolError as exc:
        return frames, (type(exc).__name__, str(exc), getattr(exc, "code", "")), -1
    return frames, None, decoder.buffered


def both(limits: FrameLimits, version: str) -> tuple[FrameDecoder, FrameDecoder]:
    fast = FrameDecoder(limits, version)
    fast._scan = c_speedups.scan_frame  # (whatever the conftest patched)
    return fast, FrameDecoder(limits, version, accelerated=False)


@COMPARE
@given(
    data=STREAM,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    limits=st.sampled_from([SMALL, FrameLimits()]),
    version=st.sampled_from(["1.0", "1.1", "1.2"]),
)
def test_the_accelerated_decoder_answers_as_the_reference(
    data: bytes, cuts: list[int], limits: FrameLimits, version: str
) -> None:
    marks = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)], strict=True)]
    fast, reference = both(limits, version)
    assert outcome(fast, [data]) == outcome(reference, [data])
    fast, reference = both(limits, version)
    assert outcome(fast, chunks) == outcome(reference, chunks)


def test_the_accelerated_decoder_takes_plain_frames_itself() -> None:
    """It is not merely deferring: a plain frame comes out of scan_frame, not _parse."""
    wire = b"\nSEND\ndestination:/queue/a\ncontent-length:2\nx:1\nx:2\n\nhi\x00rest"
    found = c_speedups.scan_frame(wire, 0, 1024, 10, 1024, {b"SEND": Command.SEND})
    assert found == (
        Command.SEND,
        {"destination": "/queue/a", "content-length": "2", "x": "1"},
        b"hi",
        wire.index(b"rest"),
    )
    for unusual in (
        b"SEND\r\ndestination:a\r\n\r\n\x00",  # CRs
        b"SEND\ndestination:a\\cb\n\n\x00",  # an escape
        b"SEND\ndestination:\xc3\xa9\n\n\x00",  # UTF-8
        b"SEND\ncontent-length: 0\n\n\x00",  # padded length
        b"SEND\ndestination:a\n\nno end",  # incomplete
        b"SEND\nbroken\n\n\x00",  # no colon
    ):
        assert c_speedups.scan_frame(unusual, 0, 1024, 10, 1024, {b"SEND": Command.SEND}) is None


_TEXT = st.text(
    alphabet=st.sampled_from(["a", "Z", "0", ":", "\n", "\r", "\\", "é", "€", "𝄞", " ", "-"]),
    max_size=12,
)


@COMPARE
@given(
    message_id=_TEXT,
    address=_TEXT.filter(bool),
    multicast=st.booleans(),
    body=st.binary(max_size=40),
    properties=st.dictionaries(_TEXT.filter(bool), _TEXT, max_size=4),
    persistent=st.booleans(),
    priority=st.integers(min_value=0, max_value=9),
    expires=st.integers(min_value=0, max_value=2**62),
    timestamp=st.integers(min_value=0, max_value=2**62),
    version=st.sampled_from(["1.0", "1.1", "1.2"]),
)
def test_the_accelerated_tail_is_the_reference_tail(
    message_id: str,
    address: str,
    multicast: bool,
    body: bytes,
    properties: dict[str, str],
    persistent: bool,
    priority: int,
    expires: int,
    timestamp: int,
    version: str,
) -> None:
    routing = RoutingType.MULTICAST if multicast else RoutingType.ANYCAST
    message = Message(
        message_id, address, routing, body, properties, persistent, priority, expires, timestamp
    )
    fast = MessageEncoder()
    fast._encode = c_speedups.encode_tail  # (whatever the conftest patched)
    reference = MessageEncoder()
    reference._encode = None
    assert fast.tail(message, version, "c1", cache=False) == reference.tail(
        message, version, "c1", cache=False
    )


@pytest.mark.skipif(
    bool(os.environ.get("DOVECOTE_NO_SPEEDUPS")) or shutil.which("cc") is None,
    reason="no C compiler here, or the accelerator is turned off",
)
def test_the_accelerator_is_built_where_a_compiler_is() -> None:
    """So that a broken build (it is optional: pip only warns) does not go unnoticed."""
    assert speedups.AVAILABLE

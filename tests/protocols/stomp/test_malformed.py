"""STOMP rejection: a table of malformed input and the error code it must raise.

Each row is fed whole and byte by byte; both must raise the same ``code``. Rows marked
incomplete never finish a frame: the decoder must refuse them anyway, so a peer cannot make
us buffer without bound (mosquitto ``13-malformed-*.py``).
"""

from __future__ import annotations

import pytest

from dovecote.protocols._errors import FrameTooLarge, ProtocolError, RemoteProtocolError
from dovecote.protocols.stomp import NEED_DATA, Command, Frame, FrameDecoder, FrameLimits

DEFAULT = FrameLimits()
SMALL_HEADER = FrameLimits(max_header_bytes=32)
FEW_HEADERS = FrameLimits(max_headers=2)
SMALL_BODY = FrameLimits(max_body_bytes=4)

# (id, version, limits, input, expected code)
MALFORMED: list[tuple[str, str, FrameLimits, bytes, str]] = [
    ("unknown-command", "1.2", DEFAULT, b"FOO\n\n\x00", "unknown-command"),
    ("lowercase-command", "1.2", DEFAULT, b"send\ndestination:/q\n\n\x00", "unknown-command"),
    ("command-with-trailing-space", "1.2", DEFAULT, b"SEND \n\n\x00", "unknown-command"),
    ("server-command-spelled-wrong", "1.2", DEFAULT, b"CONNECTD\n\n\x00", "unknown-command"),
    ("bare-nul", "1.2", DEFAULT, b"\x00", "malformed"),
    ("nul-before-blank-line", "1.2", DEFAULT, b"SEND\ndestination:/q\x00", "malformed"),
    ("nul-in-header-value", "1.2", DEFAULT, b"SEND\nfoo:b\x00r\n\n\x00", "malformed"),
    ("nul-in-command-line", "1.2", DEFAULT, b"SE\x00ND\n\n\x00", "malformed"),
    ("header-without-colon", "1.2", DEFAULT, b"SEND\ndestination\n\n\x00", "malformed"),
    ("header-without-colon-in-1.0", "1.0", DEFAULT, b"SEND\nfoo\n\n\x00", "malformed"),
    ("non-utf8-header-value", "1.2", DEFAULT, b"SEND\ndestination:/q\xff\n\n\x00", "malformed"),
    ("non-utf8-header-name", "1.2", DEFAULT, b"SEND\n\xc3:x\n\n\x00", "malformed"),
    ("non-utf8-command", "1.2", DEFAULT, b"SEN\xc3D\n\n\x00", "malformed"),
    ("content-length-negative", "1.2", DEFAULT, b"SEND\ncontent-length:-1\n\n\x00", "malformed"),
    ("content-length-non-digit", "1.2", DEFAULT, b"SEND\ncontent-length:abc\n\n\x00", "malformed"),
    ("content-length-empty", "1.2", DEFAULT, b"SEND\ncontent-length:\n\n\x00", "malformed"),
    ("content-length-fraction", "1.2", DEFAULT, b"SEND\ncontent-length:1.5\n\nx\x00", "malformed"),
    ("content-length-hex", "1.2", DEFAULT, b"SEND\ncontent-length:0x1\n\nx\x00", "malformed"),
    (
        "content-length-unicode-digit",
        "1.2",
        DEFAULT,
        "SEND\ncontent-length:\u0661\n\nx\x00".encode(),
        "malformed",
    ),
    (
        "content-length-thirteen-digits",
        "1.2",
        DEFAULT,
        b"SEND\ncontent-length:9999999999999\n\n\x00",
        "malformed",
    ),
    (
        "content-length-huge-but-short",
        "1.2",
        DEFAULT,
        b"SEND\ncontent-length:999999999999\n\n",
        "frame-too-large",
    ),
    (
        "content-length-body-not-followed-by-nul",
        "1.2",
        DEFAULT,
        b"SEND\ncontent-length:2\n\nabc\x00",
        "malformed",
    ),
    (
        "content-length-zero-but-body",
        "1.2",
        DEFAULT,
        b"SEND\ncontent-length:0\n\nx\x00",
        "malformed",
    ),
    (
        "header-block-too-large-incomplete",
        "1.2",
        SMALL_HEADER,
        b"SEND\nfoo:" + b"x" * 40,
        "frame-too-large",
    ),
    (
        "header-block-too-large-complete",
        "1.2",
        SMALL_HEADER,
        b"SEND\nfoo:" + b"x" * 40 + b"\n\n\x00",
        "frame-too-large",
    ),
    (
        "header-block-too-large-crlf",
        "1.2",
        SMALL_HEADER,
        b"SEND\r\nfoo:" + b"x" * 40 + b"\r\n\r\n\x00",
        "frame-too-large",
    ),
    (
        "command-line-too-large-incomplete",
        "1.2",
        SMALL_HEADER,
        b"S" * 40,
        "frame-too-large",
    ),
    ("too-many-headers", "1.2", FEW_HEADERS, b"SEND\na:1\nb:2\nc:3\n\n\x00", "frame-too-large"),
    (
        "too-many-headers-even-if-repeated",
        "1.2",
        FEW_HEADERS,
        b"SEND\na:1\na:2\na:3\n\n\x00",
        "frame-too-large",
    ),
    (
        "body-too-large-content-length-incomplete",
        "1.2",
        SMALL_BODY,
        b"SEND\ncontent-length:5\n\n",
        "frame-too-large",
    ),
    (
        "body-too-large-content-length-complete",
        "1.2",
        SMALL_BODY,
        b"SEND\ncontent-length:5\n\n12345\x00",
        "frame-too-large",
    ),
    (
        "body-too-large-no-content-length-incomplete",
        "1.2",
        SMALL_BODY,
        b"SEND\n\n12345",
        "frame-too-large",
    ),
    (
        "body-too-large-no-content-length-complete",
        "1.2",
        SMALL_BODY,
        b"SEND\n\n12345\x00",
        "frame-too-large",
    ),
    ("undefined-escape-tab-1.2", "1.2", DEFAULT, b"SEND\nfoo:a\\tb\n\n\x00", "bad-escape"),
    ("undefined-escape-in-name-1.2", "1.2", DEFAULT, b"SEND\nf\\to:x\n\n\x00", "bad-escape"),
    ("trailing-backslash-1.2", "1.2", DEFAULT, b"SEND\nfoo:ab\\\n\n\x00", "bad-escape"),
    ("escaped-cr-undefined-in-1.1", "1.1", DEFAULT, b"SEND\nfoo:a\\rb\n\n\x00", "bad-escape"),
    ("undefined-escape-tab-1.1", "1.1", DEFAULT, b"MESSAGE\nfoo:\\t\n\n\x00", "bad-escape"),
]

CASES = [
    pytest.param(version, limits, data, code, id=name)
    for name, version, limits, data, code in MALFORMED
]


def feed_whole(decoder: FrameDecoder, data: bytes) -> None:
    decoder.receive_data(data)
    while decoder.next_event() is not NEED_DATA:
        pass


def feed_bytes(decoder: FrameDecoder, data: bytes) -> None:
    for i in range(len(data)):
        decoder.receive_data(data[i : i + 1])
        while decoder.next_event() is not NEED_DATA:
            pass


@pytest.mark.parametrize(("version", "limits", "data", "code"), CASES)
def test_malformed_whole(version: str, limits: FrameLimits, data: bytes, code: str) -> None:
    decoder = FrameDecoder(limits, version)
    with pytest.raises(RemoteProtocolError) as info:
        feed_whole(decoder, data)
    assert info.value.code == code
    assert (type(info.value) is FrameTooLarge) == (code == "frame-too-large")


@pytest.mark.parametrize(("version", "limits", "data", "code"), CASES)
def test_malformed_byte_by_byte(version: str, limits: FrameLimits, data: bytes, code: str) -> None:
    decoder = FrameDecoder(limits, version)
    with pytest.raises(RemoteProtocolError) as info:
        feed_bytes(decoder, data)
    assert info.value.code == code


@pytest.mark.parametrize(("version", "limits", "data", "code"), CASES)
def test_malformed_after_a_good_frame(
    version: str, limits: FrameLimits, data: bytes, code: str
) -> None:
    decoder = FrameDecoder(limits, version)
    decoder.receive_data(b"BEGIN\ntransaction:t\n\n\x00\n" + data)
    assert decoder.next_event() == Frame(Command.BEGIN, {"transaction": "t"})
    with pytest.raises(RemoteProtocolError) as info:
        feed_whole(decoder, b"")
    assert info.value.code == code


@pytest.mark.parametrize(("version", "limits", "data", "code"), CASES)
def test_decoder_refuses_input_after_error(
    version: str, limits: FrameLimits, data: bytes, code: str
) -> None:
    decoder = FrameDecoder(limits, version)
    with pytest.raises(RemoteProtocolError):
        feed_whole(decoder, data)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.code == "broken"
    with pytest.raises(RemoteProtocolError) as info:
        decoder.receive_data(b"DISCONNECT\n\n\x00")
    assert info.value.code == "broken"
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.code == "broken"


def test_error_carries_a_peer_safe_message() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"FOO\n\n\x00")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_event()
    assert info.value.message == "unknown command 'FOO'"
    assert str(info.value) == "unknown command 'FOO'"
    assert isinstance(info.value, ProtocolError)


def test_frame_too_large_names_the_limit() -> None:
    decoder = FrameDecoder(SMALL_BODY)
    decoder.receive_data(b"SEND\ncontent-length:5\n\n")
    with pytest.raises(FrameTooLarge) as info:
        decoder.next_event()
    assert info.value.message == "frame body exceeds the limit of 4 bytes"


# --- limits are exact, and the same whether input arrives whole or split ----------------------


def decode_both_ways(limits: FrameLimits, data: bytes) -> tuple[list[Frame], list[Frame]]:
    whole = FrameDecoder(limits)
    whole.receive_data(data)
    frames_whole = []
    while (event := whole.next_event()) is not NEED_DATA:
        assert isinstance(event, Frame)
        frames_whole.append(event)
    split = FrameDecoder(limits)
    frames_split = []
    for i in range(len(data)):
        split.receive_data(data[i : i + 1])
        while (event := split.next_event()) is not NEED_DATA:
            assert isinstance(event, Frame)
            frames_split.append(event)
    return frames_whole, frames_split


@pytest.mark.parametrize(
    ("data", "value"),
    [
        pytest.param(b"SEND\nfoo:" + b"x" * 23 + b"\n\n\x00", "x" * 23, id="lf"),
        pytest.param(b"SEND\r\nfoo:" + b"x" * 21 + b"\r\n\r\n\x00", "x" * 21, id="crlf"),
        pytest.param(
            b"SEND\nfoo:" + b"x" * 23 + b"\n\r\n\x00", "x" * 23, id="lf-then-crlf-blank-line"
        ),
    ],
)
def test_header_block_of_exactly_the_limit_is_accepted_whole_and_split(
    data: bytes, value: str
) -> None:
    # Regression: split input was refused as soon as the blank line's first LF pushed the
    # buffered bytes one past the limit, while the same frame fed whole was accepted.
    frame = Frame(Command.SEND, {"foo": value})
    assert decode_both_ways(SMALL_HEADER, data) == ([frame], [frame])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"SEND\nfoo:" + b"x" * 24 + b"\n\n\x00", id="lf"),
        pytest.param(b"SEND\r\nfoo:" + b"x" * 22 + b"\r\n\r\n\x00", id="crlf"),
    ],
)
def test_header_block_one_past_the_limit_is_refused_whole_and_split(data: bytes) -> None:
    with pytest.raises(FrameTooLarge):
        feed_whole(FrameDecoder(SMALL_HEADER), data)
    with pytest.raises(FrameTooLarge):
        feed_bytes(FrameDecoder(SMALL_HEADER), data)


def octets_accepted_until_too_large(decoder: FrameDecoder, octet: bytes) -> int:
    """Feed ``octet`` repeatedly; return how many were taken before FrameTooLarge."""
    for accepted in range(1000):
        try:
            decoder.receive_data(octet)
            event = decoder.next_event()
        except FrameTooLarge:
            return accepted
        assert event is NEED_DATA
    pytest.fail("the decoder buffered 1000 octets without refusing them")


def test_incomplete_header_block_is_refused_as_soon_as_it_cannot_fit() -> None:
    decoder = FrameDecoder(SMALL_HEADER)
    accepted = octets_accepted_until_too_large(decoder, b"a")
    # 32 octets of header plus the two octets a blank line may already have begun with.
    assert accepted == 34


def test_body_of_exactly_the_limit_is_accepted_whole_and_split() -> None:
    frame = Frame(Command.SEND, {}, b"1234")
    assert decode_both_ways(SMALL_BODY, b"SEND\n\n1234\x00") == ([frame], [frame])
    framed = Frame(Command.SEND, {"content-length": "4"}, b"1\x0034")
    assert decode_both_ways(SMALL_BODY, b"SEND\ncontent-length:4\n\n1\x0034\x00") == (
        [framed],
        [framed],
    )


def test_body_one_past_the_limit_without_content_length_is_refused_when_fed_whole() -> None:
    # Regression: fed whole, the NUL was found first and the size never checked.
    decoder = FrameDecoder(SMALL_BODY)
    decoder.receive_data(b"SEND\n\n12345\x00")
    with pytest.raises(FrameTooLarge):
        decoder.next_event()


def test_incomplete_body_is_refused_as_soon_as_it_exceeds_the_limit() -> None:
    decoder = FrameDecoder(SMALL_BODY)
    decoder.receive_data(b"SEND\n\n")
    assert decoder.next_event() is NEED_DATA
    assert octets_accepted_until_too_large(decoder, b"b") == 4


def test_nul_in_header_is_refused_whole_as_it_is_split() -> None:
    # Regression: a NUL in the header block was refused when the block arrived in pieces
    # ("frame ended before its header block") but kept in the value when it arrived whole.
    data = b"SEND\nfoo:b\x00r\n\n\x00"
    with pytest.raises(RemoteProtocolError) as whole:
        feed_whole(FrameDecoder(), data)
    with pytest.raises(RemoteProtocolError) as split:
        feed_bytes(FrameDecoder(), data)
    assert whole.value.code == "malformed"
    assert split.value.code == "malformed"
    assert whole.value.message == "frame ended before its header block"
    assert split.value.message == "frame ended before its header block"


def test_header_count_of_exactly_the_limit_is_accepted() -> None:
    frame = Frame(Command.SEND, {"a": "1", "b": "2"})
    assert decode_both_ways(FEW_HEADERS, b"SEND\na:1\nb:2\n\n\x00") == ([frame], [frame])

"""STOMP codec: one table of (frames, wire bytes), used in both directions.

``CANONICAL`` rows are exact both ways: decoding the bytes yields the frames, and encoding the
frames (``encode_frame``) yields the bytes. ``DECODE_ONLY`` rows are inputs a peer may send that
we never produce (CRLF, no content-length, repeated headers, heart-beat EOLs, ...).

Every fixture is fed (a) whole, (b) byte by byte with ``next_event`` after each byte, and
(c) followed by the first bytes of another frame, which must stay buffered (h11
``tests/test_io.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dovecote.protocols.stomp import NEED_DATA, Command, Frame, FrameDecoder, encode_frame
from dovecote.protocols.stomp.frames import encode_headers, escape, unescape

C = Command

# (id, version, frame, exact wire bytes)
CANONICAL: list[tuple[str, str, Frame, bytes]] = [
    (
        "send-text-body",
        "1.2",
        Frame(C.SEND, {"destination": "/queue/a", "content-length": "5"}, b"hello"),
        b"SEND\ndestination:/queue/a\ncontent-length:5\n\nhello\x00",
    ),
    ("disconnect-empty", "1.2", Frame(C.DISCONNECT), b"DISCONNECT\n\n\x00"),
    (
        "disconnect-receipt",
        "1.2",
        Frame(C.DISCONNECT, {"receipt": "77"}),
        b"DISCONNECT\nreceipt:77\n\n\x00",
    ),
    (
        "connect-never-escaped-in-1.2",
        "1.2",
        Frame(
            C.CONNECT,
            {
                "accept-version": "1.0,1.1,1.2",
                "host": "broker",
                "login": "a:b",
                "passcode": "p\\c\\n\\t",
            },
        ),
        b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:broker\nlogin:a:b\npasscode:p\\c\\n\\t\n\n\x00",
    ),
    (
        "stomp-command-never-escaped",
        "1.2",
        Frame(C.STOMP, {"accept-version": "1.2", "host": "/", "login": "x\\cy"}),
        b"STOMP\naccept-version:1.2\nhost:/\nlogin:x\\cy\n\n\x00",
    ),
    (
        "connected-never-escaped",
        "1.2",
        Frame(
            C.CONNECTED,
            {"version": "1.2", "heart-beat": "0,0", "server": "dovecote/0.1", "session": "a\\b:c"},
        ),
        b"CONNECTED\nversion:1.2\nheart-beat:0,0\nserver:dovecote/0.1\nsession:a\\b:c\n\n\x00",
    ),
    (
        "message-escaped-1.2",
        "1.2",
        Frame(
            C.MESSAGE,
            {
                "subscription": "0",
                "message-id": "m:1",
                "destination": "/topic/a",
                "x:y": "line1\nline2\\tail\r",
            },
        ),
        b"MESSAGE\nsubscription:0\nmessage-id:m\\c1\ndestination:/topic/a\n"
        b"x\\cy:line1\\nline2\\\\tail\\r\n\n\x00",
    ),
    (
        "message-escaped-1.1",
        "1.1",
        Frame(
            C.MESSAGE,
            {"subscription": "0", "message-id": "m:1", "x:y": "line1\nline2\\tail"},
        ),
        b"MESSAGE\nsubscription:0\nmessage-id:m\\c1\nx\\cy:line1\\nline2\\\\tail\n\n\x00",
    ),
    (
        "backslash-in-header-name-1.2",
        "1.2",
        Frame(C.SEND, {"destination": "/queue/a", "a\\b": "v"}),
        b"SEND\ndestination:/queue/a\na\\\\b:v\n\n\x00",
    ),
    (
        "escapes-are-literal-in-1.0",
        "1.0",
        Frame(C.MESSAGE, {"destination": "/topic/a", "x\\cy": "a\\nb", "note": "a:b"}),
        b"MESSAGE\ndestination:/topic/a\nx\\cy:a\\nb\nnote:a:b\n\n\x00",
    ),
    (
        "binary-body-with-nuls",
        "1.2",
        Frame(
            C.SEND,
            {"destination": "/queue/bin", "content-length": "6"},
            b"\x00\x01\n\n\x00\xff",
        ),
        b"SEND\ndestination:/queue/bin\ncontent-length:6\n\n\x00\x01\n\n\x00\xff\x00",
    ),
    (
        "utf8-headers-and-body",
        "1.2",
        Frame(
            C.SEND,
            {"destination": "/queue/ünïcödé", "emoji": "🐦", "content-length": "3"},
            "€".encode(),
        ),
        "SEND\ndestination:/queue/ünïcödé\nemoji:🐦\ncontent-length:3\n\n€\x00".encode(),
    ),
    (
        "empty-header-value",
        "1.2",
        Frame(C.SEND, {"destination": "/queue/a", "empty": ""}),
        b"SEND\ndestination:/queue/a\nempty:\n\n\x00",
    ),
    (
        "explicit-content-length-zero",
        "1.2",
        Frame(C.SEND, {"destination": "/queue/a", "content-length": "0"}),
        b"SEND\ndestination:/queue/a\ncontent-length:0\n\n\x00",
    ),
    (
        "header-order-kept",
        "1.2",
        Frame(C.SEND, {"zeta": "1", "alpha": "2", "destination": "/queue/a", "mu": "3"}),
        b"SEND\nzeta:1\nalpha:2\ndestination:/queue/a\nmu:3\n\n\x00",
    ),
    (
        "subscribe",
        "1.2",
        Frame(C.SUBSCRIBE, {"id": "0", "destination": "/topic/prices.>", "ack": "client"}),
        b"SUBSCRIBE\nid:0\ndestination:/topic/prices.>\nack:client\n\n\x00",
    ),
    ("unsubscribe", "1.2", Frame(C.UNSUBSCRIBE, {"id": "0"}), b"UNSUBSCRIBE\nid:0\n\n\x00"),
    (
        "ack-in-transaction",
        "1.2",
        Frame(C.ACK, {"id": "5", "transaction": "tx1"}),
        b"ACK\nid:5\ntransaction:tx1\n\n\x00",
    ),
    ("nack", "1.2", Frame(C.NACK, {"id": "6"}), b"NACK\nid:6\n\n\x00"),
    ("begin", "1.2", Frame(C.BEGIN, {"transaction": "tx1"}), b"BEGIN\ntransaction:tx1\n\n\x00"),
    ("commit", "1.2", Frame(C.COMMIT, {"transaction": "tx1"}), b"COMMIT\ntransaction:tx1\n\n\x00"),
    ("abort", "1.2", Frame(C.ABORT, {"transaction": "tx1"}), b"ABORT\ntransaction:tx1\n\n\x00"),
    ("receipt", "1.2", Frame(C.RECEIPT, {"receipt-id": "r-1"}), b"RECEIPT\nreceipt-id:r-1\n\n\x00"),
    (
        "error-with-body",
        "1.2",
        Frame(
            C.ERROR,
            {"message": "malformed frame", "content-type": "text/plain", "content-length": "7"},
            b"details",
        ),
        b"ERROR\nmessage:malformed frame\ncontent-type:text/plain\ncontent-length:7\n\ndetails\x00",
    ),
]

# (id, version, wire bytes a peer may send, the frames they decode to)
DECODE_ONLY: list[tuple[str, str, bytes, list[Frame]]] = [
    (
        "crlf-line-endings",
        "1.2",
        b"SEND\r\ndestination:/queue/a\r\n\r\nhi\x00",
        [Frame(C.SEND, {"destination": "/queue/a"}, b"hi")],
    ),
    (
        "crlf-blank-line-right-after-command",
        "1.2",
        b"DISCONNECT\r\n\r\n\x00",
        [Frame(C.DISCONNECT)],
    ),
    (
        "mixed-lf-and-crlf",
        "1.2",
        b"SEND\ndestination:/queue/a\r\nfoo:bar\n\r\nx\x00",
        [Frame(C.SEND, {"destination": "/queue/a", "foo": "bar"}, b"x")],
    ),
    (
        "no-content-length-body-ends-at-nul",
        "1.2",
        b"SEND\ndestination:/queue/a\n\nhello\nworld\x00",
        [Frame(C.SEND, {"destination": "/queue/a"}, b"hello\nworld")],
    ),
    (
        "repeated-header-first-wins",
        "1.2",
        b"MESSAGE\nfoo:1\nfoo:2\nbar:x\nfoo:3\n\n\x00",
        [Frame(C.MESSAGE, {"foo": "1", "bar": "x"})],
    ),
    (
        "repeated-content-length-first-wins",
        "1.2",
        b"SEND\ncontent-length:2\ncontent-length:5\n\nab\x00",
        [Frame(C.SEND, {"content-length": "2"}, b"ab")],
    ),
    (
        "repeated-escaped-header-first-wins",
        "1.2",
        b"SEND\na\\cb:1\na\\cb:2\n\n\x00",
        [Frame(C.SEND, {"a:b": "1"})],
    ),
    (
        "raw-colon-in-value-tolerated",
        "1.2",
        b"SEND\na:b:2\n\n\x00",
        [Frame(C.SEND, {"a": "b:2"})],
    ),
    (
        "heart-beats-between-frames",
        "1.2",
        b"\n\r\n\rSEND\n\n\x00\n\n\r\nDISCONNECT\n\n\x00\n",
        [Frame(C.SEND), Frame(C.DISCONNECT)],
    ),
    ("only-heart-beats", "1.2", b"\n\n\r\n\r\n", []),
    (
        "two-frames-back-to-back",
        "1.2",
        b"SEND\ndestination:/queue/a\ncontent-length:1\n\n\x00\x00SEND\ndestination:/queue/b\n\nB\x00",
        [
            Frame(C.SEND, {"destination": "/queue/a", "content-length": "1"}, b"\x00"),
            Frame(C.SEND, {"destination": "/queue/b"}, b"B"),
        ],
    ),
    (
        "escapes-decoded-in-1.1",
        "1.1",
        b"MESSAGE\nx\\cy:a\\nb\\\\c\n\n\x00",
        [Frame(C.MESSAGE, {"x:y": "a\nb\\c"})],
    ),
    (
        "escapes-literal-in-1.0-even-undefined-ones",
        "1.0",
        b"MESSAGE\nx:a\\tb\\rc\\\n\n\x00",
        [Frame(C.MESSAGE, {"x": "a\\tb\\rc\\"})],
    ),
    (
        "connect-not-unescaped-even-undefined-escapes",
        "1.2",
        b"CONNECT\nlogin:a\\tb\npasscode:\\\n\n\x00",
        [Frame(C.CONNECT, {"login": "a\\tb", "passcode": "\\"})],
    ),
    (
        "whitespace-in-headers-kept",
        "1.2",
        b"SEND\n foo : bar \n\n\x00",
        [Frame(C.SEND, {" foo ": " bar "})],
    ),
    (
        "content-length-padded-with-spaces",
        "1.2",
        b"SEND\ncontent-length: 3 \n\nabc\x00",
        [Frame(C.SEND, {"content-length": " 3 "}, b"abc")],
    ),
    (
        "content-length-body-holds-blank-line-and-eol",
        "1.2",
        b"SEND\ncontent-length:4\n\n\n\n\r\n\x00",
        [Frame(C.SEND, {"content-length": "4"}, b"\n\n\r\n")],
    ),
    (
        "utf8-header-without-content-length",
        "1.2",
        "MESSAGE\nname:Grüße\n\nbody\x00".encode(),
        [Frame(C.MESSAGE, {"name": "Grüße"}, b"body")],
    ),
]

# A frame that starts after each fixture and is not complete yet: it must stay buffered.
TRAIL = b"SEND\ndestination:/queue/next\n\npart"
TRAIL_REST = b"ial\x00"
TRAIL_FRAME = Frame(C.SEND, {"destination": "/queue/next"}, b"partial")

CASES = [
    pytest.param(version, wire, [frame], id=f"{name}") for name, version, frame, wire in CANONICAL
] + [pytest.param(version, wire, frames, id=name) for name, version, wire, frames in DECODE_ONLY]


def drain(decoder: FrameDecoder) -> list[Frame]:
    """Call next_event until NEED_DATA; return the frames."""
    frames = []
    while True:
        event = decoder.next_event()
        if event is NEED_DATA:
            return frames
        assert isinstance(event, Frame)
        frames.append(event)


def ordered(frames: Sequence[Frame]) -> list[tuple[Command, list[tuple[str, str]], bytes]]:
    """Frames with headers as an ordered list: Frame equality ignores header order."""
    return [(f.command, list(f.headers.items()), f.body) for f in frames]


# --- (a) whole, (b) byte by byte, (c) with trailing bytes --------------------------------------


@pytest.mark.parametrize(("version", "wire", "frames"), CASES)
def test_decode_whole(version: str, wire: bytes, frames: list[Frame]) -> None:
    decoder = FrameDecoder(version=version)
    decoder.receive_data(wire)
    assert decoder.buffered == len(wire)
    decoded = drain(decoder)
    assert decoded == frames
    assert ordered(decoded) == ordered(frames)
    assert decoder.buffered == 0


@pytest.mark.parametrize(("version", "wire", "frames"), CASES)
def test_decode_byte_by_byte(version: str, wire: bytes, frames: list[Frame]) -> None:
    decoder = FrameDecoder(version=version)
    decoded: list[Frame] = []
    for i in range(len(wire)):
        decoder.receive_data(wire[i : i + 1])
        decoded.extend(drain(decoder))
    assert decoded == frames
    assert ordered(decoded) == ordered(frames)
    assert decoder.buffered == 0


@pytest.mark.parametrize(("version", "wire", "frames"), CASES)
def test_decode_with_trailing_bytes(version: str, wire: bytes, frames: list[Frame]) -> None:
    decoder = FrameDecoder(version=version)
    decoder.receive_data(wire + TRAIL)
    decoded = drain(decoder)
    assert ordered(decoded) == ordered(frames)
    assert decoder.buffered == len(TRAIL)
    # The buffered bytes are intact: completing them yields the next frame.
    decoder.receive_data(TRAIL_REST)
    assert drain(decoder) == [TRAIL_FRAME]
    assert decoder.buffered == 0


@pytest.mark.parametrize(("version", "wire", "frames"), CASES)
def test_decode_trailing_bytes_byte_by_byte(version: str, wire: bytes, frames: list[Frame]) -> None:
    stream = wire + TRAIL
    decoder = FrameDecoder(version=version)
    decoded: list[Frame] = []
    for i in range(len(stream)):
        decoder.receive_data(stream[i : i + 1])
        decoded.extend(drain(decoder))
    assert ordered(decoded) == ordered(frames)
    assert decoder.buffered == len(TRAIL)


@pytest.mark.parametrize(
    ("version", "frame", "wire"),
    [pytest.param(version, frame, wire, id=name) for name, version, frame, wire in CANONICAL],
)
def test_encode_canonical(version: str, frame: Frame, wire: bytes) -> None:
    assert encode_frame(frame, version) == wire


# --- encoding details ---------------------------------------------------------------------------


def test_encode_adds_content_length_for_non_empty_body() -> None:
    frame = Frame(C.SEND, {"destination": "/queue/a"}, b"a\x00b")
    assert encode_frame(frame) == b"SEND\ndestination:/queue/a\ncontent-length:3\n\na\x00b\x00"


def test_encode_adds_no_content_length_for_empty_body() -> None:
    assert encode_frame(Frame(C.SEND, {"destination": "/queue/a"})) == (
        b"SEND\ndestination:/queue/a\n\n\x00"
    )


def test_encode_defaults_to_1_2_escaping() -> None:
    assert encode_frame(Frame(C.MESSAGE, {"a": "\r"})) == b"MESSAGE\na:\\r\n\n\x00"


def test_encode_1_1_leaves_carriage_return_raw() -> None:
    assert encode_frame(Frame(C.MESSAGE, {"a": "x\ry"}), "1.1") == b"MESSAGE\na:x\ry\n\n\x00"


def test_encode_headers_unescaped_ignores_version() -> None:
    assert encode_headers({"a:b": "c\nd"}, "1.2", escaped=False) == b"a:b:c\nd\n"


@pytest.mark.parametrize(
    ("version", "raw", "escaped"),
    [
        pytest.param("1.2", "a\\b:c\nd\re", "a\\\\b\\cc\\nd\\re", id="1.2-all-four"),
        pytest.param("1.1", "a\\b:c\nd\re", "a\\\\b\\cc\\nd\re", id="1.1-no-cr"),
        pytest.param("1.0", "a\\b:c\nd\re", "a\\b:c\nd\re", id="1.0-nothing"),
        pytest.param("1.2", "plain", "plain", id="1.2-plain"),
        pytest.param("1.2", "", "", id="1.2-empty"),
        pytest.param("1.2", "\\\\", "\\\\\\\\", id="1.2-double-backslash"),
    ],
)
def test_escape(version: str, raw: str, escaped: str) -> None:
    assert escape(raw, version) == escaped
    if version != "1.0":
        assert unescape(escaped, version) == raw


@pytest.mark.parametrize(
    ("version", "escaped", "raw"),
    [
        pytest.param("1.2", "\\r\\n\\c\\\\", "\r\n:\\", id="1.2"),
        pytest.param("1.1", "\\n\\c\\\\", "\n:\\", id="1.1"),
        pytest.param("1.0", "\\t\\r\\", "\\t\\r\\", id="1.0-literal"),
        pytest.param("1.2", "\\\\n", "\\n", id="escaped-backslash-then-n"),
    ],
)
def test_unescape(version: str, escaped: str, raw: str) -> None:
    assert unescape(escaped, version) == raw


# --- buffering ----------------------------------------------------------------------------------


def test_buffered_counts_partial_frame_and_need_data_consumes_nothing() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"SEND\ndestination:/q")
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == 19
    decoder.receive_data(b"\n\nbody")
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == 25
    decoder.receive_data(b"\x00")
    assert decoder.next_event() == Frame(C.SEND, {"destination": "/q"}, b"body")
    assert decoder.buffered == 0


def test_content_length_body_waits_for_its_nul() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"SEND\ncontent-length:3\n\nabc")
    assert decoder.next_event() is NEED_DATA
    assert decoder.buffered == 26
    decoder.receive_data(b"\x00")
    assert decoder.next_event() == Frame(C.SEND, {"content-length": "3"}, b"abc")


def test_frames_are_returned_one_per_call() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"BEGIN\ntransaction:1\n\n\x00COMMIT\ntransaction:1\n\n\x00")
    assert decoder.next_event() == Frame(C.BEGIN, {"transaction": "1"})
    assert decoder.buffered == 23
    assert decoder.next_event() == Frame(C.COMMIT, {"transaction": "1"})
    assert decoder.buffered == 0
    assert decoder.next_event() is NEED_DATA


def test_many_frames_in_odd_chunks_survive_buffer_compaction() -> None:
    # Over 64 KiB passes through one decoder in chunks that never align with frames, so the
    # consumed prefix of the buffer is dropped several times along the way.
    frames = [
        Frame(C.SEND, {"destination": f"/queue/{i}", "content-length": "1000"}, bytes([i]) * 1000)
        for i in range(200)
    ]
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    decoded: list[Frame] = []
    for start in range(0, len(stream), 777):
        decoder.receive_data(stream[start : start + 777])
        decoded.extend(drain(decoder))
    assert decoded == frames
    assert decoder.buffered == 0


def test_version_switch_applies_to_next_frame() -> None:
    decoder = FrameDecoder(version="1.0")
    decoder.receive_data(b"MESSAGE\na:x\\cy\n\n\x00MESSAGE\na:x\\cy\n\n\x00")
    assert decoder.next_event() == Frame(C.MESSAGE, {"a": "x\\cy"})
    decoder.version = "1.2"
    assert decoder.next_event() == Frame(C.MESSAGE, {"a": "x:y"})


def test_need_data_repr() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"

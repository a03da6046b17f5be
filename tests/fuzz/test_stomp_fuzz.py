"""Hypothesis against the STOMP codec and connection: only frames, NEED_DATA or a ProtocolError
may come out of arbitrary input, splitting input never changes the outcome, and every frame we
can encode decodes back to itself."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovecote.protocols._errors import ProtocolError, RemoteProtocolError
from dovecote.protocols.stomp import (
    NEED_DATA,
    Command,
    Frame,
    FrameDecoder,
    FrameLimits,
    Role,
    StompConnection,
    encode_frame,
)
from dovecote.protocols.stomp.connection import negotiate_version
from dovecote.protocols.stomp.frames import UNESCAPED_COMMANDS

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Small enough that hypothesis reaches every limit with short inputs.
SMALL = FrameLimits(max_header_bytes=48, max_headers=3, max_body_bytes=16)
LIMITS = st.sampled_from([SMALL, FrameLimits()])
VERSIONS = st.sampled_from(["1.0", "1.1", "1.2"])

# Bytes that STOMP's grammar gives meaning to, so random input reaches the parser's branches.
_ATOMS = [
    b"\x00",
    b"\n",
    b"\r\n",
    b":",
    b"\\",
    b"\\c",
    b"\\n",
    b"\\r",
    b"\\t",
    b"\n\n",
    b"content-length:",
    b"content-length:3",
    b"destination:/queue/a",
    b"accept-version:1.2",
    b"heart-beat:",
    b"\xff",
    b"\xc3",
    *(c.value.encode() + b"\n" for c in Command),
]
ATOM = st.sampled_from(_ATOMS)
NOISE = st.lists(st.one_of(ATOM, st.binary(max_size=8)), max_size=30).map(b"".join)

VALID_FRAME_BYTES = st.sampled_from(
    [
        b"CONNECT\naccept-version:1.0,1.1,1.2\nhost:h\n\n\x00",
        b"STOMP\naccept-version:1.2\nheart-beat:10,10\n\n\x00",
        b"SEND\ndestination:/queue/a\ncontent-length:3\n\na\x00b\x00",
        b"SEND\r\ndestination:/queue/a\r\n\r\nbody\x00",
        b"SUBSCRIBE\nid:0\ndestination:/topic/a.>\n\n\x00",
        b"ACK\nid:1\n\n\x00",
        b"NACK\nmessage-id:1\n\n\x00",
        b"BEGIN\ntransaction:t\n\n\x00",
        b"DISCONNECT\nreceipt:1\n\n\x00",
        b"MESSAGE\ndestination:/q\nmessage-id:1\nsubscription:0\n\n\x00",
        b"\n",
        b"\r\n",
    ]
)


def _frame_bytes(command: bytes, lines: list[bytes], eol: bytes, body: bytes, end: bytes) -> bytes:
    return command + eol + b"".join(line + eol for line in lines) + eol + body + end


# Frame-shaped input: a command, header lines (some padded to near SMALL's header limit, some
# random octets), either EOL style, a body around SMALL's body limit, with or without its NUL.
HEADER_LINE = st.one_of(
    st.sampled_from([b"a:b", b"destination:/q", b"content-length:3", b"content-length:20", b"x"]),
    st.integers(min_value=30, max_value=50).map(lambda n: b"p:" + b"x" * n),
    st.binary(max_size=12),
)
FRAME_SHAPED = st.builds(
    _frame_bytes,
    st.sampled_from([c.value.encode() for c in Command]),
    st.lists(HEADER_LINE, max_size=4),
    st.sampled_from([b"\n", b"\r\n"]),
    st.binary(max_size=24) | st.integers(0, 24).map(lambda n: b"b" * n),
    st.sampled_from([b"\x00", b""]),
)
STREAM = st.lists(st.one_of(VALID_FRAME_BYTES, FRAME_SHAPED, NOISE), max_size=8).map(b"".join)
INPUT = st.one_of(st.binary(max_size=400), STREAM)


def split(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in pairwise(points):
        yield data[start:end]


CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=20)


def run_decoder(
    decoder: FrameDecoder, chunks: Iterator[bytes]
) -> tuple[list[Frame], ProtocolError | None]:
    """Feed every chunk, draining after each; stop at the first error."""
    frames: list[Frame] = []
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            while True:
                event = decoder.next_event()
                if event is NEED_DATA:
                    break
                assert isinstance(event, Frame)
                frames.append(event)
    except ProtocolError as exc:
        return frames, exc
    return frames, None


# --- robustness ---------------------------------------------------------------------------------


@FUZZ
@given(data=INPUT, cuts=CUTS, limits=LIMITS, version=VERSIONS)
def test_decoder_yields_only_frames_or_protocol_errors(
    data: bytes, cuts: list[int], limits: FrameLimits, version: str
) -> None:
    decoder = FrameDecoder(limits, version)
    frames, error = run_decoder(decoder, split(data, cuts))
    assert all(type(f) is Frame and isinstance(f.command, Command) for f in frames)
    if error is None:
        # Whatever is not a frame is still buffered, never lost or invented.
        assert decoder.buffered <= len(data)
        return
    assert isinstance(error, RemoteProtocolError)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.receive_data(b"\n")
    assert info.value.code == "broken"


@FUZZ
@given(data=INPUT, cuts=CUTS, limits=LIMITS, version=VERSIONS)
def test_splitting_input_never_changes_the_outcome(
    data: bytes, cuts: list[int], limits: FrameLimits, version: str
) -> None:
    whole_frames, whole_error = run_decoder(FrameDecoder(limits, version), iter([data]))
    split_frames, split_error = run_decoder(FrameDecoder(limits, version), split(data, cuts))
    assert split_frames == whole_frames
    assert (split_error is None) == (whole_error is None)


@FUZZ
@given(data=INPUT, version=VERSIONS)
def test_byte_by_byte_matches_whole(data: bytes, version: str) -> None:
    whole_frames, whole_error = run_decoder(FrameDecoder(SMALL, version), iter([data]))
    single = (data[i : i + 1] for i in range(len(data)))
    split_frames, split_error = run_decoder(FrameDecoder(SMALL, version), single)
    assert split_frames == whole_frames
    assert (split_error is None) == (whole_error is None)


def run_server(conn: StompConnection, chunks: Iterator[bytes]) -> ProtocolError | None:
    """Drive a server connection as an adapter would: answer CONNECT with CONNECTED."""
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                assert type(event) is Frame
                if event.command in (Command.CONNECT, Command.STOMP):
                    version = negotiate_version(event.headers.get("accept-version"))
                    conn.send(Frame(Command.CONNECTED, {"version": version}))
    except ProtocolError as exc:
        return exc
    return None


CONNECT_PREFIX = st.sampled_from(
    [
        b"",
        b"CONNECT\naccept-version:1.0\n\n\x00",
        b"CONNECT\naccept-version:1.1\nheart-beat:0,0\n\n\x00",
        b"STOMP\naccept-version:1.2\nhost:h\n\n\x00",
    ]
)


@FUZZ
@given(prefix=CONNECT_PREFIX, data=INPUT, cuts=CUTS, limits=LIMITS)
def test_server_connection_yields_only_frames_or_protocol_errors(
    prefix: bytes, data: bytes, cuts: list[int], limits: FrameLimits
) -> None:
    conn = StompConnection(Role.SERVER, limits)
    error = run_server(conn, split(prefix + data, cuts))
    if error is None:
        return
    assert isinstance(error, RemoteProtocolError)
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive_data(b"\n")
    assert info.value.code == "broken"


HEADER_TEXT = st.text(max_size=12)
# Digits as str.isdigit() sees them: ASCII, other decimal digits, superscripts, circled ones.
DIGITS = st.text(
    alphabet=st.sampled_from("0123456789")
    | st.sampled_from("\u00b2\u00b9\u0661\u0966\u2460\uff11"),
    min_size=1,
    max_size=4,
)
VERSION_VALUE = st.sampled_from(["1.0", "1.1", "1.2", "1.0,1.1,1.2", "2.0"]) | HEADER_TEXT
HEART_BEAT_VALUE = st.tuples(DIGITS, DIGITS).map(",".join) | HEADER_TEXT


@FUZZ
@given(
    command=st.sampled_from([Command.CONNECT, Command.STOMP]),
    headers=st.fixed_dictionaries(
        {},
        optional={
            "accept-version": VERSION_VALUE,
            "heart-beat": HEART_BEAT_VALUE,
            "host": HEADER_TEXT,
        },
    ),
    rest=INPUT,
)
def test_server_connection_with_arbitrary_connect_headers(
    command: Command, headers: dict[str, str], rest: bytes
) -> None:
    # Header values are arbitrary text, reaching version and heart-beat parsing with input
    # random bytes rarely spell.
    conn = StompConnection(Role.SERVER)
    data = encode_frame(Frame(command, headers)) + rest
    error = run_server(conn, iter([data]))
    assert error is None or isinstance(error, RemoteProtocolError)


@FUZZ
@given(
    headers=st.fixed_dictionaries(
        {}, optional={"version": VERSION_VALUE, "heart-beat": HEART_BEAT_VALUE}
    ),
    rest=INPUT,
)
def test_client_connection_yields_only_frames_or_protocol_errors(
    headers: dict[str, str], rest: bytes
) -> None:
    conn = StompConnection(Role.CLIENT)
    conn.send(Frame(Command.CONNECT, {"accept-version": "1.0,1.1,1.2"}))
    conn.receive_data(encode_frame(Frame(Command.CONNECTED, headers)) + rest)
    error: ProtocolError | None = None
    try:
        while conn.next_event() is not NEED_DATA:
            pass
    except ProtocolError as exc:
        error = exc
    assert error is None or isinstance(error, RemoteProtocolError)


# --- round trips --------------------------------------------------------------------------------


def header_text(exclude: str, min_size: int) -> st.SearchStrategy[str]:
    # NUL never belongs in a header; surrogates cannot be encoded as UTF-8.
    return st.text(
        alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00" + exclude),
        min_size=min_size,
        max_size=10,
    ) | st.sampled_from(["", ":", "\n", "\\", "\r", "a:b", "\\c", "é", "🐦"]).filter(
        lambda s: len(s) >= min_size and not set(s) & set(exclude)
    )


def headers_for(exclude_name: str, exclude_value: str) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(
        header_text(exclude_name, 1).filter(lambda n: n != "content-length"),
        header_text(exclude_value, 0),
        max_size=5,
    )


ESCAPED_COMMANDS = [c for c in Command if c not in UNESCAPED_COMMANDS]
BODY = st.binary(max_size=64)

# (version, frames) where every header survives that version's encoding.
ROUND_TRIP = st.one_of(
    # 1.2 escapes \r, \n, : and \ in names and values.
    st.tuples(
        st.just("1.2"),
        st.lists(st.builds(Frame, st.sampled_from(ESCAPED_COMMANDS), headers_for("", ""), BODY)),
    ),
    # 1.1 cannot carry \r (a trailing one reads as the CR of CRLF).
    st.tuples(
        st.just("1.1"),
        st.lists(
            st.builds(Frame, st.sampled_from(ESCAPED_COMMANDS), headers_for("\r", "\r"), BODY)
        ),
    ),
    # 1.0, and CONNECT/STOMP/CONNECTED in any version, escape nothing: no EOL anywhere, no
    # colon in names.
    st.tuples(
        st.sampled_from(["1.0", "1.1", "1.2"]),
        st.lists(
            st.builds(Frame, st.sampled_from(list(Command)), headers_for(":\r\n", "\r\n"), BODY)
        ),
    ),
)


def expected_after_decoding(frame: Frame) -> Frame:
    """encode_frame adds content-length to a non-empty body; decoding keeps it."""
    if not frame.body:
        return frame
    return Frame(
        frame.command, {**frame.headers, "content-length": str(len(frame.body))}, frame.body
    )


@FUZZ
@given(case=ROUND_TRIP, cuts=CUTS)
def test_encode_then_decode_round_trips(case: tuple[str, list[Frame]], cuts: list[int]) -> None:
    version, frames = case
    data = b"".join(encode_frame(f, version) for f in frames)
    decoded, error = run_decoder(FrameDecoder(version=version), split(data, cuts))
    assert error is None
    expected = [expected_after_decoding(f) for f in frames]
    assert decoded == expected
    assert [list(f.headers.items()) for f in decoded] == [list(f.headers.items()) for f in expected]

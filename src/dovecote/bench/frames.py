"""STOMP 1.2 frames for the load generator: encoded once, scanned without parsing.

Two halves:

- Encoding. Client frames (CONNECT, SUBSCRIBE, ACK, DISCONNECT) are built from header
  pairs; SEND frames come from a ``SendTemplate`` whose header block is encoded once per
  run, so a message costs one ``%`` format of its body and one concatenation.
- Scanning. ``split_frames`` finds frame boundaries in a receive buffer: the blank line that
  ends the headers, then ``content-length`` bytes or the first NUL (STOMP 1.2 "Augmented
  BNF"). It returns integer offsets and never builds a header dict; callers look up the one
  header they need with ``header_value``.

Invariants: every body this tool writes starts with the fixed-width ``BODY_HEAD`` layout
(producer id, sequence number, two nanosecond stamps), is ASCII and never contains NUL, so
a broker that drops ``content-length`` still delivers frames the scanner can split.
"""

from __future__ import annotations

from collections.abc import Sequence

# Body layout (fixed offsets, ASCII decimal): "PPPP:SSSSSSSSSS:DDDD...:TTTT...:" then padding.
#   producer id   [0:4]     sequence   [5:15]
#   due ns        [16:35]   sent ns    [36:55]   (time.perf_counter_ns; 0 when not timed)
BODY_HEAD = b"%04d:%010d:%019d:%019d:"
BODY_HEAD_SIZE = 56
PRODUCER_ID = slice(0, 4)
SEQUENCE = slice(5, 15)
DUE_NS = slice(16, 35)
SENT_NS = slice(36, 55)
MAX_PRODUCERS = 10_000
MAX_SEQUENCE = 10_000_000_000

# A frame located in a buffer: (frame start, body start, body end); the NUL is at body end.
Span = tuple[int, int, int]

_ESCAPES = (("\\", "\\\\"), ("\r", "\\r"), ("\n", "\\n"), (":", "\\c"))


class BenchError(Exception):
    """A benchmark cannot go on; the message says why, for the person running it."""


class BrokerError(BenchError):
    """The broker sent an ERROR frame (or broke the protocol)."""


def escape(value: str) -> str:
    """Escape a header value as STOMP 1.2 "Value Encoding" requires (not for CONNECT)."""
    for raw, escaped in _ESCAPES:
        value = value.replace(raw, escaped)
    return value


def encode_frame(
    command: str, headers: Sequence[tuple[str, str]], body: bytes = b"", *, escaped: bool = True
) -> bytes:
    """One client frame. CONNECT headers are sent as-is (STOMP 1.2 "Value Encoding")."""
    lines = [command]
    for name, value in headers:
        lines.append(f"{name}:{escape(value) if escaped else value}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\0"


def connect_frame(vhost: str, user: str | None, password: str | None) -> bytes:
    """CONNECT for STOMP 1.2 without heart-beats (the tool never idles long enough)."""
    headers = [("accept-version", "1.2"), ("host", vhost), ("heart-beat", "0,0")]
    if user is not None:
        headers.append(("login", user))
    if password is not None:
        headers.append(("passcode", password))
    return encode_frame("CONNECT", headers, escaped=False)


def subscribe_frame(
    destination: str,
    subscription: str,
    ack: str,
    receipt: str,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """SUBSCRIBE asking for a RECEIPT, so the caller knows the subscription is live."""
    headers = [("destination", destination), ("id", subscription), ("ack", ack)]
    headers.extend(extra)
    headers.append(("receipt", receipt))
    return encode_frame("SUBSCRIBE", headers)


def disconnect_frame(receipt: str) -> bytes:
    """DISCONNECT with a receipt: once it arrives, the broker has read everything before it."""
    return encode_frame("DISCONNECT", [("receipt", receipt)])


def ack_frame(ack_id: bytes) -> bytes:
    """ACK for the ``ack`` header of a MESSAGE, passed back byte for byte (already escaped)."""
    return b"ACK\nid:" + ack_id + b"\n\n\0"


def nack_frame(ack_id: bytes) -> bytes:
    """NACK for the ``ack`` header of a MESSAGE (the broker redelivers it)."""
    return b"NACK\nid:" + ack_id + b"\n\n\0"


class SendTemplate:
    """SEND frames to one destination with bodies of one size, header block encoded once.

    ``header_cycle`` (optional) gives extra header lines by position: message ``seq`` gets
    ``header_cycle[seq % len(header_cycle)]`` (e.g. ``"shard:3\\n"``), each block also
    encoded once.
    """

    __slots__ = ("_head", "_heads", "_pad")

    def __init__(
        self,
        destination: str,
        size: int,
        *,
        persistent: bool,
        header_cycle: tuple[str, ...] = (),
    ) -> None:
        if size < BODY_HEAD_SIZE:
            raise BenchError(f"message size must be at least {BODY_HEAD_SIZE} bytes, not {size}")
        flag = "true" if persistent else "false"
        self._head = (
            f"SEND\ndestination:{escape(destination)}\npersistent:{flag}\ncontent-length:{size}\n"
        ).encode()
        self._heads = tuple(self._head + extra.encode() for extra in header_cycle)
        self._pad = b"." * (size - BODY_HEAD_SIZE)

    def frame(
        self, producer: int, seq: int, due_ns: int = 0, sent_ns: int = 0, receipt: str = ""
    ) -> bytes:
        """The SEND frame for message ``seq`` of ``producer``; a RECEIPT is asked if given."""
        body = BODY_HEAD % (producer, seq, due_ns, sent_ns) + self._pad
        heads = self._heads
        head = heads[seq % len(heads)] if heads else self._head
        if receipt:
            return head + b"receipt:" + receipt.encode() + b"\n\n" + body + b"\0"
        return head + b"\n" + body + b"\0"


def split_frames(buf: bytes | bytearray, pos: int = 0) -> tuple[list[Span], int]:
    """Locate the complete frames in ``buf[pos:]``; return their spans and where to resume.

    EOLs between frames (heart-beats, STOMP 1.2 "Heart-beating") are skipped. An incomplete
    frame at the end is left for the next call. Raises ``BrokerError`` when a frame's
    ``content-length`` body is not followed by NUL or the length is not a number.
    """
    spans: list[Span] = []
    end = len(buf)
    while pos < end:
        first = buf[pos]
        if first == 10 or first == 13:  # EOL between frames
            pos += 1
            continue
        blank = buf.find(b"\n\n", pos)
        crlf = buf.find(b"\n\r\n", pos, blank if blank >= 0 else end)
        if crlf >= 0:
            body_start = crlf + 3
        elif blank >= 0:
            body_start = blank + 2
        else:
            break
        length_at = buf.find(b"\ncontent-length:", pos, body_start)
        if length_at >= 0:
            value_end = buf.find(b"\n", length_at + 16, body_start)
            try:
                length = int(buf[length_at + 16 : value_end])
            except ValueError:
                raise BrokerError(
                    f"bad content-length in frame: {bytes(buf[pos:body_start])!r}"
                ) from None
            body_end = body_start + length
            if body_end >= end:
                break
            if buf[body_end] != 0:
                raise BrokerError(f"no NUL after the body of: {bytes(buf[pos:body_start])!r}")
        else:
            body_end = buf.find(b"\0", body_start)
            if body_end < 0:
                break
        spans.append((pos, body_start, body_end))
        pos = body_end + 1
    return spans, pos


def command_of(buf: bytes | bytearray, span: Span) -> bytes:
    """The command line of a located frame (without a trailing CR)."""
    start = span[0]
    line_end = buf.find(b"\n", start, span[1])
    return bytes(buf[start:line_end]).rstrip(b"\r")


def header_value(buf: bytes | bytearray, span: Span, name: bytes) -> bytes | None:
    """The raw (still escaped) value of the first ``name`` header of a frame, or None.

    The first occurrence wins, as STOMP 1.2 "Repeated Header Entries" says.
    """
    start, body_start, _ = span
    key = b"\n" + name + b":"
    at = buf.find(key, start, body_start)
    if at < 0:
        return None
    value_start = at + len(key)
    value_end = buf.find(b"\n", value_start, body_start)
    return bytes(buf[value_start:value_end]).rstrip(b"\r")


def describe_error(buf: bytes | bytearray, span: Span) -> str:
    """A one-line account of an ERROR frame: its ``message`` header and body."""
    message = header_value(buf, span, b"message") or b""
    body = bytes(buf[span[1] : span[2]]).strip()
    text = message.decode(errors="replace")
    if body:
        text += " | " + body.decode(errors="replace").replace("\n", " ")[:500]
    return text

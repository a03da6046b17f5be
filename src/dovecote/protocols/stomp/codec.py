"""Sans-I/O STOMP frame decoder: ``receive_data(bytes)``, then ``next_event()`` until NEED_DATA.

Invariants:
- Bytes are consumed only when a whole frame is present; a partial frame stays buffered, so
  feeding a stream whole, byte by byte or in any split yields the same frames.
- Every buffer is bounded by :class:`FrameLimits`: the header block, the header count, the
  body, and so the incomplete-frame size. Past a limit the decoder raises
  :class:`FrameTooLarge` before buffering more.
- After any error the decoder stays broken and refuses input (the caller closes the
  connection).
- EOLs between frames are heart-beats (STOMP 1.2 "Heart-beating") and are skipped.

Parsing follows STOMP 1.2 "Augmented BNF": a command line, header lines, a blank line, a body
ended by NUL. With ``content-length`` the body is exactly that many octets and must be followed
by NUL; without it the body ends at the first NUL. Lines may end in CRLF or LF.

The common frame is decoded by the optional C accelerator when it is built
(:mod:`dovecote.protocols.stomp.speedups`); it hands everything else back to ``_parse`` here,
the reference, so both give the same frames and the same errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dovecote.protocols._errors import FrameTooLarge, RemoteProtocolError
from dovecote.protocols.stomp import speedups
from dovecote.protocols.stomp.frames import (
    COMMANDS_BY_WIRE,
    UNESCAPED_COMMANDS,
    Frame,
    unescape,
)


class NeedData:
    """Sentinel type: no complete frame is buffered yet."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Named limits on what one peer may make us buffer (ActiveMQ's defaults where it has them).

    - ``max_header_bytes``: the command line plus header block (ActiveMQ maxDataLength-like).
    - ``max_headers``: header entries per frame (ActiveMQ: 1000).
    - ``max_body_bytes``: the body; also bounds an incomplete frame's buffered size.
    """

    max_header_bytes: int = 64 * 1024
    max_headers: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024


_EOL_BYTES: Final = b"\r\n"


class FrameDecoder:
    """Incremental decoder for one direction of a STOMP byte stream."""

    __slots__ = ("_broken", "_buf", "_pos", "_scan", "limits", "version")

    def __init__(
        self, limits: FrameLimits | None = None, version: str = "1.2", *, accelerated: bool = True
    ) -> None:
        self.limits = limits or FrameLimits()
        self.version = version
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._broken = False
        # The C fast path for plain frames, when built (``accelerated=False``: never).
        self._scan = speedups.scan_frame if accelerated else None

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as part of a frame."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer. Raises if the decoder already failed."""
        if self._broken:
            raise RemoteProtocolError("connection is in an error state", code="broken")
        if self._pos >= len(self._buf):
            self._buf = data
            self._pos = 0
        elif isinstance(self._buf, bytearray):
            if self._pos > 65536:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += data
        else:
            self._buf = bytearray(memoryview(self._buf)[self._pos :])
            self._buf += data
            self._pos = 0

    def next_event(self) -> Frame | NeedData:
        """Return the next complete frame, or NEED_DATA. Raises RemoteProtocolError."""
        if self._broken:
            raise RemoteProtocolError("connection is in an error state", code="broken")
        scan = self._scan
        if scan is not None:
            limits = self.limits
            found = scan(
                self._buf,
                self._pos,
                limits.max_header_bytes,
                limits.max_headers,
                limits.max_body_bytes,
                COMMANDS_BY_WIRE,
            )
            if found is not None:
                command, headers, body, self._pos = found
                return Frame(command, headers, body)
        try:
            return self._parse()
        except RemoteProtocolError:
            self._broken = True
            raise

    def _parse(self) -> Frame | NeedData:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        # Skip heart-beat EOLs between frames.
        while pos < end and buf[pos] in _EOL_BYTES:
            pos += 1
        self._pos = pos
        if pos >= end:
            return NEED_DATA
        limits = self.limits
        # The header block ends at the first empty line (LF LF or LF CR LF).
        head_end = buf.find(b"\n\n", pos)
        crlf_end = buf.find(b"\n\r\n", pos, end if head_end == -1 else head_end + 2)
        if crlf_end != -1 and (head_end == -1 or crlf_end < head_end):
            head_end, body_start = crlf_end, crlf_end + 3
        else:
            body_start = head_end + 2
        if head_end == -1:
            # The blank line may have begun in the last two octets (LF, or LF CR before LF), so
            # only more than that past the limit is certainly too large: whole and split input
            # must get the same answer.
            if end - pos > limits.max_header_bytes + 2:
                raise FrameTooLarge(
                    f"frame header exceeds the limit of {limits.max_header_bytes} bytes"
                )
            if buf.find(b"\0", pos) != -1:
                raise RemoteProtocolError("frame ended before its header block", code="malformed")
            return NEED_DATA
        if head_end - pos > limits.max_header_bytes:
            raise FrameTooLarge(
                f"frame header exceeds the limit of {limits.max_header_bytes} bytes"
            )
        if buf.find(b"\0", pos, head_end) != -1:
            # As above, when the header block was still incomplete: a NUL ends the frame.
            raise RemoteProtocolError("frame ended before its header block", code="malformed")
        try:
            head = bytes(buf[pos:head_end]).decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("frame header is not valid UTF-8", code="malformed") from None
        lines = head.split("\n")
        command_text = lines[0].rstrip("\r")
        command = COMMANDS_BY_WIRE.get(command_text.encode("utf-8"))
        if command is None:
            raise RemoteProtocolError(
                f"unknown command {command_text[:40]!r}", code="unknown-command"
            )
        if len(lines) - 1 > limits.max_headers:
            raise FrameTooLarge(f"frame has more than {limits.max_headers} headers")
        # Escapes and CRs are rare: look for them once per frame rather than once per header.
        escaped = command not in UNESCAPED_COMMANDS and self.version != "1.0" and "\\" in head
        if escaped or "\r" in head:
            headers = self._headers(lines, escaped)
        else:
            headers = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if not colon:
                    raise RemoteProtocolError("header line without a colon", code="malformed")
                if name not in headers:  # (STOMP 1.2 "Repeated Header Entries")
                    headers[name] = value
        length_text = headers.get("content-length")
        if length_text is not None:
            length = _parse_length(length_text)
            if length > limits.max_body_bytes:
                raise FrameTooLarge(
                    f"frame body exceeds the limit of {limits.max_body_bytes} bytes"
                )
            body_end = body_start + length
            if body_end >= end:
                return NEED_DATA
            if buf[body_end] != 0:
                raise RemoteProtocolError(
                    "frame body is not followed by NUL at its content-length", code="malformed"
                )
        else:
            # Look no further than the limit, so a NUL just past it is refused whether the
            # frame arrived whole or in pieces.
            body_end = buf.find(b"\0", body_start, body_start + limits.max_body_bytes + 1)
            if body_end == -1:
                if end - body_start > limits.max_body_bytes:
                    raise FrameTooLarge(
                        f"frame body exceeds the limit of {limits.max_body_bytes} bytes"
                    )
                return NEED_DATA
        body = bytes(buf[body_start:body_end])
        self._pos = body_end + 1
        return Frame(command, headers, body)

    def _headers(self, lines: list[str], escaped: bool) -> dict[str, str]:
        """Header lines that may end in CR or hold escapes, one at a time."""
        headers: dict[str, str] = {}
        version = self.version
        for line in lines[1:]:
            if line.endswith("\r"):
                line = line[:-1]
            name, colon, value = line.partition(":")
            if not colon:
                raise RemoteProtocolError("header line without a colon", code="malformed")
            if escaped:
                name = unescape(name, version)
                value = unescape(value, version)
            if name not in headers:
                headers[name] = value
        return headers


def _parse_length(text: str) -> int:
    """content-length is a non-negative decimal octet count (STOMP 1.2 "Header content-length")."""
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise RemoteProtocolError("content-length is not a non-negative integer", code="malformed")
    return int(text)

"""STOMP frames and their encoding.

A frame is a command, headers and a body (STOMP 1.2 "Frames and Headers"). Headers are a dict in
wire order in which the first occurrence of a repeated header wins (STOMP 1.2 "Repeated Header
Entries"). Bodies are bytes, kept exactly as received.

Header escaping (STOMP 1.2 "Value Encoding"): 1.2 escapes ``\\r``, ``\\n``, ``:`` and ``\\``;
1.1 escapes all but ``\\r``; 1.0 escapes nothing. CONNECT and CONNECTED frames are never
escaped, whatever the version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import field
from enum import StrEnum

from dovecote.protocols._errors import RemoteProtocolError
from dovecote.values import value_class


class Command(StrEnum):
    """Every STOMP command, client frames first (STOMP 1.2 "Client Frames", "Server Frames")."""

    CONNECT = "CONNECT"
    STOMP = "STOMP"
    SEND = "SEND"
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    ACK = "ACK"
    NACK = "NACK"
    BEGIN = "BEGIN"
    COMMIT = "COMMIT"
    ABORT = "ABORT"
    DISCONNECT = "DISCONNECT"
    CONNECTED = "CONNECTED"
    MESSAGE = "MESSAGE"
    RECEIPT = "RECEIPT"
    ERROR = "ERROR"


COMMANDS_BY_WIRE: dict[bytes, Command] = {c.value.encode("ascii"): c for c in Command}
UNESCAPED_COMMANDS = frozenset({Command.CONNECT, Command.STOMP, Command.CONNECTED})


@value_class
class Frame:
    """One STOMP frame. ``headers`` keeps wire order; the first of repeated headers wins."""

    command: Command
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


# --- escaping ---------------------------------------------------------------------------------

_UNESCAPES_12 = {"\\\\": "\\", "\\n": "\n", "\\c": ":", "\\r": "\r"}
_UNESCAPES_11 = {"\\\\": "\\", "\\n": "\n", "\\c": ":"}
_NEEDS_ESCAPE_12 = re.compile(r"[\\\n:\r]")
_NEEDS_ESCAPE_11 = re.compile(r"[\\\n:]")
_ESCAPE_SEQ = re.compile(r"\\.?", re.DOTALL)


def escape(value: str, version: str) -> str:
    """Escape a header name or value for ``version`` (STOMP 1.2 "Value Encoding")."""
    if version == "1.0":
        return value
    pattern = _NEEDS_ESCAPE_12 if version == "1.2" else _NEEDS_ESCAPE_11
    if pattern.search(value) is None:
        return value
    # Every message id has a colon ("ID:..."): str.replace in C, backslash first, beats a
    # regex substitution calling back into Python per match.
    value = value.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\c")
    return value.replace("\r", "\\r") if version == "1.2" else value


def unescape(value: str, version: str) -> str:
    """Undo :func:`escape`; an undefined escape sequence is a fatal protocol error."""
    if version == "1.0" or "\\" not in value:
        return value
    table = _UNESCAPES_12 if version == "1.2" else _UNESCAPES_11

    def replace(match: re.Match[str]) -> str:
        try:
            return table[match.group()]
        except KeyError:
            raise RemoteProtocolError(
                f"undefined escape sequence {match.group()!r} in a header",
                code="bad-escape",
            ) from None

    return _ESCAPE_SEQ.sub(replace, value)


# --- encoding ---------------------------------------------------------------------------------


def encode_headers(headers: Mapping[str, str], version: str, *, escaped: bool = True) -> bytes:
    """Encode a header block, each line ending in LF, without the blank line that ends it."""
    if not escaped:
        version = "1.0"
    return "".join(
        f"{escape(name, version)}:{escape(value, version)}\n" for name, value in headers.items()
    ).encode("utf-8")


def encode_frame(frame: Frame, version: str = "1.2") -> bytes:
    """Encode ``frame``; a non-empty body always gets a content-length so it may hold NULs."""
    headers = encode_headers(
        frame.headers, version, escaped=frame.command not in UNESCAPED_COMMANDS
    )
    length = b""
    if frame.body and "content-length" not in frame.headers:
        length = b"content-length:%d\n" % len(frame.body)
    return b"".join(
        (frame.command.value.encode("ascii"), b"\n", headers, length, b"\n", frame.body, b"\0")
    )

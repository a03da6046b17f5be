"""The journal's on-disk format: segment headers and checksummed records.

Segment file ``segment-<id:08d>.log`` (all integers big-endian)::

    header  : magic b"DVCJ" | version u16 | flags u16 | segment id u64          (16 octets)
    record* : length u32 | type u8 | payload (length octets) | crc32 u32

``crc32`` (zlib) covers type and payload. A record is whole only if all of it is present and
its checksum matches; recovery stops at the first record that is not (see recovery.py).

Payloads use length-prefixed UTF-8 strings (``str16``: u16 length; ``str32``: u32 length) and
fixed-width integers. docs/journal-format.md lists every record type.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from dovecote.core.message import MAX_PRIORITY, NO_PROPERTIES, Message, RoutingType

MAGIC = b"DVCJ"
FORMAT_VERSION = 1
SEGMENT_HEADER = struct.Struct(">4sHHQ")
RECORD_HEAD = struct.Struct(">IB")
CRC = struct.Struct(">I")
MAX_RECORD_PAYLOAD = 256 * 1024 * 1024  # anything larger is corruption, not a record

# A payload is bytes, or (recovery) a memoryview into the segment read whole: decoding then
# copies only what it keeps, the body once.
Payload = bytes | memoryview
_Data = TypeVar("_Data", bytes, memoryview)


class RecordType(IntEnum):
    # QUEUE_CREATED: name str16 | address str16 | filter str16 ("" = none) | kind u8, then
    # optionally selector str16 (a durable subscription's selector; absent = none). Readers
    # that predate the selector ignore it; records without one are byte-identical to before.
    QUEUE_CREATED = 1
    QUEUE_DELETED = 2  # name str16
    MESSAGE_ADDED = 3  # queue str16 | seq u64 | message (see encode_message)
    MESSAGE_ACKED = 4  # queue str16 | seq u64
    # MESSAGE_DELIVERED: queue str16 | seq u64 | delivery count u32, then optionally hold-until
    # u64 (epoch ms: the message waits out a redelivery delay until then; absent = no hold).
    # Readers that predate the hold ignore it (as any trailing bytes of this record).
    MESSAGE_DELIVERED = 5
    ATOMIC_BEGIN = 6  # group id u64: records up to ATOMIC_COMMIT apply together or not at all
    ATOMIC_COMMIT = 7  # group id u64
    DUPLICATE_ID = 8  # address str16 | seq u64 | duplicate id str16


class QueueKind(IntEnum):
    QUEUE = 0  # an anycast queue
    DURABLE_SUBSCRIPTION = 1


class CorruptRecord(Exception):
    """A record whose checksum or structure is wrong."""


class UnsupportedFormat(Exception):
    """A segment written by a format version this build cannot read."""


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    segment_id: int
    version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        return SEGMENT_HEADER.pack(MAGIC, self.version, 0, self.segment_id)

    @classmethod
    def decode(cls, data: Payload) -> SegmentHeader:
        if len(data) < SEGMENT_HEADER.size:
            raise CorruptRecord("segment header is truncated")
        magic, version, _flags, segment_id = SEGMENT_HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CorruptRecord("not a journal segment (bad magic)")
        if version != FORMAT_VERSION:
            raise UnsupportedFormat(
                f"segment format version {version} is not supported (this build reads "
                f"version {FORMAT_VERSION})"
            )
        return cls(segment_id, version)


def frame_record(kind: RecordType, payload: bytes) -> bytes:
    """One whole record: length, type, payload, checksum."""
    head = RECORD_HEAD.pack(len(payload), kind)
    crc = zlib.crc32(payload, _TYPE_CRC[kind])
    return b"".join((head, payload, CRC.pack(crc)))


def read_record(data: _Data, offset: int) -> tuple[RecordType, _Data, int] | None:
    """The record at ``offset``: (type, payload, next offset), or None if incomplete. The
    payload is a slice of ``data``: a memoryview (no copy) when ``data`` is one.

    Raises CorruptRecord for a bad checksum, an unknown type or an impossible length.
    """
    end = offset + RECORD_HEAD.size
    if end > len(data):
        return None
    length, kind = RECORD_HEAD.unpack_from(data, offset)
    if length > MAX_RECORD_PAYLOAD:
        raise CorruptRecord(f"record length {length} is impossible")
    stop = end + length + CRC.size
    if stop > len(data):
        return None
    payload = data[end : end + length]
    (crc,) = CRC.unpack_from(data, end + length)
    if crc != zlib.crc32(payload, _TYPE_CRC[kind]):
        raise CorruptRecord("record checksum mismatch")
    record_type = _TYPES[kind]
    if record_type is None:
        raise CorruptRecord(f"unknown record type {kind}")
    return record_type, payload, stop


# Per type octet: the CRC of that octet alone (the checksum's seed), and the RecordType.
_TYPE_CRC = [zlib.crc32(bytes((k,))) for k in range(256)]
_TYPES: list[RecordType | None] = [
    RecordType(k) if k in RecordType._value2member_map_ else None for k in range(256)
]


# --- payload codecs ---------------------------------------------------------------------------

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_MESSAGE_FIXED = struct.Struct(">BBBqqH")  # routing, priority, persistent, expires, ts, nprops
_SEQ_LENGTH = struct.Struct(">QH")  # a seq, then the next string's length


def _str16(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("name too long for the journal")
    return _U16.pack(len(data)) + data


def _str32(text: str) -> bytes:
    data = text.encode("utf-8")
    return _U32.pack(len(data)) + data


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: Payload) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> Payload:
        end = self.pos + count
        if end > len(self.data):
            raise CorruptRecord("record payload is shorter than its fields")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def str16(self) -> str:
        return self._text(self.u16())

    def str32(self) -> str:
        return self._text(self.u32())

    def _text(self, length: int) -> str:
        try:
            return str(self.take(length), "utf-8")
        except UnicodeDecodeError:
            raise CorruptRecord("record text is not UTF-8") from None


def encode_queue_created(
    name: str, address: str, filter_: str | None, kind: QueueKind, selector: str | None = None
) -> bytes:
    fields = [_str16(name), _str16(address), _str16(filter_ or ""), bytes((kind,))]
    if selector is not None:
        fields.append(_str16(selector))
    return frame_record(RecordType.QUEUE_CREATED, b"".join(fields))


def decode_queue_created(payload: Payload) -> tuple[str, str, str | None, QueueKind]:
    r = _Reader(payload)
    name, address, filter_ = r.str16(), r.str16(), r.str16()
    try:
        kind = QueueKind(r.u8())
    except ValueError:
        raise CorruptRecord("unknown queue kind") from None
    return name, address, filter_ or None, kind


def decode_queue_selector(payload: Payload) -> str | None:
    """The optional selector after a QUEUE_CREATED payload's fixed fields (None if absent)."""
    r = _Reader(payload)
    r.str16(), r.str16(), r.str16(), r.u8()
    if r.pos == len(payload):
        return None
    return r.str16()


def encode_name(kind: RecordType, name: str) -> bytes:
    return frame_record(kind, _str16(name))


def decode_name(payload: Payload) -> str:
    return _Reader(payload).str16()


def encode_queue_seq(kind: RecordType, queue: str, seq: int, extra: int | None = None) -> bytes:
    payload = _str16(queue) + _U64.pack(seq)
    if extra is not None:
        payload += _U32.pack(extra)
    return frame_record(kind, payload)


def decode_queue_seq(payload: Payload) -> tuple[str, int, int | None]:
    # unpack_from, not _Reader: one of these follows almost every message (its ack).
    try:
        (length,) = _U16.unpack_from(payload, 0)
        pos = 2 + length
        queue = str(payload[2:pos], "utf-8")
        (seq,) = _U64.unpack_from(payload, pos)
        pos += 8
        if pos == len(payload):
            return queue, seq, None
        (extra,) = _U32.unpack_from(payload, pos)
    except struct.error:
        raise CorruptRecord("record payload is shorter than its fields") from None
    except UnicodeDecodeError:
        raise CorruptRecord("record text is not UTF-8") from None
    return queue, seq, extra


def encode_delivered(queue: str, seq: int, count: int, hold_until: int = 0) -> bytes:
    """MESSAGE_DELIVERED: ``count`` deliveries so far; ``hold_until`` (epoch ms, 0: none) is
    when a redelivery delay the message is waiting out ends."""
    payload = _str16(queue) + _U64.pack(seq) + _U32.pack(count)
    if hold_until:
        payload += _U64.pack(hold_until)
    return frame_record(RecordType.MESSAGE_DELIVERED, payload)


def decode_delivered(payload: Payload) -> tuple[str, int, int | None, int]:
    """(queue, seq, delivery count or None, hold-until or 0) of a MESSAGE_DELIVERED."""
    queue, seq, count = decode_queue_seq(payload)
    (length,) = _U16.unpack_from(payload, 0)
    at = 2 + length + 8 + 4  # past the count
    if count is None or len(payload) < at + 8:
        return queue, seq, count, 0
    (hold_until,) = _U64.unpack_from(payload, at)
    return queue, seq, count, hold_until


def peek_queue_seq(payload: Payload) -> tuple[str, int]:
    """The (queue, seq) that MESSAGE_ADDED, _ACKED and _DELIVERED payloads begin with."""
    r = _Reader(payload)
    return r.str16(), r.u64()


def encode_duplicate_id(address: str, seq: int, duplicate_id: str) -> bytes:
    payload = b"".join((_str16(address), _U64.pack(seq), _str16(duplicate_id)))
    return frame_record(RecordType.DUPLICATE_ID, payload)


def decode_duplicate_id(payload: Payload) -> tuple[str, int, str]:
    r = _Reader(payload)
    address, seq, duplicate_id = r.str16(), r.u64(), r.str16()
    if r.pos != len(payload):
        raise CorruptRecord("duplicate-id record has trailing bytes")
    return address, seq, duplicate_id


def encode_group(kind: RecordType, group_id: int) -> bytes:
    return frame_record(kind, _U64.pack(group_id))


def decode_group(payload: Payload) -> int:
    return _Reader(payload).u64()


def encode_message_added(queue: str, seq: int, message: Message) -> bytes:
    parts = [
        _str16(queue),
        _U64.pack(seq),
        _str16(message.message_id),
        _str16(message.address),
        _MESSAGE_FIXED.pack(
            message.routing is RoutingType.MULTICAST,
            message.priority,
            message.persistent,
            message.expires,
            message.timestamp,
            len(message.properties),
        ),
    ]
    for name, value in message.properties.items():
        parts.append(_str16(name))
        parts.append(_str32(value))
    parts.append(message.body)
    return frame_record(RecordType.MESSAGE_ADDED, b"".join(parts))


def decode_message_added(payload: Payload, *, with_body: bool = True) -> tuple[str, int, Message]:
    """Decode a MESSAGE_ADDED payload; ``with_body=False`` leaves the body out (paging).

    Recovery decodes every message in the journal: the C accelerator (``_records.c``, when
    built) decodes every well-formed payload; this Python code is the reference, and decides
    (CorruptRecord) about every payload the accelerator declines.
    """
    if _c_decode_message_added is not None:
        found = _c_decode_message_added(payload, with_body)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return _decode_message_added(payload, with_body)


def _decode_message_added(payload: Payload, with_body: bool) -> tuple[str, int, Message]:
    """The reference decoder (and the only one without the accelerator). It reads fields with
    ``unpack_from`` rather than through :class:`_Reader`, for speed; a short or malformed
    payload is CorruptRecord."""
    try:
        (length,) = _U16.unpack_from(payload, 0)
        pos = 2 + length
        queue = str(payload[2:pos], "utf-8")
        seq, length = _SEQ_LENGTH.unpack_from(payload, pos)
        start, pos = pos + 10, pos + 10 + length
        message_id = str(payload[start:pos], "utf-8")
        (length,) = _U16.unpack_from(payload, pos)
        start, pos = pos + 2, pos + 2 + length
        address = str(payload[start:pos], "utf-8")
        routing, priority, persistent, expires, timestamp, count = _MESSAGE_FIXED.unpack_from(
            payload, pos
        )
        pos += _MESSAGE_FIXED.size
        properties = NO_PROPERTIES
        if count:
            read: dict[str, str] = {}
            for _ in range(count):
                (length,) = _U16.unpack_from(payload, pos)
                start, pos = pos + 2, pos + 2 + length
                name = str(payload[start:pos], "utf-8")
                (length,) = _U32.unpack_from(payload, pos)
                start, pos = pos + 4, pos + 4 + length
                read[name] = str(payload[start:pos], "utf-8")
            properties = read
    except (struct.error, UnicodeDecodeError):
        raise CorruptRecord("message record fields do not parse") from None
    if pos > len(payload) or priority > MAX_PRIORITY:
        raise CorruptRecord("message record fields do not parse")
    message = Message(
        message_id,
        address,
        RoutingType.MULTICAST if routing else RoutingType.ANYCAST,
        bytes(payload[pos:]) if with_body else b"",
        properties,
        bool(persistent),
        priority,
        expires,
        timestamp,
    )
    return queue, seq, message


# The optional C accelerator of decode_message_added (setup.py builds it where a compiler is;
# DOVECOTE_NO_SPEEDUPS=1 turns it off, as the STOMP codec's).
_c_decode_message_added = None
if not os.environ.get("DOVECOTE_NO_SPEEDUPS"):
    try:
        from dovecote.store import _records
    except ImportError:  # not built: the Python decoder serves
        pass
    else:
        _records.configure(Message, RoutingType.ANYCAST, RoutingType.MULTICAST, NO_PROPERTIES)
        _c_decode_message_added = _records.decode_message_added

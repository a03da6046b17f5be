"""The journal's record format: every record type round trips through encode / read_record /
decode; a strict prefix of a record is incomplete (None), never an error; a damaged record is
CorruptRecord; segment headers round trip and refuse bad magic and other format versions.

One table of (name, framed record, decoder, decoded value) drives the round trips, the
prefix checks and the damage checks.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from dovecote.core.message import MAX_PRIORITY, NO_PROPERTIES, Message, RoutingType
from dovecote.store.record import (
    CRC,
    FORMAT_VERSION,
    MAGIC,
    MAX_RECORD_PAYLOAD,
    RECORD_HEAD,
    SEGMENT_HEADER,
    CorruptRecord,
    QueueKind,
    RecordType,
    SegmentHeader,
    UnsupportedFormat,
    decode_delivered,
    decode_duplicate_id,
    decode_group,
    decode_message_added,
    decode_name,
    decode_queue_created,
    decode_queue_selector,
    decode_queue_seq,
    encode_delivered,
    encode_duplicate_id,
    encode_group,
    encode_message_added,
    encode_name,
    encode_queue_created,
    encode_queue_seq,
    frame_record,
    peek_queue_seq,
    read_record,
)

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
I64_MAX = 2**63 - 1

PLAIN = Message("ID:n-1", "orders", RoutingType.ANYCAST, b"hello", {}, True)
EMPTY_BODY = Message("ID:n-2", "orders", RoutingType.ANYCAST, b"", {}, True)
BINARY = Message(
    "ID:n-3",
    "orders",
    RoutingType.ANYCAST,
    b"\x00\x01\x00\xff\x00" + bytes(range(256)) + b"\x00",
    {"content-type": "application/octet-stream"},
    True,
)
UNICODE = Message(
    "ID:ñ-4",
    "заказы.日本",
    RoutingType.MULTICAST,
    "bødy ✓".encode(),
    {"x-ключ": "значение", "emoji": "🐦🪺", "empty": "", "colon:in:name": "a\nb"},
    True,
    MAX_PRIORITY,
    I64_MAX,
    1_700_000_000_123,
)
MANY_PROPERTIES = Message(
    "ID:n-5",
    "orders",
    RoutingType.ANYCAST,
    b"x" * 1000,
    {f"header-{i}": f"value-{i}" * (i % 7) for i in range(1000)},
    True,
    0,
    1_900_000_000_000,
    1_700_000_000_000,
)
NOT_PERSISTENT = Message("ID:n-6", "t.a", RoutingType.MULTICAST, b"np", {"k": "v"}, False, 7)


def _error(expected: type[Exception], call: Callable[..., object], *args: object) -> str:
    """The message of the ``expected`` exception ``call(*args)`` raises (fails if none)."""
    with pytest.raises(expected) as info:
        call(*args)
    return str(info.value)


def framed_payload_of(record: bytes) -> bytes:
    result = read_record(record, 0)
    assert result is not None
    return result[1]


def _roundtrip_cases() -> list[tuple[str, bytes, Callable[[bytes], Any], Any]]:
    cases: list[tuple[str, bytes, Callable[[bytes], Any], Any]] = [
        (
            "queue-created",
            encode_queue_created("orders", "orders", None, QueueKind.QUEUE),
            decode_queue_created,
            ("orders", "orders", None, QueueKind.QUEUE),
        ),
        (
            "durable-subscription-created",
            encode_queue_created("cid.sub", "prices.>", "prices.>", QueueKind.DURABLE_SUBSCRIPTION),
            decode_queue_created,
            ("cid.sub", "prices.>", "prices.>", QueueKind.DURABLE_SUBSCRIPTION),
        ),
        (
            "durable-subscription-with-selector",
            encode_queue_created(
                "cid.sub", "prices.>", "prices.>", QueueKind.DURABLE_SUBSCRIPTION, "eu = 'x'"
            ),
            decode_queue_selector,
            "eu = 'x'",
        ),
        (
            "queue-created-without-selector",
            encode_queue_created("orders", "orders", None, QueueKind.QUEUE),
            decode_queue_selector,
            None,
        ),
        (
            "queue-created-unicode",
            encode_queue_created("キュー", "адрес", "🐦.*", QueueKind.DURABLE_SUBSCRIPTION),
            decode_queue_created,
            ("キュー", "адрес", "🐦.*", QueueKind.DURABLE_SUBSCRIPTION),
        ),
        (
            "queue-deleted",
            encode_name(RecordType.QUEUE_DELETED, "orders"),
            decode_name,
            "orders",
        ),
        (
            "queue-deleted-unicode",
            encode_name(RecordType.QUEUE_DELETED, "ßüñ"),
            decode_name,
            "ßüñ",
        ),
        (
            "message-acked",
            encode_queue_seq(RecordType.MESSAGE_ACKED, "orders", 7),
            decode_queue_seq,
            ("orders", 7, None),
        ),
        (
            "message-acked-max-seq",
            encode_queue_seq(RecordType.MESSAGE_ACKED, "q", U64_MAX),
            decode_queue_seq,
            ("q", U64_MAX, None),
        ),
        (
            "message-delivered",
            encode_queue_seq(RecordType.MESSAGE_DELIVERED, "orders", 7, 3),
            decode_queue_seq,
            ("orders", 7, 3),
        ),
        (
            "message-delivered-held",
            encode_delivered("orders", 7, 3, 1_795_000_000_123),
            decode_delivered,
            ("orders", 7, 3, 1_795_000_000_123),
        ),
        (
            "message-delivered-no-hold",
            encode_delivered("orders", 7, 3),
            decode_delivered,
            ("orders", 7, 3, 0),
        ),
        (
            "message-delivered-before-holds",  # as written before the hold field existed
            encode_queue_seq(RecordType.MESSAGE_DELIVERED, "orders", 7, 3),
            decode_delivered,
            ("orders", 7, 3, 0),
        ),
        (
            "message-delivered-held-read-as-before",  # what a broker older than holds sees
            encode_delivered("orders", 7, 3, 1_795_000_000_123),
            decode_queue_seq,
            ("orders", 7, 3),
        ),
        (
            "message-delivered-max-count",
            encode_queue_seq(RecordType.MESSAGE_DELIVERED, "ü", 1, U32_MAX),
            decode_queue_seq,
            ("ü", 1, U32_MAX),
        ),
        ("atomic-begin", encode_group(RecordType.ATOMIC_BEGIN, 1), decode_group, 1),
        (
            "atomic-commit-max",
            encode_group(RecordType.ATOMIC_COMMIT, U64_MAX),
            decode_group,
            U64_MAX,
        ),
        (
            "duplicate-id",
            encode_duplicate_id("topic://prices.ü", U64_MAX, "order-7ü"),
            decode_duplicate_id,
            ("topic://prices.ü", U64_MAX, "order-7ü"),
        ),
    ]
    for message, seq in (
        (PLAIN, 1),
        (EMPTY_BODY, 2),
        (BINARY, 3),
        (UNICODE, U64_MAX),
        (MANY_PROPERTIES, 5),
        (NOT_PERSISTENT, 6),
    ):
        cases.append(
            (
                f"message-added-{message.message_id}",
                encode_message_added("q-ü", seq, message),
                decode_message_added,
                ("q-ü", seq, message),
            )
        )
    return cases


CASES = _roundtrip_cases()
CASE_IDS = [case[0] for case in CASES]
EXPECTED_TYPE = {
    "queue-created": RecordType.QUEUE_CREATED,
    "durable-subscription-created": RecordType.QUEUE_CREATED,
    "durable-subscription-with-selector": RecordType.QUEUE_CREATED,
    "queue-created-without-selector": RecordType.QUEUE_CREATED,
    "queue-created-unicode": RecordType.QUEUE_CREATED,
    "queue-deleted": RecordType.QUEUE_DELETED,
    "queue-deleted-unicode": RecordType.QUEUE_DELETED,
    "message-acked": RecordType.MESSAGE_ACKED,
    "message-acked-max-seq": RecordType.MESSAGE_ACKED,
    "message-delivered": RecordType.MESSAGE_DELIVERED,
    "message-delivered-max-count": RecordType.MESSAGE_DELIVERED,
    "message-delivered-held": RecordType.MESSAGE_DELIVERED,
    "message-delivered-no-hold": RecordType.MESSAGE_DELIVERED,
    "message-delivered-before-holds": RecordType.MESSAGE_DELIVERED,
    "message-delivered-held-read-as-before": RecordType.MESSAGE_DELIVERED,
    "atomic-begin": RecordType.ATOMIC_BEGIN,
    "atomic-commit-max": RecordType.ATOMIC_COMMIT,
    "duplicate-id": RecordType.DUPLICATE_ID,
}


def _expected_type(name: str) -> RecordType:
    return EXPECTED_TYPE.get(name, RecordType.MESSAGE_ADDED)


@pytest.mark.parametrize(("name", "record", "decode", "value"), CASES, ids=CASE_IDS)
def test_round_trip(name: str, record: bytes, decode: Callable[[bytes], Any], value: Any) -> None:
    result = read_record(record, 0)
    assert result is not None
    kind, payload, next_offset = result
    assert kind is _expected_type(name)
    assert next_offset == len(record)
    assert decode(payload) == value


@pytest.mark.parametrize(("name", "record", "decode", "value"), CASES, ids=CASE_IDS)
def test_round_trip_from_a_view_into_a_segment(
    name: str, record: bytes, decode: Callable[[memoryview], Any], value: Any
) -> None:
    """Recovery reads records out of a memoryview of the whole segment: the payload is a
    view (no copy), and decodes to the same value, with bytes (never views) inside."""
    segment = memoryview(b"x" * 5 + record + b"y" * 3)
    result = read_record(segment, 5)
    assert result is not None
    kind, payload, next_offset = result
    assert isinstance(payload, memoryview)
    assert next_offset == 5 + len(record)
    decoded = decode(payload)
    assert decoded == value
    if kind is RecordType.MESSAGE_ADDED:
        assert type(decoded[2].body) is bytes


@pytest.mark.parametrize(("name", "record", "decode", "value"), CASES, ids=CASE_IDS)
def test_framing_is_length_type_payload_crc(
    name: str, record: bytes, decode: Callable[[bytes], Any], value: Any
) -> None:
    length, kind = RECORD_HEAD.unpack_from(record)
    payload = record[RECORD_HEAD.size : RECORD_HEAD.size + length]
    assert len(record) == RECORD_HEAD.size + length + CRC.size
    assert kind == _expected_type(name)
    (crc,) = CRC.unpack_from(record, len(record) - CRC.size)
    assert crc == zlib.crc32(bytes([kind]) + payload)


@pytest.mark.parametrize(("name", "record", "decode", "value"), CASES, ids=CASE_IDS)
def test_every_strict_prefix_is_incomplete(
    name: str, record: bytes, decode: Callable[[bytes], Any], value: Any
) -> None:
    for cut in range(len(record)):
        assert read_record(record[:cut], 0) is None, cut
        # The same, after other bytes and read through a memoryview.
        assert read_record(memoryview(b"\xee" * 3 + record[:cut]), 3) is None, cut


@pytest.mark.parametrize(("name", "record", "decode", "value"), CASES, ids=CASE_IDS)
def test_flipped_checksum_byte_is_corrupt(
    name: str, record: bytes, decode: Callable[[bytes], Any], value: Any
) -> None:
    for position in range(len(record) - CRC.size, len(record)):
        damaged = bytearray(record)
        damaged[position] ^= 0x01
        assert _error(CorruptRecord, read_record, bytes(damaged), 0) == "record checksum mismatch"


@pytest.mark.parametrize(("name", "record", "decode", "value"), CASES, ids=CASE_IDS)
def test_flipped_type_or_payload_byte_is_corrupt(
    name: str, record: bytes, decode: Callable[[bytes], Any], value: Any
) -> None:
    # Every octet the checksum covers; at most 64 positions per record to stay quick.
    positions = range(4, len(record) - CRC.size)
    step = max(1, len(positions) // 64)
    for position in positions[::step]:
        damaged = bytearray(record)
        damaged[position] ^= 0x80
        assert _error(CorruptRecord, read_record, bytes(damaged), 0) == "record checksum mismatch"


def test_records_are_read_one_after_another() -> None:
    records = [case[1] for case in CASES]
    data = SegmentHeader(1).encode() + b"".join(records)
    offset = SEGMENT_HEADER.size
    kinds = []
    while offset < len(data):
        result = read_record(memoryview(data), offset)
        assert result is not None
        kinds.append(result[0])
        offset = result[2]
    assert offset == len(data)
    assert kinds == [_expected_type(name) for name in CASE_IDS]


@pytest.mark.parametrize("kind", [0, 9, 99, 255])
def test_unknown_type_with_a_good_checksum_is_corrupt(kind: int) -> None:
    payload = b"\x00\x01queue"
    record = RECORD_HEAD.pack(len(payload), kind) + payload
    record += CRC.pack(zlib.crc32(bytes([kind]) + payload))
    assert _error(CorruptRecord, lambda: read_record(record, 0)) == f"unknown record type {kind}"


def test_impossible_length_is_corrupt_even_before_the_rest_arrives() -> None:
    head = RECORD_HEAD.pack(MAX_RECORD_PAYLOAD + 1, RecordType.MESSAGE_ADDED)
    assert (
        _error(CorruptRecord, lambda: read_record(head, 0))
        == f"record length {MAX_RECORD_PAYLOAD + 1} is impossible"
    )
    too_long = RECORD_HEAD.pack(U32_MAX, RecordType.QUEUE_CREATED) + b"\x00" * 64
    assert _error(CorruptRecord, lambda: read_record(too_long, 0)) == (
        f"record length {U32_MAX} is impossible"
    )


def test_largest_possible_length_is_merely_incomplete() -> None:
    head = RECORD_HEAD.pack(MAX_RECORD_PAYLOAD, RecordType.MESSAGE_ADDED)
    assert read_record(head + b"\x00" * 100, 0) is None


def test_length_field_flip_is_incomplete_or_corrupt() -> None:
    record = encode_message_added("q", 1, PLAIN)
    (length,) = struct.unpack_from(">I", record)
    # Longer than the data: incomplete; shorter: the checksum no longer matches.
    longer = struct.pack(">I", length + 1) + record[4:]
    shorter = struct.pack(">I", length - 1) + record[4:]
    assert read_record(longer, 0) is None
    assert _error(CorruptRecord, lambda: read_record(shorter, 0)) == "record checksum mismatch"


def test_decoders_reject_structurally_bad_payloads() -> None:
    def framed_payload(record: bytes) -> bytes:
        result = read_record(record, 0)
        assert result is not None
        return result[1]

    queue = framed_payload(encode_queue_created("q", "q", None, QueueKind.QUEUE))
    assert (
        _error(CorruptRecord, lambda: decode_queue_created(queue[:-1] + b"\x07"))
        == "unknown queue kind"
    )
    assert (
        _error(CorruptRecord, lambda: decode_queue_created(queue[:-1]))
        == "record payload is shorter than its fields"
    )
    assert (
        _error(CorruptRecord, lambda: decode_name(b"\x00\x02\xff\xfe"))
        == "record text is not UTF-8"
    )
    added = framed_payload(encode_message_added("q", 1, UNICODE))
    body_start = len(added) - len(UNICODE.body)
    for cut in range(body_start):  # every cut before the body (the body is the rest)
        assert (
            _error(CorruptRecord, decode_message_added, added[:cut])
            == "message record fields do not parse"
        )
    assert decode_message_added(added[:body_start]) == ("q", 1, replace(UNICODE, body=b""))
    assert (
        _error(CorruptRecord, lambda: decode_group(b"\x00" * 7))
        == "record payload is shorter than its fields"
    )
    duplicate = framed_payload(encode_duplicate_id("q", 1, "id"))
    assert (
        _error(CorruptRecord, lambda: decode_duplicate_id(duplicate + b"x"))
        == "duplicate-id record has trailing bytes"
    )
    assert (
        _error(CorruptRecord, lambda: decode_duplicate_id(duplicate[:-1]))
        == "record payload is shorter than its fields"
    )


def test_message_priority_above_nine_is_corrupt() -> None:
    payload = framed_payload_of(encode_message_added("q", 1, PLAIN))
    # ... routing u8 | priority u8 | persistent u8 | expires i64 | timestamp i64 | nprops u16 | body
    at = len(payload) - len(PLAIN.body) - 2 - 8 - 8 - 1 - 1
    assert payload[at] == PLAIN.priority
    bad = payload[:at] + bytes([MAX_PRIORITY + 1]) + payload[at + 1 :]
    assert _error(CorruptRecord, decode_message_added, bad) == "message record fields do not parse"


def test_message_decoded_without_its_body() -> None:
    payload = framed_payload_of(encode_message_added("q", 9, BINARY))
    assert decode_message_added(payload, with_body=False) == ("q", 9, replace(BINARY, body=b""))


def test_peek_reads_queue_and_seq_of_message_records() -> None:
    for record in (
        encode_message_added("ü-q", 42, UNICODE),
        encode_queue_seq(RecordType.MESSAGE_ACKED, "ü-q", 42),
        encode_queue_seq(RecordType.MESSAGE_DELIVERED, "ü-q", 42, 2),
    ):
        result = read_record(record, 0)
        assert result is not None
        assert peek_queue_seq(result[1]) == ("ü-q", 42)


def test_names_longer_than_str16_are_refused_when_encoding() -> None:
    longest = read_record(encode_name(RecordType.QUEUE_DELETED, "n" * 0xFFFF), 0)
    assert longest is not None
    assert decode_name(longest[1]) == "n" * 0xFFFF
    assert (
        _error(ValueError, lambda: encode_name(RecordType.QUEUE_DELETED, "n" * 0x10000))
        == "name too long for the journal"
    )
    # 32768 "é" are 65536 octets of UTF-8: one too many.
    assert _error(ValueError, lambda: encode_name(RecordType.QUEUE_DELETED, "é" * 0x8000)) == (
        "name too long for the journal"
    )


def test_frame_record_of_an_empty_payload() -> None:
    record = frame_record(RecordType.ATOMIC_BEGIN, b"")
    assert record == b"\x00\x00\x00\x00\x06" + CRC.pack(zlib.crc32(b"\x06"))
    assert read_record(record, 0) == (RecordType.ATOMIC_BEGIN, b"", 9)


# --- segment headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("segment_id", [1, 2, 99_999_999, U64_MAX])
def test_segment_header_round_trip(segment_id: int) -> None:
    header = SegmentHeader(segment_id)
    data = header.encode()
    assert data == MAGIC + b"\x00\x01\x00\x00" + segment_id.to_bytes(8, "big")
    assert len(data) == SEGMENT_HEADER.size == 16
    assert SegmentHeader.decode(data) == header
    assert SegmentHeader.decode(data + b"trailing records") == header
    assert header.version == FORMAT_VERSION == 1


@pytest.mark.parametrize("magic", [b"DVCK", b"\x00\x00\x00\x00", b"dvcj", b"JCVD"])
def test_segment_header_bad_magic_is_corrupt(magic: bytes) -> None:
    data = magic + SegmentHeader(1).encode()[4:]
    assert (
        _error(CorruptRecord, lambda: SegmentHeader.decode(data))
        == "not a journal segment (bad magic)"
    )


@pytest.mark.parametrize("version", [0, 2, 0x0101, 0xFFFF])
def test_segment_header_other_version_is_unsupported(version: int) -> None:
    data = SegmentHeader(1, version).encode()
    assert _error(UnsupportedFormat, lambda: SegmentHeader.decode(data)) == (
        f"segment format version {version} is not supported (this build reads version 1)"
    )


def test_segment_header_flags_are_ignored() -> None:
    data = bytearray(SegmentHeader(5).encode())
    data[6:8] = b"\xff\xff"
    assert SegmentHeader.decode(bytes(data)) == SegmentHeader(5)


@pytest.mark.parametrize("size", [0, 1, 4, 15])
def test_segment_header_truncated_is_corrupt(size: int) -> None:
    assert (
        _error(CorruptRecord, lambda: SegmentHeader.decode(SegmentHeader(1).encode()[:size]))
        == "segment header is truncated"
    )


def test_messages_without_properties_share_one_empty_mapping() -> None:
    bare = Message("ID:1", "orders", RoutingType.ANYCAST, b"x", {}, persistent=True)
    _, _, message = decode_message_added(framed_payload_of(encode_message_added("q", 1, bare)))
    assert message == bare
    assert message.properties is NO_PROPERTIES  # not a dict of its own per recovered message

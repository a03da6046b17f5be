"""The journal's C record decoder against the pure-Python reference: the same message from
every well-formed MESSAGE_ADDED payload, and nothing (None: the reference decides) from every
payload the reference refuses."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovecote.core.message import NO_PROPERTIES, Message, RoutingType
from dovecote.store import record
from dovecote.store.record import CorruptRecord, encode_message_added, read_record

pytestmark = pytest.mark.skipif(
    record._c_decode_message_added is None, reason="the C accelerator is not built"
)
COMPARE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_TEXT = st.text(max_size=10)
MESSAGES = st.builds(
    Message,
    message_id=_TEXT,
    address=_TEXT,
    routing=st.sampled_from(RoutingType),
    body=st.binary(max_size=40),
    properties=st.dictionaries(_TEXT, _TEXT, max_size=4),
    persistent=st.booleans(),
    priority=st.integers(min_value=0, max_value=9),
    expires=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    timestamp=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


def payload_of(queue: str, seq: int, message: Message) -> bytes:
    found = read_record(encode_message_added(queue, seq, message), 0)
    assert found is not None
    return bytes(found[1])


def reference(payload: bytes, with_body: bool) -> object:
    try:
        return record._decode_message_added(payload, with_body)
    except CorruptRecord:
        return CorruptRecord


def accelerated(payload: bytes, with_body: bool) -> object:
    assert record._c_decode_message_added is not None
    found = record._c_decode_message_added(payload, with_body)
    return CorruptRecord if found is None else found


@COMPARE
@given(queue=_TEXT, seq=st.integers(min_value=0, max_value=2**64 - 1), message=MESSAGES)
def test_well_formed_payloads_decode_alike(queue: str, seq: int, message: Message) -> None:
    payload = payload_of(queue, seq, message)
    for with_body in (True, False):
        decoded = accelerated(payload, with_body)
        assert decoded == reference(payload, with_body)
        assert decoded == (queue, seq, message if with_body else _bodiless(message))
    # From a view into a mapped segment too (recovery's case).
    assert accelerated(memoryview(payload), True) == (queue, seq, message)


@COMPARE
@given(
    message=MESSAGES,
    cut=st.integers(min_value=0, max_value=200),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.integers(0, 255))),
)
def test_damaged_payloads_are_refused_alike(
    message: Message, cut: int, flips: list[tuple[int, int]]
) -> None:
    payload = bytearray(payload_of("orders", 7, message))
    for at, value in flips:
        if at < len(payload):
            payload[at] = value
    damaged = bytes(payload[: min(cut, len(payload))])
    for with_body in (True, False):
        assert accelerated(damaged, with_body) == reference(damaged, with_body)


def test_a_priority_above_nine_is_refused() -> None:
    payload = bytearray(payload_of("q", 1, Message("id", "q", RoutingType.ANYCAST, b"")))
    at = (2 + 1) + 8 + (2 + 2) + (2 + 1) + 1  # queue, seq, id, address, routing: the priority
    assert payload[at] == 4  # (the default priority, where the layout says)
    payload[at] = 10
    assert accelerated(bytes(payload), True) is CorruptRecord
    assert reference(bytes(payload), True) is CorruptRecord


def _bodiless(message: Message) -> Message:
    return replace(message, body=b"")


def test_a_message_without_properties_gets_the_shared_empty_mapping_as_in_the_reference() -> None:
    bare = Message("ID:1", "orders", RoutingType.ANYCAST, b"x", {}, persistent=True)
    for message, shared in ((bare, True), (replace(bare, properties={"k": "v"}), False)):
        payload = payload_of("orders", 1, message)
        for decode in (accelerated, reference):
            found = decode(payload, True)
            assert isinstance(found, tuple)
            assert found[2] == message
            assert (found[2].properties is NO_PROPERTIES) is shared

"""The load generator's own logic, without a broker: frame scanning and message accounting.

Every fixture is fed whole and byte by byte (a scanner that only works on whole frames would
miscount under load, where reads split frames anywhere).
"""

from __future__ import annotations

import re
from array import array

import pytest

from dovecote.bench.accounting import describe_missing, merge, percentile, tally
from dovecote.bench.frames import (
    BODY_HEAD_SIZE,
    BenchError,
    BrokerError,
    SendTemplate,
    command_of,
    connect_frame,
    header_value,
    split_frames,
    subscribe_frame,
)
from dovecote.bench.idle import ProcessStatus, is_steady
from dovecote.bench.receiver import Receiver
from dovecote.bench.runner import Load
from dovecote.bench.session import Target


def body(producer: int, seq: int, due: int = 0, sent: int = 0, size: int = 64) -> bytes:
    head = b"%04d:%010d:%019d:%019d:" % (producer, seq, due, sent)
    return head + b"." * (size - len(head))


def message(
    producer: int,
    seq: int,
    *,
    ack: str | None = None,
    length: bool = True,
    due: int = 0,
    sent: int = 0,
) -> bytes:
    payload = body(producer, seq, due, sent)
    headers = b"MESSAGE\ndestination:/queue/bench.t\nsubscription:0\nmessage-id:m%d\n" % seq
    if ack is not None:
        headers += b"ack:" + ack.encode() + b"\n"
    if length:
        headers += b"content-length:%d\n" % len(payload)
    return headers + b"\n" + payload + b"\0"


def feed_bytewise(receiver: Receiver, data: bytes) -> bytes:
    acks = b""
    for i in range(len(data)):
        acks += receiver.feed(data[i : i + 1], 1000)
    return acks


# --- split_frames ---------------------------------------------------------------------------


def test_split_finds_frames_by_content_length_and_by_nul() -> None:
    first = b"MESSAGE\ncontent-length:3\n\na\0b\0"
    second = b"RECEIPT\nreceipt-id:r1\n\n\0"
    buf = first + second
    spans, pos = split_frames(buf)
    assert spans == [(0, 26, 29), (30, 53, 53)]
    assert pos == len(buf)
    assert buf[26:29] == b"a\0b"
    assert command_of(buf, spans[1]) == b"RECEIPT"
    assert header_value(buf, spans[1], b"receipt-id") == b"r1"


def test_split_skips_heartbeat_eols_between_frames() -> None:
    buf = b"\n\r\nRECEIPT\nreceipt-id:a\n\n\0\n\nRECEIPT\nreceipt-id:b\n\n\0\n"
    spans, pos = split_frames(buf)
    assert [header_value(buf, s, b"receipt-id") for s in spans] == [b"a", b"b"]
    assert pos == len(buf)


def test_split_accepts_crlf_header_lines() -> None:
    buf = b"MESSAGE\r\ncontent-length:2\r\nack:x\r\n\r\nhi\0"
    spans, pos = split_frames(buf)
    assert spans == [(0, 36, 38)]
    assert command_of(buf, spans[0]) == b"MESSAGE"
    assert header_value(buf, spans[0], b"ack") == b"x"
    assert pos == len(buf)


def test_split_leaves_an_incomplete_frame_for_the_next_read() -> None:
    whole = b"RECEIPT\nreceipt-id:r\n\n\0" + b"MESSAGE\ncontent-length:5\n\nabc"
    spans, pos = split_frames(whole)
    assert spans == [(0, 22, 22)]
    assert pos == 23
    for cut in range(len(whole) - 23):
        assert split_frames(whole[23 : 23 + cut]) == ([], 0)


def test_split_resumes_from_the_given_position() -> None:
    buf = b"RECEIPT\nreceipt-id:a\n\n\0RECEIPT\nreceipt-id:b\n\n\0"
    spans, pos = split_frames(buf, 23)
    assert spans == [(23, 45, 45)]
    assert pos == 46


def test_header_value_takes_the_first_of_repeated_headers() -> None:
    buf = b"MESSAGE\nack:first\nack:second\n\n\0"
    spans, _ = split_frames(buf)
    assert header_value(buf, spans[0], b"ack") == b"first"
    assert header_value(buf, spans[0], b"receipt-id") is None


def test_split_rejects_a_body_longer_than_content_length() -> None:
    with pytest.raises(BrokerError, match="no NUL after the body"):
        split_frames(b"MESSAGE\ncontent-length:1\n\nab\0")


def test_split_rejects_a_content_length_that_is_not_a_number() -> None:
    with pytest.raises(BrokerError, match="bad content-length"):
        split_frames(b"MESSAGE\ncontent-length:x\n\n\0")


# --- encoding -------------------------------------------------------------------------------


def test_send_template_encodes_ids_padding_and_receipt() -> None:
    template = SendTemplate("/queue/bench.t", 60, persistent=False)
    frame = template.frame(3, 42, due_ns=7, sent_ns=9, receipt="r42")
    expected_body = b"0003:0000000042:0000000000000000007:0000000000000000009:...."
    assert frame == (
        b"SEND\ndestination:/queue/bench.t\npersistent:false\ncontent-length:60\n"
        b"receipt:r42\n\n" + expected_body + b"\0"
    )
    spans, _ = split_frames(frame)
    assert frame[spans[0][1] : spans[0][2]] == expected_body


def test_send_template_cycles_extra_headers_by_sequence() -> None:
    template = SendTemplate(
        "/queue/q", 60, persistent=False, header_cycle=("shard:0\n", "shard:1\n")
    )
    heads = [template.frame(0, seq).split(b"\n\n", 1)[0] for seq in range(3)]
    assert [h.split(b"\n")[-1] for h in heads] == [b"shard:0", b"shard:1", b"shard:0"]


def test_send_template_refuses_bodies_too_small_for_the_ids() -> None:
    with pytest.raises(BenchError, match="at least 56"):
        SendTemplate("/queue/q", BODY_HEAD_SIZE - 1, persistent=True)


def test_client_frames_escape_values_except_in_connect() -> None:
    assert connect_frame("vh", "u:1", None) == (
        b"CONNECT\naccept-version:1.2\nhost:vh\nheart-beat:0,0\nlogin:u:1\n\n\0"
    )
    assert subscribe_frame("/topic/a:b", "0", "auto", "s0") == (
        b"SUBSCRIBE\ndestination:/topic/a\\cb\nid:0\nack:auto\nreceipt:s0\n\n\0"
    )


# --- Receiver: counting ---------------------------------------------------------------------


STREAM = (
    message(0, 0)
    + message(1, 2, length=False)
    + b"\n"
    + message(0, 0)  # a duplicate
    + b"RECEIPT\nreceipt-id:sub-0\n\n\0"
    + message(0, 3)
    + message(7, 1)  # producer 7 is not part of this run
    + message(0, 4)  # sequence 4 is past the end of the run
)


@pytest.mark.parametrize("bytewise", [False, True])
def test_receiver_counts_each_message_and_flags_foreign_ones(bytewise: bool) -> None:
    receiver = Receiver(producers=2, per_producer=4)
    if bytewise:
        feed_bytewise(receiver, STREAM)
    else:
        receiver.feed(STREAM, 1000)
    assert list(receiver.counts) == [2, 0, 0, 1, 0, 0, 1, 0]
    assert receiver.messages == 6
    assert receiver.unique == 3
    assert receiver.foreign == 2
    assert receiver.receipts == [b"sub-0"]
    assert receiver.buf == bytearray()


def test_receiver_keeps_a_partial_frame_and_times_arrivals() -> None:
    receiver = Receiver(producers=1, per_producer=2)
    first, second = message(0, 0), message(0, 1)
    receiver.feed(first + second[:10], 5)
    assert receiver.unique == 1
    receiver.feed(second[10:], 8)
    assert receiver.unique == 2
    assert receiver.first_ns == 5
    assert receiver.last_ns == 8


def test_receiver_records_latency_from_the_warmup_sequence_on() -> None:
    receiver = Receiver(producers=1, per_producer=3, timed_from_seq=1)
    stream = message(0, 0, due=1, sent=2) + message(0, 1, due=100, sent=150)
    receiver.feed(stream + message(0, 2, due=200, sent=210), 1000)
    assert list(receiver.latency_ns) == [850, 790]
    assert list(receiver.schedule_latency_ns) == [900, 800]


def test_receiver_raises_on_an_error_frame() -> None:
    receiver = Receiver(producers=1, per_producer=1)
    with pytest.raises(BrokerError, match=re.escape("not allowed to read /queue/x | sorry")):
        receiver.feed(b"ERROR\nmessage:not allowed to read /queue/x\n\nsorry\0", 0)


def test_receiver_rejects_unexpected_frames() -> None:
    with pytest.raises(BrokerError, match="unexpected CONNECTED"):
        Receiver(1, 1).feed(b"CONNECTED\nversion:1.2\n\n\0", 0)


# --- Receiver: acknowledgements -------------------------------------------------------------


@pytest.mark.parametrize("bytewise", [False, True])
def test_client_individual_acks_every_message(bytewise: bool) -> None:
    receiver = Receiver(producers=1, per_producer=2, ack_mode="client-individual")
    stream = message(0, 0, ack="a\\c0") + message(0, 1, ack="a1")
    acks = feed_bytewise(receiver, stream) if bytewise else receiver.feed(stream, 0)
    assert acks == b"ACK\nid:a\\c0\n\n\0ACK\nid:a1\n\n\0"


def test_client_ack_acknowledges_only_the_last_message_of_a_read() -> None:
    receiver = Receiver(producers=1, per_producer=2, ack_mode="client")
    acks = receiver.feed(message(0, 0, ack="a0") + message(0, 1, ack="a1"), 0)
    assert acks == b"ACK\nid:a1\n\n\0"


def test_auto_ack_sends_nothing_back() -> None:
    assert Receiver(1, 1).feed(message(0, 0), 0) == b""


def test_client_ack_without_an_ack_header_is_a_broker_error() -> None:
    with pytest.raises(BrokerError, match="no ack header"):
        Receiver(1, 1, ack_mode="client").feed(message(0, 0), 0)


# --- accounting -----------------------------------------------------------------------------


def test_tally_counts_loss_and_duplicates_exactly() -> None:
    result = tally(array("I", [1, 0, 3, 1, 0, 2]))
    assert result.expected == 6
    assert result.received == 7
    assert result.unique == 4
    assert result.lost == 2
    assert result.duplicates == 3
    assert result.first_lost == (1, 4)
    assert not result.is_exact


def test_tally_of_a_perfect_run_is_exact() -> None:
    result = tally(array("I", [1, 1, 1]))
    assert result.is_exact
    assert result.first_lost == ()


def test_merge_adds_what_consumers_of_one_queue_received() -> None:
    merged = merge([array("I", [1, 0, 0]), array("I", [0, 0, 1]), array("I", [1, 0, 0])])
    assert list(merged) == [2, 0, 1]
    assert tally(merged).duplicates == 1
    assert tally(merged).lost == 1


def test_merge_refuses_counts_of_different_runs() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        merge([array("I", [1]), array("I", [1, 1])])


def test_missing_messages_are_named_by_producer_and_sequence() -> None:
    assert describe_missing([1, 4], per_producer=3) == "0/1, 1/1"


def test_percentile_is_nearest_rank() -> None:
    ordered = list(range(1, 101))
    assert percentile(ordered, 0.5) == 50
    assert percentile(ordered, 0.99) == 99
    assert percentile(ordered, 0.999) == 100
    assert percentile(ordered, 1.0) == 100
    assert percentile([7], 0.5) == 7


def test_a_queue_run_is_complete_when_consumers_together_have_everything() -> None:
    target = Target("127.0.0.1", 1)
    queue = Load(target, "/queue/bench.t", messages=5, size=64, producers=2, consumers=3)
    assert queue.is_complete([4, 3, 3])
    assert not queue.is_complete([4, 3, 2])
    topic = Load(target, "/topic/bench.t", messages=5, size=64, consumers=2)
    assert topic.is_complete([5, 5])
    assert not topic.is_complete([5, 4])


def test_a_process_is_steady_when_threads_and_rss_stop_moving() -> None:
    base = ProcessStatus(rss_kib=100_000, threads=40)
    assert is_steady([base, ProcessStatus(100_400, 40), ProcessStatus(99_600, 40)])
    assert not is_steady([base, ProcessStatus(100_600, 40)])
    assert not is_steady([base, ProcessStatus(100_000, 41)])


def test_nack_every_nacks_a_first_delivery_once_and_counts_the_redelivery() -> None:
    receiver = Receiver(producers=1, per_producer=4, ack_mode="client-individual", nack_every=2)
    stream = b"".join(message(0, seq, ack=f"a{seq}") for seq in range(4))
    assert receiver.feed(stream, 0) == (
        b"NACK\nid:a0\n\n\0ACK\nid:a1\n\n\0NACK\nid:a2\n\n\0ACK\nid:a3\n\n\0"
    )
    assert receiver.unique == 2
    again = receiver.feed(message(0, 2, ack="b2") + message(0, 0, ack="b0"), 0)
    assert again == b"ACK\nid:b2\n\n\0ACK\nid:b0\n\n\0"
    assert list(receiver.counts) == [1, 1, 1, 1]


def test_nack_every_needs_client_individual_acks() -> None:
    with pytest.raises(ValueError, match="client-individual"):
        Receiver(1, 1, ack_mode="client", nack_every=2)

"""Wire transcripts of well-behaved STOMP sessions: exact bytes in, exact bytes out.

A broker on a free port, a raw socket, and the frames the broker must answer with, byte for
byte (mosquitto ``test/broker`` style). Only message-id, timestamp and session vary between
runs; ``RawStomp.expect`` compares them as ``*``.
"""

from __future__ import annotations

import time

import pytest

SERVER = b"server:dovecote/0.1.0\n"


def connected(version: bytes | None, heart_beat: bytes = b"0,0") -> bytes:
    """The CONNECTED frame the broker writes, with the session normalised."""
    negotiated = b"" if version is None else b"version:%s\nheart-beat:%s\n" % (version, heart_beat)
    return b"CONNECTED\n" + negotiated + SERVER + b"session:*\n\n\0"


# --- connecting -----------------------------------------------------------------------------


def test_connect_1_2_gets_exact_connected_frame(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.send(b"CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
    client.expect(connected(b"1.2"))


def test_stomp_command_connects_like_connect(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.send(b"STOMP\naccept-version:1.2\nhost:localhost\n\n\0")
    client.expect(connected(b"1.2"))


def test_connect_accepts_crlf_line_ends(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.send(b"CONNECT\r\naccept-version:1.2\r\nhost:localhost\r\n\r\n\0")
    client.expect(connected(b"1.2"))


@pytest.mark.parametrize(
    ("accept_version", "negotiated"),
    [
        (None, None),  # no accept-version: STOMP 1.0, whose CONNECTED has no version header
        (b"1.0", None),
        (b"1.1", b"1.1"),
        (b"1.2", b"1.2"),
        (b"1.0,1.1", b"1.1"),
        (b"1.0,1.1,1.2", b"1.2"),
        (b"1.2,1.0", b"1.2"),
        (b"1.1, 3.0", b"1.1"),
    ],
)
def test_version_negotiation_picks_highest_common_version(
    broker, raw_stomp, accept_version, negotiated
):
    client = raw_stomp(broker.port)
    header = b"" if accept_version is None else b"accept-version:" + accept_version + b"\n"
    client.send(b"CONNECT\n" + header + b"host:localhost\n\n\0")
    client.expect(connected(negotiated))


@pytest.mark.parametrize("accept_version", [b"2.0", b"0.9,1.3"])
def test_unsupported_version_gets_error_with_version_header_then_close(
    broker, raw_stomp, accept_version
):
    client = raw_stomp(broker.port)
    client.send(b"CONNECT\naccept-version:" + accept_version + b"\nhost:localhost\n\n\0")
    detail = b"supported protocol versions are 1.0,1.1,1.2; client accepts " + accept_version
    assert client.read_until_closed() == (
        b"ERROR\nmessage:Protocol error: " + detail + b"\ncontent-type:text/plain\n"
        b"version:1.0,1.1,1.2\ncontent-length:%d\n\n" % len(detail) + detail + b"\0"
    )


@pytest.mark.parametrize(
    ("client_heart_beat", "broker_heart_beat"),
    [
        (b"0,0", b"0,0"),
        (b"0,200", b"200,0"),  # client wants beats every 200 ms; the broker will send them
        (b"300,0", b"0,300"),  # client promises beats every 300 ms; the broker wants them
        (b"10,20", b"100,100"),  # never more often than the broker's 100 ms floor
        (b"1000,500", b"500,1000"),
    ],
)
def test_heart_beat_negotiation(broker, raw_stomp, client_heart_beat, broker_heart_beat):
    client = raw_stomp(broker.port)
    client.send(b"CONNECT\naccept-version:1.2\nheart-beat:" + client_heart_beat + b"\n\n\0")
    client.expect(connected(b"1.2", broker_heart_beat))


# --- sending and receiving ------------------------------------------------------------------


def test_send_with_receipt_gets_receipt(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"SEND\ndestination:/queue/wire.send\nreceipt:r-1\n\nhello\0")
    client.expect(b"RECEIPT\nreceipt-id:r-1\n\n\0")


def test_receipt_id_is_escaped_like_the_receipt_header(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"SEND\ndestination:/queue/wire.send\nreceipt:a\\cb\\\\c\n\nhello\0")
    client.expect(b"RECEIPT\nreceipt-id:a\\cb\\\\c\n\n\0")


def test_subscribe_and_message_frame_exact_bytes_1_2(broker, raw_stomp):
    consumer = raw_stomp(broker.port)
    consumer.connect()
    consumer.send(
        b"SUBSCRIBE\nid:sub-1\ndestination:/queue/wire.msg\nack:client-individual\nreceipt:s1\n\n\0"
    )
    consumer.expect(b"RECEIPT\nreceipt-id:s1\n\n\0")
    producer = raw_stomp(broker.port)
    producer.connect()
    producer.send(
        b"SEND\ndestination:/queue/wire.msg\npersistent:true\npriority:7\n"
        b"x-custom:a\\cb\\nc\ncontent-type:text/plain\ncontent-length:5\nreceipt:p1\n\n"
        b"he\0lo\0"
    )
    producer.expect(b"RECEIPT\nreceipt-id:p1\n\n\0")
    consumer.expect(
        b"MESSAGE\nsubscription:sub-1\nack:1-1\nmessage-id:*\ndestination:/queue/wire.msg\n"
        b"expires:0\npriority:7\ntimestamp:*\npersistent:true\nx-custom:a\\cb\\nc\n"
        b"content-type:text/plain\ncontent-length:5\n\nhe\0lo\0"
    )
    consumer.send(b"ACK\nid:1-1\nreceipt:a1\n\n\0")
    consumer.expect(b"RECEIPT\nreceipt-id:a1\n\n\0")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_message_id_colon_is_escaped(broker, raw_stomp, version):
    # Regression: ids (ID:<node>-<n>) went out with a raw ':' (STOMP 1.2 "Value Encoding").
    client = raw_stomp(broker.port)
    client.connect(version)
    client.send(b"SUBSCRIBE\nid:0\ndestination:/queue/wire.id\n\n\0")
    client.send(b"SEND\ndestination:/queue/wire.id\n\nx\0")
    message_id = header(client.read_frame(), b"message-id")
    assert message_id.startswith(b"ID\\c")
    assert b":" not in message_id


def test_message_frame_in_auto_ack_mode_has_no_ack_header(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"SUBSCRIBE\nid:0\ndestination:/topic/wire.news\nreceipt:s\n\n\0")
    client.expect(b"RECEIPT\nreceipt-id:s\n\n\0")
    client.send(b"SEND\ndestination:/topic/wire.news\n\nextra\0")
    client.expect(
        b"MESSAGE\nsubscription:0\nmessage-id:*\ndestination:/topic/wire.news\n"
        b"expires:0\npriority:4\ntimestamp:*\ncontent-length:5\n\nextra\0"
    )


def test_message_frame_exact_bytes_1_0_are_not_escaped(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect("1.0")
    # STOMP 1.0: SUBSCRIBE needs no id (the destination stands in) and nothing is escaped.
    client.send(b"SUBSCRIBE\ndestination:/queue/wire.v10\nack:client\nreceipt:s\n\n\0")
    client.expect(b"RECEIPT\nreceipt-id:s\n\n\0")
    client.send(b"SEND\ndestination:/queue/wire.v10\nx-raw:a:b\\c\n\nold\0")
    frame = client.expect(
        b"MESSAGE\nsubscription:/queue/wire.v10\nmessage-id:*\ndestination:/queue/wire.v10\n"
        b"expires:0\npriority:4\ntimestamp:*\nx-raw:a:b\\c\ncontent-length:3\n\nold\0"
    )
    message_id = header(frame, b"message-id")
    assert message_id.startswith(b"ID:")  # unescaped in 1.0
    client.send(b"ACK\nmessage-id:" + message_id + b"\nreceipt:a\n\n\0")
    client.expect(b"RECEIPT\nreceipt-id:a\n\n\0")


def header(frame: bytes, name: bytes) -> bytes:
    """The raw (still escaped) value of the first ``name`` header of ``frame``."""
    for line in frame.partition(b"\n\n")[0].split(b"\n")[1:]:
        key, _, value = line.partition(b":")
        if key == name:
            return value
    raise AssertionError(f"no {name!r} header in {frame!r}")


def test_message_frame_1_1_has_no_ack_header_and_acks_by_message_id(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect("1.1")
    client.send(b"SUBSCRIBE\nid:7\ndestination:/queue/wire.v11\nack:client-individual\n\n\0")
    client.send(b"SEND\ndestination:/queue/wire.v11\n\nmid\0")
    frame = client.expect(
        b"MESSAGE\nsubscription:7\nmessage-id:*\ndestination:/queue/wire.v11\n"
        b"expires:0\npriority:4\ntimestamp:*\ncontent-length:3\n\nmid\0"
    )
    message_id = header(frame, b"message-id")  # escaped as 1.1 escapes it; sent back as is
    client.send(b"ACK\nsubscription:7\nmessage-id:" + message_id + b"\nreceipt:a\n\n\0")
    client.expect(b"RECEIPT\nreceipt-id:a\n\n\0")


def test_empty_body_message(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"SEND\ndestination:/queue/wire.empty\n\n\0")
    client.send(b"SUBSCRIBE\nid:0\ndestination:/queue/wire.empty\n\n\0")
    client.expect(
        b"MESSAGE\nsubscription:0\nmessage-id:*\ndestination:/queue/wire.empty\n"
        b"expires:0\npriority:4\ntimestamp:*\ncontent-length:0\n\n\0"
    )


def test_repeated_header_first_occurrence_wins(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"SEND\ndestination:/queue/wire.dup\nfoo:1\nfoo:2\n\nx\0")
    client.send(b"SUBSCRIBE\nid:0\ndestination:/queue/wire.dup\n\n\0")
    client.expect(
        b"MESSAGE\nsubscription:0\nmessage-id:*\ndestination:/queue/wire.dup\n"
        b"expires:0\npriority:4\ntimestamp:*\nfoo:1\ncontent-length:1\n\nx\0"
    )


def test_frames_split_byte_by_byte_are_understood(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    for byte in b"SEND\ndestination:/queue/wire.split\nreceipt:split\n\nabc\0":
        client.send(bytes([byte]))
    client.expect(b"RECEIPT\nreceipt-id:split\n\n\0")


# --- heart-beats ----------------------------------------------------------------------------


def test_broker_sends_heart_beat_eols_when_client_asks(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.send(b"CONNECT\naccept-version:1.2\nheart-beat:0,200\n\n\0")
    client.expect(connected(b"1.2", b"200,0"))
    start = time.monotonic()
    deadline = start + 3.0
    while len(client.buffer) < 3:
        client.fill(deadline)
    elapsed = time.monotonic() - start
    assert client.buffer[:3] == b"\n\n\n"
    # At least every 200 ms (STOMP 1.2 "Heart-beating"), yet not a flood.
    assert 0.15 <= elapsed <= 1.5


def test_broker_sends_no_heart_beats_when_not_asked(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.send(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0")
    client.expect(connected(b"1.2"))
    time.sleep(0.35)  # longer than any interval the broker could have picked on its own
    assert client.available() == b""


def test_silent_client_that_promised_heart_beats_is_disconnected(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.send(b"CONNECT\naccept-version:1.2\nheart-beat:100,0\n\n\0")
    client.expect(connected(b"1.2", b"0,100"))
    start = time.monotonic()
    assert client.read_until_closed(timeout=3.0) == b""
    # Not before the promised interval has passed (the broker allows some grace).
    assert time.monotonic() - start >= 0.1


def test_client_sending_heart_beats_stays_connected(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.send(b"CONNECT\naccept-version:1.2\nheart-beat:150,0\n\n\0")
    client.expect(connected(b"1.2", b"0,150"))
    until = time.monotonic() + 0.8  # well past the broker's tolerance of silence (2 x 150 ms)
    while time.monotonic() < until:
        client.send(b"\n")
        time.sleep(0.04)
    client.send(b"SEND\ndestination:/queue/wire.hb\nreceipt:alive\n\nx\0")
    client.expect(b"RECEIPT\nreceipt-id:alive\n\n\0")


# --- disconnecting --------------------------------------------------------------------------


def test_disconnect_with_receipt_gets_receipt_then_close(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"DISCONNECT\nreceipt:bye\n\n\0")
    assert client.read_until_closed() == b"RECEIPT\nreceipt-id:bye\n\n\0"


def test_disconnect_without_receipt_closes(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"DISCONNECT\n\n\0")
    assert client.read_until_closed() == b""


def test_frames_after_disconnect_are_ignored(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"DISCONNECT\nreceipt:bye\n\n\0SEND\ndestination:/queue/wire.late\n\nlate\0")
    assert client.read_until_closed() == b"RECEIPT\nreceipt-id:bye\n\n\0"
    other = raw_stomp(broker.port)
    other.connect()
    other.send(b"SEND\ndestination:/queue/wire.late\n\nmarker\0")
    other.send(b"SUBSCRIBE\nid:0\ndestination:/queue/wire.late\n\n\0")
    assert other.read_frame().endswith(b"\n\nmarker\0")


# --- temporary destinations -----------------------------------------------------------------


async def _queue_names(thread) -> list[str]:
    return sorted(queue.name for queue in thread.broker.router.queues())


def test_temp_queue_reply_reaches_its_creator(broker, raw_stomp):
    requester = raw_stomp(broker.port)
    requester.connect()
    requester.send(b"SUBSCRIBE\nid:r\ndestination:/temp-queue/replies\nreceipt:s\n\n\0")
    requester.expect(b"RECEIPT\nreceipt-id:s\n\n\0")
    requester.send(b"SEND\ndestination:/queue/wire.service\nreply-to:/temp-queue/replies\n\nping\0")
    service = raw_stomp(broker.port)
    service.connect()
    service.send(b"SUBSCRIBE\nid:0\ndestination:/queue/wire.service\n\n\0")
    request = service.read_frame()
    reply_to = header(request, b"reply-to")
    assert reply_to.startswith(b"/remote-temp-queue/ID\\cc")  # ':' escaped in 1.2
    assert reply_to.endswith(b"\\creplies")
    service.send(b"SEND\ndestination:" + reply_to + b"\n\npong\0")
    # The creator sees its own name for the temp queue, as ActiveMQ shows it.
    requester.expect(
        b"MESSAGE\nsubscription:r\nmessage-id:*\ndestination:/temp-queue/replies\n"
        b"expires:0\npriority:4\ntimestamp:*\ncontent-length:4\n\npong\0"
    )


def test_send_to_deleted_temp_queue_creates_no_queue(broker, raw_stomp):
    # Regression: the late reply created a permanent queue under the temp name.
    requester = raw_stomp(broker.port)
    requester.connect()
    requester.send(b"SUBSCRIBE\nid:r\ndestination:/temp-queue/gone\n\n\0")
    requester.send(b"SEND\ndestination:/queue/wire.svc\nreply-to:/temp-queue/gone\n\nping\0")
    service = raw_stomp(broker.port)
    service.connect()
    service.send(b"SUBSCRIBE\nid:0\ndestination:/queue/wire.svc\n\n\0")
    reply_to = header(service.read_frame(), b"reply-to")
    assert broker.call(_queue_names(broker)) == [
        reply_to.decode().split("/")[-1].replace("\\c", ":"),
        "wire.svc",
    ]
    requester.send(b"DISCONNECT\nreceipt:bye\n\n\0")
    requester.read_until_closed()
    service.send(
        b"SEND\ndestination:" + reply_to + b"\n\nlate reply\0DISCONNECT\nreceipt:bye\n\n\0"
    )
    service.read_until_closed()  # a RECEIPT, or an ERROR naming the missing destination
    assert broker.call(_queue_names(broker)) == ["wire.svc"]


# --- delivery semantics, byte for byte ------------------------------------------------------


def message(sub: bytes, dest: bytes, body: bytes, *, ack: bytes = b"", extra: bytes = b"") -> bytes:
    """A normalised MESSAGE frame as the broker writes it (``extra``: headers after timestamp)."""
    ack_line = b"ack:" + ack + b"\n" if ack else b""
    return (
        b"MESSAGE\nsubscription:"
        + sub
        + b"\n"
        + ack_line
        + b"message-id:*\ndestination:"
        + dest
        + b"\nexpires:0\npriority:4\ntimestamp:*\n"
        + extra
        + b"content-length:%d\n\n" % len(body)
        + body
        + b"\0"
    )


def test_prefetch_size_limits_unacknowledged_deliveries(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(
        b"SEND\ndestination:/queue/wire.pf\n\nm1\0SEND\ndestination:/queue/wire.pf\n\nm2\0"
        b"SUBSCRIBE\nid:0\ndestination:/queue/wire.pf\nack:client-individual\n"
        b"activemq.prefetchSize:1\n\n\0"
        b"SEND\ndestination:/queue/wire.other\nreceipt:r\n\n\0"
    )
    client.expect(message(b"0", b"/queue/wire.pf", b"m1", ack=b"1-1"))
    client.expect(b"RECEIPT\nreceipt-id:r\n\n\0")  # m2 waits: the window is full
    client.send(b"ACK\nid:1-1\nreceipt:a\n\n\0")
    client.expect(message(b"0", b"/queue/wire.pf", b"m2", ack=b"1-2"))
    client.expect(b"RECEIPT\nreceipt-id:a\n\n\0")


def test_expired_message_is_never_delivered(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    far_future = b"4102444800000"  # 2100-01-01
    client.send(
        b"SEND\ndestination:/queue/wire.exp\nexpires:1\n\nstale\0"
        b"SEND\ndestination:/queue/wire.exp\nexpires:" + far_future + b"\n\nfresh\0"
        b"SUBSCRIBE\nid:0\ndestination:/queue/wire.exp\n\n\0"
    )
    client.expect(
        b"MESSAGE\nsubscription:0\nmessage-id:*\ndestination:/queue/wire.exp\nexpires:"
        + far_future
        + b"\npriority:4\ntimestamp:*\ncontent-length:5\n\nfresh\0"
    )


def test_priority_is_clamped_to_0_through_9(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(
        b"SEND\ndestination:/queue/wire.prio\npriority:12\n\nhigh\0"
        b"SEND\ndestination:/queue/wire.prio\npriority:-3\n\nlow\0"
        b"SUBSCRIBE\nid:0\ndestination:/queue/wire.prio\n\n\0"
    )
    for priority, body in ((b"9", b"high"), (b"0", b"low")):
        client.expect(
            b"MESSAGE\nsubscription:0\nmessage-id:*\ndestination:/queue/wire.prio\n"
            b"expires:0\npriority:" + priority + b"\ntimestamp:*\n"
            b"content-length:%d\n\n" % len(body) + body + b"\0"
        )


def test_two_subscriptions_on_one_queue_share_it_round_robin(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(
        b"SUBSCRIBE\nid:a\ndestination:/queue/wire.rr\n\n\0"
        b"SUBSCRIBE\nid:b\ndestination:/queue/wire.rr\n\n\0"
        + b"".join(b"SEND\ndestination:/queue/wire.rr\n\n%d\0" % n for n in range(1, 5))
    )
    for sub, body in ((b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"b", b"4")):
        client.expect(message(sub, b"/queue/wire.rr", body))


def test_unsubscribe_returns_unacknowledged_messages_marked_redelivered(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(
        b"SEND\ndestination:/queue/wire.un\n\nm1\0"
        b"SUBSCRIBE\nid:0\ndestination:/queue/wire.un\nack:client-individual\n\n\0"
    )
    client.expect(message(b"0", b"/queue/wire.un", b"m1", ack=b"1-1"))
    client.send(
        b"UNSUBSCRIBE\nid:0\nreceipt:u\n\n\0"
        b"SUBSCRIBE\nid:1\ndestination:/queue/wire.un\nack:client-individual\n\n\0"
    )
    client.expect(b"RECEIPT\nreceipt-id:u\n\n\0")
    client.expect(
        b"MESSAGE\nsubscription:1\nack:2-1\nredelivered:true\nJMSXDeliveryCount:2\n"
        b"message-id:*\ndestination:/queue/wire.un\nexpires:0\npriority:4\ntimestamp:*\n"
        b"content-length:2\n\nm1\0"
    )


def test_nack_in_a_transaction_redelivers_on_commit(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(
        b"SEND\ndestination:/queue/wire.ntx\n\nm1\0"
        b"SUBSCRIBE\nid:0\ndestination:/queue/wire.ntx\nack:client-individual\n\n\0"
    )
    client.expect(message(b"0", b"/queue/wire.ntx", b"m1", ack=b"1-1"))
    client.send(b"BEGIN\ntransaction:t\n\n\0NACK\nid:1-1\ntransaction:t\nreceipt:n\n\n\0")
    client.expect(b"RECEIPT\nreceipt-id:n\n\n\0")  # held until COMMIT: no redelivery yet
    client.send(b"COMMIT\ntransaction:t\nreceipt:c\n\n\0")
    client.expect(b"RECEIPT\nreceipt-id:c\n\n\0")
    # Redelivered after the default redelivery delay (1 s, as ActiveMQ's).
    client.expect(
        b"MESSAGE\nsubscription:0\nack:1-1\nredelivered:true\nJMSXDeliveryCount:2\n"
        b"message-id:*\ndestination:/queue/wire.ntx\nexpires:0\npriority:4\ntimestamp:*\n"
        b"content-length:2\n\nm1\0"
    )


def test_unsubscribe_naming_a_durable_subscription_deletes_it(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect(extra=b"client-id:wire-client\n")
    durable = b"activemq.subscriptionName:audit\n"
    client.send(
        b"SUBSCRIBE\nid:0\ndestination:/topic/wire.d\n" + durable + b"\n\0"
        b"UNSUBSCRIBE\nid:0\n" + durable + b"receipt:u\n\n\0"
        b"SEND\ndestination:/topic/wire.d\n\nnobody kept this\0"
        b"SUBSCRIBE\nid:1\ndestination:/topic/wire.d\n" + durable + b"\n\0"
        b"SEND\ndestination:/topic/wire.d\n\nnew\0"
    )
    client.expect(b"RECEIPT\nreceipt-id:u\n\n\0")
    client.expect(message(b"1", b"/topic/wire.d", b"new"))


def test_second_consumer_on_an_active_durable_subscription_is_refused(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect(extra=b"client-id:wire-client\n")
    durable = b"activemq.subscriptionName:audit\n"
    client.send(
        b"SUBSCRIBE\nid:0\ndestination:/topic/wire.d\n" + durable + b"\n\0"
        b"SUBSCRIBE\nid:1\ndestination:/topic/wire.d\n" + durable + b"\n\0"
    )
    detail = b"durable subscription 'wire-client.audit' already has a consumer"
    assert client.read_until_closed() == (
        b"ERROR\nmessage:Conflict\\c " + detail + b"\ncontent-type:text/plain\n"
        b"content-length:%d\n\n" % len(detail) + detail + b"\0"
    )


def test_selector_filters_messages(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(
        b"SUBSCRIBE\nid:0\ndestination:/queue/wire.sel\nselector:color = 'red'\n\n\0"
        b"SEND\ndestination:/queue/wire.sel\ncolor:blue\n\nblue\0"
        b"SEND\ndestination:/queue/wire.sel\ncolor:red\n\nred\0"
    )
    client.expect(message(b"0", b"/queue/wire.sel", b"red", extra=b"color:red\n"))


def test_subscribe_with_a_bad_selector_is_refused(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(b"SUBSCRIBE\nid:0\ndestination:/queue/wire.sel2\nselector:a = \n\n\0")
    detail = b"invalid selector: unexpected end of selector at column 5"
    escaped = detail.replace(b":", b"\\c")
    assert client.read_until_closed() == (
        b"ERROR\nmessage:Invalid request\\c " + escaped + b"\ncontent-type:text/plain\n"
        b"content-length:%d\n\n" % len(detail) + detail + b"\0"
    )


def test_second_connection_with_the_same_client_id_is_refused(broker, raw_stomp):
    first = raw_stomp(broker.port)
    first.connect(extra=b"client-id:wire-dup\n")
    second = raw_stomp(broker.port)
    second.send(b"CONNECT\naccept-version:1.2\nhost:x\nclient-id:wire-dup\n\n\0")
    detail = b"client-id 'wire-dup' is already connected"
    assert second.read_until_closed() == (
        b"ERROR\nmessage:Conflict: " + detail + b"\ncontent-type:text/plain\n"
        b"content-length:%d\n\n" % len(detail) + detail + b"\0"
    )
    third = raw_stomp(broker.port)  # once the first leaves, the id is free again
    first.send(b"DISCONNECT\n\n\0")
    first.read_until_closed()
    assert third.connect(extra=b"client-id:wire-dup\n").startswith(b"CONNECTED\n")


def test_receipts_come_back_in_frame_order_behind_a_durable_one(tmp_path, raw_stomp):
    from dovecote.pytest_plugin import BrokerThread

    thread = BrokerThread(data_dir=tmp_path).start()
    try:
        client = raw_stomp(thread.port)
        client.connect()
        client.send(
            b"SEND\ndestination:/queue/wire.order\npersistent:true\nreceipt:1\n\nx\0"
            b"SEND\ndestination:/queue/wire.order\nreceipt:2\n\ny\0"
            b"BEGIN\ntransaction:t\nreceipt:3\n\n\0"
        )
        assert [client.read_frame() for _ in range(3)] == [
            b"RECEIPT\nreceipt-id:%d\n\n\0" % n for n in (1, 2, 3)
        ]
    finally:
        thread.stop()


def test_subscribe_receipt_comes_before_the_backlog(broker, raw_stomp):
    client = raw_stomp(broker.port)
    client.connect()
    client.send(
        b"SEND\ndestination:/queue/wire.backlog\nreceipt:s1\n\nfirst\0"
        b"SEND\ndestination:/queue/wire.backlog\nreceipt:s2\n\nsecond\0"
    )
    client.expect(b"RECEIPT\nreceipt-id:s1\n\n\0")
    client.expect(b"RECEIPT\nreceipt-id:s2\n\n\0")
    client.send(b"SUBSCRIBE\nid:0\ndestination:/queue/wire.backlog\nreceipt:sub\n\n\0")
    frames = [client.read_frame() for _ in range(3)]
    assert frames[0] == b"RECEIPT\nreceipt-id:sub\n\n\0"
    assert [f.rsplit(b"\n\n", 1)[1] for f in frames[1:]] == [b"first\0", b"second\0"]

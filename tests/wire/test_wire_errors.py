"""Wire transcripts of bad input: each gets one ERROR frame, then the broker closes the socket.

The table below is the mosquitto ``13-malformed-*`` idea for STOMP: (what the client sends,
the exact ERROR frame it gets). After every case the same broker must still serve a new
connection. The broker runs with small frame limits so that the limit cases stay small.
"""

from __future__ import annotations

import pytest

from dovecote.protocols.stomp import FrameLimits
from dovecote.pytest_plugin import BrokerThread

LIMITS = FrameLimits(max_header_bytes=1024, max_headers=16, max_body_bytes=1024)


def error_frame(summary: bytes, detail: bytes, version: str | None, *extra: bytes) -> bytes:
    """The ERROR frame the broker writes: ``message`` is ``<summary>: <detail>``, escaped as the
    connection's STOMP version escapes headers (1.0, or before CONNECTED: not at all)."""
    message = summary + b": " + detail
    if version in ("1.1", "1.2"):
        message = message.replace(b"\\", b"\\\\").replace(b":", b"\\c")
    return (
        b"ERROR\nmessage:"
        + message
        + b"\ncontent-type:text/plain\n"
        + b"".join(extra)
        + b"content-length:%d\n\n" % len(detail)
        + detail
        + b"\0"
    )


PROTOCOL = b"Protocol error"
INVALID = b"Invalid request"
NOT_FOUND = b"Not found"


@pytest.fixture(scope="module")
def limited_broker():
    thread = BrokerThread(frame_limits=LIMITS).start()
    yield thread
    thread.stop()


def assert_still_serving(port: int, raw_stomp) -> None:
    client = raw_stomp(port)
    client.connect()
    client.send(b"SEND\ndestination:/queue/errors.after\nreceipt:ok\n\nstill here\0")
    client.expect(b"RECEIPT\nreceipt-id:ok\n\n\0")
    client.close()


CASES = [
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\nno-colon-here\n\nx\0",
        PROTOCOL,
        b"header line without a colon",
        id="malformed-header-without-colon",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\n\n" + b"x" * 1025 + b"\0",
        PROTOCOL,
        b"frame body exceeds the limit of 1024 bytes",
        id="body-over-limit",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\ncontent-length:1025\n\n" + b"x" * 1025 + b"\0",
        PROTOCOL,
        b"frame body exceeds the limit of 1024 bytes",
        id="content-length-over-limit",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\n" + b"".join(b"h%d:v\n" % i for i in range(16)) + b"\nx\0",
        PROTOCOL,
        b"frame has more than 16 headers",
        id="too-many-headers",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\nx-big:" + b"v" * 1100,  # never terminated
        PROTOCOL,
        b"frame header exceeds the limit of 1024 bytes",
        id="header-block-too-large-unterminated",
    ),
    pytest.param(
        "1.2",
        b"FROB\ndestination:/queue/a\n\n\0",
        PROTOCOL,
        b"unknown command 'FROB'",
        id="unknown-command",
    ),
    pytest.param(
        "1.2",
        b"send\ndestination:/queue/a\n\nx\0",
        PROTOCOL,
        b"unknown command 'send'",
        id="lower-case-command",
    ),
    pytest.param(
        None,
        b"SEND\ndestination:/queue/a\n\nx\0",
        PROTOCOL,
        b"expected a CONNECT frame, got SEND",
        id="frame-before-connect",
    ),
    pytest.param(
        "1.2",
        b"CONNECT\naccept-version:1.2\n\n\0",
        PROTOCOL,
        b"cannot receive CONNECT in state open",
        id="second-connect",
    ),
    pytest.param(
        None,
        b"CONNECT\naccept-version:1.2\nheart-beat:soon\n\n\0",
        PROTOCOL,
        b"heart-beat header must be two non-negative integers",
        id="bad-heart-beat-header",
    ),
    pytest.param(
        "1.2",
        b"SEND\n\nx\0",
        PROTOCOL,
        b"SEND frame is missing the 'destination' header",
        id="send-without-destination",
    ),
    pytest.param(
        "1.2",
        b"SUBSCRIBE\ndestination:/queue/a\n\n\0",
        PROTOCOL,
        b"SUBSCRIBE frame is missing the 'id' header",
        id="subscribe-without-id-1.2",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\ncontent-length:-1\n\nx\0",
        PROTOCOL,
        b"content-length is not a non-negative integer",
        id="negative-content-length",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\ncontent-length:1\n\nxy\0",
        PROTOCOL,
        b"frame body is not followed by NUL at its content-length",
        id="content-length-too-short",
    ),
    pytest.param(
        "1.2",
        b"ACK\nid:99-1\n\n\0",
        NOT_FOUND,
        b"ACK/NACK of unknown id '99-1'",
        id="ack-unknown-id",
    ),
    pytest.param(
        "1.1",
        b"ACK\nsubscription:0\nmessage-id:nope\n\n\0",
        NOT_FOUND,
        b"ACK/NACK of unknown message-id 'nope'",
        id="ack-unknown-message-id-1.1",
    ),
    pytest.param(
        "1.0",
        b"NACK\nmessage-id:m1\n\n\0",
        PROTOCOL,
        b"NACK does not exist in STOMP 1.0",
        id="nack-in-1.0",
    ),
    pytest.param(
        "1.2",
        b"SUBSCRIBE\nid:1\ndestination:/queue/a\nack:sometimes\n\n\0",
        INVALID,
        b"unknown ack mode 'sometimes'",
        id="subscribe-bad-ack-mode",
    ),
    pytest.param(
        "1.2",
        b"SUBSCRIBE\nid:1\ndestination:/queue/a\n\n\0SUBSCRIBE\nid:1\ndestination:/queue/b\n\n\0",
        INVALID,
        b"subscription id '1' is already in use on this connection",
        id="duplicate-subscription-id",
    ),
    pytest.param(
        "1.2",
        b"UNSUBSCRIBE\nid:9\n\n\0",
        NOT_FOUND,
        b"no subscription '9' on this connection",
        id="unsubscribe-unknown-id",
    ),
    pytest.param(
        "1.2",
        b"COMMIT\ntransaction:tx-1\n\n\0",
        NOT_FOUND,
        b"no open transaction 'tx-1'",
        id="commit-unknown-transaction",
    ),
    pytest.param(
        "1.2",
        b"ABORT\ntransaction:tx-1\n\n\0",
        NOT_FOUND,
        b"no open transaction 'tx-1'",
        id="abort-unknown-transaction",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\ntransaction:tx-1\n\nx\0",
        NOT_FOUND,
        b"no open transaction 'tx-1'",
        id="send-in-unknown-transaction",
    ),
    pytest.param(
        "1.2",
        b"BEGIN\ntransaction:t\n\n\0BEGIN\ntransaction:t\n\n\0",
        INVALID,
        b"transaction 't' is already open",
        id="begin-twice",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:orders\n\nx\0",
        INVALID,
        b"invalid destination 'orders': use /queue/<name> or /topic/<name>",
        id="send-destination-without-prefix",
    ),
    pytest.param(
        "1.2",
        b"SUBSCRIBE\nid:1\ndestination:/queues/a\n\n\0",
        INVALID,
        b"invalid destination '/queues/a': use /queue/<name> or /topic/<name>",
        id="subscribe-destination-without-prefix",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/\n\nx\0",
        INVALID,
        b"invalid destination '/queue/': use /queue/<name> or /topic/<name>",
        id="send-empty-queue-name",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/topic/prices.*\n\nx\0",
        INVALID,
        b"cannot send to a wildcard address 'prices.*'",
        id="send-to-wildcard",
    ),
    pytest.param(
        "1.2",
        b"SUBSCRIBE\nid:1\ndestination:/topic/a.>.b\n\n\0",
        INVALID,
        b"invalid topic pattern 'a.>.b'",
        id="subscribe-bad-pattern",
    ),
    pytest.param(
        "1.2",
        b"SUBSCRIBE\nid:1\ndestination:/topic/a\nactivemq.subscriptionName:s\n\n\0",
        INVALID,
        b"a durable subscription needs a client-id on CONNECT",
        id="durable-subscription-without-client-id",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\npriority:high\n\nx\0",
        INVALID,
        b"priority must be an integer 0-9, not 'high'",
        id="non-numeric-priority",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\nx-tab:a\\tb\n\nx\0",
        PROTOCOL,
        b"undefined escape sequence '\\\\t' in a header",
        id="bad-escape-1.2",
    ),
    pytest.param(
        "1.1",
        b"SEND\ndestination:/queue/a\nx-cr:a\\rb\n\nx\0",
        PROTOCOL,
        b"undefined escape sequence '\\\\r' in a header",
        id="cr-escape-is-1.2-only",
    ),
    pytest.param(
        "1.2",
        b"SEND\ndestination:/queue/a\nx-latin1:caf\xe9\n\nx\0",
        PROTOCOL,
        b"frame header is not valid UTF-8",
        id="non-utf8-header",
    ),
    pytest.param(
        None,
        b"\x00\x01\x02\xff\xfe\x00\x80garbage\x00\x7f",
        PROTOCOL,
        b"frame ended before its header block",
        id="garbage-binary",
    ),
]


@pytest.mark.parametrize(("version", "data", "summary", "detail"), CASES)
def test_bad_input_gets_error_then_close(limited_broker, raw_stomp, version, data, summary, detail):
    expected = error_frame(summary, detail, version)
    client = raw_stomp(limited_broker.port)
    if version is not None:
        client.connect(version)
    client.send(data)
    received = client.read_until_closed()
    assert received == expected
    assert b"Traceback" not in received
    assert b"Error(" not in received
    assert_still_serving(limited_broker.port, raw_stomp)


def test_body_at_the_limit_is_accepted(limited_broker, raw_stomp):
    client = raw_stomp(limited_broker.port)
    client.connect()
    client.send(b"SEND\ndestination:/queue/errors.limit\nreceipt:a\n\n" + b"x" * 1024 + b"\0")
    client.expect(b"RECEIPT\nreceipt-id:a\n\n\0")
    client.send(
        b"SEND\ndestination:/queue/errors.limit\ncontent-length:1024\nreceipt:b\n\n"
        + b"x" * 1024
        + b"\0"
    )
    client.expect(b"RECEIPT\nreceipt-id:b\n\n\0")


def test_error_carries_receipt_id_of_the_failing_frame(limited_broker, raw_stomp):
    client = raw_stomp(limited_broker.port)
    client.connect()
    client.send(b"SEND\ndestination:nowhere\nreceipt:r-9\n\nx\0")
    assert client.read_until_closed() == error_frame(
        INVALID,
        b"invalid destination 'nowhere': use /queue/<name> or /topic/<name>",
        "1.2",
        b"receipt-id:r-9\n",
    )


def test_error_after_a_receipted_frame_does_not_reuse_its_receipt_id(limited_broker, raw_stomp):
    # Regression: a framing error after a frame with a receipt named that frame's receipt.
    client = raw_stomp(limited_broker.port)
    client.connect()
    client.send(
        b"SEND\ndestination:/queue/a\nreceipt:r-1\n\nx\0SEND\ndestination:/queue/a\nbad\n\n\0"
    )
    assert client.read_until_closed() == (
        b"RECEIPT\nreceipt-id:r-1\n\n\0"
        + error_frame(PROTOCOL, b"header line without a colon", "1.2")
    )


def test_protocol_error_headers_are_escaped_as_the_connection_version_says(
    limited_broker, raw_stomp
):
    # Regression: framing errors used to be written as STOMP 1.0 (':' left raw) on 1.2.
    client = raw_stomp(limited_broker.port)
    client.connect()
    client.send(b"FROB\n\n\0")
    assert client.read_until_closed() == (
        b"ERROR\nmessage:Protocol error\\c unknown command 'FROB'\ncontent-type:text/plain\n"
        b"content-length:22\n\nunknown command 'FROB'\0"
    )


def test_client_that_disconnects_mid_frame_leaves_broker_serving(
    limited_broker, raw_stomp, wait_for
):
    client = raw_stomp(limited_broker.port)
    client.connect()
    client.send(b"SEND\ndestination:/queue/errors.partial\ncontent-length:100\n\nonly part")
    client.close()
    other = raw_stomp(limited_broker.port)
    other.connect()
    # The half-sent message was never enqueued: the first message the queue holds is ours.
    other.send(b"SEND\ndestination:/queue/errors.partial\n\nwhole\0")
    other.send(b"SUBSCRIBE\nid:0\ndestination:/queue/errors.partial\n\n\0")
    assert other.read_frame().endswith(b"\n\nwhole\0")
    other.close()
    wait_for(lambda: limited_broker.call(_connection_count(limited_broker)) == 0)


def test_client_that_resets_mid_header_leaves_broker_serving(limited_broker, raw_stomp, wait_for):
    client = raw_stomp(limited_broker.port)
    client.connect()
    client.send(b"SUBSCRIBE\nid:0\ndestin")
    client.abort()
    assert_still_serving(limited_broker.port, raw_stomp)
    wait_for(lambda: limited_broker.call(_connection_count(limited_broker)) == 0)


async def _connection_count(thread: BrokerThread) -> int:
    assert thread.broker is not None
    return thread.broker.connection_count

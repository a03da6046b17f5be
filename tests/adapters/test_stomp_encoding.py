"""MessageEncoder: the shared tail of a MESSAGE frame is encoded once per message and
version, for every subscriber, within a bounded cache."""

from __future__ import annotations

from dovecote.adapters.stomp_encoding import TAIL_CACHE_BYTES, MessageEncoder
from dovecote.core.message import Message, RoutingType


def _message(n: int, body: bytes = b"hello") -> Message:
    return Message(f"ID:m:{n}", "prices", RoutingType.MULTICAST, body, {"k": "v:1"}, False, 4)


class CountingEncoder(MessageEncoder):
    """Counts how often a tail is really built (the destination line is built per tail)."""

    __slots__ = ("built",)

    def __init__(self) -> None:
        super().__init__()
        self.built = 0

    def _destination_line(self, message: Message, version: str, connection_id: str) -> str:
        self.built += 1
        return super()._destination_line(message, version, connection_id)


def test_the_tail_has_the_headers_escaped_then_the_body() -> None:
    tail = MessageEncoder().tail(_message(1), "1.2")
    assert tail == (
        b"message-id:ID\\cm\\c1\ndestination:/topic/prices\nexpires:0\npriority:4\n"
        b"timestamp:0\nk:v\\c1\ncontent-length:5\n\nhello\0"
    )
    assert MessageEncoder().tail(_message(1), "1.0").startswith(b"message-id:ID:m:1\n")


def test_a_backlog_sent_to_one_subscriber_after_another_is_encoded_once() -> None:
    """Fan-out where a backed-up subscriber is sent its whole backlog at once: every message
    was encoded for the first subscriber, and the others reuse it (not only the last)."""
    encoder = CountingEncoder()
    messages = [_message(n) for n in range(100)]
    first = [encoder.tail(message, "1.2") for message in messages]
    for _ in range(9):
        assert [encoder.tail(message, "1.2") for message in messages] == first
    assert encoder.built == 100
    assert encoder.tail(messages[0], "1.1") != b""  # another version: encoded anew
    assert encoder.built == 101


def test_the_cache_is_bounded_in_bytes_and_never_mistakes_a_new_message() -> None:
    encoder = CountingEncoder()
    body = b"x" * (TAIL_CACHE_BYTES // 4)
    messages = [_message(n, body) for n in range(8)]
    for message in messages:
        encoder.tail(message, "1.2")
    assert encoder.built == 8
    assert encoder.tail(messages[-1], "1.2")  # recent: still cached
    assert encoder.built == 8
    encoder.tail(messages[0], "1.2")  # long forgotten: encoded again
    assert encoder.built == 9
    total = sum(len(tail) for _, _, tail in encoder._tails.values())
    assert total <= TAIL_CACHE_BYTES
    huge = _message(99, b"y" * (2 * TAIL_CACHE_BYTES))
    assert encoder.tail(huge, "1.2").endswith(b"y\0")  # larger than the cache: kept alone
    encoder.tail(huge, "1.2")
    assert encoder.built == 10
    assert len(encoder._tails) == 1


def test_a_temporary_destination_tail_is_never_cached() -> None:
    encoder = CountingEncoder()
    message = _message(1)
    encoder.tail(message, "1.2", "conn-1", cache=False)
    encoder.tail(message, "1.2", "conn-1", cache=False)
    assert encoder.built == 2


def test_a_queue_message_is_remembered_only_as_the_last_one() -> None:
    """A queue's message goes to one consumer: only the last tail is kept (a redelivery right
    after reuses it); the multi-message cache is for topics."""
    encoder = CountingEncoder()
    queued = Message("ID:q:1", "orders", RoutingType.ANYCAST, b"x", {}, False, 4)
    encoder.tail(queued, "1.2")
    encoder.tail(queued, "1.2")
    assert encoder.built == 1
    assert not encoder._tails
    encoder.tail(_message(2), "1.2")
    encoder.tail(queued, "1.2")
    assert encoder.built == 3

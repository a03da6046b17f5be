"""Local transactions: nothing is visible or durable until commit; abort forgets."""

from __future__ import annotations

import pytest

from dovecote.core.errors import InvalidRequest, NotFound, StoreUnavailable
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import AckMode, Consumer
from dovecote.core.router import Router
from dovecote.core.tx import Transaction
from fake_clock import FakeClock
from recording_store import RecordingStore


class RecordingSink:
    def __init__(self) -> None:
        self.deliveries: list[tuple[object, str, int]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.deliveries.append((consumer.key, entry.message.message_id, entry.delivery_count))


def anycast(message_id: str, address: str = "orders", *, persistent: bool = False) -> Message:
    return Message(message_id, address, RoutingType.ANYCAST, b"", persistent=persistent)


def multicast(message_id: str, address: str) -> Message:
    return Message(message_id, address, RoutingType.MULTICAST, b"")


class Harness:
    def __init__(self) -> None:
        self.store = RecordingStore()
        self.sink = RecordingSink()
        self.clock = FakeClock()
        self.router = Router(self.store, self.clock)
        self.tx = Transaction("tx-1")

    def consumer(self, key: str, ack_mode: str, queue: str = "orders") -> Consumer:
        consumer = Consumer(key, self.sink, ack_mode=ack_mode)
        self.router.consume_queue(queue, consumer)
        return consumer

    def in_flight(self, consumer: Consumer, *ids: str) -> None:
        """Send ``ids`` outside any transaction; they end up in ``consumer``'s in-flight set."""
        for message_id in ids:
            self.router.send(anycast(message_id, persistent=True))
        assert [e.message.message_id for e in consumer.in_flight.values()] == list(ids)


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- sends ------------------------------------------------------------------------------------


def test_sends_are_invisible_until_commit(h: Harness) -> None:
    h.consumer("A", AckMode.AUTO)
    topic = Consumer("T", h.sink)
    h.router.subscribe_topic("events.>", topic)
    h.tx.add_send(anycast("m1"))
    h.tx.add_send(multicast("m2", "events.new"))
    h.tx.add_send(anycast("m3"))
    assert h.tx.size == 3
    assert h.sink.deliveries == []
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.enqueued == 0
    h.tx.commit(h.router)
    assert h.sink.deliveries == [("A", "m1", 1), ("T", "m2", 1), ("A", "m3", 1)]
    assert h.tx.size == 0
    assert h.tx.sends == []


def test_send_to_a_new_queue_creates_it_only_at_commit(h: Harness) -> None:
    h.tx.add_send(anycast("m1", "fresh"))
    assert h.router.queue("fresh") is None
    assert h.store.calls == []
    h.tx.commit(h.router)
    queue = h.router.queue("fresh")
    assert queue is not None
    assert [m.message_id for m in queue.browse()] == ["m1"]


def test_persistent_sends_are_recorded_only_at_commit_and_atomically(h: Harness) -> None:
    h.router.get_or_create_queue("orders")
    h.store.calls.clear()
    h.tx.add_send(anycast("p1", persistent=True))
    h.tx.add_send(anycast("n2"))
    h.tx.add_send(anycast("p3", persistent=True))
    assert h.store.calls == []
    h.tx.commit(h.router)
    assert h.store.calls == [
        ("begin",),
        ("message", "orders", 1, "p1"),
        ("message", "orders", 3, "p3"),
        ("end",),
    ]


def test_abort_discards_sends_and_acks(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1")
    h.tx.add_send(anycast("m2"))
    h.tx.add_ack(consumer, 1)
    h.tx.abort()
    assert h.tx.size == 0
    h.tx.commit(h.router)  # nothing left to apply
    assert h.sink.deliveries == [("A", "m1", 1)]
    assert list(consumer.in_flight) == [1]
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.enqueued == 1
    assert queue.dequeued == 0


# --- acknowledgements -------------------------------------------------------------------------


def test_acks_are_applied_at_commit(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1", "m2", "m3")
    h.store.calls.clear()
    h.tx.add_ack(consumer, 1)
    h.tx.add_ack(consumer, 3)
    assert h.tx.size == 2
    assert list(consumer.in_flight) == [1, 2, 3]
    assert h.store.calls == []
    h.tx.commit(h.router)
    assert list(consumer.in_flight) == [2]
    assert h.store.calls == [("begin",), ("ack", "orders", 1), ("ack", "orders", 3), ("end",)]
    assert h.tx.acks == []


def test_nack_is_applied_at_commit(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1", "m2")
    h.tx.add_ack(consumer, 1, ack=False)
    assert h.sink.deliveries == [("A", "m1", 1), ("A", "m2", 1)]
    h.tx.commit(h.router)
    assert h.sink.deliveries == [("A", "m1", 1), ("A", "m2", 1)]  # held for its delay (1 s)
    h.clock.now += 1000
    h.router.timers.run_due()
    assert h.sink.deliveries == [("A", "m1", 1), ("A", "m2", 1), ("A", "m1", 2)]
    assert list(consumer.in_flight) == [2, 1]


def test_ack_of_unknown_seq_is_not_found(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1")
    with pytest.raises(NotFound) as info:
        h.tx.add_ack(consumer, 7)
    assert info.value.message == "no unacknowledged message with ack id 7 on this subscription"
    with pytest.raises(NotFound):
        h.tx.add_ack(consumer, 7, ack=False)
    assert h.tx.size == 0


def test_ack_of_auto_acknowledged_delivery_is_not_found(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.AUTO)
    h.router.send(anycast("m1"))
    with pytest.raises(NotFound):
        h.tx.add_ack(consumer, 1)


def test_cumulative_ack_then_individual_ack_in_one_transaction(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.CLIENT)
    h.in_flight(consumer, "m1", "m2", "m3")
    h.store.calls.clear()
    h.tx.add_ack(consumer, 2)  # settles m1 and m2
    h.tx.add_ack(consumer, 1)  # already settled by the first: skipped, not an error
    h.tx.commit(h.router)
    assert list(consumer.in_flight) == [3]
    assert h.store.calls == [("begin",), ("ack", "orders", 1), ("ack", "orders", 2), ("end",)]


def test_individual_ack_then_cumulative_ack_in_one_transaction(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.CLIENT)
    h.in_flight(consumer, "m1", "m2", "m3", "m4")
    h.store.calls.clear()
    h.tx.add_ack(consumer, 1)
    h.tx.add_ack(consumer, 3)
    h.tx.commit(h.router)
    assert list(consumer.in_flight) == [4]
    assert h.store.calls == [
        ("begin",),
        ("ack", "orders", 1),
        ("ack", "orders", 2),
        ("ack", "orders", 3),
        ("end",),
    ]


def test_same_ack_twice_is_applied_once(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1", "m2")
    h.tx.add_ack(consumer, 1)
    h.tx.add_ack(consumer, 1)
    h.tx.commit(h.router)
    assert list(consumer.in_flight) == [2]
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.dequeued == 1


def test_ack_of_a_consumer_that_left_is_skipped(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1")
    h.tx.add_ack(consumer, 1)
    h.router.unsubscribe(consumer)  # m1 goes back to the queue
    h.tx.commit(h.router)
    queue = h.router.queue("orders")
    assert queue is not None
    assert [m.message_id for m in queue.browse()] == ["m1"]
    assert queue.dequeued == 0


def test_sends_and_acks_in_one_commit(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1")
    h.store.calls.clear()
    h.tx.add_ack(consumer, 1)
    h.tx.add_send(anycast("p2", persistent=True))
    h.tx.commit(h.router)
    # Sends are routed first, then acks applied, all in one atomic group.
    assert h.store.calls == [
        ("begin",),
        ("message", "orders", 2, "p2"),
        ("delivery", "orders", 2, 1),
        ("ack", "orders", 1),
        ("end",),
    ]
    assert list(consumer.in_flight) == [2]


# --- failures ---------------------------------------------------------------------------------


def test_commit_with_persistent_send_is_refused_while_store_is_unavailable(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1")
    h.store.calls.clear()
    h.store.available = False
    h.tx.add_send(anycast("p2", persistent=True))
    h.tx.add_ack(consumer, 1)
    with pytest.raises(StoreUnavailable) as info:
        h.tx.commit(h.router)
    assert info.value.message == (
        "the broker cannot write its journal (disk full or I/O error); "
        "persistent messages are refused until it recovers"
    )
    assert h.store.calls == []
    assert list(consumer.in_flight) == [1]
    assert h.sink.deliveries == [("A", "m1", 1)]


def test_commit_without_persistent_sends_works_while_store_is_unavailable(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1")
    h.store.available = False
    h.tx.add_send(anycast("n2"))
    h.tx.add_ack(consumer, 1)
    h.tx.commit(h.router)
    assert list(consumer.in_flight) == [2]


def test_commit_with_an_unroutable_send_applies_nothing(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    h.in_flight(consumer, "m1")
    h.store.calls.clear()
    h.tx.add_send(anycast("p2", persistent=True))
    h.tx.add_send(multicast("m3", "events.*"))  # a wildcard: cannot be sent to
    h.tx.add_ack(consumer, 1)
    with pytest.raises(InvalidRequest):
        h.tx.commit(h.router)
    assert h.sink.deliveries == [("A", "m1", 1)]
    assert list(consumer.in_flight) == [1]
    assert h.store.calls == []

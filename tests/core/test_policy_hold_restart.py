"""A redelivery hold across a restart, in the core: a NACKed persistent message's hold is
recorded with its end, and ``Queue.restore`` holds a recovered message until then (injected
clock, no sleeps)."""

from __future__ import annotations

from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import AckMode, Consumer
from dovecote.core.router import Router
from dovecote.store.memory import MemoryStore
from fake_clock import FakeClock

DELAY = 1000  # ActiveMQ's default first redelivery delay (the router's default policy)


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, int]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.got.append((entry.message.message_id, entry.delivery_count))


class HoldRecordingStore(MemoryStore):
    def __init__(self) -> None:
        self.holds: list[tuple[str, int, int, int]] = []

    def record_delivery(
        self, queue: str, seq: int, delivery_count: int, hold_until: int = 0
    ) -> None:
        if hold_until:
            self.holds.append((queue, seq, delivery_count, hold_until))


def message(message_id: str, *, persistent: bool = True) -> Message:
    return Message(message_id, "orders", RoutingType.ANYCAST, b"x", persistent=persistent)


def consume(router: Router, sink: Sink) -> Consumer:
    consumer = Consumer("A", sink, ack_mode=AckMode.INDIVIDUAL, prefetch=100)
    router.consume_queue("orders", consumer)
    return consumer


def test_a_nacked_persistent_message_records_when_its_hold_ends() -> None:
    clock, store, sink = FakeClock(), HoldRecordingStore(), Sink()
    router = Router(store, clock)
    router.send(message("p1"))
    router.send(message("n1", persistent=False))
    consumer = consume(router, sink)
    queue = consumer.queue
    assert queue is not None
    clock.now += 5
    queue.nack(consumer, 1)
    queue.nack(consumer, 2)  # non-persistent: held too, but nothing to record
    assert store.holds == [("orders", 1, 1, clock.now + DELAY)]


def restored(holds: dict[int, int]) -> tuple[FakeClock, Router, Sink]:
    """A router restarted with m1..m3 recovered (each delivered once), m1 and m2 held."""
    clock, sink = FakeClock(), Sink()
    router = Router(MemoryStore(), clock)
    queue = router.restore_queue("orders")
    queue.restore(
        (QueueEntry(message(f"m{n}"), n, delivery_count=1) for n in (1, 2, 3)),
        {seq: clock.now + ms for seq, ms in holds.items()},
    )
    consume(router, sink)
    return clock, router, sink


def test_a_restored_message_is_held_until_its_hold_ends_and_blocks_nothing() -> None:
    clock, router, sink = restored({1: 300, 2: 0})
    # m2's hold is over (ends now): it is ready, in order; m1 waits; m3 never waited.
    assert sink.got == [("m2", 2), ("m3", 2)]
    queue = router.queue("orders")
    assert queue is not None
    assert queue.held_count == 1
    assert queue.depth == 3
    clock.now += 299
    router.timers.run_due()
    assert sink.got == [("m2", 2), ("m3", 2)]
    clock.now += 1
    router.timers.run_due()
    assert sink.got == [("m2", 2), ("m3", 2), ("m1", 2)]  # redelivered, count kept


def test_holds_that_ended_during_the_restart_leave_the_queue_in_order() -> None:
    _, router, sink = restored({1: -50, 3: -1})
    assert sink.got == [("m1", 2), ("m2", 2), ("m3", 2)]
    queue = router.queue("orders")
    assert queue is not None
    assert queue.held_count == 0

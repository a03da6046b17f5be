"""Queue dispatch semantics: priority, round robin, credit, settling, redelivery, expiry."""

from __future__ import annotations

import gc

import pytest

from dovecote.core.errors import NotFound
from dovecote.core.limits import ENTRY_OVERHEAD, MemoryBudget
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import AckMode, Consumer, Queue, consumer_queue
from fake_clock import FakeClock
from recording_store import RecordingStore


class RecordingSink:
    """Records each delivery as (consumer key, message id, seq, delivery count, redelivered)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[object, str, int, int, bool]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.deliveries.append(
            (
                consumer.key,
                entry.message.message_id,
                entry.seq,
                entry.delivery_count,
                entry.redelivered,
            )
        )

    def ids(self, key: object | None = None) -> list[str]:
        return [d[1] for d in self.deliveries if key is None or d[0] == key]

    def keys(self) -> list[object]:
        return [d[0] for d in self.deliveries]


def msg(
    message_id: str, *, priority: int = 4, expires: int = 0, persistent: bool = False
) -> Message:
    return Message(
        message_id,
        "orders",
        RoutingType.ANYCAST,
        message_id.encode(),
        priority=priority,
        expires=expires,
        persistent=persistent,
    )


class Harness:
    def __init__(self, *, durable: bool = True) -> None:
        self.clock = FakeClock()
        self.store = RecordingStore()
        self.sink = RecordingSink()
        self.budget = MemoryBudget()
        self.queue = Queue(
            "orders",
            address="orders",
            durable=durable,
            store=self.store,
            now_ms=self.clock.now_ms,
            budget=self.budget,
        )

    def consumer(
        self, key: str, *, ack_mode: str = AckMode.AUTO, prefetch: int = 1000, attach: bool = True
    ) -> Consumer:
        consumer = Consumer(key, self.sink, ack_mode=ack_mode, prefetch=prefetch)
        if attach:
            self.queue.add_consumer(consumer)
        return consumer

    def send(self, *ids: str, priority: int = 4) -> None:
        for message_id in ids:
            self.queue.add(msg(message_id, priority=priority))


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- priority ---------------------------------------------------------------------------------


def test_browse_is_priority_order_fifo_within(h: Harness) -> None:
    for message_id, priority in [
        ("a4", 4),
        ("b9", 9),
        ("c0", 0),
        ("d4", 4),
        ("e9", 9),
        ("f5", 5),
    ]:
        h.queue.add(msg(message_id, priority=priority))
    assert [m.message_id for m in h.queue.browse()] == ["b9", "e9", "f5", "a4", "d4", "c0"]
    assert h.queue.ready_count == 6
    assert h.sink.deliveries == []


def test_dispatch_is_priority_order_fifo_within(h: Harness) -> None:
    for message_id, priority in [("a4", 4), ("b9", 9), ("c0", 0), ("d4", 4), ("e9", 9)]:
        h.queue.add(msg(message_id, priority=priority))
    h.consumer("A")
    assert h.sink.ids() == ["b9", "e9", "a4", "d4", "c0"]


def test_priority_is_strict_for_later_arrivals(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL, prefetch=1)
    h.send("first")
    h.queue.add(msg("low", priority=0))
    h.queue.add(msg("mid", priority=4))
    h.queue.add(msg("high", priority=9))
    assert h.sink.ids() == ["first"]
    h.queue.ack(consumer, 1)
    assert h.sink.ids() == ["first", "high"]
    h.queue.ack(consumer, 4)
    h.queue.ack(consumer, 3)
    assert h.sink.ids() == ["first", "high", "mid", "low"]


@pytest.mark.parametrize("priority", list(range(10)))
def test_every_priority_level_is_accepted(h: Harness, priority: int) -> None:
    h.queue.add(msg("m", priority=priority))
    h.queue.add(msg("n", priority=priority))
    assert [m.message_id for m in h.queue.browse()] == ["m", "n"]


# --- round robin and credit -------------------------------------------------------------------


def test_round_robin_across_consumers(h: Harness) -> None:
    for key in "ABC":
        h.consumer(key)
    h.send(*[f"m{i}" for i in range(7)])
    assert h.sink.keys() == ["A", "B", "C", "A", "B", "C", "A"]
    assert h.sink.ids() == [f"m{i}" for i in range(7)]


def test_round_robin_resumes_after_the_last_served(h: Harness) -> None:
    for key in "ABC":
        h.consumer(key)
    h.send("m1", "m2")
    h.send("m3")
    h.send("m4")
    assert h.sink.keys() == ["A", "B", "C", "A"]


def test_round_robin_skips_consumers_without_credit(h: Harness) -> None:
    h.consumer("A", ack_mode=AckMode.INDIVIDUAL, prefetch=1)
    h.consumer("B")
    h.send("m1", "m2", "m3", "m4")
    assert h.sink.deliveries == [
        ("A", "m1", 1, 1, False),
        ("B", "m2", 2, 1, False),
        ("B", "m3", 3, 1, False),
        ("B", "m4", 4, 1, False),
    ]


@pytest.mark.parametrize("ack_mode", [AckMode.CLIENT, AckMode.INDIVIDUAL])
def test_prefetch_limits_unacknowledged_deliveries(h: Harness, ack_mode: str) -> None:
    consumer = h.consumer("A", ack_mode=ack_mode, prefetch=2)
    h.send("m1", "m2", "m3", "m4", "m5")
    assert h.sink.ids() == ["m1", "m2"]
    assert list(consumer.in_flight) == [1, 2]
    assert consumer.has_credit() is False
    assert h.queue.ready_count == 3
    assert h.queue.in_flight_count == 2
    assert h.queue.depth == 5
    h.queue.ack(consumer, 1)
    assert h.sink.ids() == ["m1", "m2", "m3"]
    assert list(consumer.in_flight) == [2, 3]
    assert h.queue.depth == 4


def test_prefetch_is_at_least_one(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.CLIENT, prefetch=0)
    assert consumer.prefetch == 1
    h.send("m1", "m2")
    assert h.sink.ids() == ["m1"]


def test_auto_ack_holds_nothing_in_flight_and_ignores_prefetch(h: Harness) -> None:
    consumer = h.consumer("A", prefetch=1)
    h.send("m1", "m2", "m3")
    assert h.sink.ids() == ["m1", "m2", "m3"]
    assert consumer.in_flight == {}
    assert consumer.has_credit() is True
    assert h.queue.depth == 0
    assert h.queue.dequeued == 3


def test_auto_ack_consumer_cannot_ack_or_nack(h: Harness) -> None:
    consumer = h.consumer("A")
    h.send("m1")
    with pytest.raises(NotFound) as info:
        h.queue.ack(consumer, 1)
    assert info.value.message == "no unacknowledged message with ack id 1 on this subscription"
    with pytest.raises(NotFound):
        h.queue.nack(consumer, 1)


def test_adding_a_consumer_dispatches_waiting_messages(h: Harness) -> None:
    h.send("m1", "m2")
    assert h.sink.deliveries == []
    h.consumer("A", ack_mode=AckMode.CLIENT, prefetch=1)
    assert h.sink.ids() == ["m1"]
    assert h.queue.ready_count == 1


# --- settling ---------------------------------------------------------------------------------


def test_individual_ack_settles_one(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL)
    h.send("m1", "m2", "m3")
    assert h.queue.ack(consumer, 2) == 1
    assert list(consumer.in_flight) == [1, 3]
    assert h.queue.dequeued == 1
    assert h.queue.depth == 2


def test_client_ack_is_cumulative(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.CLIENT)
    h.send("m1", "m2", "m3")
    assert h.queue.ack(consumer, 2) == 2
    assert list(consumer.in_flight) == [3]
    assert h.queue.dequeued == 2
    assert h.queue.ack(consumer, 3) == 1
    assert consumer.in_flight == {}
    assert h.queue.depth == 0


def test_client_ack_is_cumulative_in_delivery_order(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.CLIENT, prefetch=3)
    h.send("m1", "m2", "m3")
    assert h.queue.nack(consumer, 1) == 1  # m1 is redelivered at once, after m3
    assert list(consumer.in_flight) == [2, 3, 1]
    assert h.queue.ack(consumer, 3) == 2  # m2 and m3 were delivered before m3; m1 was not
    assert list(consumer.in_flight) == [1]


def test_ack_of_unknown_seq_is_not_found(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL)
    h.send("m1")
    with pytest.raises(NotFound) as info:
        h.queue.ack(consumer, 99)
    assert info.value.message == "no unacknowledged message with ack id 99 on this subscription"
    h.queue.ack(consumer, 1)
    with pytest.raises(NotFound):
        h.queue.ack(consumer, 1)  # twice
    assert h.queue.dequeued == 1


def test_ack_of_another_consumers_delivery_is_not_found(h: Harness) -> None:
    a = h.consumer("A", ack_mode=AckMode.INDIVIDUAL)
    b = h.consumer("B", ack_mode=AckMode.INDIVIDUAL)
    h.send("m1", "m2")
    assert list(a.in_flight) == [1]
    assert list(b.in_flight) == [2]
    with pytest.raises(NotFound):
        h.queue.ack(a, 2)


def test_nack_returns_to_the_front_in_original_order(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.CLIENT, prefetch=3)
    h.send("m1", "m2", "m3", "m4")
    consumer.paused = True
    assert h.queue.nack(consumer, 2) == 2  # client mode: m1 and m2
    assert [m.message_id for m in h.queue.browse()] == ["m1", "m2", "m4"]
    assert list(consumer.in_flight) == [3]
    h.queue.resume(consumer)
    assert h.sink.deliveries == [
        ("A", "m1", 1, 1, False),
        ("A", "m2", 2, 1, False),
        ("A", "m3", 3, 1, False),
        ("A", "m1", 1, 2, True),
        ("A", "m2", 2, 2, True),
    ]
    assert [m.message_id for m in h.queue.browse()] == ["m4"]


def test_individual_nack_returns_one(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL, prefetch=3)
    h.send("m1", "m2", "m3")
    consumer.paused = True
    assert h.queue.nack(consumer, 2) == 1
    assert list(consumer.in_flight) == [1, 3]
    assert [m.message_id for m in h.queue.browse()] == ["m2"]
    assert h.queue.dequeued == 0
    assert h.queue.depth == 3


def test_nacked_message_goes_to_another_consumer_round_robin(h: Harness) -> None:
    a = h.consumer("A", ack_mode=AckMode.INDIVIDUAL)
    h.consumer("B", ack_mode=AckMode.INDIVIDUAL)
    h.send("m1")
    assert h.sink.keys() == ["A"]
    h.queue.nack(a, 1)
    assert h.sink.deliveries[-1] == ("B", "m1", 1, 2, True)


def test_nack_keeps_priority_levels(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL, prefetch=1)
    h.queue.add(msg("low", priority=1))
    h.queue.add(msg("high", priority=8))
    assert h.sink.ids() == ["low"]
    consumer.paused = True
    h.queue.nack(consumer, 1)
    assert [m.message_id for m in h.queue.browse()] == ["high", "low"]


def test_redelivered_flag(h: Harness) -> None:
    entry = QueueEntry(msg("m"), 1)
    assert entry.redelivered is False
    entry.delivery_count = 1
    assert entry.redelivered is False
    entry.delivery_count = 2
    assert entry.redelivered is True
    assert repr(entry) == "<QueueEntry #1 m x2>"


# --- consumers coming and going ---------------------------------------------------------------


def test_removed_consumer_returns_its_messages_in_order(h: Harness) -> None:
    a = h.consumer("A", ack_mode=AckMode.CLIENT, prefetch=3)
    h.send("m1", "m2", "m3", "m4", "m5")
    assert h.sink.ids("A") == ["m1", "m2", "m3"]
    h.queue.remove_consumer(a)
    assert a.queue is None
    assert a.in_flight == {}
    assert h.queue.consumers == ()
    assert [m.message_id for m in h.queue.browse()] == ["m1", "m2", "m3", "m4", "m5"]
    h.consumer("B")
    assert h.sink.deliveries[3:] == [
        ("B", "m1", 1, 2, True),
        ("B", "m2", 2, 2, True),
        ("B", "m3", 3, 2, True),
        ("B", "m4", 4, 1, False),
        ("B", "m5", 5, 1, False),
    ]


def test_removed_consumer_messages_go_to_the_others_at_once(h: Harness) -> None:
    a = h.consumer("A", ack_mode=AckMode.INDIVIDUAL, prefetch=2)
    h.consumer("B", ack_mode=AckMode.INDIVIDUAL, prefetch=10)
    h.send("m1", "m2", "m3")  # A: m1, m3; B: m2
    assert h.sink.keys() == ["A", "B", "A"]
    h.queue.remove_consumer(a)
    assert h.sink.deliveries[3:] == [("B", "m1", 1, 2, True), ("B", "m3", 3, 2, True)]


def test_consumer_queue_after_removal_is_not_found(h: Harness) -> None:
    consumer = h.consumer("A")
    assert consumer_queue(consumer) is h.queue
    h.queue.remove_consumer(consumer)
    with pytest.raises(NotFound) as info:
        consumer_queue(consumer)
    assert info.value.message == "the subscription is closed"


def test_removing_an_unknown_consumer_changes_nothing(h: Harness) -> None:
    stranger = h.consumer("X", attach=False)
    h.send("m1")
    h.queue.remove_consumer(stranger)
    assert h.queue.ready_count == 1
    assert h.sink.deliveries == []


def test_paused_consumer_receives_nothing_until_resumed(h: Harness) -> None:
    a = h.consumer("A")
    a.paused = True
    assert a.has_credit() is False
    h.send("m1", "m2")
    assert h.sink.deliveries == []
    assert h.queue.ready_count == 2
    h.queue.resume(a)
    assert a.paused is False
    assert h.sink.ids() == ["m1", "m2"]


def test_paused_consumer_is_skipped_for_others(h: Harness) -> None:
    a = h.consumer("A")
    h.consumer("B")
    a.paused = True
    h.send("m1", "m2")
    assert h.sink.keys() == ["B", "B"]


def test_consumer_find_in_flight(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL)
    h.send("m1", "m2")
    assert consumer.find_in_flight("m2") == 2
    assert consumer.find_in_flight("nope") is None
    assert repr(consumer) == "<Consumer 'A' client-individual in-flight=2>"


# --- expiry -----------------------------------------------------------------------------------


def test_expired_messages_are_never_delivered(h: Harness) -> None:
    now = h.clock.now
    h.queue.add(msg("gone", expires=now + 500))
    h.queue.add(msg("forever"))
    h.queue.add(msg("later", expires=now + 501))
    h.queue.add(msg("already", expires=now - 1))
    h.clock.now = now + 500  # "gone" expires exactly now
    h.consumer("A")
    assert h.sink.ids() == ["forever", "later"]
    assert h.queue.expired == 2
    assert h.queue.dequeued == 4
    assert h.queue.enqueued == 4
    assert h.queue.depth == 0


def test_expired_message_is_dropped_even_when_only_one_is_ready(h: Harness) -> None:
    h.consumer("A")
    h.clock.now = 5
    h.queue.add(msg("m", expires=5))
    assert h.sink.deliveries == []
    assert h.queue.expired == 1
    assert h.queue.ready_count == 0


def test_expired_messages_stay_counted_until_dispatch(h: Harness) -> None:
    h.queue.add(msg("m", expires=h.clock.now + 1))
    h.clock.now += 10
    assert h.queue.depth == 1
    assert h.queue.expired == 0
    h.consumer("A")
    assert h.queue.depth == 0
    assert h.queue.expired == 1


def test_expiry_tells_the_store(h: Harness) -> None:
    h.queue.add(msg("m", expires=h.clock.now + 1, persistent=True))
    h.clock.now += 1
    h.consumer("A")
    assert h.store.calls == [("message", "orders", 1, "m"), ("ack", "orders", 1)]


# --- purge, counters, store -------------------------------------------------------------------


def test_purge_drops_ready_and_keeps_in_flight(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL, prefetch=1)
    h.send("m1", "m2", "m3")
    assert h.queue.purge() == 2
    assert h.queue.ready_count == 0
    assert list(h.queue.browse()) == []
    assert list(consumer.in_flight) == [1]
    assert h.queue.dequeued == 2
    assert h.queue.depth == 1
    assert h.queue.purge() == 0


def test_counters_through_a_lifecycle(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.CLIENT, prefetch=2)
    h.send("m1", "m2", "m3", "m4")
    assert (h.queue.enqueued, h.queue.dequeued, h.queue.expired) == (4, 0, 0)
    assert (h.queue.ready_count, h.queue.in_flight_count, h.queue.depth) == (2, 2, 4)
    h.queue.ack(consumer, 2)
    assert (h.queue.enqueued, h.queue.dequeued, h.queue.expired) == (4, 2, 0)
    assert (h.queue.ready_count, h.queue.in_flight_count, h.queue.depth) == (0, 2, 2)
    h.queue.nack(consumer, 3)  # m3 comes straight back to A
    assert (h.queue.enqueued, h.queue.dequeued) == (4, 2)
    assert h.queue.depth == 2
    h.queue.remove_consumer(consumer)
    assert (h.queue.ready_count, h.queue.in_flight_count, h.queue.depth) == (2, 0, 2)
    assert h.queue.purge() == 2
    assert (h.queue.enqueued, h.queue.dequeued, h.queue.expired) == (4, 4, 0)
    assert h.queue.depth == 0


def test_store_sees_persistent_messages_on_a_durable_queue(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.CLIENT)
    h.queue.add(msg("p1", persistent=True))
    h.queue.add(msg("n2"))
    h.queue.add(msg("p3", persistent=True))
    h.queue.ack(consumer, 3)
    assert h.store.calls == [
        ("message", "orders", 1, "p1"),
        ("delivery", "orders", 1, 1),
        ("message", "orders", 3, "p3"),
        ("delivery", "orders", 3, 1),
        ("ack", "orders", 1),
        ("ack", "orders", 3),
    ]


def test_store_sees_each_redelivery_of_a_persistent_message(h: Harness) -> None:
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL)
    h.queue.add(msg("p1", persistent=True))
    h.queue.nack(consumer, 1)
    h.queue.remove_consumer(consumer)
    h.consumer("B", ack_mode=AckMode.INDIVIDUAL)
    assert h.store.calls == [
        ("message", "orders", 1, "p1"),
        ("delivery", "orders", 1, 1),
        ("delivery", "orders", 1, 2),
        ("delivery", "orders", 1, 3),
    ]


def test_auto_ack_delivery_is_recorded_as_an_ack_only(h: Harness) -> None:
    h.consumer("A")
    h.queue.add(msg("p1", persistent=True))
    assert h.store.calls == [("message", "orders", 1, "p1"), ("ack", "orders", 1)]


def test_store_sees_nothing_from_a_non_durable_queue() -> None:
    h = Harness(durable=False)
    consumer = h.consumer("A", ack_mode=AckMode.INDIVIDUAL)
    h.queue.add(msg("p1", persistent=True))
    h.queue.ack(consumer, 1)
    h.queue.add(msg("p2", persistent=True))
    h.queue.purge()
    assert h.store.calls == []
    assert h.queue.is_persistent_for(msg("p", persistent=True)) is False


def test_is_persistent_for(h: Harness) -> None:
    assert h.queue.is_persistent_for(msg("p", persistent=True)) is True
    assert h.queue.is_persistent_for(msg("n")) is False


def test_restore_keeps_seq_and_later_adds_continue_after_it(h: Harness) -> None:
    h.queue.restore([QueueEntry(msg("r7"), 7, delivery_count=1), QueueEntry(msg("r3"), 3)])
    h.send("new")
    assert h.queue.enqueued == 1
    assert h.store.calls == []
    h.consumer("A")
    assert h.sink.deliveries == [
        ("A", "r7", 7, 2, True),
        ("A", "r3", 3, 1, False),
        ("A", "new", 8, 1, False),
    ]


def test_repr(h: Harness) -> None:
    h.send("m1")
    h.consumer("A", ack_mode=AckMode.CLIENT, prefetch=1)
    h.send("m2")
    assert repr(h.queue) == "<Queue orders ready=1 consumers=1>"


# --- memory budget ----------------------------------------------------------------------------


def test_budget_is_charged_while_held_and_released_when_settled(h: Harness) -> None:
    one = 2 + ENTRY_OVERHEAD  # every body here is its two-letter message id
    h.send("m1", "m2")
    assert h.budget.used == 2 * one
    consumer = h.consumer("A", ack_mode=AckMode.CLIENT, prefetch=1)
    assert h.budget.used == 2 * one  # in flight is still held
    h.queue.nack(consumer, 1)
    assert h.budget.used == 2 * one
    h.queue.ack(consumer, 1)
    assert h.budget.used == one
    h.queue.remove_consumer(consumer)
    assert h.budget.used == one
    assert h.queue.purge() == 1
    assert h.budget.used == 0


def test_budget_is_released_by_auto_ack_and_expiry(h: Harness) -> None:
    h.queue.add(msg("x1", expires=h.clock.now))
    h.queue.add(msg("y2"))
    assert h.budget.used == 2 * (2 + ENTRY_OVERHEAD)
    h.consumer("A")
    assert h.sink.ids() == ["y2"]
    assert h.budget.used == 0


def test_budget_is_charged_for_restored_entries(h: Harness) -> None:
    h.queue.restore([QueueEntry(msg("r1"), 1)])
    assert h.budget.used == 2 + ENTRY_OVERHEAD


@pytest.mark.parametrize(
    ("expires", "now", "expired"),
    [
        pytest.param(0, 10**15, False, id="never"),
        pytest.param(100, 99, False, id="before"),
        pytest.param(100, 100, True, id="at"),
        pytest.param(100, 101, True, id="after"),
    ],
)
def test_message_is_expired(expires: int, now: int, expired: bool) -> None:
    assert msg("m", expires=expires).is_expired(now) is expired


def test_a_queue_holds_nothing_for_the_messages_it_has_settled() -> None:
    """Regression: every persistent entry stayed referenced (for paging) after its ack while
    memory was below the paging level, so a busy durable queue grew without bound."""
    h = Harness()
    h.consumer("a")  # auto ack: each message is settled as it is delivered
    for n in range(5000):
        h.queue.add(msg(f"m{n}", persistent=True))
    gc.collect()
    assert h.queue.depth == 0
    alive = sum(1 for o in gc.get_objects() if isinstance(o, QueueEntry))
    assert alive < 1000

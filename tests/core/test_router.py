"""Router semantics: anycast queues, topic subscriptions (durable or not), temporary queues, and
what the store is told."""

from __future__ import annotations

import pytest

from dovecote.core.errors import Conflict, InvalidRequest, NotFound, StoreUnavailable
from dovecote.core.limits import ENTRY_OVERHEAD
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import AckMode, Consumer
from dovecote.core.router import Router
from dovecote.store.memory import MemoryStore
from fake_clock import FakeClock
from recording_store import RecordingStore


class RecordingSink:
    def __init__(self) -> None:
        self.deliveries: list[tuple[object, str]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.deliveries.append((consumer.key, entry.message.message_id))

    def ids(self, key: object) -> list[str]:
        return [message_id for k, message_id in self.deliveries if k == key]


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = RecordingStore()
        self.sink = RecordingSink()
        self.router = Router(self.store, self.clock)

    def consumer(self, key: str, ack_mode: str = AckMode.AUTO) -> Consumer:
        return Consumer(key, self.sink, ack_mode=ack_mode)

    def message(
        self, address: str, routing: RoutingType, message_id: str, *, persistent: bool = False
    ) -> Message:
        return Message(message_id, address, routing, b"", persistent=persistent)

    def to_queue(self, address: str, message_id: str, *, persistent: bool = False) -> int:
        return self.router.send(
            self.message(address, RoutingType.ANYCAST, message_id, persistent=persistent)
        )

    def to_topic(self, address: str, message_id: str, *, persistent: bool = False) -> int:
        return self.router.send(
            self.message(address, RoutingType.MULTICAST, message_id, persistent=persistent)
        )


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- anycast ----------------------------------------------------------------------------------


def test_anycast_send_creates_a_durable_queue(h: Harness) -> None:
    assert h.router.queue("orders") is None
    assert h.to_queue("orders", "m1") == 1
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.name == "orders"
    assert queue.address == "orders"
    assert queue.durable is True
    assert queue.filter is None
    assert queue.temporary_owner is None
    assert [m.message_id for m in queue.browse()] == ["m1"]
    assert h.store.calls == [("queue", "orders", "orders", None)]


def test_anycast_queue_is_created_once(h: Harness) -> None:
    h.to_queue("orders", "m1")
    first = h.router.queue("orders")
    h.to_queue("orders", "m2")
    assert h.router.queue("orders") is first
    assert list(h.router.queues()) == [first]
    assert first is not None
    assert [m.message_id for m in first.browse()] == ["m1", "m2"]
    assert h.store.calls == [("queue", "orders", "orders", None)]


def test_consume_queue_creates_and_attaches(h: Harness) -> None:
    consumer = h.consumer("A")
    queue = h.router.consume_queue("orders", consumer)
    assert consumer.queue is queue
    assert queue.consumers == (consumer,)
    h.to_queue("orders", "m1")
    h.to_queue("orders", "m2")
    assert h.sink.ids("A") == ["m1", "m2"]


def test_anycast_competing_consumers_share_one_queue(h: Harness) -> None:
    h.router.consume_queue("orders", h.consumer("A"))
    h.router.consume_queue("orders", h.consumer("B"))
    for i in range(4):
        h.to_queue("orders", f"m{i}")
    assert h.sink.deliveries == [("A", "m0"), ("B", "m1"), ("A", "m2"), ("B", "m3")]


@pytest.mark.parametrize("name", ["", "orders.*", ">", "a.>"])
def test_invalid_queue_names_are_refused(h: Harness, name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        h.router.get_or_create_queue(name)
    assert info.value.message == f"invalid queue name {name!r}"
    with pytest.raises(InvalidRequest):
        h.to_queue(name, "m1")
    assert list(h.router.queues()) == []
    assert h.store.calls == []


def test_delete_queue(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.INDIVIDUAL)
    queue = h.router.consume_queue("orders", consumer)
    h.to_queue("orders", "p1", persistent=True)
    queue.remove_consumer(consumer)
    h.router.consume_queue("orders", consumer)  # p1 is delivered again
    h.to_queue("orders", "p2", persistent=True)
    h.store.calls.clear()
    h.router.delete_queue("orders")
    assert consumer.queue is None
    assert h.router.queue("orders") is None
    assert h.store.calls == [("ack", "orders", 1), ("ack", "orders", 2), ("forget", "orders")]
    with pytest.raises(NotFound) as info:
        h.router.delete_queue("orders")
    assert info.value.message == "no queue 'orders'"


# --- topics -----------------------------------------------------------------------------------


def test_topic_fans_out_to_every_matching_subscription(h: Harness) -> None:
    patterns = {
        "exact": "prices.eu.gbp",
        "star": "prices.*.gbp",
        "tail": "prices.>",
        "everything": ">",
        "other-star": "prices.*.usd",
        "other": "orders.>",
        "shorter": "prices.eu",
    }
    for key, pattern in patterns.items():
        h.router.subscribe_topic(pattern, h.consumer(key))
    assert h.to_topic("prices.eu.gbp", "m1") == 4
    assert sorted(h.sink.deliveries) == [
        ("everything", "m1"),
        ("exact", "m1"),
        ("star", "m1"),
        ("tail", "m1"),
    ]
    assert h.to_topic("prices.eu", "m2") == 3
    assert sorted(d for d in h.sink.deliveries if d[1] == "m2") == [
        ("everything", "m2"),
        ("shorter", "m2"),
        ("tail", "m2"),
    ]


def test_topic_routes_one_shared_message_to_each_subscription(h: Harness) -> None:
    a = h.router.subscribe_topic("t", h.consumer("A", AckMode.CLIENT))
    b = h.router.subscribe_topic("t", h.consumer("B", AckMode.CLIENT))
    message = h.message("t", RoutingType.MULTICAST, "m1")
    assert h.router.send(message) == 2
    assert a is not b
    consumer_a, consumer_b = a.consumers[0], b.consumers[0]
    assert consumer_a.in_flight[1].message is message
    assert consumer_b.in_flight[1].message is message


def test_topic_without_subscribers_drops_the_message(h: Harness) -> None:
    assert h.to_topic("prices.eu", "m1", persistent=True) == 0
    h.router.subscribe_topic("prices.eu", h.consumer("late"))
    assert h.sink.deliveries == []
    assert h.store.calls == []


def test_topic_routing_follows_subscription_changes(h: Harness) -> None:
    assert h.to_topic("a.b", "m1") == 0  # cached as "nobody"
    consumer = h.consumer("A")
    h.router.subscribe_topic("a.*", consumer)
    assert h.to_topic("a.b", "m2") == 1
    h.router.unsubscribe(consumer)
    assert h.to_topic("a.b", "m3") == 0
    assert h.sink.ids("A") == ["m2"]


@pytest.mark.parametrize("address", ["prices.*", "prices.>", ">", "*"])
def test_sending_to_a_wildcard_topic_is_invalid(h: Harness, address: str) -> None:
    h.router.subscribe_topic(">", h.consumer("A"))
    with pytest.raises(InvalidRequest) as info:
        h.to_topic(address, "m1")
    assert info.value.message == f"cannot send to a wildcard address {address!r}"
    assert h.sink.deliveries == []


@pytest.mark.parametrize("pattern", ["", "a..b", "a.>.b", ">.>"])
def test_subscribing_to_an_invalid_pattern_is_refused(h: Harness, pattern: str) -> None:
    consumer = h.consumer("A")
    with pytest.raises(InvalidRequest) as info:
        h.router.subscribe_topic(pattern, consumer)
    assert info.value.message == f"invalid topic pattern {pattern!r}"
    assert consumer.queue is None
    with pytest.raises(InvalidRequest):
        h.router.subscribe_topic(pattern, consumer, durable_name="d")
    assert list(h.router.durable_subscriptions()) == []


def test_non_durable_subscription_goes_with_unsubscribe(h: Harness) -> None:
    consumer = h.consumer("A", AckMode.CLIENT)
    queue = h.router.subscribe_topic("a.b", consumer)
    assert queue.durable is False
    assert queue.filter == "a.b"
    assert queue.temporary_owner is consumer
    assert h.to_topic("a.b", "m1", persistent=True) == 1
    h.router.unsubscribe(consumer)
    assert consumer.queue is None
    assert queue.depth == 0  # its unacknowledged message went with it
    assert h.to_topic("a.b", "m2") == 0
    assert h.sink.ids("A") == ["m1"]
    h.router.unsubscribe(consumer)  # a second time does nothing
    assert h.store.calls == []


def test_unsubscribe_from_anycast_queue_keeps_the_queue(h: Harness) -> None:
    consumer = h.consumer("A")
    queue = h.router.consume_queue("orders", consumer)
    h.router.unsubscribe(consumer)
    assert consumer.queue is None
    assert h.router.queue("orders") is queue
    assert h.to_queue("orders", "m1") == 1
    assert queue.ready_count == 1


# --- durable subscriptions --------------------------------------------------------------------


def test_durable_subscription_outlives_its_consumer(h: Harness) -> None:
    first = h.consumer("A")
    queue = h.router.subscribe_topic("prices.>", first, durable_name="app.prices")
    assert queue.name == "app.prices"
    assert queue.durable is True
    assert queue.filter == "prices.>"
    assert h.to_topic("prices.eu", "m1") == 1
    h.router.unsubscribe(first)
    assert first.queue is None
    assert h.router.queue("app.prices") is queue
    assert list(h.router.durable_subscriptions()) == [queue]
    assert h.to_topic("prices.eu", "m2") == 1
    assert h.to_topic("prices.us", "m3") == 1
    assert [m.message_id for m in queue.browse()] == ["m2", "m3"]
    second = h.consumer("B")
    assert h.router.subscribe_topic("prices.>", second, durable_name="app.prices") is queue
    assert h.sink.ids("A") == ["m1"]
    assert h.sink.ids("B") == ["m2", "m3"]
    assert h.store.calls == [("queue", "app.prices", "prices.>", "prices.>")]


def test_second_consumer_on_active_durable_subscription_is_a_conflict(h: Harness) -> None:
    first = h.consumer("A")
    queue = h.router.subscribe_topic("t", first, durable_name="d")
    second = h.consumer("B")
    with pytest.raises(Conflict) as info:
        h.router.subscribe_topic("t", second, durable_name="d")
    assert info.value.message == "durable subscription 'd' already has a consumer"
    assert second.queue is None
    assert queue.consumers == (first,)
    assert h.to_topic("t", "m1") == 1
    assert h.sink.ids("A") == ["m1"]


def test_active_durable_subscription_cannot_change_its_pattern(h: Harness) -> None:
    first = h.consumer("A")
    queue = h.router.subscribe_topic("a.>", first, durable_name="d")
    with pytest.raises(Conflict) as info:
        h.router.subscribe_topic("b.>", h.consumer("B"), durable_name="d")
    assert info.value.message == "durable subscription 'd' has an active consumer"
    assert h.router.queue("d") is queue
    assert h.to_topic("a.x", "m1") == 1


def test_same_durable_name_with_new_pattern_replaces_the_subscription(h: Harness) -> None:
    first = h.consumer("A", AckMode.CLIENT)
    old = h.router.subscribe_topic("a.>", first, durable_name="d")
    h.router.unsubscribe(first)
    assert h.to_topic("a.x", "p1", persistent=True) == 1
    second = h.consumer("B")
    new = h.router.subscribe_topic("b.>", second, durable_name="d")
    assert new is not old
    assert new.filter == "b.>"
    assert h.router.queue("d") is new
    assert list(h.router.durable_subscriptions()) == [new]
    assert h.sink.ids("B") == []  # the old subscription's messages went with it
    assert h.to_topic("a.x", "m2") == 0
    assert h.to_topic("b.x", "m3") == 1
    assert h.sink.ids("B") == ["m3"]
    assert h.store.calls == [
        ("queue", "d", "a.>", "a.>"),
        ("message", "d", 1, "p1"),
        ("ack", "d", 1),
        ("forget", "d"),
        ("queue", "d", "b.>", "b.>"),
    ]


def test_delete_durable_subscription(h: Harness) -> None:
    consumer = h.consumer("A")
    h.router.subscribe_topic("t", consumer, durable_name="d")
    with pytest.raises(Conflict) as conflict:
        h.router.delete_durable_subscription("d")
    assert conflict.value.message == "durable subscription 'd' has an active consumer"
    h.router.unsubscribe(consumer)
    h.to_topic("t", "p1", persistent=True)
    h.router.delete_durable_subscription("d")
    assert h.router.queue("d") is None
    assert h.to_topic("t", "m2") == 0
    assert h.store.calls == [
        ("queue", "d", "t", "t"),
        ("message", "d", 1, "p1"),
        ("ack", "d", 1),
        ("forget", "d"),
    ]
    with pytest.raises(NotFound) as missing:
        h.router.delete_durable_subscription("d")
    assert missing.value.message == "no durable subscription 'd'"


def test_restored_queues_are_not_recorded_again(h: Harness) -> None:
    queue = h.router.restore_queue("orders")
    sub = h.router.restore_durable_subscription("app.t", "t.>")
    assert h.router.queue("orders") is queue
    assert h.router.queue("app.t") is sub
    assert queue.durable is True
    assert sub.durable is True
    assert sub.filter == "t.>"
    assert h.to_topic("t.x", "m1") == 1
    assert h.to_queue("orders", "m2") == 1
    assert [m.message_id for m in sub.browse()] == ["m1"]
    assert [m.message_id for m in queue.browse()] == ["m2"]
    assert h.store.calls == []


# --- temporary queues -------------------------------------------------------------------------


def test_temporary_queues_are_deleted_with_their_owner(h: Harness) -> None:
    t1 = h.router.get_or_create_queue("tmp.1", temporary_owner="conn-1")
    consumer = h.consumer("A")
    t2 = h.router.consume_queue("tmp.2", consumer, owner="conn-1")
    other = h.router.get_or_create_queue("tmp.3", temporary_owner="conn-2")
    assert (t1.durable, t2.durable, other.durable) == (False, False, False)
    assert t1.temporary_owner == "conn-1"
    h.to_queue("tmp.1", "p1", persistent=True)
    h.router.delete_owned("conn-1")
    assert h.router.queue("tmp.1") is None
    assert h.router.queue("tmp.2") is None
    assert h.router.queue("tmp.3") is other
    assert consumer.queue is None
    assert t1.ready_count == 0
    h.router.delete_owned("conn-1")  # nothing left: no error
    h.router.delete_owned("nobody")
    assert h.store.calls == []


def test_delete_owned_spares_a_durable_queue_that_reused_a_temporary_name(h: Harness) -> None:
    h.router.get_or_create_queue("reply.1", temporary_owner="conn-1")
    h.router.delete_queue("reply.1")  # e.g. by an administrator
    h.to_queue("reply.1", "p1", persistent=True)  # now a durable anycast queue
    durable = h.router.queue("reply.1")
    assert durable is not None
    h.router.delete_owned("conn-1")
    assert h.router.queue("reply.1") is durable
    assert ("forget", "reply.1") not in h.store.calls


# --- message ids, clock, durability -----------------------------------------------------------


def test_message_ids_are_unique_and_prefixed(h: Harness) -> None:
    ids = [h.router.new_message_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids[:3] == ["ID:dovecote-1", "ID:dovecote-2", "ID:dovecote-3"]
    assert Router(MemoryStore(), FakeClock(), node_id="n7").new_message_id() == "ID:n7-1"


def test_now_ms_reads_the_clock(h: Harness) -> None:
    h.clock.now = 42
    assert h.router.now_ms() == 42


def test_call_when_durable_goes_to_the_store(h: Harness) -> None:
    called: list[str] = []
    h.router.call_when_durable(lambda: called.append("done"))
    assert called == ["done"]


def test_store_records_only_persistent_messages_on_durable_queues(h: Harness) -> None:
    queue_consumer = h.consumer("Q", AckMode.INDIVIDUAL)
    h.router.consume_queue("orders", queue_consumer)
    durable_consumer = h.consumer("D", AckMode.INDIVIDUAL)
    h.router.subscribe_topic("t", durable_consumer, durable_name="sub")
    plain_consumer = h.consumer("N", AckMode.INDIVIDUAL)
    h.router.subscribe_topic("t", plain_consumer)

    h.to_queue("orders", "qp", persistent=True)
    h.to_queue("orders", "qn")
    assert h.to_topic("t", "tp", persistent=True) == 2
    assert h.to_topic("t", "tn") == 2
    for consumer in (queue_consumer, durable_consumer, plain_consumer):
        queue = consumer.queue
        assert queue is not None
        for seq in list(consumer.in_flight):
            queue.ack(consumer, seq)

    assert h.store.calls == [
        ("queue", "orders", "orders", None),
        ("queue", "sub", "t", "t"),
        ("message", "orders", 1, "qp"),
        ("delivery", "orders", 1, 1),
        ("message", "sub", 1, "tp"),
        ("delivery", "sub", 1, 1),
        ("ack", "orders", 1),
        ("ack", "sub", 1),
    ]


def test_persistent_send_is_refused_while_the_store_is_unavailable(h: Harness) -> None:
    consumer = h.consumer("A")
    h.router.consume_queue("orders", consumer)
    h.router.subscribe_topic("t", h.consumer("B"))
    h.store.available = False
    with pytest.raises(StoreUnavailable):
        h.to_queue("orders", "p1", persistent=True)
    with pytest.raises(StoreUnavailable):
        h.to_topic("t", "p2", persistent=True)
    assert h.to_queue("orders", "n1") == 1
    assert h.to_topic("t", "n2") == 1
    assert h.sink.deliveries == [("A", "n1"), ("B", "n2")]
    h.store.available = True
    assert h.to_queue("orders", "p3", persistent=True) == 1


def test_memory_budget_follows_every_queue_holding_a_message(h: Harness) -> None:
    budget = h.router.budget
    plain = h.consumer("A", AckMode.CLIENT)
    h.router.subscribe_topic("t", plain)
    durable = h.consumer("B", AckMode.CLIENT)
    h.router.subscribe_topic("t", durable, durable_name="d")
    assert h.to_topic("t", "m1") == 2  # one message, held by two queues
    assert budget.used == 2 * ENTRY_OVERHEAD
    h.router.unsubscribe(plain)
    assert budget.used == ENTRY_OVERHEAD
    h.router.unsubscribe(durable)  # the durable subscription keeps it
    assert budget.used == ENTRY_OVERHEAD
    h.router.delete_durable_subscription("d")
    assert budget.used == 0
    h.router.get_or_create_queue("tmp", temporary_owner="conn")
    h.to_queue("tmp", "m2")
    assert budget.used == ENTRY_OVERHEAD
    h.router.delete_owned("conn")
    assert budget.used == 0


def test_delete_owned_after_the_queue_was_deleted_is_harmless(h: Harness) -> None:
    h.router.get_or_create_queue("tmp", temporary_owner="conn")
    h.router.delete_queue("tmp")
    h.router.delete_owned("conn")
    assert h.router.queue("tmp") is None
    assert list(h.router.queues()) == []


def test_topic_routing_stays_right_past_the_route_cache_limit(h: Harness) -> None:
    consumer = h.consumer("A")
    h.router.subscribe_topic("t.*", consumer)
    # More distinct addresses than the route cache holds: it is cleared and refilled.
    for i in range(10_001):
        assert h.to_topic(f"t.{i}", f"m{i}") == 1
    assert h.to_topic("t.0", "again") == 1
    assert h.to_topic("u.0", "none") == 0
    assert len(h.sink.deliveries) == 10_002
    assert h.sink.deliveries[-1] == ("A", "again")

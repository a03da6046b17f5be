"""Policies in the core, timed with an injected clock (no sleeps): redelivery back-off, dead
letters, expiry and the reaper, bounded and last-value queues."""

from __future__ import annotations

import json

import pytest

from dovecote.core.errors import ResourceLimitExceeded
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.policy import (
    AddressPolicy,
    DeadLetterStrategy,
    ExpiredAction,
    Overflow,
    PolicyEntry,
    PolicyMap,
    pattern_matches,
)
from dovecote.core.queue import AckMode, Consumer
from dovecote.core.router import Router
from dovecote.core.selector import compile_selector
from fake_clock import FakeClock
from recording_store import RecordingStore

T0 = 1_000_000


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[object, str, int, dict[str, str]]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        message = entry.message
        self.got.append(
            (consumer.key, message.message_id, entry.delivery_count, dict(message.properties))
        )

    def ids(self) -> list[tuple[str, int]]:
        return [(g[1], g[2]) for g in self.got]


class Harness:
    def __init__(self, *entries: tuple[str, AddressPolicy], default: AddressPolicy | None = None):
        self.clock = FakeClock()
        self.store = RecordingStore()
        self.sink = Sink()
        policies = PolicyMap(
            default or AddressPolicy(),
            tuple(PolicyEntry(pattern, policy) for pattern, policy in entries),
        )
        self.router = Router(self.store, self.clock, policies=policies)

    def send(self, message_id: str, address: str = "orders", **fields: object) -> None:
        routing = fields.pop("routing", RoutingType.ANYCAST)
        assert isinstance(routing, RoutingType)
        message = Message(message_id, address, routing, b"x", timestamp=self.clock.now)
        self.router.send(_replace(message, **fields))

    def consumer(self, key: str = "A", queue: str = "orders", prefetch: int = 100) -> Consumer:
        consumer = Consumer(key, self.sink, ack_mode=AckMode.INDIVIDUAL, prefetch=prefetch)
        self.router.consume_queue(queue, consumer)
        return consumer

    def advance(self, ms: int) -> None:
        self.clock.now += ms
        self.router.timers.run_due()


def _replace(message: Message, **fields: object) -> Message:
    from dataclasses import replace

    return replace(message, **fields)  # type: ignore[arg-type]


def nack_first(consumer: Consumer) -> None:
    queue = consumer.queue
    assert queue is not None
    queue.nack(consumer, next(iter(consumer.in_flight)))


# --- the policy values -----------------------------------------------------------------------


def test_activemq_default_redelivery_delays() -> None:
    policy = AddressPolicy()
    assert policy.max_redeliveries == 6
    assert [policy.redelivery_delay(n) for n in range(1, 5)] == [1000, 1000, 1000, 1000]


def test_exponential_backoff_is_capped() -> None:
    policy = AddressPolicy(
        initial_redelivery_delay_ms=100,
        use_exponential_backoff=True,
        backoff_multiplier=2,
        max_redelivery_delay_ms=300,
    )
    assert [policy.redelivery_delay(n) for n in range(1, 6)] == [100, 200, 300, 300, 300]
    uncapped = AddressPolicy(initial_redelivery_delay_ms=10, use_exponential_backoff=True)
    assert uncapped.redelivery_delay(4) == 1250
    assert uncapped.redelivery_delay(10_000) > 0  # no overflow


def test_zero_initial_delay_then_redelivery_delay() -> None:
    policy = AddressPolicy(initial_redelivery_delay_ms=0, redelivery_delay_ms=50)
    assert [policy.redelivery_delay(n) for n in (1, 2, 3)] == [0, 50, 50]


def test_is_exhausted() -> None:
    assert not AddressPolicy(max_redeliveries=2).is_exhausted(2)
    assert AddressPolicy(max_redeliveries=2).is_exhausted(3)
    assert AddressPolicy(max_redeliveries=0).is_exhausted(1)
    assert not AddressPolicy(max_redeliveries=-1).is_exhausted(10**6)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"max_redeliveries": -2}, "max_redeliveries"),
        ({"initial_redelivery_delay_ms": -1}, "initial_redelivery_delay_ms"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier"),
        ({"max_redelivery_delay_ms": -5}, "max_redelivery_delay_ms"),
        ({"dead_letter_strategy": "elsewhere"}, "dead_letter_strategy"),
        ({"expired": "keep"}, "expired"),
        ({"overflow": "block"}, "overflow"),
        ({"dead_letter_queue": "DLQ.>"}, "dead_letter_queue"),
        ({"dead_letter_queue": "DLQ..x"}, "dead_letter_queue"),
        ({"dead_letter_prefix": ""}, "dead_letter_prefix"),
        ({"dead_letter_prefix": "DLQ.*."}, "dead_letter_prefix"),
        ({"max_messages": -1}, "max_messages"),
        ({"last_value_key": ""}, "last_value_key"),
    ],
)
def test_bad_policy_values_are_refused(fields: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        AddressPolicy(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("orders", "orders", True),
        ("orders", "orders.eu", False),
        ("orders.*", "orders.eu", True),
        ("orders.*", "orders.eu.fr", False),
        ("orders.>", "orders.eu.fr", True),
        ("orders.>", "orders", False),
        (">", "anything.at.all", True),
        ("*.eu", "orders.eu", True),
    ],
)
def test_pattern_matches(pattern: str, name: str, matches: bool) -> None:
    assert pattern_matches(pattern, name) is matches


def test_most_specific_entry_wins_and_ties_go_to_the_first() -> None:
    a, b, c, d, e = (AddressPolicy(max_redeliveries=n) for n in range(1, 6))
    policies = PolicyMap(
        AddressPolicy(max_redeliveries=0),
        (
            PolicyEntry(">", a),
            PolicyEntry("orders.>", b),
            PolicyEntry("orders.*", c),
            PolicyEntry("orders.eu", d),
            PolicyEntry("orders.*", e),
        ),
    )
    assert policies.policy_for("orders.eu") is d
    assert policies.policy_for("orders.us") is c
    assert policies.policy_for("orders.us.ny") is b
    assert policies.policy_for("prices") is a
    assert PolicyMap().policy_for("x").max_redeliveries == 6
    with pytest.raises(ValueError, match="invalid address pattern"):
        PolicyMap(entries=(PolicyEntry("a.>.b", a),))


# --- redelivery --------------------------------------------------------------------------------


def test_nacked_message_is_held_without_blocking_the_ones_behind_it() -> None:
    h = Harness()
    consumer = h.consumer(prefetch=1)
    h.send("m1")
    h.send("m2")
    nack_first(consumer)
    assert h.sink.ids() == [("m1", 1), ("m2", 1)]  # m2 goes at once; m1 waits 1 s
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.held_count == 1
    assert queue.depth == 2
    queue.ack(consumer, 2)
    h.advance(999)
    assert h.sink.ids() == [("m1", 1), ("m2", 1)]
    h.advance(1)
    assert h.sink.ids() == [("m1", 1), ("m2", 1), ("m1", 2)]


def _back_in_the_wrong_order(h: Harness) -> Consumer:
    """m1 comes back from its redelivery delay, then m2 and m3 from a consumer that went
    away (so m1 is already at the front when the newer m2 and m3 come back)."""
    a = h.consumer("A", prefetch=3)
    for n in (1, 2, 3, 4):
        h.send(f"m{n}")  # A takes m1-m3; m4 waits
    nack_first(a)  # m1 held for 1 s; A takes m4 with the credit it freed
    h.advance(1000)  # m1 is back, at the front; A has no credit left
    h.router.unsubscribe(a)  # m2, m3 and m4 come back
    return a


def test_messages_coming_back_keep_each_level_in_arrival_order() -> None:
    h = Harness()
    _back_in_the_wrong_order(h)
    h.consumer("B")
    assert [mid for mid, _ in h.sink.ids()[4:]] == ["m1", "m2", "m3", "m4"]


def test_drop_oldest_drops_the_oldest_even_when_newer_ones_came_back_after_it() -> None:
    h = Harness(("orders", AddressPolicy(max_messages=4, overflow=Overflow.DROP_OLDEST)))
    _back_in_the_wrong_order(h)
    h.send("m5")  # one too many: m1, the oldest, goes
    h.consumer("B")
    assert [mid for mid, _ in h.sink.ids()[4:]] == ["m2", "m3", "m4", "m5"]


def test_exponential_backoff_timing() -> None:
    h = Harness(
        default=AddressPolicy(
            initial_redelivery_delay_ms=100,
            use_exponential_backoff=True,
            backoff_multiplier=2,
            max_redelivery_delay_ms=300,
            max_redeliveries=-1,
        )
    )
    consumer = h.consumer()
    h.send("m1")
    redelivered_at = []
    for _ in range(4):
        nack_first(consumer)
        start = h.clock.now
        while len(h.sink.got) == len(redelivered_at) + 1:
            h.advance(10)
        redelivered_at.append(h.clock.now - start)
    assert redelivered_at == [100, 200, 300, 300]


def test_zero_delay_redelivers_at_once() -> None:
    h = Harness(default=AddressPolicy(initial_redelivery_delay_ms=0))
    consumer = h.consumer()
    h.send("m1")
    nack_first(consumer)
    assert h.sink.ids() == [("m1", 1), ("m1", 2)]
    assert len(h.router.timers) == 0


def test_exhausted_message_goes_to_the_shared_dlq_atomically() -> None:
    h = Harness(default=AddressPolicy(max_redeliveries=1, initial_redelivery_delay_ms=0))
    consumer = h.consumer()
    h.send("m1", persistent=True)
    nack_first(consumer)
    h.store.calls.clear()
    nack_first(consumer)  # second delivery failed: past max_redeliveries=1
    assert h.sink.ids() == [("m1", 1), ("m1", 2)]
    dlq = h.router.queue("ActiveMQ.DLQ")
    assert dlq is not None
    (dead,) = list(dlq.browse())
    assert dead.message_id == "m1"
    assert dead.properties == {
        "originalDestination": "queue://orders",
        "dlqDeliveryFailureCause": "Delivery[2] exceeds redelivery policy limit: "
        "max_redeliveries=1",
        "JMSXDeliveryCount": "2",
    }
    assert dead.persistent
    assert h.store.calls == [
        ("queue", "ActiveMQ.DLQ", "ActiveMQ.DLQ", None),
        ("begin",),
        ("message", "ActiveMQ.DLQ", 1, "m1"),
        ("ack", "orders", 1),
        ("end",),
    ]
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.depth == 0
    assert queue.dead_lettered == 1


def test_individual_strategy_and_discard() -> None:
    h = Harness(
        (
            "orders",
            AddressPolicy(max_redeliveries=0, dead_letter_strategy=DeadLetterStrategy.INDIVIDUAL),
        ),
        ("audit", AddressPolicy(max_redeliveries=0, dead_letter_strategy="discard")),
    )
    orders = h.consumer("A", "orders")
    audit = h.consumer("B", "audit")
    h.send("m1")
    h.send("m2", address="audit")
    nack_first(orders)
    nack_first(audit)
    dlq = h.router.queue("DLQ.orders")
    assert dlq is not None
    assert [m.message_id for m in dlq.browse()] == ["m1"]
    assert h.router.queue("ActiveMQ.DLQ") is None
    audit_queue = h.router.queue("audit")
    assert audit_queue is not None
    assert audit_queue.depth == 0
    assert audit_queue.dropped == 1


def test_dead_letter_queue_does_not_dead_letter_into_itself() -> None:
    h = Harness(default=AddressPolicy(max_redeliveries=0))
    h.send("m1")
    consumer = h.consumer("A")
    nack_first(consumer)
    dlq_consumer = h.consumer("D", "ActiveMQ.DLQ")
    nack_first(dlq_consumer)
    dlq = h.router.queue("ActiveMQ.DLQ")
    assert dlq is not None
    assert dlq.depth == 0
    assert dlq.dropped == 1


def test_consumer_loss_counts_but_is_not_delayed() -> None:
    h = Harness(default=AddressPolicy(max_redeliveries=1))
    h.send("m1")
    for key in ("A", "B"):
        consumer = h.consumer(key)
        queue = consumer.queue
        assert queue is not None
        queue.remove_consumer(consumer)
    assert h.sink.ids() == [("m1", 1), ("m1", 2)]  # straight to B, no 1 s hold
    dlq = h.router.queue("ActiveMQ.DLQ")
    assert dlq is not None
    assert [m.properties["JMSXDeliveryCount"] for m in dlq.browse()] == ["2"]


def test_held_message_is_forgotten_when_its_queue_is_deleted() -> None:
    h = Harness()
    consumer = h.consumer()
    h.send("m1")
    nack_first(consumer)
    queue = consumer.queue
    assert queue is not None
    queue.remove_consumer(consumer)
    h.router.delete_queue("orders")
    assert queue.depth == 0
    h.advance(5000)
    assert queue.depth == 0


def test_topic_subscription_dead_letters_keep_the_topic_name() -> None:
    h = Harness(default=AddressPolicy(max_redeliveries=0))
    consumer = Consumer("T", h.sink, ack_mode=AckMode.INDIVIDUAL)
    h.router.subscribe_topic("prices.>", consumer)
    h.send("p1", address="prices.eu", routing=RoutingType.MULTICAST)
    nack_first(consumer)
    dlq = h.router.queue("ActiveMQ.DLQ")
    assert dlq is not None
    assert [m.properties["originalDestination"] for m in dlq.browse()] == ["topic://prices.eu"]


# --- expiry ------------------------------------------------------------------------------------


def test_expired_message_is_never_delivered_and_goes_to_the_dlq() -> None:
    h = Harness()
    h.send("old", expires=T0 + 10)
    h.send("fresh")
    h.clock.now += 10
    h.consumer()
    assert h.sink.ids() == [("fresh", 1)]
    dlq = h.router.queue("ActiveMQ.DLQ")
    assert dlq is not None
    (dead,) = list(dlq.browse())
    assert dead.properties["dlqDeliveryFailureCause"] == f"Message Expired. Expiration:{T0 + 10}"
    assert dead.properties["originalExpiration"] == str(T0 + 10)
    assert dead.expires == 0


def test_expired_messages_can_be_dropped() -> None:
    h = Harness(default=AddressPolicy(expired=ExpiredAction.DROP))
    h.send("old", expires=T0 + 10)
    h.advance(1000)
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.depth == 0
    assert queue.expired == 1
    assert h.router.queue("ActiveMQ.DLQ") is None


def test_reaper_expires_messages_in_idle_queues_then_stops() -> None:
    h = Harness(default=AddressPolicy(default_ttl_ms=5000))
    for n in range(3):
        h.send(f"m{n}")
        h.clock.now += 1000
    h.send("forever", address="other", expires=0)
    queue = h.router.queue("orders")
    assert queue is not None
    h.advance(2000)  # m0 expires at T0+5000: the reaper runs every second
    assert queue.expired == 1
    assert queue.ready_count == 2
    h.advance(2000)
    assert queue.expired == 3
    dlq = h.router.queue("ActiveMQ.DLQ")
    assert dlq is not None
    assert [m.message_id for m in dlq.browse()] == ["m0", "m1", "m2"]
    h.advance(1000)
    assert len(h.router.timers) == 0  # nothing left that can expire: no periodic wake-ups


def test_reaper_skips_delivered_messages_and_catches_returned_ones() -> None:
    h = Harness(default=AddressPolicy(initial_redelivery_delay_ms=0))
    consumer = h.consumer()
    h.send("m1", expires=T0 + 1500)
    h.advance(1000)
    h.advance(1000)  # expired while in flight: left with its consumer
    queue = consumer.queue
    assert queue is not None
    assert queue.expired == 0
    queue.remove_consumer(consumer)  # back after its time: expired, not redelivered
    assert queue.expired == 1
    assert h.sink.ids() == [("m1", 1)]


def test_default_ttl_applies_only_without_expires() -> None:
    h = Harness(("orders", AddressPolicy(default_ttl_ms=100, expired=ExpiredAction.DROP)))
    h.send("ttl")
    h.send("own", expires=T0 + 10_000)
    h.advance(1000)
    queue = h.router.queue("orders")
    assert queue is not None
    assert [m.message_id for m in queue.browse()] == ["own"]


def test_held_message_that_expires_is_not_redelivered() -> None:
    h = Harness()
    consumer = h.consumer()
    h.send("m1", expires=T0 + 500)
    nack_first(consumer)
    h.advance(1000)
    assert h.sink.ids() == [("m1", 1)]
    queue = consumer.queue
    assert queue is not None
    assert queue.expired == 1


# --- bounded and last-value queues -------------------------------------------------------------


def test_reject_new_refuses_the_send() -> None:
    h = Harness(("orders", AddressPolicy(max_messages=2)))
    h.send("m1")
    h.send("m2")
    with pytest.raises(ResourceLimitExceeded, match="'orders' is full"):
        h.send("m3")
    consumer = h.consumer()
    assert h.sink.ids() == [("m1", 1), ("m2", 1)]
    h.send("m3")  # in flight messages do not count
    assert consumer.queue is not None
    assert consumer.queue.depth == 3


def test_reject_new_refuses_a_topic_send_whole() -> None:
    h = Harness(("prices.eu", AddressPolicy(max_messages=1)))
    a = Consumer("a", h.sink, ack_mode=AckMode.INDIVIDUAL, prefetch=1)
    b = Consumer("b", h.sink, ack_mode=AckMode.INDIVIDUAL, prefetch=1)
    h.router.subscribe_topic("prices.eu", a)
    h.router.subscribe_topic("prices.eu", b)
    h.send("p1", address="prices.eu", routing=RoutingType.MULTICAST)  # in flight to each
    h.send("p2", address="prices.eu", routing=RoutingType.MULTICAST)  # waiting in each
    with pytest.raises(ResourceLimitExceeded):
        h.send("p3", address="prices.eu", routing=RoutingType.MULTICAST)
    assert len(h.sink.got) == 2


def test_a_full_subscription_does_not_refuse_what_its_selector_would_not_take() -> None:
    h = Harness(("prices", AddressPolicy(max_messages=1)))
    eu = Consumer("eu", h.sink, ack_mode=AckMode.INDIVIDUAL, prefetch=1)
    eu.selector = compile_selector("region = 'eu'")
    h.router.subscribe_topic("prices", eu)
    h.router.subscribe_topic("prices", Consumer("all", h.sink))
    topic = {"address": "prices", "routing": RoutingType.MULTICAST}
    h.send("e1", properties={"region": "eu"}, **topic)  # in flight to eu
    h.send("e2", properties={"region": "eu"}, **topic)  # waiting: eu's queue is full
    with pytest.raises(ResourceLimitExceeded):
        h.send("e3", properties={"region": "eu"}, **topic)
    h.send("u1", properties={"region": "us"}, **topic)  # eu's queue would not take it
    assert [g[1] for g in h.sink.got if g[0] == "all"] == ["e1", "e2", "u1"]


def test_drop_oldest_makes_room() -> None:
    h = Harness(("orders", AddressPolicy(max_messages=2, overflow=Overflow.DROP_OLDEST)))
    h.send("m1", persistent=True)
    h.send("m2", persistent=True, priority=9)
    h.send("m3", persistent=True)
    queue = h.router.queue("orders")
    assert queue is not None
    assert [m.message_id for m in queue.browse()] == ["m2", "m3"]
    assert queue.dropped == 1
    assert ("ack", "orders", 1) in h.store.calls
    h.consumer()
    assert h.sink.ids() == [("m2", 1), ("m3", 1)]


def test_last_value_queue_replaces_the_waiting_message() -> None:
    h = Harness(("prices", AddressPolicy(last_value_key="symbol")))
    h.send("a1", address="prices", properties={"symbol": "ACME"})
    h.send("b1", address="prices", properties={"symbol": "BOLT"})
    h.send("a2", address="prices", properties={"symbol": "ACME"})
    h.send("none", address="prices")
    queue = h.router.queue("prices")
    assert queue is not None
    assert [m.message_id for m in queue.browse()] == ["b1", "a2", "none"]
    consumer = h.consumer("A", "prices", prefetch=1)
    assert h.sink.ids() == [("b1", 1)]
    h.send("b2", address="prices", properties={"symbol": "BOLT"})  # b1 is in flight: kept
    queue.ack(consumer, next(iter(consumer.in_flight)))
    assert [g[1] for g in h.sink.got] == ["b1", "a2"]
    assert [m.message_id for m in queue.browse()] == ["none", "b2"]


def test_many_replacements_do_not_grow_the_queue() -> None:
    h = Harness(("prices", AddressPolicy(last_value_key="symbol")))
    for n in range(5000):
        h.send(f"m{n}", address="prices", properties={"symbol": str(n % 3)})
    queue = h.router.queue("prices")
    assert queue is not None
    assert queue.ready_count == 3
    assert sum(len(level) for level in queue._ready) == 3  # replaced entries left at once
    h.consumer("A", "prices")
    assert [g[1] for g in h.sink.got] == ["m4997", "m4998", "m4999"]


def test_expiry_heap_forgets_delivered_messages() -> None:
    h = Harness(default=AddressPolicy(default_ttl_ms=3_600_000))
    consumer = h.consumer()
    queue = consumer.queue
    assert queue is not None
    for n in range(5000):
        h.send(f"m{n}")
        queue.ack(consumer, next(iter(consumer.in_flight)))
    assert queue.depth == 0
    assert len(queue._expiring) <= 1024 + 1  # not one entry per message ever sent


def test_a_commit_into_a_full_queue_is_refused_whole() -> None:
    from dovecote.core.tx import Transaction

    h = Harness(("orders", AddressPolicy(max_messages=1)))
    tx = Transaction("t")
    tx.add_send(Message("t1", "other", RoutingType.ANYCAST, b"x"))
    tx.add_send(Message("t2", "orders", RoutingType.ANYCAST, b"x"))
    h.send("m1")  # fills orders after the transaction's SENDs were accepted
    with pytest.raises(ResourceLimitExceeded):
        tx.commit(h.router)
    assert h.router.queue("other") is None
    # Only m1's send made a record (its queue's definition): the refused commit made none.
    assert h.store.calls == [("queue", "orders", "orders", None)]


def test_a_checked_commit_applies_a_duplicate_detected_send_whole() -> None:
    from dovecote.core.tx import Transaction

    h = Harness(("orders", AddressPolicy(max_messages=1)))
    tx = Transaction("t")
    tx.add_send(Message("t1", "orders", RoutingType.ANYCAST, b"x"))
    tx.add_send(
        Message("t2", "orders", RoutingType.ANYCAST, b"x", properties={"_AMQ_DUPL_ID": "d"})
    )
    tx.commit(h.router)  # checked before applying: the second SEND is not refused half-way
    queue = h.router.queue("orders")
    assert queue is not None
    assert [m.message_id for m in queue.browse()] == ["t1", "t2"]


def test_a_checked_composite_send_is_applied_whole() -> None:
    # Both destinations reach one queue (a virtual topic's consumer queue) with room for one.
    name = "Consumer.A.VirtualTopic.Orders"
    h = Harness((name, AddressPolicy(max_messages=1)))
    queue = h.router.get_or_create_queue(name)
    h.router.send_all(
        [
            Message("c1", name, RoutingType.ANYCAST, b"x", persistent=True),
            Message("c1", "VirtualTopic.Orders", RoutingType.MULTICAST, b"x", persistent=True),
        ]
    )  # checked before sending: not refused half-way, after the first copy went in
    assert [m.address for m in queue.browse()] == [name, "VirtualTopic.Orders"]
    assert h.store.calls == [
        ("queue", name, name, None),
        ("begin",),
        ("message", name, 1, "c1"),
        ("message", name, 2, "c1"),
        ("end",),
    ]


def test_drop_oldest_may_drop_a_message_held_for_redelivery() -> None:
    h = Harness(("orders", AddressPolicy(max_messages=2, overflow=Overflow.DROP_OLDEST)))
    consumer = h.consumer(prefetch=1)
    h.send("m1")
    h.send("m2")
    nack_first(consumer)  # m1 held for 1 s, m2 delivered
    h.send("m3")
    h.send("m4")  # waiting: m1 (held), m3, m4 -> m1 is the oldest
    queue = consumer.queue
    assert queue is not None
    assert queue.held_count == 0
    assert queue.dropped == 1
    h.advance(1000)  # m1's timer finds it gone
    queue.ack(consumer, 2)
    assert [g[1] for g in h.sink.got] == ["m1", "m2", "m3"]


class PagingStore(RecordingStore):
    def __init__(self, body: bytes | None) -> None:
        super().__init__()
        self.body = body

    def load_body(self, queue: str, seq: int) -> bytes:
        if self.body is None:
            from dovecote.core.errors import StoreUnavailable

            raise StoreUnavailable("disk gone")
        return self.body


@pytest.mark.parametrize("readable", [True, False])
def test_paged_out_expired_message_is_dead_lettered_with_its_body(readable: bool) -> None:
    h = Harness()
    h.store = PagingStore(b"the body" if readable else None)
    h.router = Router(h.store, h.clock)
    h.send("m1", expires=T0 + 10, persistent=True)
    queue = h.router.queue("orders")
    assert queue is not None
    entry = next(e for level in queue._ready for e in level.values())
    entry.message = _replace(entry.message, body=b"")  # as page_out leaves it
    entry.paged = True
    h.advance(1000)
    assert queue.depth == 0
    dlq = h.router.queue("ActiveMQ.DLQ")
    if readable:
        assert dlq is not None
        assert [m.body for m in dlq.browse()] == [b"the body"]
    else:
        assert dlq is None  # it cannot be read back: dropped rather than stall the reaper
        assert queue.dropped == 1


# --- policies meet dispatch: entries parked because no selector wanted them -----------------


def _red_consumer(h: Harness) -> Consumer:
    consumer = Consumer(
        "red",
        h.sink,
        ack_mode=AckMode.INDIVIDUAL,
        prefetch=100,
        selector=compile_selector("color = 'red'"),
    )
    h.router.consume_queue("orders", consumer)
    return consumer


def test_the_reaper_takes_a_parked_message_out_of_the_parking() -> None:
    h = Harness()
    _red_consumer(h)
    h.send("blue", properties={"color": "blue"}, expires=h.clock.now + 100)
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.parked_count == 1  # nobody wants it
    h.advance(2000)
    assert queue.ready_count == 0
    assert queue.parked_count == 0
    dlq = h.router.queue("ActiveMQ.DLQ")
    assert dlq is not None
    assert [m.message_id for m in dlq.browse()] == ["blue"]
    h.send("red", properties={"color": "red"})
    assert h.sink.ids() == [("red", 1)]


def test_drop_oldest_drops_a_parked_message_first_when_it_is_the_oldest() -> None:
    h = Harness(("orders", AddressPolicy(max_messages=2, overflow=Overflow.DROP_OLDEST)))
    _red_consumer(h)
    for n in range(1, 4):
        h.send(f"blue{n}", properties={"color": "blue"})
    queue = h.router.queue("orders")
    assert queue is not None
    assert [m.message_id for m in queue.browse()] == ["blue2", "blue3"]
    assert queue.ready_count == queue.parked_count == 2
    assert queue.dropped == 1


def test_a_last_value_replaces_a_parked_message() -> None:
    h = Harness(("orders", AddressPolicy(last_value_key="symbol")))
    _red_consumer(h)
    h.send("a1", properties={"color": "blue", "symbol": "ACME"})
    h.send("a2", properties={"color": "red", "symbol": "ACME"})
    queue = h.router.queue("orders")
    assert queue is not None
    assert h.sink.ids() == [("a2", 1)]
    assert queue.ready_count == queue.parked_count == 0


# --- advisories ------------------------------------------------------------------------------


class BodySink:
    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, object]]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.got.append((entry.message.address, json.loads(entry.message.body)))


def test_dead_letters_and_expiries_are_advised() -> None:
    h = Harness(default=AddressPolicy(max_redeliveries=0))
    advisories = BodySink()
    h.router.subscribe_topic("ActiveMQ.Advisory.>", Consumer("adv", advisories))
    consumer = h.consumer()
    h.send("failing")
    nack_first(consumer)  # no redelivery allowed: straight to the DLQ
    h.router.unsubscribe(consumer)
    h.send("late", expires=h.clock.now + 10)
    h.advance(2000)  # the reaper finds it
    topics = [topic for topic, _ in advisories.got if "Consumer" not in topic]
    assert topics == [
        "ActiveMQ.Advisory.MessageDLQd.Queue.orders",
        "ActiveMQ.Advisory.Expired.Queue.orders",
        "ActiveMQ.Advisory.MessageDLQd.Queue.orders",
    ]
    first = next(body for topic, body in advisories.got if "MessageDLQd" in topic)
    assert first["messageId"] == "failing"
    assert first["deadLetterQueue"] == "ActiveMQ.DLQ"
    assert first["deliveryCount"] == 1


@pytest.mark.parametrize(
    ("policy", "dropped"),
    [
        pytest.param(AddressPolicy(expired="drop"), 0, id="expired-drop"),
        pytest.param(AddressPolicy(dead_letter_strategy="discard"), 1, id="discard-strategy"),
    ],
)
def test_an_expired_message_dropped_by_policy_is_advised_too(
    policy: AddressPolicy, dropped: int
) -> None:
    h = Harness(default=policy)
    advisories = BodySink()
    h.router.subscribe_topic("ActiveMQ.Advisory.>", Consumer("adv", advisories))
    h.send("late", expires=h.clock.now + 10)
    h.advance(2000)  # the reaper finds it
    assert [(topic, body["messageId"]) for topic, body in advisories.got] == [
        ("ActiveMQ.Advisory.Expired.Queue.orders", "late")
    ]
    queue = h.router.queue("orders")
    assert queue is not None
    assert (queue.expired, queue.dropped, queue.dead_lettered) == (1, dropped, 0)
    assert h.router.queue("ActiveMQ.DLQ") is None
    assert queue.ready_count == 0


def test_a_send_after_credit_returned_to_an_emptied_queue_is_delivered() -> None:
    """Regression guard for the add fast path: the queue remembers that no consumer had
    credit; credit that comes back while the queue is empty (its waiting message expired)
    must still let the next send through."""
    h = Harness(default=AddressPolicy(expired=ExpiredAction.DROP))
    consumer = h.consumer(prefetch=1)
    h.send("m1")
    h.send("m2", expires=h.clock.now + 10)  # waits: the consumer has no credit
    h.advance(2000)  # the reaper drops m2: nothing waits any more
    queue = h.router.queue("orders")
    assert queue is not None
    assert queue.ready_count == 0
    queue.ack(consumer, next(iter(consumer.in_flight)))
    h.send("m3")
    assert h.sink.ids() == [("m1", 1), ("m3", 1)]


def test_a_last_value_returned_after_a_newer_one_arrived_is_dropped() -> None:
    h = Harness(("prices", AddressPolicy(last_value_key="symbol", initial_redelivery_delay_ms=0)))
    consumer = h.consumer("A", "prices", prefetch=1)
    h.send("a1", address="prices", properties={"symbol": "ACME"})  # in flight
    h.send("a2", address="prices", properties={"symbol": "ACME"})  # newer: waits
    nack_first(consumer)  # a1 comes back: a2 already replaced it
    queue = h.router.queue("prices")
    assert queue is not None
    assert [g[1] for g in h.sink.got] == ["a1", "a2"]  # never a1 again
    assert queue.depth == 1  # a2, in flight
    assert queue.dropped == 1

"""Router features of issue #4 besides scheduling: duplicate detection, virtual topics,
composite sends and advisories."""

from __future__ import annotations

import json

import pytest

from dovecote.core import advisory
from dovecote.core.dedup import DuplicateCache
from dovecote.core.errors import InvalidRequest
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import Consumer
from dovecote.core.router import Router, virtual_topic_of
from dovecote.store.memory import MemoryStore
from fake_clock import FakeClock

ANY, MULTI = RoutingType.ANYCAST, RoutingType.MULTICAST


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[object, Message]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.got.append((consumer.key, entry.message))

    def bodies(self, key: object) -> list[bytes]:
        return [m.body for k, m in self.got if k == key]


class Store(MemoryStore):
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def record_message(self, queue: str, seq: int, message: Message) -> None:
        self.calls.append(("message", queue, seq))

    def record_duplicate_id(self, address: str, seq: int, duplicate_id: str) -> None:
        self.calls.append(("dup", address, seq, duplicate_id))

    def forget_duplicate_id(self, address: str, duplicate_id: str) -> None:
        self.calls.append(("forget", address, duplicate_id))

    def begin_atomic(self) -> None:
        self.calls.append(("begin",))

    def end_atomic(self) -> None:
        self.calls.append(("end",))


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def router(store: Store) -> Router:
    return Router(store, FakeClock(1_000), duplicate_cache_size=3)


@pytest.fixture
def sink() -> Sink:
    return Sink()


def msg(address: str, body: bytes, routing: RoutingType = ANY, **props: str) -> Message:
    return Message(f"ID:{body.decode()}", address, routing, body, props, persistent=True)


# --- duplicate detection ----------------------------------------------------------------------


def test_a_resent_id_is_dropped(router: Router, store: Store) -> None:
    assert router.send(msg("orders", b"a", _AMQ_DUPL_ID="o-1")) == 1
    assert router.send(msg("orders", b"b", _AMQ_DUPL_ID="o-1")) == 0
    assert router.send(msg("orders", b"c", **{"dovecote-dedup-id": "o-1"})) == 0
    assert router.send(msg("orders", b"d", _AMQ_DUPL_ID="o-2")) == 1
    queue = router.queue("orders")
    assert queue is not None
    assert [m.body for m in queue.browse()] == [b"a", b"d"]
    # The id is recorded in the same atomic group as the message.
    assert store.calls[:4] == [
        ("begin",),
        ("message", "orders", 1),
        ("dup", "orders", 1, "o-1"),
        ("end",),
    ]


def test_ids_are_per_address(router: Router) -> None:
    assert router.send(msg("a", b"1", _AMQ_DUPL_ID="x")) == 1
    assert router.send(msg("b", b"2", _AMQ_DUPL_ID="x")) == 1
    assert router.send(msg("a", b"3", MULTI, _AMQ_DUPL_ID="x")) == 0  # no subscriber
    assert router.send(msg("a", b"4", MULTI, _AMQ_DUPL_ID="x")) == 0
    assert router.dedup.is_duplicate("topic://a", "x")


def test_the_cache_is_bounded_and_forgets_the_oldest(router: Router, store: Store) -> None:
    for n in range(5):
        router.send(msg("q", b"%d" % n, _AMQ_DUPL_ID=f"id{n}"))
    assert ("forget", "q", "id0") in store.calls
    assert ("forget", "q", "id1") in store.calls
    assert router.send(msg("q", b"again", _AMQ_DUPL_ID="id0")) == 1  # forgotten: accepted
    assert router.send(msg("q", b"again", _AMQ_DUPL_ID="id4")) == 0
    assert len(router.dedup) == 3


def test_restore_keeps_the_newest(store: Store) -> None:
    cache = DuplicateCache(store, size=2)
    cache.restore("q", [(3, "c"), (1, "a"), (2, "b")])
    assert not cache.is_duplicate("q", "a")
    assert cache.is_duplicate("q", "b")
    assert cache.is_duplicate("q", "c")
    assert store.calls == [("forget", "q", "a")]
    cache.remember("q", "d", persistent=True)
    assert store.calls[-2:] == [("dup", "q", 4, "d"), ("forget", "q", "b")]
    with pytest.raises(ValueError, match="at least 1"):
        DuplicateCache(store, size=0)


def test_a_refused_send_remembers_no_id(router: Router) -> None:
    with pytest.raises(InvalidRequest):
        router.send(msg("q", b"x", _AMQ_DUPL_ID="z", AMQ_SCHEDULED_DELAY="-5"))
    assert not router.dedup.is_duplicate("q", "z")


# --- virtual topics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "topic"),
    [
        ("Consumer.A.VirtualTopic.Orders", "VirtualTopic.Orders"),
        ("Consumer.billing.VirtualTopic.eu.orders", "VirtualTopic.eu.orders"),
        ("Consumer.A.VirtualTopic.", None),
        ("Consumer..VirtualTopic.Orders", None),
        ("Consumer.A.Orders", None),
        ("VirtualTopic.Orders", None),
        ("orders", None),
    ],
)
def test_virtual_topic_of(name: str, topic: str | None) -> None:
    assert virtual_topic_of(name) == topic


def test_virtual_topic_reaches_each_consumer_queue_and_plain_subscribers(
    router: Router, sink: Sink
) -> None:
    a1, a2, b, plain = (Consumer(k, sink) for k in ("a1", "a2", "b", "plain"))
    router.consume_queue("Consumer.A.VirtualTopic.Orders", a1)
    router.consume_queue("Consumer.A.VirtualTopic.Orders", a2)
    router.consume_queue("Consumer.B.VirtualTopic.Orders", b)
    router.subscribe_topic("VirtualTopic.Orders", plain)
    for n in range(4):
        assert router.send(msg("VirtualTopic.Orders", b"%d" % n, MULTI)) == 3
    assert sink.bodies("a1") + sink.bodies("a2") == [b"0", b"2", b"1", b"3"]  # shared
    assert sink.bodies("b") == [b"0", b"1", b"2", b"3"]
    assert sink.bodies("plain") == [b"0", b"1", b"2", b"3"]
    router.subscribe_topic("VirtualTopic.Other", Consumer("x", sink))
    assert router.send(msg("VirtualTopic.Other", b"o", MULTI)) == 1


def test_a_virtual_topic_queue_keeps_messages_without_consumers(router: Router) -> None:
    consumer = Consumer("c", Sink())
    queue = router.consume_queue("Consumer.A.VirtualTopic.Orders", consumer)
    router.unsubscribe(consumer)
    assert router.send(msg("VirtualTopic.Orders", b"kept", MULTI)) == 1
    assert [m.body for m in queue.browse()] == [b"kept"]
    router.delete_queue("Consumer.A.VirtualTopic.Orders")
    assert router.send(msg("VirtualTopic.Orders", b"gone", MULTI)) == 0


def test_restored_virtual_topic_queue_is_bound(router: Router) -> None:
    router.restore_queue("Consumer.Z.VirtualTopic.Orders")
    assert router.send(msg("VirtualTopic.Orders", b"r", MULTI)) == 1


# --- composite sends --------------------------------------------------------------------------


def test_send_all_is_one_atomic_group(router: Router, store: Store) -> None:
    router.subscribe_topic("t", Consumer("t", Sink()))
    count = router.send_all([msg("a", b"x"), msg("b", b"x"), msg("t", b"x", MULTI)])
    assert count == 3
    assert store.calls[0] == ("begin",)
    assert store.calls[-1] == ("end",)
    assert [c for c in store.calls if c[0] == "begin"] == [("begin",)]


def test_send_all_refuses_everything_if_one_is_bad(router: Router) -> None:
    with pytest.raises(InvalidRequest):
        router.send_all([msg("a", b"x"), msg("t.*", b"x", MULTI)])
    assert router.queue("a") is None


def test_reserved_names_are_refused(router: Router) -> None:
    with pytest.raises(InvalidRequest):
        router.send(msg("$dovecote.scheduled", b"x"))
    with pytest.raises(InvalidRequest):
        router.check_routable(msg("$dovecote.x", b"x", MULTI))
    with pytest.raises(InvalidRequest, match="is reserved"):
        router.subscribe_topic("t", Consumer("d", Sink()), durable_name="$dovecote.scheduled")


# --- advisories -------------------------------------------------------------------------------


def test_advise_builds_nothing_without_a_subscriber(router: Router) -> None:
    assert router.advise(advisory.CONNECTION, {"event": "open"}) is False


def test_advisory_messages_are_json_on_activemq_topics(router: Router, sink: Sink) -> None:
    router.subscribe_topic("ActiveMQ.Advisory.>", Consumer("adv", sink))
    assert router.advise(advisory.CONNECTION, {"event": "open", "connectionId": "c1"})
    consumer = Consumer("q", Sink())
    router.consume_queue("orders", consumer, info={"connectionId": "c1", "consumerId": "s@c1"})
    router.unsubscribe(consumer)
    router.subscribe_topic("prices.>", Consumer("w", Sink()), info={"consumerId": "w"})
    assert router.advise(advisory.EXPIRED, {"messageId": "m"}, routing=ANY, address="orders")
    topics = [m.address for _, m in sink.got]
    assert topics == [
        "ActiveMQ.Advisory.Connection",
        "ActiveMQ.Advisory.Consumer.Queue.orders",
        "ActiveMQ.Advisory.Consumer.Queue.orders",
        "ActiveMQ.Advisory.Expired.Queue.orders",
    ]
    bodies = [json.loads(m.body) for _, m in sink.got]
    assert bodies[0] == {
        "type": "Connection",
        "event": "open",
        "connectionId": "c1",
        "timestamp": 1_000,
    }
    assert bodies[1]["event"] == "add"
    assert bodies[1]["consumerCount"] == 1
    assert bodies[1]["consumerId"] == "s@c1"
    assert bodies[2]["event"] == "remove"
    assert bodies[2]["consumerCount"] == 0
    message = sink.got[0][1]
    assert message.properties["type"] == "Advisory"
    assert message.properties["content-type"] == "application/json"
    assert not message.persistent


def test_a_consumer_of_a_deleted_temporary_queue_is_forgotten(router: Router, sink: Sink) -> None:
    router.subscribe_topic("ActiveMQ.Advisory.>", Consumer("adv", sink))
    owner = object()
    router.get_or_create_queue("ID:c1:r1", temporary_owner=owner)
    consumer = Consumer("q", Sink())  # another connection's, on /remote-temp-queue/ID:c1:r1
    router.consume_queue("ID:c1:r1", consumer, info={"consumerId": "s@c2"})
    router.delete_owned(owner)  # the owner's connection closed
    router.unsubscribe(consumer)  # then the consumer's own
    assert [json.loads(m.body)["event"] for _, m in sink.got] == ["add", "remove"]
    assert consumer not in router._consumer_info  # (it would keep the other session alive)


def test_advisories_can_be_switched_off(store: Store, sink: Sink) -> None:
    router = Router(store, FakeClock(1_000), advisories=False)
    router.subscribe_topic("ActiveMQ.Advisory.>", Consumer("adv", sink))
    assert router.advise(advisory.CONNECTION, {}) is False
    assert sink.got == []


def test_advisory_topic_names() -> None:
    assert advisory.advisory_topic(advisory.PRODUCER, MULTI, "a.b") == (
        "ActiveMQ.Advisory.Producer.Topic.a.b"
    )
    assert advisory.advisory_topic(advisory.DEAD_LETTERED, ANY, "q") == (
        "ActiveMQ.Advisory.MessageDLQd.Queue.q"
    )
    assert advisory.advisory_topic(advisory.CONSUMER, MULTI, "a.>") is None
    assert advisory.advisory_topic(advisory.CONSUMER, MULTI, "ActiveMQ.Advisory.X") is None
    with pytest.raises(ValueError, match="unknown advisory kind"):
        advisory.advisory_topic("Nope")


def test_a_non_persistent_duplicate_id_writes_no_group(router: Router, store: Store) -> None:
    message = Message("ID:np", "q", ANY, b"np", {"_AMQ_DUPL_ID": "n-1"})
    assert router.send(message) == 1
    assert router.send(message) == 0
    assert store.calls == []

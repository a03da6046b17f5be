"""The producer registry and its Producer advisories (core.producers), through the router."""

from __future__ import annotations

import json

import pytest

from advisory_sink import AdvisorySink
from dovecote.core import advisory
from dovecote.core.message import RoutingType
from dovecote.core.producers import MAX_TRACKED_PRODUCERS, Producers, is_producer_destination
from dovecote.core.queue import Consumer
from dovecote.core.router import Router
from dovecote.core.schedule_management import MANAGEMENT_ADDRESS
from dovecote.store.memory import MemoryStore
from fake_clock import FakeClock

ANY, MULTI = RoutingType.ANYCAST, RoutingType.MULTICAST
INFO = {"connectionId": "c1", "clientId": "app", "producerId": "1@c1"}


@pytest.fixture
def router() -> Router:
    return Router(MemoryStore(), FakeClock(1_000))


@pytest.fixture
def sink(router: Router) -> AdvisorySink:
    sink = AdvisorySink()
    router.subscribe_topic("ActiveMQ.Advisory.Producer.>", Consumer("adv", sink))
    return sink


def test_without_a_subscriber_only_the_count_changes(router: Router) -> None:
    other = AdvisorySink()
    router.subscribe_topic("ActiveMQ.Advisory.Consumer.>", Consumer("other", other))
    assert router.producers.add("c1", ANY, "orders", INFO)
    assert router.producers.count(ANY, "orders") == 1
    assert router.producers.remove_owner("c1") == 1
    assert router.producers.count(ANY, "orders") == 0
    assert other.got == []
    assert router.new_message_id() == "ID:dovecote-1"  # no advisory message was built


def test_advise_calls_lazy_fields_only_for_a_subscriber(router: Router) -> None:
    calls: list[int] = []

    def fields() -> dict[str, object]:
        calls.append(1)
        return {"event": "add"}

    assert router.advise(advisory.PRODUCER, fields, routing=ANY, address="orders") is False
    assert calls == []
    watcher = Consumer("a", AdvisorySink())
    router.subscribe_topic("ActiveMQ.Advisory.Producer.Queue.orders", watcher)
    assert router.advise(advisory.PRODUCER, fields, routing=ANY, address="orders") is True
    assert calls == [1]


def test_a_producer_is_advised_when_it_appears_and_when_it_goes(
    router: Router, sink: AdvisorySink
) -> None:
    assert router.producers.add("c1", ANY, "orders", INFO)
    (message,) = sink.got
    assert message.address == "ActiveMQ.Advisory.Producer.Queue.orders"
    assert message.properties["advisoryType"] == "Producer"
    assert not message.persistent
    assert json.loads(message.body) == {
        "type": "Producer",
        "event": "add",
        "destination": "orders",
        "producerCount": 1,
        "connectionId": "c1",
        "clientId": "app",
        "producerId": "1@c1",
        "timestamp": 1_000,
    }
    assert router.producers.remove_owner("c1") == 1
    removed = json.loads(sink.got[1].body)
    assert (removed["event"], removed["producerCount"], removed["producerId"]) == (
        "remove",
        0,
        "1@c1",
    )


def test_counts_per_destination_and_one_producer_per_owner_and_destination(
    router: Router, sink: AdvisorySink
) -> None:
    producers = router.producers
    assert producers.add("c1", ANY, "orders", INFO)
    assert not producers.add("c1", ANY, "orders", INFO)  # the same producer: nothing new
    assert producers.add("c2", ANY, "orders", {"connectionId": "c2"})
    assert producers.add("c1", MULTI, "orders", INFO)  # a topic of the same name is another
    assert producers.count(ANY, "orders") == 2
    assert producers.count(MULTI, "orders") == 1
    assert list(producers.destinations("c1")) == [(ANY, "orders"), (MULTI, "orders")]
    assert producers.remove_owner("c1") == 2
    assert producers.remove_owner("c1") == 0
    assert producers.count(ANY, "orders") == 1
    assert list(producers.destinations("c1")) == []
    assert sink.events() == [
        ("ActiveMQ.Advisory.Producer.Queue.orders", "add", 1),
        ("ActiveMQ.Advisory.Producer.Queue.orders", "add", 2),
        ("ActiveMQ.Advisory.Producer.Topic.orders", "add", 1),
        ("ActiveMQ.Advisory.Producer.Queue.orders", "remove", 1),
        ("ActiveMQ.Advisory.Producer.Topic.orders", "remove", 0),
    ]


def test_one_producer_can_go_alone(router: Router, sink: AdvisorySink) -> None:
    producers = router.producers
    producers.add("link1", ANY, "a", INFO)
    producers.add("link1", ANY, "b", INFO)
    assert producers.remove("link1", ANY, "a")
    assert not producers.remove("link1", ANY, "a")
    assert not producers.remove("nobody", ANY, "a")
    assert producers.remove("link1", ANY, "b")
    assert list(producers.destinations("link1")) == []
    assert [event for _, event, _ in sink.events()] == ["add", "add", "remove", "remove"]


def test_a_wildcard_subscriber_sees_producer_advisories(router: Router) -> None:
    everything = AdvisorySink()
    router.subscribe_topic("ActiveMQ.Advisory.>", Consumer("all", everything))
    router.producers.add("c1", MULTI, "prices.eu", INFO)
    assert [m.address for m in everything.got] == ["ActiveMQ.Advisory.Producer.Topic.prices.eu"]


@pytest.mark.parametrize(
    ("routing", "address", "expected"),
    [
        (ANY, "orders", True),
        (MULTI, "prices.eu", True),
        (ANY, "ID:c1:r1", True),  # a temporary queue, by its name
        (ANY, MANAGEMENT_ADDRESS, True),  # only the topic is the scheduler's
        (MULTI, MANAGEMENT_ADDRESS, False),
        (MULTI, "ActiveMQ.Advisory.Producer.Queue.orders", False),
        (ANY, "ActiveMQ.Advisory.Connection", False),
        (MULTI, "prices.>", False),
        (ANY, "", False),
    ],
)
def test_is_producer_destination(routing: RoutingType, address: str, expected: bool) -> None:
    assert is_producer_destination(routing, address) is expected


def test_what_is_no_producer_destination_is_not_counted(router: Router, sink: AdvisorySink) -> None:
    assert not router.producers.add("c1", MULTI, MANAGEMENT_ADDRESS, INFO)
    assert not router.producers.add("c1", MULTI, "ActiveMQ.Advisory.Connection", INFO)
    assert router.producers.count(MULTI, MANAGEMENT_ADDRESS) == 0
    assert list(router.producers.destinations("c1")) == []
    assert sink.got == []


def test_an_owner_has_at_most_the_limit_of_producers(router: Router, sink: AdvisorySink) -> None:
    producers = Producers(router.advise, limit=2)
    assert producers.add("c1", ANY, "a", INFO)
    assert producers.add("c1", ANY, "b", INFO)
    assert not producers.add("c1", ANY, "c", INFO)  # past the limit: not tracked
    assert producers.count(ANY, "c") == 0
    assert producers.add("c2", ANY, "c", INFO)  # the limit is per owner
    assert producers.remove("c1", ANY, "a")
    assert producers.add("c1", ANY, "c", INFO)  # room again
    assert [address for address in (m.address.rsplit(".", 1)[1] for m in sink.got)] == [
        "a",
        "b",
        "c",
        "a",
        "c",
    ]


def test_the_default_limit_is_max_tracked_producers(router: Router) -> None:
    added = [
        router.producers.add("c1", ANY, f"q{n}", INFO) for n in range(MAX_TRACKED_PRODUCERS + 1)
    ]
    assert MAX_TRACKED_PRODUCERS == 1000
    assert added.count(True) == MAX_TRACKED_PRODUCERS
    assert added[-1] is False


def test_a_limit_of_zero_tracks_nothing_and_a_negative_one_is_refused(router: Router) -> None:
    assert not Producers(router.advise, limit=0).add("c1", ANY, "a", INFO)
    with pytest.raises(ValueError, match="cannot be negative"):
        Producers(router.advise, limit=-1)


def test_with_advisories_off_producers_are_counted_and_nothing_is_published() -> None:
    router = Router(MemoryStore(), FakeClock(1_000), advisories=False)
    sink = AdvisorySink()
    router.subscribe_topic("ActiveMQ.Advisory.>", Consumer("adv", sink))
    assert router.producers.add("c1", ANY, "orders", INFO)
    assert router.producers.count(ANY, "orders") == 1
    assert sink.got == []

"""STOMP producers (adapters.stomp_send.Producing): a connection produces to a destination
from its first accepted SEND to it until it closes. A session on a fake link, no sockets."""

from __future__ import annotations

import json

import pytest

from advisory_sink import AdvisorySink
from dovecote.adapters.stomp import MessageEncoder, StompSession
from dovecote.core.message import RoutingType
from dovecote.core.queue import Consumer
from dovecote.core.router import Router
from dovecote.store.memory import MemoryStore
from fake_clock import FakeClock
from fake_link import FakeLink

ANY, MULTI = RoutingType.ANYCAST, RoutingType.MULTICAST


@pytest.fixture
def router() -> Router:
    return Router(MemoryStore(), FakeClock())


@pytest.fixture
def advisories(router: Router) -> AdvisorySink:
    sink = AdvisorySink(strip="ActiveMQ.Advisory.Producer.")
    router.subscribe_topic("ActiveMQ.Advisory.Producer.>", Consumer("adv", sink))
    return sink


def connect(
    router: Router, connection_id: str = "c1", client_id: str = "", link: FakeLink | None = None
) -> StompSession:
    link = link or FakeLink(connection_id)
    session = StompSession(link, router, MessageEncoder())
    extra = f"client-id:{client_id}\n" if client_id else ""
    session.data_received(f"CONNECT\naccept-version:1.2\n{extra}\n\0".encode())
    return session


def send(session: StompSession, destination: str, **headers: str) -> None:
    lines = "".join(f"{k}:{v}\n" for k, v in {"destination": destination, **headers}.items())
    session.data_received(f"SEND\n{lines}\nbody\0".encode())


def test_the_first_send_makes_a_producer_and_closing_removes_it(
    router: Router, advisories: AdvisorySink
) -> None:
    session = connect(router, client_id="app")
    for _ in range(3):
        send(session, "/queue/orders")
    assert router.producers.count(ANY, "orders") == 1
    assert advisories.events() == [("Queue.orders", "add", 1)]
    body = json.loads(advisories.got[0].body)
    assert (body["connectionId"], body["clientId"], body["producerId"]) == ("c1", "app", "1@c1")
    assert body["destination"] == "orders"
    session.connection_lost()
    assert router.producers.count(ANY, "orders") == 0
    assert advisories.events() == [("Queue.orders", "add", 1), ("Queue.orders", "remove", 0)]


def test_each_connection_is_one_producer_of_a_destination(
    router: Router, advisories: AdvisorySink
) -> None:
    first, second = connect(router, "c1"), connect(router, "c2")
    send(first, "/topic/prices")
    send(second, "/topic/prices")
    send(first, "/queue/orders")
    first.connection_lost()
    assert advisories.events() == [
        ("Topic.prices", "add", 1),
        ("Topic.prices", "add", 2),
        ("Queue.orders", "add", 1),
        ("Topic.prices", "remove", 1),
        ("Queue.orders", "remove", 0),
    ]
    ids = [json.loads(m.body)["producerId"] for m in advisories.got[:3]]
    assert ids == ["1@c1", "1@c2", "2@c1"]


def test_a_composite_send_makes_a_producer_per_destination(
    router: Router, advisories: AdvisorySink
) -> None:
    session = connect(router)
    send(session, "/queue/a,/topic/b")
    send(session, "/queue/a")  # the same producer, named alone
    assert advisories.events() == [("Queue.a", "add", 1), ("Topic.b", "add", 1)]


def test_temporary_destinations_are_advised_by_their_names(
    router: Router, advisories: AdvisorySink
) -> None:
    session = connect(router)
    send(session, "/temp-queue/replies")
    assert advisories.events() == [("Queue.ID:c1:replies", "add", 1)]


def test_a_send_in_a_transaction_makes_a_producer_once_accepted(
    router: Router, advisories: AdvisorySink
) -> None:
    session = connect(router)
    session.data_received(b"BEGIN\ntransaction:t1\n\n\0")
    send(session, "/queue/orders", transaction="t1")
    assert advisories.events() == [("Queue.orders", "add", 1)]


def test_sends_that_make_no_producer(router: Router, advisories: AdvisorySink) -> None:
    link = FakeLink("c1")
    session = connect(router, link=link)
    send(session, "/topic/ActiveMQ.Scheduler.Management", AMQ_SCHEDULER_ACTION="REMOVEALL")
    send(session, "/topic/ActiveMQ.Advisory.Connection")  # no advisory about an advisory topic
    assert link.closed is None
    assert router.producers.count(MULTI, "ActiveMQ.Scheduler.Management") == 0
    assert list(router.producers.destinations("c1")) == []
    assert advisories.got == []


def test_a_refused_send_makes_no_producer(router: Router, advisories: AdvisorySink) -> None:
    link = FakeLink("c1")
    session = connect(router, link=link)
    send(session, "/remote-temp-queue/ID:gone:r1")  # another's temp queue that is gone
    assert link.closed is not None
    assert advisories.got == []
    assert list(router.producers.destinations("c1")) == []


def test_past_the_limit_a_connection_tracks_no_more_destinations(
    router: Router, advisories: AdvisorySink
) -> None:
    router.producers.limit = 2
    session = connect(router)
    for name in ("a", "b", "c", "a", "c"):
        send(session, f"/queue/{name}")
    assert [topic for topic, _, _ in advisories.events()] == ["Queue.a", "Queue.b"]
    assert router.producers.count(ANY, "c") == 0
    session.connection_lost()
    assert [event for _, event, _ in advisories.events()] == ["add", "add", "remove", "remove"]

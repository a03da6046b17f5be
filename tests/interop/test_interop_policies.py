"""Policies through stomp.py against ``dovecote run --config``: redelivery back-off and dead
letters, expiry, bounded and last-value queues; dead letters, delivery counts and redelivery
holds across a clean restart and a kill -9.

Every queue name starts with ``it.<policy>.`` and ends with the test's unique prefix, so the
tests share one broker (and its config) without sharing queues.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stomp_peers import BrokerProcess, Peer, launch_broker

CONFIG = """
[broker]
expiry_check_ms = 50

[policy_defaults]
initial_redelivery_delay_ms = 0
dead_letter_strategy = "individual"

[[policy]]
match = "it.backoff.>"
max_redeliveries = 2
initial_redelivery_delay_ms = 300
use_exponential_backoff = true
backoff_multiplier = 2.0

[[policy]]
match = "it.expire.>"
default_ttl_ms = 100

[[policy]]
match = "it.reject.>"
max_messages = 2

[[policy]]
match = "it.oldest.>"
max_messages = 2
overflow = "drop-oldest"

[[policy]]
match = "it.lvq.>"
last_value_key = "symbol"

[[policy]]
match = "it.durable.>"
max_redeliveries = 1

[[policy]]
match = "it.held.>"
initial_redelivery_delay_ms = 6000
"""


def start(tmp: Path, data_dir: Path, name: str) -> BrokerProcess:
    config = tmp / "dovecote.toml"
    config.write_text(CONFIG)
    return launch_broker(data_dir, tmp / f"{name}.log", "--config", str(config))


@contextmanager
def cut_off_at_end(port: int) -> Iterator[Callable[[], Peer]]:
    """Connect peers to ``port``; when the block ends their sockets are cut, no DISCONNECT
    (what a restart or a kill -9 leaves a client with)."""
    peers: list[Peer] = []

    def connect() -> Peer:
        peers.append(Peer(port))
        return peers[-1]

    try:
        yield connect
    finally:
        for p in peers:
            p.conn.transport.disconnect_socket()


def restarted(tmp: Path, broker: BrokerProcess, how: str) -> BrokerProcess:
    """Stop ``broker`` (``how``: "restart", a SIGTERM, or "kill -9") and start it again on
    its data directory, with the same config."""
    assert broker.stop(signal.SIGKILL if how == "kill -9" else signal.SIGTERM) in (0, -9)
    return start(tmp, tmp / "data", "second")


@pytest.fixture(scope="module")
def policy_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("policy-broker")
    broker = start(base, base / "data", "broker")
    yield broker
    assert broker.stop() == 0


@pytest.fixture
def peer(policy_broker: BrokerProcess, stomp_peer: Callable[..., Peer]) -> Callable[[], Peer]:
    return lambda: stomp_peer(port=policy_broker.port)


def test_nack_backs_off_without_blocking_then_dead_letters(peer, unique):
    queue = f"/queue/it.backoff.{unique}"
    producer = peer()
    producer.send(queue, "poison", persistent="true")
    producer.send(queue, "fine")
    consumer = peer()
    consumer.subscribe(queue, "0", ack="client-individual")
    first, fine = consumer.inbox.wait_messages(2)
    assert (first.body, fine.body) == ("poison", "fine")  # queued behind: not blocked
    consumer.conn.ack(fine.headers["ack"])
    times = []
    last = first
    for count in (2, 3):
        nacked = time.monotonic()
        consumer.conn.nack(last.headers["ack"])
        last = consumer.inbox.wait_messages(count + 1)[-1]
        times.append(time.monotonic() - nacked)
        assert last.body == "poison"
        assert last.headers["redelivered"] == "true"
        assert last.headers["JMSXDeliveryCount"] == str(count)
    # 300 ms, then 600 ms (exponential back-off, multiplier 2)
    assert times[0] >= 0.28
    assert times[1] >= 0.58
    consumer.conn.nack(last.headers["ack"])  # the third failure: the maximum is 2
    dlq = peer()
    dlq.subscribe(f"/queue/DLQ.it.backoff.{unique}", "d")
    (dead,) = dlq.inbox.wait_messages(1)
    assert dead.body == "poison"
    assert dead.headers["original-destination"] == f"/queue/it.backoff.{unique}"
    assert dead.headers["dlqDeliveryFailureCause"] == (
        "Delivery[3] exceeds redelivery policy limit: max_redeliveries=2"
    )
    assert dead.headers["JMSXDeliveryCount"] == "3"
    assert dead.headers["persistent"] == "true"
    assert dead.headers["message-id"] == first.headers["message-id"]


def test_expired_messages_in_an_idle_queue_go_to_the_dlq(peer, unique):
    queue = f"/queue/it.expire.{unique}"
    producer = peer()
    producer.send(queue, "ttl")  # default_ttl_ms = 100 for this address
    producer.send(queue, "past", expires=str(int(time.time() * 1000) - 1000))
    dlq = peer()
    dlq.subscribe(f"/queue/DLQ.it.expire.{unique}", "d")
    dead = dlq.inbox.wait_messages(2)  # no consumer on the queue: the reaper found them
    assert sorted(m.body for m in dead) == ["past", "ttl"]
    assert all(m.headers["dlqDeliveryFailureCause"].startswith("Message Expired.") for m in dead)
    assert all(m.headers["expires"] == "0" for m in dead)
    consumer = peer()
    consumer.subscribe(queue, "0")
    producer.send(queue, "marker")  # delivered at once, before its TTL runs out
    assert [m.body for m in consumer.inbox.wait_messages(1)] == ["marker"]


def test_full_reject_new_queue_answers_error_with_receipt_id(peer, unique):
    queue = f"/queue/it.reject.{unique}"
    producer = peer()
    producer.send(queue, "1")
    producer.send(queue, "2")
    producer.conn.send(queue, "3", headers={"receipt": "full"})
    producer.inbox.wait_disconnected()
    (error,) = producer.inbox.errors
    assert error.headers["receipt-id"] == "full"
    assert error.headers["message"] == (
        f"Resource limit exceeded: queue 'it.reject.{unique}' is full (2 messages waiting; "
        "overflow policy reject-new)"
    )
    consumer = peer()
    consumer.subscribe(queue, "0")
    assert [m.body for m in consumer.inbox.wait_messages(2)] == ["1", "2"]
    peer().send(queue, "room again")
    assert consumer.inbox.wait_messages(3)[-1].body == "room again"


def test_drop_oldest_queue_keeps_the_newest(peer, unique):
    queue = f"/queue/it.oldest.{unique}"
    producer = peer()
    for body in ("1", "2", "3"):
        producer.send(queue, body)
    consumer = peer()
    consumer.subscribe(queue, "0")
    assert [m.body for m in consumer.inbox.wait_messages(2)] == ["2", "3"]


def test_last_value_queue_keeps_the_latest_per_key(peer, unique):
    queue = f"/queue/it.lvq.{unique}"
    producer = peer()
    producer.send(queue, "acme 1", symbol="ACME")
    producer.send(queue, "bolt 1", symbol="BOLT")
    producer.send(queue, "acme 2", symbol="ACME")
    producer.send(queue, "marker")
    consumer = peer()
    consumer.subscribe(queue, "0")
    assert [m.body for m in consumer.inbox.wait_messages(3)] == ["bolt 1", "acme 2", "marker"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_dead_letters_and_delivery_counts_survive(tmp_path: Path, how: str) -> None:
    queue = "/queue/it.durable.work"
    broker = start(tmp_path, tmp_path / "data", "first")
    with cut_off_at_end(broker.port) as connect:
        producer = connect()
        producer.send(queue, "poison", persistent="true")
        producer.send(queue, "slow", persistent="true")
        consumer = connect()
        consumer.subscribe(queue, "0", ack="client-individual", **{"activemq.prefetchSize": "1"})
        (poison,) = consumer.inbox.wait_messages(1)
        consumer.conn.nack(poison.headers["ack"])
        assert consumer.inbox.wait_messages(2)[-1].headers["JMSXDeliveryCount"] == "2"
        consumer.conn.nack(consumer.inbox.messages[-1].headers["ack"])  # past the maximum
        slow = consumer.inbox.wait_messages(3)[-1]
        assert slow.body == "slow"  # delivered once, never acknowledged
        # Everything before this receipt is durable (lazy acks and counts included).
        producer.send("/queue/it.durable.sync", "sync", persistent="true")
    broker = restarted(tmp_path, broker, how)
    try:
        dlq = Peer(broker.port)
        dlq.subscribe("/queue/DLQ.it.durable.work", "d")
        consumer = Peer(broker.port)
        consumer.subscribe(queue, "0", ack="client-individual")
        (dead,) = dlq.inbox.wait_messages(1)
        assert dead.body == "poison"
        assert dead.headers["JMSXDeliveryCount"] == "2"
        assert dead.headers["original-destination"] == queue
        (again,) = consumer.inbox.wait_messages(1)
        assert again.body == "slow"  # the poison message is not back: moved exactly once
        assert again.headers["JMSXDeliveryCount"] == "2"
        consumer.conn.nack(again.headers["ack"])  # its count survived: this is one too many
        assert [m.body for m in dlq.inbox.wait_messages(2)] == ["poison", "slow"]
        producer = Peer(broker.port)
        producer.send(queue, "marker")
        assert [m.body for m in consumer.inbox.wait_messages(2)][-1] == "marker"
        for p in (dlq, consumer, producer):
            p.close()
    finally:
        assert broker.stop() == 0


HOLD = 6.0  # it.held.>'s redelivery delay, seconds


@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_a_redelivery_hold_survives(tmp_path: Path, how: str) -> None:
    """A NACKed persistent message waits out its redelivery delay across a restart (it was
    available at once after one): not delivered before the delay ends, then redelivered."""
    queue = "/queue/it.held.work"
    broker = start(tmp_path, tmp_path / "data", "first")
    with cut_off_at_end(broker.port) as connect:
        producer = connect()
        producer.send(queue, "held", persistent="true")
        consumer = connect()
        consumer.subscribe(queue, "0", ack="client-individual")
        (first,) = consumer.inbox.wait_messages(1)
        consumer.conn.nack(first.headers["ack"])
        nacked = time.monotonic()
        # Everything before this receipt is durable (the lazily written hold included).
        producer.send("/queue/it.held.sync", "sync", persistent="true")
    broker = restarted(tmp_path, broker, how)
    try:
        consumer = Peer(broker.port)
        consumer.subscribe(queue, "0", ack="client-individual")
        quiet_until = nacked + HOLD - 1.0
        while time.monotonic() < quiet_until:
            assert not consumer.inbox.messages, "delivered before its redelivery delay ended"
            time.sleep(0.05)
        (again,) = consumer.inbox.wait_messages(1)
        assert time.monotonic() - nacked >= HOLD - 1.0
        assert again.body == "held"
        assert again.headers["redelivered"] == "true"
        assert again.headers["JMSXDeliveryCount"] == "2"
        consumer.conn.ack(again.headers["ack"])
        consumer.close()
    finally:
        assert broker.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_last_values_bounds_and_priorities_survive(tmp_path: Path, how: str) -> None:
    """What a queue's policy keeps is rebuilt from the journal: a recovered last value is
    replaced by a newer one with its key, a recovered bounded queue is still full, and
    recovered priorities are still served highest first."""
    lvq, full, ranked = "/queue/it.lvq.kept", "/queue/it.reject.kept", "/queue/it.durable.ranked"
    broker = start(tmp_path, tmp_path / "data", "first")
    with cut_off_at_end(broker.port) as connect:
        producer = connect()
        producer.send(lvq, "acme 1", symbol="ACME", persistent="true")
        producer.send(lvq, "bolt 1", symbol="BOLT", persistent="true")
        producer.send(full, "one", persistent="true")
        producer.send(full, "two", persistent="true")
        for body, priority in (("low", 1), ("high", 9), ("mid", 5), ("high too", 9)):
            producer.send(ranked, body, priority=str(priority), persistent="true")
    broker = restarted(tmp_path, broker, how)
    try:
        with cut_off_at_end(broker.port) as connect:
            producer = connect()
            producer.send(lvq, "acme 2", symbol="ACME", persistent="true")
            producer.conn.send(full, "three", headers={"receipt": "full", "persistent": "true"})
            producer.inbox.wait_disconnected()
            (error,) = producer.inbox.errors
            assert error.headers["receipt-id"] == "full"
            assert "is full (2 messages waiting" in error.headers["message"]
            consumer = connect()
            consumer.subscribe(lvq, "lvq")
            assert [m.body for m in consumer.inbox.wait_messages(2)] == ["bolt 1", "acme 2"]
            consumer.subscribe(full, "full")
            assert [m.body for m in consumer.inbox.wait_messages(4)[2:]] == ["one", "two"]
            consumer.subscribe(ranked, "ranked")
            assert [m.body for m in consumer.inbox.wait_messages(8)[4:]] == [
                "high",
                "high too",
                "mid",
                "low",
            ]
    finally:
        assert broker.stop() == 0

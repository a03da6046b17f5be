"""stomp.py against ``dovecote run``: selectors, exclusive consumers, consumer priority,
message groups (and ``JMSXGroupFirstForConsumer``), queue browsers and message priority
(issue #4, dispatch side).

Negative checks use a marker sent last on the same path (see test_interop_stomp_py.py).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

TIMEOUT = 5.0


def _ack(peer, message):
    receipt = peer.receipt()
    peer.conn.ack(message.headers["ack"], receipt=receipt)
    peer.inbox.wait_receipt(receipt)


def test_disjoint_selectors_on_one_queue(stomp_peer, unique):
    queue = f"/queue/{unique}"
    consumers = {}
    for shard in "abc":
        peer = stomp_peer()
        peer.subscribe(queue, shard, selector=f"shard = '{shard}' OR kind = 'marker'")
        consumers[shard] = peer
    producer = stomp_peer()
    for n in range(30):
        producer.send(queue, f"{'abc'[n % 3]}{n}", shard="abc"[n % 3])
    producer.send(queue, "nobody", shard="z")
    for shard, peer in consumers.items():
        messages = peer.inbox.wait_messages(10)
        assert [m.body for m in messages] == [
            f"{shard}{n}" for n in range(30) if "abc"[n % 3] == shard
        ]
        assert {m.headers["shard"] for m in messages} == {shard}
    # The unmatched message waits for a consumer that wants it.
    late = stomp_peer()
    late.subscribe(queue, "z", selector="shard = 'z'")
    assert [m.body for m in late.inbox.wait_messages(1)] == ["nobody"]


def test_numeric_selector_and_a_message_skipped_by_one_consumer(stomp_peer, unique):
    queue = f"/queue/{unique}"
    big = stomp_peer()
    big.subscribe(queue, "big", selector="amount > 100")
    producer = stomp_peer()
    producer.send(queue, "small", amount="5")
    producer.send(queue, "large", amount="500")
    assert [m.body for m in big.inbox.wait_messages(1)] == ["large"]
    everything = stomp_peer()
    everything.subscribe(queue, "all")
    assert [m.body for m in everything.inbox.wait_messages(1)] == ["small"]


def test_topic_selector_is_applied_per_subscription(stomp_peer, unique):
    topic = f"/topic/{unique}"
    red = stomp_peer()
    red.subscribe(topic, "red", selector="color = 'red' OR color = 'end'")
    publisher = stomp_peer()
    for color in ("blue", "red", "green", "end"):
        publisher.send(topic, color, color=color)
    assert [m.body for m in red.inbox.wait_messages(2)] == ["red", "end"]


def test_bad_selector_is_an_error_frame(stomp_peer, unique):
    peer = stomp_peer()
    peer.conn.subscribe(f"/queue/{unique}", "s", headers={"selector": "color = = 'x'"})
    peer.inbox.wait_disconnected()
    (error,) = peer.inbox.errors
    assert error.headers["message"].startswith("Invalid request: invalid selector: ")
    assert "column" in error.headers["message"]
    assert "Traceback" not in error.body


def test_bad_consumer_priority_is_an_error_frame(stomp_peer, unique):
    peer = stomp_peer()
    peer.conn.subscribe(f"/queue/{unique}", "s", headers={"activemq.priority": "high"})
    peer.inbox.wait_disconnected()
    (error,) = peer.inbox.errors
    assert error.headers["message"] == (
        "Invalid request: activemq.priority must be an integer 0-127, not 'high'"
    )


def test_exclusive_consumer_fails_over_with_redelivery(stomp_peer, unique):
    queue = f"/queue/{unique}"
    first = stomp_peer()
    first.subscribe(queue, "x1", ack="client-individual", **{"activemq.exclusive": "true"})
    second = stomp_peer()
    second.subscribe(queue, "x2", ack="client-individual", **{"activemq.exclusive": "true"})
    producer = stomp_peer()
    for n in range(4):
        producer.send(queue, f"m{n}")
    assert [m.body for m in first.inbox.wait_messages(4)] == ["m0", "m1", "m2", "m3"]
    _ack(first, first.inbox.messages[0])
    first.close()
    redelivered = second.inbox.wait_messages(3)
    assert [m.body for m in redelivered] == ["m1", "m2", "m3"]
    assert {m.headers["redelivered"] for m in redelivered} == {"true"}


def test_consumer_priority_serves_the_higher_one_until_it_is_full(stomp_peer, unique):
    queue = f"/queue/{unique}"
    low = stomp_peer()
    low.subscribe(queue, "low", **{"activemq.priority": "1"})
    high = stomp_peer()
    high.subscribe(
        queue,
        "high",
        ack="client-individual",
        **{"activemq.priority": "9", "activemq.prefetchSize": "3"},
    )
    producer = stomp_peer()
    for n in range(5):
        producer.send(queue, f"m{n}")
    assert [m.body for m in high.inbox.wait_messages(3)] == ["m0", "m1", "m2"]
    assert [m.body for m in low.inbox.wait_messages(2)] == ["m3", "m4"]


def test_message_groups_stick_and_close(stomp_peer, unique):
    queue = f"/queue/{unique}"
    a = stomp_peer()
    a.subscribe(queue, "a")
    b = stomp_peer()
    b.subscribe(queue, "b")
    producer = stomp_peer()
    for n in range(6):
        producer.send(queue, f"g{n}", JMSXGroupID="orders-1")
    producer.send(queue, "close", JMSXGroupID="orders-1", JMSXGroupSeq="-1")
    producer.send(queue, "other", JMSXGroupID="orders-2")
    deadline = time.monotonic() + TIMEOUT
    while len(a.inbox.messages) + len(b.inbox.messages) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    owner, other = (a, b) if len(a.inbox.messages) == 7 else (b, a)
    assert owner.inbox.bodies() == [*[f"g{n}" for n in range(6)], "close"]
    assert other.inbox.bodies() == ["other"]


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_first_message_of_a_group_for_its_consumer_is_flagged(stomp_peer, unique, version):
    queue = f"/queue/{unique}"
    first = stomp_peer(version)
    first.subscribe(queue, "a", ack="client-individual")
    producer = stomp_peer()
    for n in range(3):
        producer.send(queue, f"g{n}", JMSXGroupID="orders-1")
    received = first.inbox.wait_messages(3)
    assert [m.headers.get("JMSXGroupFirstForConsumer") for m in received] == ["true", None, None]
    second = stomp_peer(version)
    second.subscribe(queue, "b")
    first.close()  # nothing was acked: the group and its three messages move to second
    second.inbox.wait_messages(3)
    producer.send(queue, "close", JMSXGroupID="orders-1", JMSXGroupSeq="-1")
    producer.send(queue, "again", JMSXGroupID="orders-1")
    moved = second.inbox.wait_messages(5)
    assert [(m.body, m.headers.get("JMSXGroupFirstForConsumer")) for m in moved] == [
        ("g0", "true"),
        ("g1", None),
        ("g2", None),
        ("close", None),
        ("again", "true"),
    ]
    assert moved[0].headers["redelivered"] == "true"


def test_browser_sees_messages_without_consuming_them(stomp_peer, unique):
    queue = f"/queue/{unique}"
    producer = stomp_peer()
    producer.send(queue, "low", priority="1")
    producer.send(queue, "high", priority="8")
    producer.send(queue, "mid")
    browser = stomp_peer()
    browser.subscribe(queue, "b", browser="true")
    messages = browser.inbox.wait_messages(4)
    assert [m.body for m in messages[:3]] == ["high", "mid", "low"]
    end = messages[3]
    assert end.headers["browser"] == "end"
    assert end.headers["subscription"] == "b"
    assert end.body == ""
    assert "ack" not in messages[0].headers
    consumer = stomp_peer()
    consumer.subscribe(queue, "c")
    assert [m.body for m in consumer.inbox.wait_messages(3)] == ["high", "mid", "low"]


def test_browser_of_an_empty_or_unknown_queue_ends_at_once(stomp_peer, unique):
    browser = stomp_peer()
    browser.subscribe(f"/queue/{unique}", "b", browser="true")
    (end,) = browser.inbox.wait_messages(1)
    assert end.headers["browser"] == "end"


def test_priority_is_strict_and_redelivery_keeps_its_place(stomp_peer, unique):
    """A message returned by a consumer that went away (redelivered at once; a NACKed one would
    wait out the redelivery delay) goes back to the front of its priority level."""
    queue = f"/queue/{unique}"
    producer = stomp_peer()
    for n, priority in enumerate([0, 9, 4, 9, 0, 4]):
        producer.send(queue, f"p{priority}-{n}", priority=str(priority))
    leaving = stomp_peer()
    leaving.subscribe(queue, "c", ack="client-individual", **{"activemq.prefetchSize": "1"})
    (first,) = leaving.inbox.wait_messages(1)
    assert first.body == "p9-1"
    leaving.close()
    consumer = stomp_peer()
    consumer.subscribe(queue, "c", ack="client-individual", **{"activemq.prefetchSize": "1"})
    bodies = []
    for n in range(6):
        message = consumer.inbox.wait_messages(n + 1)[-1]
        bodies.append(message.body)
        _ack(consumer, message)
    assert bodies == ["p9-1", "p9-3", "p4-2", "p4-5", "p0-0", "p0-4"]
    assert consumer.inbox.messages[0].headers["redelivered"] == "true"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_durable_subscription_keeps_its_selector_across_a_restart(
    start_broker_process, stomp_peer, tmp_path, sig
):
    data_dir = tmp_path / "kept"
    durable = {"activemq.subscriptionName": "eu", "selector": "region = 'eu'"}
    broker = start_broker_process(data_dir)
    subscriber = stomp_peer(port=broker.port, client_id="sel-client")
    subscriber.subscribe("/topic/sel.prices", "d", **durable)
    subscriber.close()
    assert broker.stop(sig) in (0, -signal.SIGKILL)

    restarted = start_broker_process(data_dir)
    producer = stomp_peer(port=restarted.port)
    # Sent before the subscriber is back: the restored subscription already filters.
    for region in ("us", "eu", "asia", "eu"):
        producer.send("/topic/sel.prices", region, persistent="true", region=region)
    assert restarted.stop(sig) in (0, -signal.SIGKILL)
    dump = subprocess.run(
        [sys.executable, "-m", "dovecote", "store", "dump", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "selector=\"region = 'eu'\"" in dump
    assert dump.count("MESSAGE_ADDED sel-client.eu#") == 2  # us and asia never enqueued

    again = start_broker_process(data_dir)
    back = stomp_peer(port=again.port, client_id="sel-client")
    back.subscribe("/topic/sel.prices", "d", **durable)
    assert back.inbox.wait_messages(2)
    producer = stomp_peer(port=again.port)
    producer.send("/topic/sel.prices", "eu-marker", region="eu")
    assert [m.body for m in back.inbox.wait_messages(3)] == ["eu", "eu", "eu-marker"]


def test_browser_of_a_queue_larger_than_the_outbound_buffer_gets_everything(stomp_peer, unique):
    queue = f"/queue/{unique}"
    producer = stomp_peer()
    body = "x" * 1024
    count = 3000  # ~3 MiB: past the 1 MiB outbound limit, so the browser pauses and resumes
    for n in range(count - 1):
        producer.conn.send(queue, body, headers={"n": str(n)})
    producer.send(queue, body, n=str(count - 1))
    browser = stomp_peer()
    browser.subscribe(queue, "b", browser="true")
    messages = browser.inbox.wait_messages(count + 1, timeout=30)
    assert [m.headers["n"] for m in messages[:count]] == [str(n) for n in range(count)]
    assert messages[count].headers["browser"] == "end"


def test_a_group_starting_again_goes_to_a_consumer_with_room(stomp_peer, unique):
    """JMSXGroupSeq 1 starts a group again (ActiveMQ): while its owner is full (prefetch 1,
    nothing acked), the restarting message and the rest of the group go to the other one."""
    queue = f"/queue/{unique}"
    full = stomp_peer()
    full.subscribe(queue, "a", ack="client-individual", **{"activemq.prefetchSize": "1"})
    producer = stomp_peer()
    producer.send(queue, "g1", JMSXGroupID="orders-1")
    full.inbox.wait_messages(1)
    roomy = stomp_peer()
    roomy.subscribe(queue, "b")
    producer.send(queue, "restart", JMSXGroupID="orders-1", JMSXGroupSeq="1")
    producer.send(queue, "g2", JMSXGroupID="orders-1", JMSXGroupSeq="2")
    moved = roomy.inbox.wait_messages(2)
    assert [(m.body, m.headers.get("JMSXGroupFirstForConsumer")) for m in moved] == [
        ("restart", "true"),
        ("g2", None),
    ]
    assert full.inbox.bodies() == ["g1"]

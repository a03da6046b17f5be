"""stomp.py (a real, independent STOMP client) against ``dovecote run`` in a subprocess.

Negative checks ("X never arrives") use a marker: a message sent after X on the same path.
The broker delivers in order on one connection, so once the marker is in, X would have been.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor


def test_queue_send_and_receive(stomp_peer, unique):
    consumer = stomp_peer()
    consumer.subscribe(f"/queue/{unique}", "1")
    producer = stomp_peer()
    for body in ("one", "two", "three"):
        producer.send(f"/queue/{unique}", body, **{"x-app": "demo"})
    messages = consumer.inbox.wait_messages(3)
    assert [m.body for m in messages] == ["one", "two", "three"]
    first = messages[0].headers
    assert first["destination"] == f"/queue/{unique}"
    assert first["subscription"] == "1"
    assert first["x-app"] == "demo"
    assert first["priority"] == "4"
    assert "ack" not in first
    assert "redelivered" not in first
    assert len({m.headers["message-id"] for m in messages}) == 3


def test_stomp_1_1_client_acks_by_message_id(stomp_peer, unique):
    consumer = stomp_peer("1.1")
    consumer.subscribe(f"/queue/{unique}", "s", ack="client-individual")
    producer = stomp_peer("1.1")
    producer.send(f"/queue/{unique}", "eleven")
    (message,) = consumer.inbox.wait_messages(1)
    assert message.body == "eleven"
    receipt = consumer.receipt()
    consumer.conn.ack(message.headers["message-id"], "s", receipt=receipt)
    consumer.inbox.wait_receipt(receipt)
    consumer.close()
    # Acknowledged, so not redelivered to the next consumer: the marker comes first.
    producer.send(f"/queue/{unique}", "marker")
    other = stomp_peer("1.1")
    other.subscribe(f"/queue/{unique}", "s2")
    assert [m.body for m in other.inbox.wait_messages(1)] == ["marker"]


def test_topic_wildcard_subscriptions(stomp_peer, unique):
    patterns = {
        "exact": f"{unique}.eu.de",
        "star": f"{unique}.*.de",
        "tail": f"{unique}.>",
        "us": f"{unique}.us.*",
    }
    peers = {}
    for name, pattern in patterns.items():
        peer = stomp_peer()
        peer.subscribe(f"/topic/{pattern}", name)
        peer.subscribe(f"/topic/{unique}-end", "end")
        peers[name] = peer
    publisher = stomp_peer()
    for address in (f"{unique}.eu.de", f"{unique}.us.ny", f"{unique}.eu", f"{unique}.us.de.x"):
        publisher.send(f"/topic/{address}", address)
    publisher.send(f"/topic/{unique}-end", "end")
    expected = {
        "exact": [f"{unique}.eu.de"],
        "star": [f"{unique}.eu.de"],
        "tail": [f"{unique}.eu.de", f"{unique}.us.ny", f"{unique}.eu", f"{unique}.us.de.x"],
        "us": [f"{unique}.us.ny"],
    }
    for name, peer in peers.items():
        messages = peer.inbox.wait_messages(len(expected[name]) + 1)
        assert [m.body for m in messages] == [*expected[name], "end"], name
        # The MESSAGE names the topic it was sent to, not the subscription's pattern.
        assert [m.headers["destination"] for m in messages[:-1]] == [
            f"/topic/{body}" for body in expected[name]
        ]
        assert {m.headers["subscription"] for m in messages[:-1]} == {name}


def test_topic_message_with_no_subscriber_is_dropped(stomp_peer, unique):
    publisher = stomp_peer()
    publisher.send(f"/topic/{unique}", "nobody hears this")
    subscriber = stomp_peer()
    subscriber.subscribe(f"/topic/{unique}", "0")
    publisher.send(f"/topic/{unique}", "heard")
    assert [m.body for m in subscriber.inbox.wait_messages(1)] == ["heard"]


def test_durable_topic_subscription_keeps_messages_while_away(stomp_peer, unique):
    topic = f"/topic/{unique}.events"
    durable = {"activemq.subscriptionName": "audit"}
    subscriber = stomp_peer(client_id=f"{unique}-client")
    subscriber.subscribe(topic, "d1", **durable)
    publisher = stomp_peer()
    publisher.send(topic, "while connected", persistent="true")
    assert [m.body for m in subscriber.inbox.wait_messages(1)] == ["while connected"]
    subscriber.close()

    publisher.send(topic, "while away 1", persistent="true")
    publisher.send(topic, "while away 2", persistent="true")

    back = stomp_peer(client_id=f"{unique}-client")
    back.subscribe(topic, "d1", **durable)
    messages = back.inbox.wait_messages(2)
    assert [m.body for m in messages] == ["while away 1", "while away 2"]
    assert {m.headers["destination"] for m in messages} == {topic}
    publisher.send(topic, "after return", persistent="true")
    assert [m.body for m in back.inbox.wait_messages(3)] == [
        "while away 1",
        "while away 2",
        "after return",
    ]


def test_unacked_message_goes_to_another_consumer_marked_redelivered(stomp_peer, unique):
    queue = f"/queue/{unique}"
    first = stomp_peer()
    first.subscribe(queue, "a", ack="client-individual")
    producer = stomp_peer()
    producer.send(queue, "work")
    (delivery,) = first.inbox.wait_messages(1)
    assert "redelivered" not in delivery.headers
    assert re.fullmatch(r"\d+-\d+", delivery.headers["ack"])
    second = stomp_peer()
    second.subscribe(queue, "b", ack="client-individual")
    first.close()  # never acknowledged
    (redelivery,) = second.inbox.wait_messages(1)
    assert redelivery.body == "work"
    assert redelivery.headers["redelivered"] == "true"
    assert redelivery.headers["message-id"] == delivery.headers["message-id"]
    assert redelivery.headers["subscription"] == "b"


def test_client_ack_is_cumulative(stomp_peer, unique):
    queue = f"/queue/{unique}"
    consumer = stomp_peer()
    consumer.subscribe(queue, "c", ack="client")
    producer = stomp_peer()
    for body in ("m1", "m2", "m3"):
        producer.send(queue, body)
    messages = consumer.inbox.wait_messages(3)
    receipt = consumer.receipt()
    consumer.conn.ack(messages[1].headers["ack"], receipt=receipt)  # settles m1 and m2
    consumer.inbox.wait_receipt(receipt)
    consumer.close()
    producer.send(queue, "marker")
    other = stomp_peer()
    other.subscribe(queue, "o")
    received = other.inbox.wait_messages(2)
    assert [m.body for m in received] == ["m3", "marker"]
    assert received[0].headers["redelivered"] == "true"


def test_nack_redelivers(stomp_peer, unique):
    queue = f"/queue/{unique}"
    consumer = stomp_peer()
    consumer.subscribe(queue, "n", ack="client-individual")
    producer = stomp_peer()
    producer.send(queue, "try again")
    (first,) = consumer.inbox.wait_messages(1)
    receipt = consumer.receipt()
    consumer.conn.nack(first.headers["ack"], receipt=receipt)
    consumer.inbox.wait_receipt(receipt)
    second = consumer.inbox.wait_messages(2)[1]
    assert second.body == "try again"
    assert second.headers["redelivered"] == "true"
    assert second.headers["message-id"] == first.headers["message-id"]
    receipt = consumer.receipt()
    consumer.conn.ack(second.headers["ack"], receipt=receipt)
    consumer.inbox.wait_receipt(receipt)


def test_transaction_sends_are_visible_only_after_commit(stomp_peer, unique):
    queue = f"/queue/{unique}"
    consumer = stomp_peer()
    consumer.subscribe(queue, "t")
    producer = stomp_peer()
    tx = producer.conn.begin()
    producer.send(queue, "in tx 1", transaction=tx)
    producer.send(queue, "in tx 2", transaction=tx)
    producer.send(queue, "outside")
    assert [m.body for m in consumer.inbox.wait_messages(1)] == ["outside"]
    receipt = producer.receipt()
    producer.conn.commit(tx, headers={"receipt": receipt})
    producer.inbox.wait_receipt(receipt)
    assert [m.body for m in consumer.inbox.wait_messages(3)] == ["outside", "in tx 1", "in tx 2"]


def test_transaction_abort_discards_sends(stomp_peer, unique):
    queue = f"/queue/{unique}"
    consumer = stomp_peer()
    consumer.subscribe(queue, "t")
    producer = stomp_peer()
    tx = producer.conn.begin()
    producer.send(queue, "discarded", transaction=tx)
    receipt = producer.receipt()
    producer.conn.abort(tx, headers={"receipt": receipt})
    producer.inbox.wait_receipt(receipt)
    producer.send(queue, "marker")
    assert [m.body for m in consumer.inbox.wait_messages(1)] == ["marker"]
    assert consumer.inbox.bodies() == ["marker"]


def test_ack_in_transaction_applies_on_commit_and_not_on_abort(stomp_peer, unique):
    queue = f"/queue/{unique}"
    consumer = stomp_peer()
    consumer.subscribe(queue, "a", ack="client-individual")
    producer = stomp_peer()
    producer.send(queue, "committed ack")
    producer.send(queue, "aborted ack")
    committed, aborted = consumer.inbox.wait_messages(2)
    for message, finish in ((committed, consumer.conn.commit), (aborted, consumer.conn.abort)):
        tx = consumer.conn.begin()
        consumer.conn.ack(message.headers["ack"], transaction=tx)
        receipt = consumer.receipt()
        finish(tx, headers={"receipt": receipt})
        consumer.inbox.wait_receipt(receipt)
    consumer.close()
    producer.send(queue, "marker")
    other = stomp_peer()
    other.subscribe(queue, "b")
    received = other.inbox.wait_messages(2)
    assert [m.body for m in received] == ["aborted ack", "marker"]
    assert received[0].headers["redelivered"] == "true"


def test_binary_body_with_nul_bytes_round_trips(stomp_peer, unique):
    queue = f"/queue/{unique}"
    body = bytes(range(256)) * 4 + b"\0\0\0"
    consumer = stomp_peer(auto_decode=False)
    consumer.subscribe(queue, "bin")
    producer = stomp_peer(auto_decode=False)
    producer.send(queue, body, **{"content-type": "application/octet-stream"})
    (message,) = consumer.inbox.wait_messages(1)
    assert message.body == body
    assert message.headers["content-length"] == str(len(body))
    assert message.headers["content-type"] == "application/octet-stream"


def test_one_megabyte_body_round_trips(stomp_peer, unique):
    queue = f"/queue/{unique}"
    body = os.urandom(1024 * 1024)
    consumer = stomp_peer(auto_decode=False)
    consumer.subscribe(queue, "big")
    producer = stomp_peer(auto_decode=False)
    producer.send(queue, body)
    (message,) = consumer.inbox.wait_messages(1, timeout=10)
    assert len(message.body) == len(body)
    assert message.body == body


def test_two_hundred_concurrent_connections_send_and_receive(stomp_peer, unique):
    count = 200
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=25) as pool:
        peers = list(pool.map(lambda _: stomp_peer(), range(count)))
        list(pool.map(lambda i: peers[i].subscribe(f"/queue/{unique}.{i}", "0"), range(count)))
        # Each connection sends to the next one's queue, all at once.
        list(
            pool.map(
                lambda i: peers[i].send(f"/queue/{unique}.{(i + 1) % count}", f"from {i}"),
                range(count),
            )
        )
        received = list(pool.map(lambda peer: peer.inbox.wait_messages(1)[0].body, peers))
        assert received == [f"from {(i - 1) % count}" for i in range(count)]
        list(pool.map(lambda peer: peer.close(), peers))
    assert time.monotonic() - start < 30


def test_priority_orders_a_backlog(stomp_peer, unique):
    queue = f"/queue/{unique}"
    producer = stomp_peer()
    sent = [(1, "p1-a"), (9, "p9-a"), (4, "p4-a"), (9, "p9-b"), (0, "p0-a"), (4, "p4-b")]
    for priority, body in sent:
        producer.send(queue, body, priority=str(priority))
    consumer = stomp_peer()
    consumer.subscribe(queue, "p")
    messages = consumer.inbox.wait_messages(len(sent))
    assert [m.body for m in messages] == ["p9-a", "p9-b", "p4-a", "p4-b", "p1-a", "p0-a"]
    assert [m.headers["priority"] for m in messages] == ["9", "9", "4", "4", "1", "0"]


def test_request_reply_through_a_temp_queue(stomp_peer, unique):
    service_queue = f"/queue/{unique}.service"
    service = stomp_peer()
    service.subscribe(service_queue, "svc")
    requester = stomp_peer()
    requester.subscribe("/temp-queue/replies", "rep")
    requester.send(service_queue, "ping", **{"reply-to": "/temp-queue/replies"})
    (request,) = service.inbox.wait_messages(1)
    reply_to = request.headers["reply-to"]
    assert re.fullmatch(r"/remote-temp-queue/ID:c\d+:replies", reply_to)
    service.send(reply_to, "pong", **{"correlation-id": "42"})
    (reply,) = requester.inbox.wait_messages(1)
    assert reply.body == "pong"
    assert reply.headers["subscription"] == "rep"
    assert reply.headers["correlation-id"] == "42"


def test_temp_queue_creator_sees_its_own_destination_name(stomp_peer, unique):
    # As in ActiveMQ: replies to /temp-queue/own arrive named /temp-queue/own, not ID:...
    requester = stomp_peer()
    requester.subscribe("/temp-queue/own", "rep")
    requester.send(f"/queue/{unique}", "ping", **{"reply-to": "/temp-queue/own"})
    service = stomp_peer()
    service.subscribe(f"/queue/{unique}", "svc")
    (request,) = service.inbox.wait_messages(1)
    service.send(request.headers["reply-to"], "pong")
    (reply,) = requester.inbox.wait_messages(1)
    assert reply.headers["destination"] == "/temp-queue/own"


def test_receipts_for_every_client_frame(stomp_peer, unique):
    peer = stomp_peer()
    conn = peer.conn
    queue = f"/queue/{unique}"
    conn.subscribe(queue, "s", ack="client-individual", headers={"receipt": "sub"})
    conn.send(queue, "x", headers={"receipt": "send"})
    conn.begin("tx", headers={"receipt": "begin"})
    conn.commit("tx", headers={"receipt": "commit"})
    (message,) = peer.inbox.wait_messages(1)
    conn.ack(message.headers["ack"], receipt="ack")
    conn.unsubscribe("s", headers={"receipt": "unsub"})
    for receipt in ("sub", "send", "begin", "commit", "ack", "unsub"):
        peer.inbox.wait_receipt(receipt)
    # COMMIT's receipt waits for the journal, so it may come after later, quicker ones.
    assert sorted(peer.inbox.receipts) == ["ack", "begin", "commit", "send", "sub", "unsub"]
    assert peer.inbox.errors == []

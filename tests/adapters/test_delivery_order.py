"""DeliveryOrder: what a cumulative ACK on a composite ack:client subscription settles."""

from __future__ import annotations

from dovecote.adapters.stomp_composite import DeliveryOrder
from dovecote.core.consumer import AckMode, Consumer
from dovecote.core.message import Message, QueueEntry, RoutingType


class Sink:
    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        pass


def part(key: str) -> Consumer:
    return Consumer(key, Sink(), ack_mode=AckMode.CLIENT, prefetch=1000)


def send(order: DeliveryOrder, number: int, consumer: Consumer, seq: int) -> None:
    message = Message(f"{number}-{seq}", "q", RoutingType.ANYCAST, b"")
    consumer.in_flight[seq] = QueueEntry(message, seq)
    order.delivered(number, seq)


def test_each_part_is_settled_up_to_its_last_delivery_before_the_acked_one() -> None:
    order, a, b, c = DeliveryOrder(), part("a"), part("b"), part("c")
    parts = [(1, a), (2, b), (3, c)]
    send(order, 1, a, 1)
    send(order, 2, b, 1)
    send(order, 1, a, 2)
    send(order, 2, b, 2)  # (acked below)
    send(order, 1, a, 3)
    send(order, 3, c, 1)
    assert order.up_to(2, 2, parts) == [(a, 2), (b, 2)]  # c's came later: none of it
    assert order.up_to(1, 1, parts) == [(a, 1)]  # b's first came after a's first
    assert order.up_to(3, 1, parts) == [(a, 3), (b, 2), (c, 1)]


def test_a_redelivered_message_counts_from_its_new_delivery() -> None:
    order, a, b = DeliveryOrder(), part("a"), part("b")
    parts = [(1, a), (2, b)]
    send(order, 1, a, 1)
    send(order, 2, b, 1)
    del a.in_flight[1]  # nacked ...
    send(order, 1, a, 1)  # ... and delivered again, after b's
    assert order.up_to(2, 1, parts) == [(b, 1)]
    assert order.up_to(1, 1, parts) == [(a, 1), (b, 1)]


def test_the_table_forgets_deliveries_settled_elsewhere() -> None:
    order, a = DeliveryOrder(), part("a")
    for seq in range(1, 1001):
        send(order, 1, a, seq)
        if seq > 1:
            del a.in_flight[seq - 1]  # settled by other means (a transaction, say)
        order.up_to(1, seq, [(1, a)])
    assert len(order._ticks) <= 2 * len(a.in_flight) + 64

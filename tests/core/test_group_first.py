"""``QueueEntry.group_first``: the delivery that gives a message group to its consumer.

ActiveMQ flags it ``JMSXGroupFirstForConsumer``: the first message of a group (JMSXGroupID) a
consumer gets once the group is assigned to it, be it the first assignment, a move after the
owner left, or the group opening again after a negative JMSXGroupSeq closed it. Every other
delivery, and every delivery of a message without a group, is not flagged.
"""

from __future__ import annotations

import pytest

from dovecote.core.limits import MemoryBudget
from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.queue import AckMode, Consumer, Queue
from dovecote.store.memory import MemoryStore


class Sink:
    """Records each delivery as (consumer key, message id, group_first, redelivered)."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[object, str, bool, bool]] = []

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.deliveries.append(
            (consumer.key, entry.message.message_id, entry.group_first, entry.redelivered)
        )

    def firsts(self, key: object | None = None) -> list[tuple[str, bool]]:
        """(message id, group_first) per delivery, for one consumer or all."""
        return [(d[1], d[2]) for d in self.deliveries if key is None or d[0] == key]


def msg(message_id: str, **properties: str) -> Message:
    return Message(message_id, "q", RoutingType.ANYCAST, message_id.encode(), properties)


def new_queue() -> Queue:
    return Queue(
        "q",
        address="q",
        durable=False,
        store=MemoryStore(),
        now_ms=lambda: 1,
        budget=MemoryBudget(),
    )


class H:
    def __init__(self) -> None:
        self.sink = Sink()
        self.queue = new_queue()

    def consumer(self, key: str, *, prefetch: int = 1000, exclusive: bool = False) -> Consumer:
        consumer = Consumer(
            key, self.sink, ack_mode=AckMode.INDIVIDUAL, prefetch=prefetch, exclusive=exclusive
        )
        self.queue.add_consumer(consumer)
        return consumer

    def send(self, message_id: str, **properties: str) -> None:
        self.queue.add(msg(message_id, **properties))


@pytest.fixture
def h() -> H:
    return H()


def test_only_the_first_message_of_a_group_to_its_consumer_is_flagged(h: H) -> None:
    h.consumer("A")
    h.consumer("B")
    for n in range(3):
        h.send(f"g{n}", JMSXGroupID="g")
        h.send(f"k{n}", JMSXGroupID="k")
    assert h.sink.firsts("A") == [("g0", True), ("g1", False), ("g2", False)]
    assert h.sink.firsts("B") == [("k0", True), ("k1", False), ("k2", False)]


def test_messages_without_a_group_are_never_flagged(h: H) -> None:
    a = h.consumer("A")
    h.consumer("B")
    h.send("x1")
    h.send("g1", JMSXGroupID="g")
    h.send("x2", JMSXGroupSeq="-1")  # a sequence without a group id is no group
    h.send("x3")
    h.queue.remove_consumer(a)  # x1 and x2 go to B, redelivered
    assert h.sink.deliveries == [
        ("A", "x1", False, False),
        ("B", "g1", True, False),
        ("A", "x2", False, False),
        ("B", "x3", False, False),
        ("B", "x1", False, True),
        ("B", "x2", False, True),
    ]


def test_the_first_message_after_the_owner_left_is_flagged_for_the_new_owner(h: H) -> None:
    a = h.consumer("A")
    h.send("m1", JMSXGroupID="g")
    h.queue.ack(a, 1)
    b = h.consumer("B")
    h.queue.remove_consumer(a)  # A had nothing in flight: the group is merely free
    h.send("m2", JMSXGroupID="g")
    h.send("m3", JMSXGroupID="g")
    assert h.queue.group_owner("g") is b
    assert h.sink.firsts() == [("m1", True), ("m2", True), ("m3", False)]
    assert h.sink.firsts("B") == [("m2", True), ("m3", False)]


def test_a_redelivery_that_moves_the_group_is_flagged(h: H) -> None:
    a = h.consumer("A")
    h.send("m1", JMSXGroupID="g")
    h.send("m2", JMSXGroupID="g")
    h.consumer("B")
    h.queue.remove_consumer(a)  # m1 and m2 go back, to B: B now owns g
    h.send("m3", JMSXGroupID="g")
    assert h.sink.deliveries == [
        ("A", "m1", True, False),
        ("A", "m2", False, False),
        ("B", "m1", True, True),
        ("B", "m2", False, True),
        ("B", "m3", False, False),
    ]


def test_a_redelivery_to_the_same_owner_is_not_flagged(h: H) -> None:
    a = h.consumer("A")
    h.send("m1", JMSXGroupID="g")
    h.queue.nack(a, 1)  # A still owns g (a bare queue redelivers at once)
    assert h.sink.deliveries == [("A", "m1", True, False), ("A", "m1", False, True)]


def test_the_next_message_after_the_group_closed_is_flagged(h: H) -> None:
    h.consumer("A")
    h.send("m1", JMSXGroupID="g")
    h.send("end", JMSXGroupID="g", JMSXGroupSeq="-1")
    assert h.queue.group_count == 0
    h.send("m2", JMSXGroupID="g")  # the group opens again, with the same consumer
    h.send("m3", JMSXGroupID="g")
    assert h.sink.firsts() == [("m1", True), ("end", False), ("m2", True), ("m3", False)]


def test_a_group_of_one_closing_message_is_flagged(h: H) -> None:
    h.consumer("A")
    h.send("only", JMSXGroupID="g", JMSXGroupSeq="-1")
    h.send("next", JMSXGroupID="g")
    assert h.sink.firsts() == [("only", True), ("next", True)]
    assert h.queue.group_count == 1


def test_a_group_forgotten_by_the_bounded_table_is_flagged_again(h: H) -> None:
    h.queue._groups.limit = 1
    h.consumer("A")
    h.send("g1", JMSXGroupID="g")
    h.send("k1", JMSXGroupID="k")  # g is forgotten to make room for k
    h.send("g2", JMSXGroupID="g")
    assert h.sink.firsts() == [("g1", True), ("k1", True), ("g2", True)]


def test_an_exclusive_consumer_is_flagged_for_each_group_it_takes(h: H) -> None:
    h.consumer("X", exclusive=True)
    h.consumer("B")
    for message_id, group in (("g1", "g"), ("k1", "k"), ("g2", "g"), ("k2", "k")):
        h.send(message_id, JMSXGroupID=group)
    assert h.sink.firsts("X") == [("g1", True), ("k1", True), ("g2", False), ("k2", False)]


def test_a_message_shared_by_two_queues_is_flagged_per_queue() -> None:
    # One Message in two queues (a topic's subscriptions): the flag is the entry's.
    first, second = H(), H()
    first.consumer("A")
    second.consumer("B")
    shared = msg("m1", JMSXGroupID="g")
    first.queue.add(shared)
    first.queue.add(msg("m2", JMSXGroupID="g"))
    second.queue.add(msg("m0", JMSXGroupID="g"))
    second.queue.add(shared)
    assert first.sink.firsts() == [("m1", True), ("m2", False)]
    assert second.sink.firsts() == [("m0", True), ("m1", False)]


# --- JMSXGroupSeq 1: the group starts again ----------------------------------------------------


def test_sequence_one_gives_the_group_to_whoever_takes_it(h: H) -> None:
    """ActiveMQ's assignGroup: a message with JMSXGroupSeq 1 may go to any consumer (round
    robin here), and that consumer owns the group from then on."""
    a = h.consumer("A")
    b = h.consumer("B")
    h.send("g1", JMSXGroupID="g")  # A (the round robin starts there): A owns g
    h.send("g2", JMSXGroupID="g")  # A, the owner
    assert h.queue.group_owner("g") is a
    h.send("restart", JMSXGroupID="g", JMSXGroupSeq="1")  # the round robin's turn: B
    h.send("g3", JMSXGroupID="g", JMSXGroupSeq="2")
    assert h.queue.group_owner("g") is b
    assert h.sink.firsts("A") == [("g1", True), ("g2", False)]
    assert h.sink.firsts("B") == [("restart", True), ("g3", False)]


def test_what_waited_for_the_former_owner_follows_the_group(h: H) -> None:
    """Entries parked for the owner (it had no credit) go to the new owner once a JMSXGroupSeq
    1 message moves the group, in order; the former owner does not take them back later."""
    a = h.consumer("A", prefetch=1)
    h.send("g1", JMSXGroupID="g")  # A owns g; A is now full
    h.send("g2", JMSXGroupID="g")  # parked for A
    b = h.consumer("B")
    h.send("restart", JMSXGroupID="g", JMSXGroupSeq="1")  # only B has credit: B owns g
    assert h.queue.group_owner("g") is b
    assert h.sink.firsts("B") == [("restart", True), ("g2", False)]
    h.queue.ack(a, 1)  # A has credit again: nothing of g is left for it
    h.send("g3", JMSXGroupID="g")
    assert [m for m, _ in h.sink.firsts("A")] == ["g1"]
    assert [m for m, _ in h.sink.firsts("B")] == ["restart", "g2", "g3"]


def test_a_sequence_that_is_not_one_keeps_the_owner(h: H) -> None:
    a = h.consumer("A")
    h.consumer("B")
    h.send("g1", JMSXGroupID="g")
    for seq in ("2", "01x", "", "10"):
        h.send(f"g-{seq}", JMSXGroupID="g", JMSXGroupSeq=seq)
    assert h.queue.group_owner("g") is a
    assert len(h.sink.firsts("A")) == 5

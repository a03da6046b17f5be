"""A dead letter's move through the real journal, cut at every byte: after recovery the message
is on its source queue or on the dead-letter queue, never both and never neither."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from dovecote.core.message import Message, QueueEntry, RoutingType
from dovecote.core.policy import AddressPolicy, PolicyMap
from dovecote.core.queue import AckMode, Consumer
from dovecote.core.router import Router
from dovecote.store.journal import Journal
from dovecote.store.recovery import list_segments, recover, segment_path

TIMEOUT = 10.0


class Clock:
    def now_ms(self) -> int:
        return 1_700_000_000_000


class Sink:
    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        return None


async def durable(journal: Journal) -> None:
    done = asyncio.Event()
    journal.call_when_durable(done.set)
    await asyncio.wait_for(done.wait(), TIMEOUT)


async def move_one_to_the_dlq(directory: Path) -> int:
    """Journal a persistent message, then its dead-lettering; returns the segment size the
    move started at."""
    journal = Journal(directory)
    journal.open(asyncio.get_running_loop())
    policies = PolicyMap(AddressPolicy(max_redeliveries=0))
    router = Router(journal, Clock(), policies=policies)
    router.send(Message("m1", "orders", RoutingType.ANYCAST, b"body", persistent=True))
    consumer = Consumer("c", Sink(), ack_mode=AckMode.INDIVIDUAL)
    router.consume_queue("orders", consumer)
    router.get_or_create_queue("ActiveMQ.DLQ")  # defined before the move starts
    await durable(journal)
    (segment,) = list_segments(directory)
    before = segment_path(directory, segment).stat().st_size
    queue = consumer.queue
    assert queue is not None
    queue.nack(consumer, 1)
    await durable(journal)
    await journal.close()
    return before


def test_a_dead_letter_move_is_all_or_nothing_at_every_cut(tmp_path: Path) -> None:
    source = tmp_path / "journal"
    before = asyncio.run(move_one_to_the_dlq(source))
    (segment,) = list_segments(source)
    data = segment_path(source, segment).read_bytes()
    assert len(data) > before
    outcomes = set()
    for cut in range(before, len(data) + 1):
        copy = tmp_path / f"cut{cut}"
        copy.mkdir()
        segment_path(copy, segment).write_bytes(data[:cut])
        state = recover(copy)
        on_source = [m.message.message_id for m in state.queues["orders"].messages.values()]
        dlq = state.queues["ActiveMQ.DLQ"].messages.values()
        on_dlq = [m.message.message_id for m in dlq]
        assert (on_source, on_dlq) in ((["m1"], []), ([], ["m1"])), f"cut at {cut}"
        if on_dlq:
            (dead,) = dlq
            assert dead.message.properties["originalDestination"] == "queue://orders"
            assert dead.message.body == b"body"
        outcomes.add(bool(on_dlq))
        shutil.rmtree(copy)
    assert outcomes == {False, True}  # the cuts covered both sides of the commit

"""A persistent message acknowledged before its batch is written never reaches the disk, and
its confirmation still waits for the batch it was part of."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dovecote.core.message import Message, RoutingType
from dovecote.store.journal import Journal
from dovecote.store.recovery import recover


def _message(n: int) -> Message:
    return Message(f"ID:t-{n}", "q", RoutingType.ANYCAST, b"body-%d" % n, {}, True)


def test_acked_before_flush_is_not_written_and_confirms(tmp_path: Path) -> None:
    confirmed: list[str] = []

    async def scenario() -> None:
        journal = Journal(tmp_path)
        journal.open(asyncio.get_running_loop())
        journal.record_queue("q", "q", None)
        journal.record_message("q", 1, _message(1))
        journal.call_when_durable(lambda: confirmed.append("m1"))
        journal.record_ack("q", 1)  # consumed in the same loop turn
        journal.record_message("q", 2, _message(2))
        journal.call_when_durable(lambda: confirmed.append("m2"))
        await journal.close()

    asyncio.run(scenario())
    assert confirmed == ["m1", "m2"]
    state = recover(tmp_path)
    assert sorted(state.queues["q"].messages) == [2]
    assert state.report.records == 2  # QUEUE_CREATED and message 2: nothing for message 1


def test_ack_after_flush_is_written(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path)
        journal.open(asyncio.get_running_loop())
        journal.record_queue("q", "q", None)
        journal.record_message("q", 1, _message(1))
        done = asyncio.Event()
        journal.call_when_durable(done.set)
        await asyncio.wait_for(done.wait(), 10)
        journal.record_ack("q", 1)
        await journal.close()

    asyncio.run(scenario())
    state = recover(tmp_path)
    assert state.queues["q"].messages == {}
    assert state.report.records == 3  # created, added, acked

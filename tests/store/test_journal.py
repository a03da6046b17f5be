"""The Journal on a real event loop (``asyncio.run`` in plain test functions): group commit,
close and reopen, segment rotation, reclaiming space, sync policies and disk-full handling.

The ``journal_os`` fixture (conftest.py) stands in for ``os`` inside the journal module only,
to count fdatasync calls, hold the writer back or make writes fail.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from journal_os import JournalOs

import dovecote.store.journal as journal_module
from dovecote.core.message import Message, RoutingType
from dovecote.store import compaction, inspect
from dovecote.store.journal import Journal, JournalConfig, SyncPolicy
from dovecote.store.record import (
    SEGMENT_HEADER,
    QueueKind,
    RecordType,
    SegmentHeader,
    encode_message_added,
    encode_queue_created,
    encode_queue_seq,
)
from dovecote.store.recovery import RecoveredState, list_segments, recover, segment_path

T = TypeVar("T")
TIMEOUT = 10.0
SMALL = JournalConfig(segment_size=4096)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())  # type: ignore[arg-type]


def message(n: int, queue: str = "orders", *, size: int = 100, **fields: Any) -> Message:
    defaults: dict[str, Any] = {
        "message_id": f"ID:test-{queue}-{n}",
        "address": queue,
        "routing": RoutingType.ANYCAST,
        "body": (b"%d:" % n + b"\x00\xff" * size)[:size],
        "properties": {"n": str(n)},
        "persistent": True,
        "priority": 4,
        "expires": 0,
        "timestamp": 1_700_000_000_000 + n,
    }
    defaults.update(fields)
    return Message(**defaults)


async def durable(journal: Journal) -> None:
    """Wait (bounded) until everything recorded so far is durable."""
    done = asyncio.Event()
    journal.call_when_durable(done.set)
    await asyncio.wait_for(done.wait(), TIMEOUT)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.005)


def open_journal(directory: Path, config: JournalConfig | None = None) -> Journal:
    journal = Journal(directory, config)
    journal.open(asyncio.get_running_loop())
    return journal


def contents(state: RecoveredState) -> dict[str, Any]:
    """Everything a recovered state says, as plain data."""
    return {
        name: (
            queue.address,
            queue.filter,
            queue.kind,
            [
                (seq, item.message, item.delivery_count)
                for seq, item in sorted(queue.messages.items())
            ],
        )
        for name, queue in state.queues.items()
    }


def files(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in sorted(directory.iterdir())}


async def rotate_until_first_segment_is_gone(journal: Journal, after: int) -> None:
    """Record, make durable and ack one "orders" message after another (seqs from
    ``after + 1``) until the journal's first segment is gone; fail if it is still there when
    the seq reaches 100."""
    n = after
    while 1 in list_segments(journal.directory):
        n += 1
        assert n < 100, "the first segment was never reclaimed"
        journal.record_message("orders", n, message(n, size=300))
        await durable(journal)
        journal.record_ack("orders", n)
        await asyncio.sleep(0.01)  # (its deletion is the writer's)


# --- group commit -------------------------------------------------------------------------------


def test_callbacks_fire_only_once_their_batch_is_on_disk(
    tmp_path: Path, journal_os: JournalOs
) -> None:
    seen_at_callback: list[int] = []

    async def scenario() -> None:
        journal = open_journal(tmp_path)
        syncs_before = journal_os.count("fdatasync")
        writes_before = journal_os.count("write")
        journal.record_queue("orders", "orders", None)
        for n in range(1, 201):
            journal.record_message("orders", n, message(n))
        journal.call_when_durable(lambda: seen_at_callback.append(inspect.check(tmp_path).records))
        assert seen_at_callback == []  # not before the batch is written
        await durable(journal)
        # One loop turn's 201 records went out as one write and one fdatasync.
        assert journal_os.count("fdatasync") - syncs_before == 1
        assert journal_os.count("write") - writes_before == 1
        await journal.close()

    run(scenario)
    assert seen_at_callback == [201]


def test_the_next_batch_fills_while_one_is_being_written(
    tmp_path: Path, journal_os: JournalOs
) -> None:
    release = threading.Event()
    entered = threading.Event()
    order: list[str] = []

    def slow_fdatasync(fd: int) -> None:
        entered.set()
        assert release.wait(TIMEOUT)
        os.fdatasync(fd)

    async def scenario() -> None:
        journal = open_journal(tmp_path)
        journal.record_queue("orders", "orders", None)
        await durable(journal)
        syncs_before = journal_os.count("fdatasync")
        journal_os.instead["fdatasync"] = slow_fdatasync
        journal.record_message("orders", 1, message(1))
        journal.call_when_durable(lambda: order.append("first"))
        await eventually(entered.is_set, "the writer never started the first batch")
        # Five more loop turns of records while the first batch is stuck in fdatasync.
        for n in range(2, 7):
            journal.record_message("orders", n, message(n))
            journal.call_when_durable(lambda n=n: order.append(f"m{n}"))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert order == []
        del journal_os.instead["fdatasync"]
        release.set()
        await durable(journal)
        assert order == ["first", "m2", "m3", "m4", "m5", "m6"]
        # The first batch, then one batch for all five turns that waited behind it.
        assert journal_os.count("fdatasync") - syncs_before == 2
        await journal.close()

    run(scenario)
    assert sorted(recover(tmp_path).queues["orders"].messages) == [1, 2, 3, 4, 5, 6]


def test_a_callback_with_nothing_pending_runs_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = open_journal(tmp_path)
        calls: list[int] = []
        journal.call_when_durable(lambda: calls.append(1))
        assert calls == [1]
        await journal.close()

    run(scenario)


def test_callbacks_run_in_the_order_they_were_registered(tmp_path: Path) -> None:
    order: list[int] = []

    async def scenario() -> None:
        journal = open_journal(tmp_path)
        journal.record_queue("orders", "orders", None)
        for n in range(1, 51):
            journal.record_message("orders", n, message(n))
            journal.call_when_durable(lambda n=n: order.append(n))
            if n % 7 == 0:
                await asyncio.sleep(0)
        await durable(journal)
        await journal.close()

    run(scenario)
    assert order == list(range(1, 51))


# --- close and reopen ---------------------------------------------------------------------------


def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    big_body = bytes(range(256)) * 40
    messages = {
        ("orders", 1): message(1, priority=0),
        ("orders", 2): message(2, priority=9, expires=1_900_000_000_000),
        ("orders", 3): message(3, body=b"", properties={}),
        ("orders", 5): message(5, body=big_body, properties={f"h{i}": "v" * i for i in range(50)}),
        ("c1.prices", 1): message(
            1,
            "c1.prices",
            address="prices.eu",
            routing=RoutingType.MULTICAST,
            properties={"ключ": "значение ✓", "empty": ""},
        ),
        ("c1.prices", 2): message(
            2, "c1.prices", address="prices.us", routing=RoutingType.MULTICAST
        ),
    }

    async def first_run() -> None:
        journal = open_journal(tmp_path)
        journal.record_queue("orders", "orders", None)
        journal.record_queue("c1.prices", "prices.>", "prices.>")
        journal.record_queue("gone", "gone", None)
        journal.record_message("gone", 1, message(1, "gone"))
        for (queue, seq), item in messages.items():
            journal.record_message(queue, seq, item)
        journal.record_message("orders", 4, message(4))
        await durable(journal)
        journal.record_delivery("orders", 2, 1)
        journal.record_delivery("orders", 2, 3)
        journal.record_delivery("c1.prices", 1, 1)
        journal.record_ack("orders", 4)
        journal.forget_queue("gone")
        journal.begin_atomic()
        journal.record_message("orders", 6, message(6))
        journal.record_ack("orders", 3)
        journal.end_atomic()
        await journal.close()

    run(first_run)
    messages[("orders", 6)] = message(6)
    del messages[("orders", 3)]
    counts = {("orders", 2): 3, ("c1.prices", 1): 1}
    expected = {
        "orders": ("orders", None, QueueKind.QUEUE, []),
        "c1.prices": ("prices.>", "prices.>", QueueKind.DURABLE_SUBSCRIPTION, []),
    }
    for (queue, seq), item in sorted(messages.items()):
        expected[queue][3].append((seq, item, counts.get((queue, seq), 0)))

    async def second_run() -> RecoveredState:
        journal = Journal(tmp_path)
        state = journal.open(asyncio.get_running_loop())
        await journal.close()
        return state

    state = run(second_run)
    assert contents(state) == expected
    assert state.report.problems == []
    # And once more, after a run that changed nothing.
    assert contents(run(second_run)) == expected


def test_durable_subscription_selector_survives_a_restart(tmp_path: Path) -> None:
    async def first_run() -> None:
        journal = open_journal(tmp_path)
        journal.record_queue("orders", "orders", None)
        journal.record_queue("c1.eu", "prices.>", "prices.>", "region = 'eu'")
        journal.record_queue("c1.all", "prices.>", "prices.>")
        await journal.close()

    async def reopen() -> RecoveredState:
        journal = Journal(tmp_path)
        state = journal.open(asyncio.get_running_loop())
        await journal.close()
        return state

    run(first_run)
    for _ in range(2):  # the second recovery reads what the first one left
        queues = run(reopen).queues
        assert queues["c1.eu"].selector == "region = 'eu'"
        assert queues["c1.all"].selector is None
        assert queues["orders"].selector is None


def test_reopening_appends_to_the_last_segment(tmp_path: Path) -> None:
    async def one_run(n: int) -> None:
        journal = open_journal(tmp_path)
        if n == 1:
            journal.record_queue("orders", "orders", None)
        journal.record_message("orders", n, message(n))
        await journal.close()

    for n in range(1, 4):
        run(lambda n=n: one_run(n))  # type: ignore[misc]
    assert list_segments(tmp_path) == [1]
    assert sorted(recover(tmp_path).queues["orders"].messages) == [1, 2, 3]
    assert inspect.check(tmp_path).records == 4


# --- rotation and reclaiming space --------------------------------------------------------------


def test_segments_rotate_at_the_configured_size(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        for n in range(1, 101):
            journal.record_message("orders", n, message(n, size=200))
            if n % 10 == 0:
                await durable(journal)
        await journal.close()
        return journal.segment_count, journal.disk_bytes

    count, disk = run(scenario)
    segments = list_segments(tmp_path)
    assert len(segments) == count
    assert count >= 8  # 100 records of ~280 octets in 4 KiB segments
    assert segments == list(range(1, count + 1))
    sizes = [segment_path(tmp_path, s).stat().st_size for s in segments]
    assert sum(sizes) == disk
    assert all(size <= 4096 for size in sizes)
    for segment in segments:
        head = segment_path(tmp_path, segment).read_bytes()[: SEGMENT_HEADER.size]
        assert SegmentHeader.decode(head) == SegmentHeader(segment)
    state = recover(tmp_path)
    assert state.report.problems == []
    assert sorted(state.queues["orders"].messages) == list(range(1, 101))


def test_a_record_larger_than_a_segment_gets_one_of_its_own(tmp_path: Path) -> None:
    huge = message(2, size=10_000)

    async def scenario() -> None:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        journal.record_message("orders", 1, message(1))
        journal.record_message("orders", 2, huge)
        journal.record_message("orders", 3, message(3))
        await journal.close()

    run(scenario)
    assert list_segments(tmp_path) == [1, 2, 3]
    assert segment_path(tmp_path, 2).stat().st_size > 10_000
    state = recover(tmp_path)
    assert state.queues["orders"].messages[2].message == huge
    assert sorted(state.queues["orders"].messages) == [1, 2, 3]


def test_dead_segments_are_deleted_and_disk_use_stays_bounded(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[int, int, int]]:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        samples = []
        n = 0
        for turn in range(300):
            for _ in range(5):
                n += 1
                journal.record_message("orders", n, message(n, size=200))
            await durable(journal)
            for seq in range(n - 4, n + 1):
                journal.record_ack("orders", seq)
            if turn % 50 == 49:
                samples.append((journal.segment_count, journal.disk_bytes, journal.live_bytes))
        await durable(journal)
        await journal.close()
        samples.append((journal.segment_count, journal.disk_bytes, journal.live_bytes))
        return samples

    samples = run(scenario)
    # ~400 KiB went through the journal; only the queue's definition is live.
    for count, disk, live in samples:
        assert count <= 3
        assert disk <= 3 * 4096
        assert live <= 1024
    count, disk, _ = samples[-1]
    on_disk = files(tmp_path)
    assert len(on_disk) == count
    assert sum(on_disk.values()) == disk
    state = recover(tmp_path)
    assert state.report.problems == []
    assert contents(state) == {"orders": ("orders", None, QueueKind.QUEUE, [])}


def test_a_long_lived_message_does_not_pin_the_journal(tmp_path: Path) -> None:
    keeper = message(0, size=300, properties={"keep": "me"})

    async def scenario() -> list[int]:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        journal.record_message("orders", 1, keeper)
        await durable(journal)
        journal.record_delivery("orders", 1, 1)  # delivered, never acknowledged
        counts = []
        n = 1
        for turn in range(300):
            for _ in range(5):
                n += 1
                journal.record_message("orders", n, message(n, size=200))
            await durable(journal)
            for seq in range(n - 4, n + 1):
                journal.record_ack("orders", seq)
            if turn % 20 == 19:
                counts.append(journal.segment_count)
        await journal.close()
        return counts

    counts = run(scenario)
    assert max(counts) <= 4
    assert len(list_segments(tmp_path)) <= 4
    state = recover(tmp_path)
    assert state.report.problems == []
    # Evacuated (copied forward) more than once, and still delivered once before.
    assert contents(state) == {"orders": ("orders", None, QueueKind.QUEUE, [(1, keeper, 1)])}


def test_a_full_segment_of_long_lived_messages_does_not_pin_the_journal(tmp_path: Path) -> None:
    """Regression: with the oldest segment all live (never evacuated), the next one, mostly
    dead but holding a queue definition, was never evacuated either (only the oldest was
    considered), and each later segment's acks referred to the one before: a chain that kept
    every segment on disk, growing without bound."""
    keepers = [message(n, "keep", size=300) for n in range(1, 14)]

    async def scenario() -> list[int]:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("keep", "keep", None)
        for n, item in enumerate(keepers, 1):  # fill the first segment with live messages
            journal.record_message("keep", n, item)
        await durable(journal)
        journal.record_queue("orders", "orders", None)
        counts = []
        for n in range(1, 601):
            journal.record_message("orders", n, message(n, size=300))
            await durable(journal)
            if n > 10:  # a consumer ten messages behind: its acks land a segment later
                journal.record_ack("orders", n - 10)
            if n % 50 == 0:
                counts.append(journal.segment_count)
        await journal.close()
        return counts

    counts = run(scenario)
    # Live: 13 keepers (~4 KiB), 10 messages and two definitions; 600 messages (~200 KiB, 50
    # segments) went through. Evacuation starts once garbage exceeds live data + 4 segments.
    assert max(counts) <= 12, counts
    state = recover(tmp_path)
    assert state.report.problems == []
    assert [item for _, item, _ in contents(state)["keep"][3]] == keepers
    assert sorted(state.queues["orders"].messages) == list(range(591, 601))


@pytest.mark.parametrize("stop_after", [65, 80, 104, 122])
def test_a_consumer_backlog_survives_a_restart(tmp_path: Path, stop_after: int) -> None:
    """Regression: once the oldest segment was evacuated, the queue's definition was rewritten
    after the backlog's messages, and recovery dropped them all as "for an unknown queue"."""

    async def scenario() -> set[int]:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        live = set()
        for n in range(1, stop_after + 1):
            journal.record_message("orders", n, message(n, size=200))
            live.add(n)
            if n > 40:  # the consumer is 40 messages behind
                journal.record_ack("orders", n - 40)
                live.discard(n - 40)
            await durable(journal)
        await journal.close()
        return live

    live = run(scenario)
    state = recover(tmp_path)
    assert state.report.problems == []
    assert sorted(state.queues["orders"].messages) == sorted(live)
    assert state.queues["orders"].kind is QueueKind.QUEUE


def test_files_on_disk_are_exactly_the_segments_the_journal_tracks(
    tmp_path: Path, journal_os: JournalOs
) -> None:
    """Regression: a dead segment was deleted while its records still waited for the writer
    (behind a slow fdatasync); the writer then created it again, and it stayed on disk,
    untracked, for good: disk use grew without bound."""

    def slow_fdatasync(fd: int) -> None:
        time.sleep(0.005)
        os.fdatasync(fd)

    journal_os.instead["fdatasync"] = slow_fdatasync

    async def scenario() -> tuple[int, int]:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        n = 0
        for _ in range(150):
            for _ in range(8):
                n += 1
                journal.record_message("orders", n, message(n, size=300))
                journal.call_when_durable(lambda: None)
            # The consumer acknowledges what it got two turns ago (written by now, mostly).
            for seq in range(max(1, n - 23), n - 15):
                journal.record_ack("orders", seq)
            await asyncio.sleep(0.001)
        await durable(journal)
        await journal.close()
        return journal.segment_count, journal.disk_bytes

    count, disk = run(scenario)
    on_disk = files(tmp_path)
    assert len(on_disk) == count
    assert count <= 4
    assert sum(on_disk.values()) == disk
    state = recover(tmp_path)
    assert state.report.problems == []
    assert sorted(state.queues["orders"].messages) == list(range(1185, 1201))


def test_an_atomic_group_stays_in_one_segment(tmp_path: Path) -> None:
    """Regression: a group split over two segments lost its ATOMIC_COMMIT when the second
    segment died and was deleted; recovery then took every later record for part of a group
    that never ended, and dropped them all."""
    keepers = [message(n, size=300) for n in range(1, 9)]
    later = message(100, size=300)

    async def scenario() -> None:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        # Live records filling most of the first segment: it is neither dead nor evacuated.
        for n, item in enumerate(keepers, 1):
            journal.record_message("orders", n, item)
        journal.begin_atomic()
        for n in range(9, 21):  # runs past the end of the segment
            journal.record_message("orders", n, message(n, size=300))
        journal.end_atomic()
        for n in range(21, 41):  # more than fills the segment the group ended in
            journal.record_message("orders", n, message(n, size=300))
        await durable(journal)
        # Acks in a later segment: the group's second segment dies and may be deleted.
        for n in range(9, 41):
            journal.record_ack("orders", n)
        await durable(journal)
        for n in range(41, 100):  # traffic that moves on and lets dead segments go
            journal.record_message("orders", n, message(n, size=300))
            await durable(journal)
            journal.record_ack("orders", n)
        journal.record_message("orders", 100, later)
        await journal.close()

    run(scenario)
    segments_with_group_records = {
        line.split(":")[0] for line in inspect.dump(tmp_path) if "ATOMIC_" in line
    }
    assert len(segments_with_group_records) <= 1  # BEGIN and COMMIT in the same segment
    state = recover(tmp_path)
    assert state.report.problems == []
    expected = [(n, item, 0) for n, item in enumerate(keepers, 1)] + [(100, later, 0)]
    assert contents(state) == {"orders": ("orders", None, QueueKind.QUEUE, expected)}


# --- sync policies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        JournalConfig(sync=SyncPolicy.NEVER),
        JournalConfig(sync=SyncPolicy.INTERVAL, sync_interval=30.0),
    ],
    ids=["never", "interval"],
)
def test_relaxed_sync_confirms_without_fdatasync_per_batch(
    tmp_path: Path, journal_os: JournalOs, config: JournalConfig
) -> None:
    async def scenario() -> None:
        journal = open_journal(tmp_path, config)
        journal.record_queue("orders", "orders", None)
        syncs_before = journal_os.count("fdatasync")
        writes_before = journal_os.count("write")
        for n in range(1, 21):
            journal.record_message("orders", n, message(n))
            await durable(journal)  # confirmed once written
        assert journal_os.count("write") - writes_before == 20
        assert journal_os.count("fdatasync") - syncs_before == 0
        await journal.close()

    run(scenario)
    assert sorted(recover(tmp_path).queues["orders"].messages) == list(range(1, 21))


def test_interval_sync_flushes_once_the_writer_is_idle(
    tmp_path: Path, journal_os: JournalOs
) -> None:
    async def scenario() -> None:
        config = JournalConfig(sync=SyncPolicy.INTERVAL, sync_interval=0.05)
        journal = open_journal(tmp_path, config)
        journal.record_queue("orders", "orders", None)
        await durable(journal)
        await asyncio.sleep(0.2)
        syncs_before = journal_os.count("fdatasync")
        journal.record_message("orders", 1, message(1))
        await durable(journal)
        await eventually(
            lambda: journal_os.count("fdatasync") > syncs_before,
            "no fdatasync after the writer went idle",
            timeout=2.0,
        )
        await asyncio.sleep(0.2)
        assert journal_os.count("fdatasync") - syncs_before == 1  # once, not once per timeout
        await journal.close()

    run(scenario)


def test_always_sync_fdatasyncs_every_batch(tmp_path: Path, journal_os: JournalOs) -> None:
    async def scenario() -> None:
        journal = open_journal(tmp_path)
        journal.record_queue("orders", "orders", None)
        await durable(journal)
        syncs_before = journal_os.count("fdatasync")
        for n in range(1, 11):
            journal.record_message("orders", n, message(n))
            await durable(journal)
        assert journal_os.count("fdatasync") - syncs_before == 10
        await journal.close()

    run(scenario)


def test_an_ack_alone_is_written_without_further_traffic(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = open_journal(tmp_path)
        journal.record_queue("orders", "orders", None)
        journal.record_message("orders", 1, message(1))
        await durable(journal)
        journal.record_ack("orders", 1)
        await eventually(
            lambda: inspect.check(tmp_path).records == 3, "the ack was never written", 2.0
        )
        await journal.close()

    run(scenario)
    assert recover(tmp_path).queues["orders"].messages == {}


# --- disk full ----------------------------------------------------------------------------------


class DiskFull:
    """``os.write`` that, while ``failing``, writes part of the data once, then raises ENOSPC
    (as a filling disk does), and counts the failures."""

    def __init__(self) -> None:
        self.failing = threading.Event()
        self.failures = 0
        self.partial = True

    def write(self, fd: int, data: Any) -> int:
        if not self.failing.is_set():
            return os.write(fd, data)
        if self.partial and len(data) > 1:
            self.partial = False
            return os.write(fd, bytes(data[: len(data) // 2]))
        self.failures += 1
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_stops_confirming_then_writes_the_batch_once(
    tmp_path: Path, journal_os: JournalOs
) -> None:
    disk = DiskFull()
    journal_os.instead["write"] = disk.write
    confirmed: list[int] = []

    async def scenario() -> None:
        journal = open_journal(tmp_path, JournalConfig(retry_interval=0.02))
        journal.record_queue("orders", "orders", None)
        journal.record_message("orders", 1, message(1))
        await durable(journal)
        disk.failing.set()
        for n in range(2, 12):
            journal.record_message("orders", n, message(n))
            journal.call_when_durable(lambda n=n: confirmed.append(n))
        await eventually(lambda: not journal.is_available(), "the journal stayed available")
        assert journal.last_error == "No space left on device"
        await eventually(lambda: disk.failures >= 3, "the writer did not retry")
        assert confirmed == []
        # Meanwhile more records wait for the stuck batch.
        journal.record_message("orders", 12, message(12))
        journal.call_when_durable(lambda: confirmed.append(12))
        await asyncio.sleep(0.05)
        assert confirmed == []
        assert not journal.is_available()
        disk.failing.clear()
        await durable(journal)
        assert confirmed == list(range(2, 13))
        assert journal.is_available()
        assert journal.last_error is None
        await journal.close()

    run(scenario)
    state = recover(tmp_path)
    assert state.report.problems == []
    assert sorted(state.queues["orders"].messages) == list(range(1, 13))
    # Each record once: the partial write was cut off before the retry.
    assert inspect.check(tmp_path).records == 13
    assert inspect.check(tmp_path).problems == []


def test_disk_full_while_starting_a_new_segment_keeps_the_earlier_one(
    tmp_path: Path, journal_os: JournalOs
) -> None:
    """Regression: a write error after the writer had moved to a new segment made the retry
    reopen the earlier segment as a fresh one, wiping every confirmed record in it."""
    calls = {"n": 0}

    def write(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] in (2, 3):  # the new segment's header, then its first records
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    async def scenario() -> None:
        journal = open_journal(tmp_path, JournalConfig(segment_size=4096, retry_interval=0.02))
        journal.record_queue("orders", "orders", None)
        for n in range(1, 6):
            journal.record_message("orders", n, message(n, size=300))
        await durable(journal)
        journal_os.instead["write"] = write
        # One batch that fills segment 1 and goes on into segment 2.
        for n in range(6, 21):
            journal.record_message("orders", n, message(n, size=300))
        await durable(journal)
        assert calls["n"] >= 4
        await journal.close()

    run(scenario)
    state = recover(tmp_path)
    assert state.report.problems == []
    assert sorted(state.queues["orders"].messages) == list(range(1, 21))
    assert inspect.check(tmp_path).problems == []
    assert inspect.check(tmp_path).records == 21


def test_closing_on_a_full_disk_abandons_the_unconfirmed_batch(
    tmp_path: Path, journal_os: JournalOs
) -> None:
    """Shutdown does not hang while the disk stays full: the batch being retried was never
    confirmed, so it is dropped, and what was confirmed before stays."""
    disk = DiskFull()
    journal_os.instead["write"] = disk.write
    confirmed: list[int] = []

    async def scenario() -> float:
        journal = open_journal(tmp_path, JournalConfig(retry_interval=0.02))
        journal.record_queue("orders", "orders", None)
        journal.record_message("orders", 1, message(1))
        await durable(journal)
        disk.failing.set()
        journal.record_message("orders", 2, message(2))
        journal.call_when_durable(lambda: confirmed.append(2))
        await eventually(lambda: not journal.is_available(), "the journal stayed available")
        began = time.monotonic()
        await journal.close()
        return time.monotonic() - began

    assert run(scenario) < 5
    assert confirmed == []
    state = recover(tmp_path)
    assert state.report.problems == []
    assert sorted(state.queues["orders"].messages) == [1]


def test_a_failing_idle_sync_is_reported_and_retried(tmp_path: Path, journal_os: JournalOs) -> None:
    """With sync ``interval`` the writer syncs when idle; if that fails the journal reports
    itself unavailable (instead of the writer thread dying) and recovers once it succeeds."""
    failing = threading.Event()

    def fdatasync(fd: int) -> None:
        if failing.is_set():
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)

    journal_os.instead["fdatasync"] = fdatasync

    async def scenario() -> None:
        config = JournalConfig(sync=SyncPolicy.INTERVAL, sync_interval=0.02, retry_interval=0.02)
        journal = open_journal(tmp_path, config)
        journal.record_queue("orders", "orders", None)
        await durable(journal)
        failing.set()
        journal.record_message("orders", 1, message(1))
        await eventually(lambda: not journal.is_available(), "the failed sync went unnoticed")
        assert journal.last_error == "Input/output error"
        failing.clear()
        journal.record_message("orders", 2, message(2))
        await durable(journal)
        assert journal.is_available()
        await journal.close()

    run(scenario)
    assert sorted(recover(tmp_path).queues["orders"].messages) == [1, 2]


def test_duplicate_ids_stay_until_forgotten_and_survive_evacuation(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, Message]:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        journal.record_duplicate_id("orders", 1, "kept")
        journal.record_duplicate_id("orders", 2, "forgotten")
        journal.record_message("orders", 1, message(1, size=50))
        await durable(journal)
        loaded = journal.load_message("orders", 1)
        journal.forget_duplicate_id("orders", "forgotten")
        journal.record_ack("orders", 1)
        n = 1
        for _ in range(300):  # the first segments die around the kept id
            for _ in range(5):
                n += 1
                journal.record_message("orders", n, message(n, size=200))
            await durable(journal)
            for seq in range(n - 4, n + 1):
                journal.record_ack("orders", seq)
        await durable(journal)
        await journal.close()
        return journal.segment_count, loaded

    count, loaded = run(scenario)
    assert loaded == message(1, size=50)
    assert count <= 4  # the kept id was copied forward, not pinning its segment
    state = recover(tmp_path)
    assert state.report.problems == []
    assert {a: {i: d.seq for i, d in ids.items()} for a, ids in state.duplicate_ids.items()} == {
        "orders": {"kept": 1}
    }
    lines = list(inspect.dump(tmp_path))
    assert any(line.endswith("DUPLICATE_ID orders#1 id=kept") for line in lines)


def test_close_does_not_fail_on_a_disk_that_hangs(
    tmp_path: Path, journal_os: JournalOs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that hangs in fdatasync past CLOSE_TIMEOUT does not make close() raise (the
    journal was left open, its writer running): it gives up waiting, stops the writer, and
    the batch is on disk if the disk came back before the writer ended."""
    monkeypatch.setattr(journal_module, "CLOSE_TIMEOUT", 0.1)
    release = threading.Event()

    def stuck_fdatasync(fd: int) -> None:
        release.wait(2)
        os.fdatasync(fd)

    async def scenario() -> None:
        journal = open_journal(tmp_path)
        journal.record_queue("orders", "orders", None)
        await durable(journal)
        journal_os.instead["fdatasync"] = stuck_fdatasync
        journal.record_message("orders", 1, message(1))
        await asyncio.sleep(0.05)
        threading.Timer(0.3, release.set).start()  # the disk comes back after close gave up
        await journal.close()

    run(scenario)
    assert not [t for t in threading.enumerate() if t.name == "dovecote-journal"]
    state = recover(tmp_path)
    assert state.report.problems == []
    assert sorted(state.queues["orders"].messages) == [1]


def test_an_evacuation_copies_in_slices_and_acks_between_slices_hold(tmp_path: Path) -> None:
    """A segment's live records are copied a slice per loop turn (a big one stalled the loop);
    records acknowledged while the copying is under way are not copied (or, if copied
    already, released), and once every copy is durable the segment is deleted."""
    config = JournalConfig(segment_size=4096, evacuation_slice=2)
    sent = {n: message(n, "keep", size=150) for n in range(1, 21)}

    async def scenario() -> tuple[set[int], int]:
        journal = open_journal(tmp_path, config)
        journal.record_queue("keep", "keep", None)
        for n in range(1, 21):  # ~20 x 230 B: the first segment and part of the next
            journal.record_message("keep", n, sent[n])
        await durable(journal)
        first = min(list_segments(tmp_path))
        live = set(sent)
        for n in range(1, 13):  # most of the first segment dies: evacuated at the next rotation
            journal.record_ack("keep", n)
            live.discard(n)
        for n in range(100, 140):  # the journal moves on (rotating) meanwhile
            sent[n] = message(n, "keep", size=150)
            journal.record_message("keep", n, sent[n])
            live.add(n)
            await asyncio.sleep(0)
            if n % 3 == 0:  # acks while the copying is under way
                gone = min(k for k in live if k < 100) if any(k < 100 for k in live) else n
                journal.record_ack("keep", gone)
                live.discard(gone)
        await eventually(lambda: first not in list_segments(tmp_path), "first segment deleted")
        await journal.close()
        return live, first

    live, first = run(scenario)
    assert first not in list_segments(tmp_path)
    state = recover(tmp_path)
    assert state.report.problems == []
    recovered = state.queues["keep"].messages
    assert sorted(recovered) == sorted(live)
    assert [recovered[n].message for n in sorted(live)] == [sent[n] for n in sorted(live)]


def test_a_delivery_count_torn_off_its_copy_is_written_again_at_open(tmp_path: Path) -> None:
    """Regression (found by the crash-point test, rarely): an evacuation copy is followed by
    its MESSAGE_DELIVERED, and a crash can keep the copy but not that record (written with the
    next segment). Recovery gives the copy the count of the original, whose segment is still
    there; but nothing kept that segment once the journal went on, so the count was lost when
    it was deleted. The journal now writes such a count again when it opens."""
    keeper = message(1, size=3000)  # its copy keeps the second segment mostly live
    first = SegmentHeader(1).encode() + b"".join(
        (
            encode_queue_created("orders", "orders", None, QueueKind.QUEUE),
            encode_message_added("orders", 1, keeper),
            encode_queue_seq(RecordType.MESSAGE_DELIVERED, "orders", 1, 2),
        )
    )
    copy = SegmentHeader(2).encode() + encode_message_added("orders", 1, keeper)
    segment_path(tmp_path, 1).write_bytes(first)
    segment_path(tmp_path, 2).write_bytes(copy)
    assert recover(tmp_path).queues["orders"].messages[1].delivery_count == 2

    async def scenario() -> None:
        journal = open_journal(tmp_path, SMALL)
        await rotate_until_first_segment_is_gone(journal, after=1)
        assert 2 in list_segments(tmp_path)  # the copy's segment is still there
        await journal.close()

    run(scenario)
    state = recover(tmp_path)
    assert state.report.problems == []
    assert {seq: item.delivery_count for seq, item in state.queues["orders"].messages.items()} == {
        1: 2
    }


def test_the_journal_keeps_no_recovered_message_once_open_returns(tmp_path: Path) -> None:
    """What recovery hands over belongs to the broker: a message acked after a restart must
    be freed, so the journal may not hold the recovered state (it once did, for ever)."""

    async def first_run() -> None:
        journal = open_journal(tmp_path)
        journal.record_queue("orders", "orders", None)
        for n in range(1, 201):
            journal.record_message("orders", n, message(n, size=50_000))
        await journal.close()

    async def reopen() -> int:
        journal = Journal(tmp_path)
        tracemalloc.start()
        try:
            state = journal.open(asyncio.get_running_loop())
            assert len(state.queues["orders"].messages) == 200  # 10 MB of bodies
            del state
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await journal.close()
        return held

    run(first_run)
    assert run(reopen) < 2_000_000


def test_a_redelivery_hold_survives_a_restart_and_an_evacuation(tmp_path: Path) -> None:
    """A message held for a redelivery delay is held after a restart until the same moment:
    its MESSAGE_DELIVERED carries the end of the hold, the next delivery's record ends it, and
    an evacuated copy carries it on."""
    until = 1_795_000_000_000

    async def scenario() -> None:
        journal = open_journal(tmp_path, SMALL)
        journal.record_queue("orders", "orders", None)
        for n in (1, 2, 3):
            journal.record_message("orders", n, message(n, size=100))
            journal.record_delivery("orders", n, 1)
        journal.record_delivery("orders", 1, 1, until)  # nacked: held
        journal.record_delivery("orders", 2, 1, until)  # held, then delivered again
        journal.record_delivery("orders", 2, 2)
        await durable(journal)
        # Rotations until the first segment, whose messages are live, is evacuated.
        await rotate_until_first_segment_is_gone(journal, after=3)
        await journal.close()

    run(scenario)
    state = recover(tmp_path)
    assert state.report.problems == []
    assert {
        seq: (item.delivery_count, item.hold_until)
        for seq, item in state.queues["orders"].messages.items()
    } == {1: (1, until), 2: (2, 0), 3: (1, 0)}


def test_the_evacuation_reader_pauses_for_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker thread parsing a segment to evacuate lets go of the GIL every READ_STRIDE
    records (without it, the loop ran at half speed while a big segment was parsed, and
    scheduled firings were 100-400 ms late), and still finds every message record."""
    pauses: list[float] = []
    monkeypatch.setattr(compaction.time, "sleep", pauses.append)
    records = [encode_message_added("orders", n, message(n, size=10)) for n in range(1, 1001)]
    path = segment_path(tmp_path, 1)
    path.write_bytes(SegmentHeader(1).encode() + b"".join(records))
    found = compaction._read_message_records(path)
    assert sorted(found) == [("orders", n) for n in range(1, 1001)]
    assert found[("orders", 7)] == records[6]
    assert pauses == [compaction.READ_PAUSE] * (1000 // compaction.READ_STRIDE)

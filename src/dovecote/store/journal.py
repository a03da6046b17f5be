"""The append-only, segmented journal: the default store (DESIGN.md §4).

Threads: the event loop thread calls the Store port methods, which encode records and add them
to the pending batch; once per loop turn the batch goes to the single writer thread
(:mod:`dovecote.store.writer`), which writes it (rotating segments as the loop decided) and,
per the sync policy, fsyncs it. While it
does, the next batch fills. When a batch is durable the loop runs its callbacks (receipts).

Invariants:
- Only the writer thread touches segment files; only the loop thread touches accounting.
- A callback passed to :meth:`Journal.call_when_durable` runs after every record appended
  before it is durable (or, with sync ``never``/``interval``, written to the OS).
- A segment is deleted only when no live record remains in it, no surviving older segment
  holds a record its acks refer to, and all its records are written; the oldest closed
  segment, once mostly dead (or once the journal is mostly garbage), is evacuated: its live
  records (with their delivery counts) are appended anew and it is deleted when those are
  durable (:class:`~dovecote.store.compaction.Compaction`, mixed into :class:`Journal`).
- An atomic group (ATOMIC_BEGIN .. ATOMIC_COMMIT) is never split over two segments.
- On a write error (disk full, I/O error) the journal stops confirming, reports itself
  unavailable (the core then refuses persistent sends) and retries the same batch, after
  undoing the failed attempt (partial write cut off, segments it started removed), until it
  succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from dovecote.core.errors import StoreUnavailable
from dovecote.core.message import Message
from dovecote.store.compaction import Compaction
from dovecote.store.place import offset_of, pack_place, segment_of, size_of
from dovecote.store.record import (
    SEGMENT_HEADER,
    QueueKind,
    RecordType,
    decode_message_added,
    encode_delivered,
    encode_duplicate_id,
    encode_group,
    encode_message_added,
    encode_name,
    encode_queue_created,
    encode_queue_seq,
    read_record,
)
from dovecote.store.recovery import RecoveredState, recover, segment_path
from dovecote.store.writer import Batch, Job, JournalConfig, SegmentWriter, SyncPolicy

__all__ = ["Journal", "JournalConfig", "SyncPolicy"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 30.0  # seconds close() waits for an evacuation read, then for the last batch
LAZY_FLUSH_DELAY = 0.05  # seconds an ack may wait for a batch to ride with


class Journal(Compaction):
    """Implements the core's Store port on segment files in ``directory``."""

    def __init__(self, directory: Path, config: JournalConfig | None = None) -> None:
        self.directory = directory
        self.config = config or JournalConfig()
        self.available = True
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: SegmentWriter | None = None
        # Pending batch (loop thread).
        self._pending: list[tuple[int, bytes]] = []
        self._pending_callbacks: list[Callable[[], None]] = []
        self._unwritten: dict[tuple[str, int], int] = {}  # pending MESSAGE_ADDED -> its index
        self._placing: dict[int, tuple[str, int]] = {}  # pending index -> MESSAGE_ADDED key
        self._flushed_bytes: dict[int, int] = {}  # segment -> bytes handed to the writer
        self._readers: dict[int, int] = {}  # segment -> read-only fd, for paged bodies
        self._moving: dict[tuple[str, int], int] = {}  # evacuated, not yet rewritten -> old place
        self._flush_scheduled = False
        self._urgent = False  # pending holds a record or callback that must not wait
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._in_flight: Batch | None = None
        self._group_ids = 0
        self._atomic = False  # between begin_atomic and end_atomic
        # Accounting (loop thread).
        self._segment = 0
        self._segment_bytes = 0
        self._segments: set[int] = set()
        self._sizes: dict[int, int] = {}
        self._live: dict[int, int] = {}
        self._live_bytes: dict[int, int] = {}
        self._refs: dict[int, set[int]] = {}
        self._locations: dict[str, dict[int, int]] = {}  # queue -> seq -> packed place
        self._queue_defs: dict[str, tuple[bytes, int]] = {}  # name -> (record, segment)
        self._duplicates: dict[tuple[str, str], tuple[bytes, int]] = {}  # (address, id) -> same
        # queue -> seq -> (delivery count, end of the redelivery delay it waits out or 0)
        self._delivered: dict[str, dict[int, tuple[int, int]]] = {}
        self._evacuating: int | None = None
        self._closing = False
        self._evacuation_read: asyncio.Future[dict[tuple[str, int], bytes]] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def open(
        self, loop: asyncio.AbstractEventLoop, *, body_budget: int | None = None
    ) -> RecoveredState:
        """Recover the directory's state and start the writer. Call before any record.

        Bodies past ``body_budget`` bytes stay on disk (see :func:`recover`).
        """
        self._loop = loop
        self.directory.mkdir(parents=True, exist_ok=True)
        state = recover(self.directory, body_budget=body_budget)
        torn_counts = self._load_accounting(state)
        existing = sorted(self._segments)
        if existing:
            # Go on appending to the last segment (recovery truncated any torn tail).
            self._segment = existing[-1]
            self._segment_bytes = state.segment_sizes.get(self._segment, 0)
        else:
            self._segment, self._segment_bytes = 1, 0
        self._segments.add(self._segment)
        self._writer = SegmentWriter(
            self.directory,
            self.config,
            loop,
            self._segment,
            fresh=self._segment_bytes < SEGMENT_HEADER.size,
            on_done=self._batch_done,
            on_failed=self._batch_failed,
        )
        self._writer.start()
        if self._segment_bytes == 0:
            self._segment_bytes = SEGMENT_HEADER.size
        self._sizes[self._segment] = self._segment_bytes
        # A copy whose MESSAGE_DELIVERED was torn off by the crash: its count is only in the
        # records of an older copy, which may go now. Write it again, after the copy.
        for name, seq, count, hold_until in torn_counts:
            self.record_delivery(name, seq, count, hold_until)
        return state

    async def close(self) -> None:
        """Write and sync what is pending, then stop the writer."""
        if self._writer is None:
            return
        # No evacuation may append after the last batch this waits for (it would never be
        # written, while the accounting counted it): none starts now, and one whose segment
        # is being read is finished first.
        self._closing = True
        read = self._evacuation_read
        if (
            read is not None
            and not read.done()
            and await _within(asyncio.shield(read), "the evacuation read")
        ):
            await asyncio.sleep(0)  # (its done-callback, which appends the copies, runs first)
        done = asyncio.Event()
        self.call_when_durable(done.set)
        if self.available:
            await _within(done.wait(), "the last batch")
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        # No job may follow CLOSE (a segment deletion queued after it would never happen, while
        # the accounting had already forgotten the segment): stop reclaiming first.
        writer, self._writer = self._writer, None
        writer.stop()
        await asyncio.get_running_loop().run_in_executor(None, writer.join, 30)

    # --- Store port ---------------------------------------------------------------------------

    def is_available(self) -> bool:
        return self.available

    def record_queue(
        self, name: str, address: str, filter_: str | None, selector: str | None = None
    ) -> None:
        kind = QueueKind.QUEUE if filter_ is None else QueueKind.DURABLE_SUBSCRIPTION
        record = encode_queue_created(name, address, filter_, kind, selector)
        old = self._queue_defs.get(name)
        if old is not None:
            self._release(old[1], len(old[0]))
        self._append(record)
        self._hold(self._segment, len(record))
        self._queue_defs[name] = (record, self._segment)
        self._locations.setdefault(name, {})

    def forget_queue(self, name: str) -> None:
        self._append(encode_name(RecordType.QUEUE_DELETED, name))
        old = self._queue_defs.pop(name, None)
        if old is not None:
            self._refer(old[1])
            self._release(old[1], len(old[0]))
        for packed in self._locations.pop(name, {}).values():
            self._refer(segment_of(packed))
            self._release(segment_of(packed), size_of(packed))
        self._delivered.pop(name, None)

    def record_message(self, queue: str, seq: int, message: Message) -> None:
        record = encode_message_added(queue, seq, message)
        self._append(record)
        index = len(self._pending) - 1
        self._unwritten[(queue, seq)] = index
        self._placing[index] = (queue, seq)
        self._hold(self._segment, len(record))
        self._locations.setdefault(queue, {})[seq] = pack_place(self._segment, len(record))

    def record_ack(self, queue: str, seq: int) -> None:
        packed = self._locations.get(queue, {}).pop(seq, None)
        self._delivered.get(queue, {}).pop(seq, None)
        index = self._unwritten.pop((queue, seq), None)
        if index is not None:
            # Consumed before it was written: neither the message nor its ack need the disk
            # (what ActiveMQ calls concurrent store and dispatch). Its sender's receipt still
            # waits for the batch, so it never precedes anything recorded before it.
            segment, record = self._pending[index]
            self._pending[index] = (segment, b"")
            self._sizes[segment] -= len(record)
            if segment == self._segment:
                self._segment_bytes -= len(record)
            if packed is not None:
                self._release(segment_of(packed), size_of(packed))
            return
        self._append(encode_queue_seq(RecordType.MESSAGE_ACKED, queue, seq), lazy=True)
        if packed is not None:
            self._refer(segment_of(packed))
            self._release(segment_of(packed), size_of(packed))

    def record_delivery(
        self, queue: str, seq: int, delivery_count: int, hold_until: int = 0
    ) -> None:
        packed = self._locations.get(queue, {}).get(seq)
        if packed is None:
            return
        self._append(encode_delivered(queue, seq, delivery_count, hold_until), lazy=True)
        self._refer(segment_of(packed))
        self._delivered.setdefault(queue, {})[seq] = (delivery_count, hold_until)

    def is_on_disk(self, queue: str, seq: int) -> bool:
        """True once the message's record is written, so its body may leave memory."""
        packed = self._locations.get(queue, {}).get(seq)
        return packed is not None and (offset_of(packed) != 0 or (queue, seq) in self._moving)

    def load_body(self, queue: str, seq: int) -> bytes:
        """Read a paged-out message body back from its segment (page cache, usually)."""
        return self.load_message(queue, seq).body

    def load_message(self, queue: str, seq: int) -> Message:
        """Read a message back from its MESSAGE_ADDED record."""
        key = (queue, seq)
        packed = self._moving.get(key) or self._locations.get(queue, {}).get(seq)
        if packed is None or offset_of(packed) == 0:
            raise StoreUnavailable(f"message {queue}#{seq} is not in the journal")
        segment = segment_of(packed)
        fd = self._readers.get(segment)
        if fd is None:
            fd = self._readers[segment] = os.open(
                segment_path(self.directory, segment), os.O_RDONLY
            )
        data = os.pread(fd, size_of(packed), offset_of(packed))
        record = read_record(data, 0)
        if record is None or record[0] is not RecordType.MESSAGE_ADDED:
            raise StoreUnavailable(f"message {queue}#{seq} could not be read back")
        return decode_message_added(record[1])[2]

    def record_duplicate_id(self, address: str, seq: int, duplicate_id: str) -> None:
        record = encode_duplicate_id(address, seq, duplicate_id)
        self.forget_duplicate_id(address, duplicate_id)
        self._append(record)
        self._hold(self._segment, len(record))
        self._duplicates[(address, duplicate_id)] = (record, self._segment)

    def forget_duplicate_id(self, address: str, duplicate_id: str) -> None:
        old = self._duplicates.pop((address, duplicate_id), None)
        if old is not None:
            self._release(old[1], len(old[0]))

    def begin_atomic(self) -> None:
        self._group_ids += 1
        self._append(encode_group(RecordType.ATOMIC_BEGIN, self._group_ids))
        # A group stays in one segment (which may grow past segment_size for it): split over
        # two, one could be deleted without the other, and recovery would see a group that
        # never ends, swallowing every record after it.
        self._atomic = True

    def end_atomic(self) -> None:
        self._append(encode_group(RecordType.ATOMIC_COMMIT, self._group_ids))
        self._atomic = False

    def call_when_durable(self, callback: Callable[[], None]) -> None:
        if self._pending:
            self._pending_callbacks.append(callback)
            self._schedule_flush()
        elif self._in_flight is not None:
            self._in_flight.callbacks.append(callback)
        else:
            callback()

    # --- statistics ---------------------------------------------------------------------------

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def disk_bytes(self) -> int:
        return sum(self._sizes.get(s, 0) for s in self._segments)

    @property
    def live_bytes(self) -> int:
        return sum(self._live_bytes.values())

    # --- appending (loop thread) --------------------------------------------------------------

    def _append(self, record: bytes, *, lazy: bool = False) -> None:
        """Add ``record`` to the pending batch.

        A lazy record (an ack, a delivery count) does not start a batch of its own: it rides
        with the next one, or goes out after LAZY_FLUSH_DELAY. Losing one in a crash means a
        redelivery, never a loss, and it spares a consumer's acks an fsync each.
        """
        if (
            self._segment_bytes + len(record) > self.config.segment_size
            and self._segment_bytes > SEGMENT_HEADER.size
            and not self._atomic
        ):
            self._sizes[self._segment] = self._segment_bytes
            self._segment += 1
            self._segments.add(self._segment)
            self._segment_bytes = SEGMENT_HEADER.size
            self._schedule_reclaim()
        self._segment_bytes += len(record)
        self._sizes[self._segment] = self._segment_bytes
        self._pending.append((self._segment, record))
        if not lazy:
            self._schedule_flush()
        elif self._lazy_timer is None and not self._flush_scheduled:
            assert self._loop is not None
            self._lazy_timer = self._loop.call_later(LAZY_FLUSH_DELAY, self._flush)

    def _schedule_flush(self) -> None:
        self._urgent = True
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        if self._in_flight is not None or not self._pending or self._writer is None:
            return
        self._urgent = False
        self._unwritten.clear()
        pieces: list[tuple[int, bytes]] = []
        placed: list[tuple[str, int, int, int]] = []
        chunk: list[bytes] = []
        current = self._pending[0][0]
        placing = self._placing
        flushed = self._flushed_bytes
        for index, (segment, record) in enumerate(self._pending):
            if segment != current:
                if chunk:
                    pieces.append((current, b"".join(chunk)))
                chunk, current = [], segment
            if record:
                offset = flushed.get(segment, SEGMENT_HEADER.size)
                flushed[segment] = offset + len(record)
                chunk.append(record)
                key = placing.get(index)
                if key is not None:
                    placed.append((key[0], key[1], segment, offset))
        if chunk:
            pieces.append((current, b"".join(chunk)))
        batch = Batch(pieces, self._pending_callbacks, placed)
        self._pending = []
        self._pending_callbacks = []
        self._placing = {}
        if not pieces:
            # Every record was cancelled: nothing to write, and nothing is in flight before it.
            for callback in batch.callbacks:
                callback()
            return
        self._in_flight = batch
        self._writer.jobs.put(batch)

    def _batch_done(self, batch: Batch) -> None:
        """Loop thread: the writer made ``batch`` durable."""
        self._in_flight = None
        locations = self._locations
        for name, seq, segment, offset in batch.placed:
            seqs = locations.get(name)
            if seqs is None:
                continue
            packed = seqs.get(seq)
            if packed is not None and segment_of(packed) == segment:
                seqs[seq] = pack_place(segment, size_of(packed), offset)
        if not self.available:
            log.warning("journal writes succeed again; confirming resumes")
        self.available = True
        self.last_error = None
        for callback in batch.callbacks:
            callback()
        if self._urgent:
            self._flush()
        elif self._pending and self._lazy_timer is None:
            assert self._loop is not None
            self._lazy_timer = self._loop.call_later(LAZY_FLUSH_DELAY, self._flush)

    def _batch_failed(self, error: str) -> None:
        if self.available:
            log.error(
                "journal write failed (%s); refusing persistent messages until it succeeds", error
            )
        self.available = False
        self.last_error = error

    # --- reclaiming space (loop thread) -------------------------------------------------------

    def _hold(self, segment: int, size: int) -> None:
        self._live[segment] = self._live.get(segment, 0) + 1
        self._live_bytes[segment] = self._live_bytes.get(segment, 0) + size

    def _release(self, segment: int, size: int) -> None:
        self._live[segment] -= 1
        self._live_bytes[segment] -= size
        if self._live[segment] == 0 and segment != self._segment:
            self._schedule_reclaim()

    def _refer(self, older: int) -> None:
        if older != self._segment:
            self._refs.setdefault(self._segment, set()).add(older)

    def _schedule_reclaim(self) -> None:
        assert self._loop is not None
        self._loop.call_soon(self._reclaim)

    def _reclaim(self) -> None:
        """Delete dead segments; evacuate the oldest closed one if it is mostly dead."""
        if self._writer is None:
            return
        closed = sorted(s for s in self._segments if s != self._segment)
        # Not yet: a segment whose records still wait in the pending batch (the writer would
        # create it again after deleting it), or one being evacuated (until its copies are
        # durable; then ``done`` comes back here).
        unwritten = {segment for segment, record in self._pending if record}
        for segment in closed:
            if self._live.get(segment, 0) == 0 and not (
                self._refs.get(segment, set()) & self._segments
            ):
                if segment in unwritten:
                    self.call_when_durable(self._schedule_reclaim)
                elif segment != self._evacuating:
                    self._delete(segment)
        closed = sorted(s for s in self._segments if s != self._segment)
        if not closed or self._evacuating is not None or self._closing:
            return
        oldest = closed[0]
        size = self._sizes.get(oldest, 0)
        # Mostly dead; or, however live it is, the journal is mostly garbage: the acks in a
        # later segment that refer to this one keep that segment, whose own referrers keep
        # theirs, and so on: a chain only this segment's going can undo.
        garbage = self.disk_bytes - self.live_bytes > self.live_bytes + 4 * self.config.segment_size
        if self._live_bytes.get(oldest, 0) < self.config.evacuate_below * size or garbage:
            self._evacuate(oldest)

    def _delete(self, segment: int) -> None:
        self._segments.discard(segment)
        fd = self._readers.pop(segment, None)
        if fd is not None:
            os.close(fd)
        self._flushed_bytes.pop(segment, None)
        self._sizes.pop(segment, None)
        self._live.pop(segment, None)
        self._live_bytes.pop(segment, None)
        self._refs.pop(segment, None)
        assert self._writer is not None
        self._writer.jobs.put((Job.DELETE, segment))

    def _load_accounting(self, state: RecoveredState) -> list[tuple[str, int, int, int]]:
        """Take over what recovery found; returns the delivery counts to write again (a copy
        whose MESSAGE_DELIVERED a crash tore off: see RecoveredMessage.count_recorded)."""
        self._segments = set(state.segments) - set(state.report.dropped_segments)
        self._sizes = dict(state.segment_sizes)
        self._flushed_bytes = {s: max(size, SEGMENT_HEADER.size) for s, size in self._sizes.items()}
        self._refs = {s: set(r) for s, r in state.references.items()}
        torn_counts: list[tuple[str, int, int, int]] = []
        live, live_bytes = self._live, self._live_bytes
        for queue_state in state.queues.values():
            name = queue_state.name
            record = encode_queue_created(
                name,
                queue_state.address,
                queue_state.filter,
                queue_state.kind,
                queue_state.selector,
            )
            self._queue_defs[name] = (record, queue_state.segment)
            self._hold(queue_state.segment, len(record))
            seqs = self._locations.setdefault(name, {})
            delivered: dict[int, tuple[int, int]] = {}
            # One pass per message of a backlog of millions at start-up: _hold written out.
            for seq, item in queue_state.messages.items():
                segment, size = item.segment, item.size
                seqs[seq] = pack_place(segment, size, item.offset)
                live[segment] = live.get(segment, 0) + 1
                live_bytes[segment] = live_bytes.get(segment, 0) + size
                if item.delivery_count:
                    delivered[seq] = (item.delivery_count, item.hold_until)
                    if not item.count_recorded:
                        torn_counts.append((name, seq, item.delivery_count, item.hold_until))
            if delivered:
                self._delivered.setdefault(name, {}).update(delivered)
        for address, ids in state.duplicate_ids.items():
            for duplicate_id, found in ids.items():
                record = encode_duplicate_id(address, found.seq, duplicate_id)
                self._duplicates[(address, duplicate_id)] = (record, found.segment)
                self._hold(found.segment, len(record))
        return torn_counts


async def _within(waiting: Awaitable[object], what: str) -> bool:
    """Await ``waiting`` for at most CLOSE_TIMEOUT; False (logged) if it took longer. Closing
    goes on regardless: what was not durable by then was never confirmed."""
    try:
        await asyncio.wait_for(waiting, timeout=CLOSE_TIMEOUT)
    except TimeoutError:
        log.warning("journal close: gave up waiting for %s after %s s", what, CLOSE_TIMEOUT)
        return False
    return True

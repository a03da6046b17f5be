"""Compaction: evacuating the journal's oldest closed segment (DESIGN.md §4).

When :meth:`Journal._reclaim <dovecote.store.journal.Journal._reclaim>` finds the oldest
closed segment mostly dead (or the journal mostly garbage), it evacuates it: the segment's
live records are appended anew (to the current segment) and it is deleted once those copies
are durable. :class:`Compaction` is mixed into :class:`~dovecote.store.journal.Journal`,
which owns the state it works on.

Invariants:
- The segment is read and parsed on a worker thread (:func:`_read_message_records` touches
  nothing but the file); everything else runs on the loop thread.
- While ``_evacuating`` names a segment, that segment is not deleted and no other evacuation
  starts. It is cleared once the copies are durable, or at once if the read failed, was
  cancelled or ended after the journal closed. A slice still scheduled when the journal
  closed does nothing: the segment stays, with what was not copied (recovery takes a copy
  over its original).
- Only live records are copied: a message acknowledged meanwhile no longer has its place in
  the segment and is skipped. The queue definitions and duplicate ids kept in the segment are
  appended again too.
- A copy outlives its original (the copy's segment refers to the original's) and is followed
  by a MESSAGE_DELIVERED with the message's delivery count and hold, if it has one. Until the
  copy is written, the message is read back from the original (``_moving``).
- Copies are appended ``evacuation_slice`` per loop turn; while closing, the rest at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from dovecote.store.place import pack_place, segment_of, size_of
from dovecote.store.record import (
    SEGMENT_HEADER,
    RecordType,
    encode_delivered,
    peek_queue_seq,
    read_record,
)
from dovecote.store.recovery import segment_path

if TYPE_CHECKING:
    from dovecote.store.writer import JournalConfig, SegmentWriter

log = logging.getLogger(__name__)

_K = TypeVar("_K")  # the key of a table of kept records (see Compaction._move_kept)
# The worker thread reading a segment to evacuate pauses this long after every READ_STRIDE
# records: it needs the GIL as much as the event loop does, and without pauses the two share
# it half and half (the 5 ms switch interval), so the loop ran at half speed for the second or
# so a 32 MiB segment takes to parse: scheduled messages due then fired 100-400 ms late.
READ_STRIDE = 256
READ_PAUSE = 0.0005  # seconds


class Compaction:
    # The journal's own state (set by Journal.__init__).
    directory: Path
    config: JournalConfig
    _loop: asyncio.AbstractEventLoop | None
    _writer: SegmentWriter | None
    _pending: list[tuple[int, bytes]]
    _placing: dict[int, tuple[str, int]]
    _moving: dict[tuple[str, int], int]
    _segment: int
    _refs: dict[int, set[int]]
    _locations: dict[str, dict[int, int]]
    _queue_defs: dict[str, tuple[bytes, int]]
    _duplicates: dict[tuple[str, str], tuple[bytes, int]]
    _delivered: dict[str, dict[int, tuple[int, int]]]
    _evacuating: int | None
    _closing: bool
    _evacuation_read: asyncio.Future[dict[tuple[str, int], bytes]] | None

    if TYPE_CHECKING:  # implemented by Journal

        def call_when_durable(self, callback: Callable[[], None]) -> None: ...
        def _append(self, record: bytes, *, lazy: bool = False) -> None: ...
        def _hold(self, segment: int, size: int) -> None: ...
        def _release(self, segment: int, size: int) -> None: ...
        def _refer(self, older: int) -> None: ...
        def _schedule_reclaim(self) -> None: ...

    def _evacuate(self, segment: int) -> None:
        """Append the live records of ``segment`` anew, then delete it once they are durable.

        The (closed) segment is read and parsed on a worker thread: on the loop, a 32 MiB
        segment stalled every connection for most of a second. Its records are appended when
        the read is done, skipping those acknowledged meanwhile; until then ``_evacuating``
        keeps the segment from being deleted or another evacuation from starting."""
        self._evacuating = segment
        assert self._loop is not None
        path = segment_path(self.directory, segment)
        future = self._loop.run_in_executor(None, _read_message_records, path)
        future.add_done_callback(lambda read: self._evacuate_records(segment, read))
        self._evacuation_read = future

    def _evacuate_records(
        self, segment: int, read: asyncio.Future[dict[tuple[str, int], bytes]]
    ) -> None:
        """Loop thread: the segment's MESSAGE_ADDED records are read; copy the live ones."""
        self._evacuation_read = None
        if self._writer is None or read.cancelled():
            self._evacuating = None
            return
        error = read.exception()
        if error is not None:
            log.error("could not read segment %d to evacuate it: %s", segment, error)
            self._evacuating = None
            return
        records = read.result()
        self._move_kept(self._queue_defs, segment)
        self._move_kept(self._duplicates, segment)
        self._copy_live(segment, list(records.items()), 0)

    def _move_kept(self, kept: dict[_K, tuple[bytes, int]], segment: int) -> None:
        """Append again the records of ``kept`` (queue definitions, duplicate ids: record and
        segment by key) that are in ``segment``, which is being evacuated."""
        for key, (record, where) in list(kept.items()):
            if where == segment:
                self._release(where, len(record))
                self._append(record)
                self._hold(self._segment, len(record))
                kept[key] = (record, self._segment)

    def _copy_live(
        self, segment: int, records: list[tuple[tuple[str, int], bytes]], start: int
    ) -> None:
        """Loop thread: append the copies of the next ``evacuation_slice`` of ``segment``'s
        message records, those still live, then yield to the loop (a segment of small records
        can hold 100,000 live ones: copied at once, they stalled every connection, and every
        scheduled message due, for a tenth of a second); once all are copied, delete the
        segment when they are durable. While closing, the rest is copied at once: close()
        finishes an evacuation whose read it waited for, in its last batch. Once closed, a
        slice still scheduled does nothing: the segment stays, marked as being evacuated,
        with what was not copied (recovery takes a copy over its original)."""
        if self._writer is None:
            return
        end = len(records) if self._closing else start + self.config.evacuation_slice
        for (name, seq), record in records[start:end]:
            packed = self._locations.get(name, {}).get(seq)
            if packed is not None and segment_of(packed) == segment:  # (else acked meanwhile)
                self._copy(segment, name, seq, packed, record)
        if end < len(records):
            assert self._loop is not None
            self._loop.call_soon(self._copy_live, segment, records, end)
            return

        def done() -> None:
            self._evacuating = None
            self._moving.clear()
            self._refs.pop(segment, None)  # its acks refer to nothing that still matters
            self._schedule_reclaim()

        self.call_when_durable(done)

    def _copy(self, segment: int, name: str, seq: int, packed: int, record: bytes) -> None:
        self._release(segment, size_of(packed))
        self._append(record)
        self._placing[len(self._pending) - 1] = (name, seq)
        self._moving[(name, seq)] = packed  # still readable there until rewritten
        self._hold(self._segment, len(record))
        self._locations[name][seq] = pack_place(self._segment, len(record))
        # The copy outlives the original (else acks of the copy could go first and the
        # original come back), and carries its delivery count (else it is lost with it).
        self._refer(segment)
        delivered = self._delivered.get(name, {}).get(seq)
        if delivered is not None:
            copy_segment = self._segment
            self._append(encode_delivered(name, seq, *delivered))
            self._refer(copy_segment)


def _read_message_records(path: Path) -> dict[tuple[str, int], bytes]:
    """Raw MESSAGE_ADDED records of ``path`` by (queue, seq) (the last one of each). Runs on a
    worker thread: it touches nothing but the file."""
    found: dict[tuple[str, int], bytes] = {}
    data = path.read_bytes()
    offset = SEGMENT_HEADER.size
    count = 0
    while offset < len(data):
        record = read_record(data, offset)
        if record is None:
            break
        kind, payload, next_offset = record
        if kind is RecordType.MESSAGE_ADDED:
            found[peek_queue_seq(payload)] = data[offset:next_offset]
        offset = next_offset
        count += 1
        if count % READ_STRIDE == 0:
            time.sleep(READ_PAUSE)  # (lets the loop have the GIL: see READ_STRIDE)
    return found

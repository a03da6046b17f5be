"""Rebuild the broker's durable state from the journal's segments, in order.

Invariants:
- Replay stops at the first record that is torn (incomplete) or corrupt (bad checksum,
  unknown type, impossible length). Any later segments are renamed ``*.dropped`` (kept for
  inspection, never replayed), durably, and then the segment is truncated there. The report
  says what was lost.
- Records between ATOMIC_BEGIN and ATOMIC_COMMIT apply together: a group cut off by the end of
  the journal is discarded (a transaction whose commit was never confirmed) and cut off the
  disk from its ATOMIC_BEGIN on, so that records appended later are never taken for its part.
- A segment of an unsupported format version stops recovery with an error and changes
  nothing on disk: a newer broker's data is never truncated by an older one.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dovecote.core.message import Message
from dovecote.store.record import (
    SEGMENT_HEADER,
    CorruptRecord,
    Payload,
    QueueKind,
    RecordType,
    SegmentHeader,
    decode_delivered,
    decode_duplicate_id,
    decode_group,
    decode_message_added,
    decode_name,
    decode_queue_created,
    decode_queue_selector,
    decode_queue_seq,
    read_record,
)

log = logging.getLogger(__name__)

SEGMENT_NAME = re.compile(r"^segment-(\d{8})\.log$")


def segment_path(directory: Path, segment_id: int) -> Path:
    return directory / f"segment-{segment_id:08d}.log"


def list_segments(directory: Path) -> list[int]:
    """Segment ids present in ``directory``, ascending."""
    ids = []
    for entry in os.listdir(directory):
        match = SEGMENT_NAME.match(entry)
        if match:
            ids.append(int(match.group(1)))
    return sorted(ids)


@dataclass(slots=True)
class RecoveredMessage:
    message: Message
    segment: int
    offset: int  # of its MESSAGE_ADDED record in the segment file
    size: int  # of that record
    delivery_count: int = 0
    paged: bool = False  # body left on disk (``message.body`` is empty) to bound memory
    # False when the count was inherited from an earlier copy and no MESSAGE_DELIVERED follows
    # this record (a crash tore it off): the records that hold it may be deleted now that the
    # copy is the message's place, so the journal writes the count again (Journal.open).
    count_recorded: bool = True
    # When the redelivery delay the message was waiting out at the end ends (epoch ms; 0:
    # none): it is held until then after the restart too.
    hold_until: int = 0


@dataclass(slots=True)
class RecoveredQueue:
    name: str
    address: str
    filter: str | None
    kind: QueueKind
    segment: int  # where its QUEUE_CREATED record is (-1: not seen yet)
    messages: dict[int, RecoveredMessage] = field(default_factory=dict)
    selector: str | None = None  # a durable subscription's selector text

    @property
    def is_defined(self) -> bool:
        return self.segment >= 0


@dataclass(frozen=True, slots=True)
class RecoveredDuplicate:
    seq: int  # orders the ids of one address (oldest first)
    segment: int  # where its (latest) DUPLICATE_ID record is


@dataclass(slots=True)
class RecoveryReport:
    segments: int = 0
    records: int = 0
    bytes_read: int = 0
    truncated_bytes: int = 0
    dropped_segments: list[int] = field(default_factory=list)
    discarded_groups: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def is_clean(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class RecoveredState:
    queues: dict[str, RecoveredQueue] = field(default_factory=dict)
    segments: list[int] = field(default_factory=list)
    segment_sizes: dict[int, int] = field(default_factory=dict)
    # segment -> older segments its acks/deletes refer to (they must outlive it)
    references: dict[int, set[int]] = field(default_factory=dict)
    # address -> duplicate-detection id -> where (see DUPLICATE_ID)
    duplicate_ids: dict[str, dict[str, RecoveredDuplicate]] = field(default_factory=dict)
    report: RecoveryReport = field(default_factory=RecoveryReport)


class _Replayer:
    """Applies records to a RecoveredState, buffering atomic groups."""

    def __init__(self, state: RecoveredState, body_budget: int | None) -> None:
        self.state = state
        self.body_budget = body_budget  # body bytes kept in memory; the rest stay on disk
        self.group: list[tuple[RecordType, Payload, int, int, int]] | None = None
        self.group_start: tuple[int, int] = (0, 0)  # (segment, offset) of its ATOMIC_BEGIN

    def feed(
        self, kind: RecordType, payload: Payload, segment: int, offset: int, size: int
    ) -> None:
        if kind is RecordType.ATOMIC_BEGIN:
            decode_group(payload)
            self.group = []
            self.group_start = (segment, offset)
        elif kind is RecordType.ATOMIC_COMMIT:
            decode_group(payload)
            group, self.group = self.group or [], None
            for item in group:
                self.apply(*item)
        elif self.group is not None:
            self.group.append((kind, payload, segment, offset, size))
        else:
            self.apply(kind, payload, segment, offset, size)

    def apply(
        self, kind: RecordType, payload: Payload, segment: int, offset: int, size: int
    ) -> None:
        # The common records first: recovery applies one per message and one per ack.
        if kind is RecordType.MESSAGE_ADDED:
            self.add_message(payload, segment, offset, size)
        elif kind is RecordType.MESSAGE_ACKED:
            queue_name, seq, _ = decode_queue_seq(payload)
            queue = self.state.queues.get(queue_name)
            acked = queue.messages.pop(seq, None) if queue is not None else None
            if acked is not None and acked.segment != segment:
                self._refer(segment, acked.segment)
        elif kind is RecordType.MESSAGE_DELIVERED:
            queue_name, seq, count, hold_until = decode_delivered(payload)
            queue = self.state.queues.get(queue_name)
            delivered = queue.messages.get(seq) if queue is not None else None
            if delivered is not None and count is not None:
                if count >= delivered.delivery_count:
                    # (A hold is written with the count of the delivery it follows; the
                    # next delivery's record, without one, ends it.)
                    delivered.delivery_count = count
                    delivered.hold_until = hold_until
                    delivered.count_recorded = True
                self._refer(segment, delivered.segment)
        elif kind is RecordType.DUPLICATE_ID:
            address, seq, duplicate_id = decode_duplicate_id(payload)
            ids = self.state.duplicate_ids.setdefault(address, {})
            ids[duplicate_id] = RecoveredDuplicate(seq, segment)
        elif kind is RecordType.QUEUE_CREATED:
            self._define_queue(payload, segment)
        elif kind is RecordType.QUEUE_DELETED:
            gone = self.state.queues.pop(decode_name(payload), None)
            if gone is not None:
                self._refer(segment, gone.segment)
                for item in gone.messages.values():
                    self._refer(segment, item.segment)

    def add_message(self, payload: Payload, segment: int, offset: int, size: int) -> None:
        budget = self.body_budget
        keep = budget is None or len(payload) <= budget
        queue_name, seq, message = decode_message_added(payload, with_body=keep)
        queue = self.state.queues.get(queue_name)
        if queue is None:
            # Defined later in the journal (or, if never, kept as a plain queue).
            queue = RecoveredQueue(queue_name, queue_name, None, QueueKind.QUEUE, -1)
            self.state.queues[queue_name] = queue
        item = RecoveredMessage(message, segment, offset, size, 0, not keep)
        if budget is not None and keep:
            self.body_budget = budget - len(payload)
        original = queue.messages.get(seq)
        if original is not None:
            # An evacuated copy while the original's segment still exists: the copy keeps
            # its delivery count, and must outlive it (acks of the copy refer to the copy).
            item.delivery_count = original.delivery_count
            item.hold_until = original.hold_until
            item.count_recorded = not original.delivery_count
            self._refer(segment, original.segment)
        queue.messages[seq] = item

    def _define_queue(self, payload: Payload, segment: int) -> None:
        queues = self.state.queues
        name, address, filter_, queue_kind = decode_queue_created(payload)
        selector = decode_queue_selector(payload)
        existing = queues.get(name)
        if existing is not None and not existing.is_defined:
            # Its messages came first: evacuation rewrites a definition after them.
            existing.address, existing.filter, existing.kind = address, filter_, queue_kind
            existing.segment, existing.selector = segment, selector
        elif existing is None or existing.filter != filter_ or existing.selector != selector:
            queues[name] = RecoveredQueue(
                name, address, filter_, queue_kind, segment, selector=selector
            )
        else:
            existing.segment = segment

    def _refer(self, segment: int, older: int) -> None:
        if older != segment:
            self.state.references.setdefault(segment, set()).add(older)


def recover(directory: Path, *, body_budget: int | None = None) -> RecoveredState:
    """Replay every segment in ``directory``; truncate at the first bad record (see module).

    With ``body_budget``, message bodies beyond that many bytes are left on disk (paged).
    """
    state = RecoveredState()
    report = state.report
    replayer = _Replayer(state, body_budget)
    segment_ids = list_segments(directory)
    for index, segment_id in enumerate(segment_ids):
        path = segment_path(directory, segment_id)
        data = _map(path)
        report.bytes_read += len(data)
        good_end, problem = _replay_segment(data, segment_id, replayer, report)
        state.segments.append(segment_id)
        report.segments += 1
        if problem is None:
            state.segment_sizes[segment_id] = len(data)
            continue
        # Stop here: set the later segments aside, then truncate this one.
        lost = len(data) - good_end
        report.truncated_bytes += lost
        report.problems.append(
            f"segment {segment_id}: {problem} at offset {good_end}; truncated {lost} bytes"
        )
        _set_aside(directory, segment_ids[index + 1 :], report, "after a bad record")
        _truncate(path, good_end)
        state.segment_sizes[segment_id] = good_end
        break
    for queue_state in state.queues.values():
        if not queue_state.is_defined:
            queue_state.segment = state.segments[0] if state.segments else 0
            report.problems.append(
                f"queue {queue_state.name!r} has messages but no definition; "
                "kept as a queue of that name"
            )
    if replayer.group is not None:
        _cut_open_group(directory, state, replayer)
    for problem in report.problems:
        log.warning("journal recovery: %s", problem)
    return state


def _map(path: Path) -> memoryview:
    """The whole segment, mapped read-only: records are decoded straight from the page
    cache, with no copy of the file. (Its last view going away unmaps it.)"""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ))


def _cut_open_group(directory: Path, state: RecoveredState, replayer: _Replayer) -> None:
    """Discard the atomic group the journal ends in (its commit was never written) and cut it
    off the disk: left there, it would swallow every record appended after it at the next
    recovery. Everything from its ATOMIC_BEGIN on belongs to it."""
    assert replayer.group is not None
    report = state.report
    segment_id, offset = replayer.group_start
    lost = state.segment_sizes[segment_id] - offset
    report.discarded_groups += 1
    report.truncated_bytes += lost
    report.problems.append(
        f"segment {segment_id}: an atomic group of {len(replayer.group)} records had no commit "
        f"at offset {offset}; truncated {lost} bytes"
    )
    later = [s for s in state.segments if s > segment_id and s not in report.dropped_segments]
    _set_aside(directory, later, report, "after an uncommitted group")
    for segment in later:
        state.segment_sizes.pop(segment, None)
    _truncate(segment_path(directory, segment_id), offset)
    state.segment_sizes[segment_id] = offset
    replayer.group = None


def _set_aside(directory: Path, segment_ids: list[int], report: RecoveryReport, why: str) -> None:
    """Rename segments ``*.dropped`` (kept for inspection, never replayed), durably: before
    anything earlier is truncated, so that a crash cannot leave them after a hole."""
    for segment_id in segment_ids:
        path = segment_path(directory, segment_id)
        dropped = path.with_suffix(".dropped")
        path.rename(dropped)
        report.dropped_segments.append(segment_id)
        report.problems.append(f"segment {segment_id}: set aside as {dropped.name} ({why})")
    report.dropped_segments.sort()
    if segment_ids:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())


def _replay_segment(
    data: memoryview, segment_id: int, replayer: _Replayer, report: RecoveryReport
) -> tuple[int, str | None]:
    """Replay one segment; returns (end of the last good record, problem or None)."""
    if len(data) < SEGMENT_HEADER.size:
        return 0, "segment header is truncated"
    try:
        header = SegmentHeader.decode(data)
    except CorruptRecord as exc:
        return 0, str(exc)
    if header.segment_id != segment_id:
        return 0, f"segment header names segment {header.segment_id}"
    offset = SEGMENT_HEADER.size
    size = len(data)
    records = 0
    added, add_message = RecordType.MESSAGE_ADDED, replayer.add_message
    try:
        while offset < size:
            record = read_record(data, offset)
            if record is None:
                return offset, "torn record"
            kind, payload, next_offset = record
            if kind is added and replayer.group is None:
                add_message(payload, segment_id, offset, next_offset - offset)  # most records
            else:
                replayer.feed(kind, payload, segment_id, offset, next_offset - offset)
            records += 1
            offset = next_offset
    except CorruptRecord as exc:
        return offset, str(exc)
    finally:
        report.records += records
    return offset, None

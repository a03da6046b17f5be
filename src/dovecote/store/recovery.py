"""Rebuild the broker's durable state from the journal's segments, in order.

Invariants:
- Replay stops at the first record that is torn (incomplete) or corrupt (bad checksum,
  unknown type, impossible length). The segment is truncated there; any later segments are
  renamed ``*.dropped`` (kept for inspection, never replayed). The report says what was lost.
- Records between ATOMIC_BEGIN and ATOMIC_COMMIT apply together: a group cut off by the end of
  the journal is discarded (a transaction whose commit was never confirmed).
- A segment of an unsupported format version stops recovery with an error and changes
  nothing on disk: a newer broker's data is never truncated by an older one.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dovecote.core.message import Message
from dovecote.store.record import (
    SEGMENT_HEADER,
    CorruptRecord,
    QueueKind,
    RecordType,
    SegmentHeader,
    decode_group,
    decode_message_added,
    decode_name,
    decode_queue_created,
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
    delivery_count: int = 0


@dataclass(slots=True)
class RecoveredQueue:
    name: str
    address: str
    filter: str | None
    kind: QueueKind
    segment: int  # where its QUEUE_CREATED record is
    messages: dict[int, RecoveredMessage] = field(default_factory=dict)


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
    report: RecoveryReport = field(default_factory=RecoveryReport)


class _Replayer:
    """Applies records to a RecoveredState, buffering atomic groups."""

    def __init__(self, state: RecoveredState) -> None:
        self.state = state
        self.group: list[tuple[RecordType, bytes, int]] | None = None

    def feed(self, kind: RecordType, payload: bytes, segment: int) -> None:
        if kind is RecordType.ATOMIC_BEGIN:
            decode_group(payload)
            self.group = []
        elif kind is RecordType.ATOMIC_COMMIT:
            decode_group(payload)
            group, self.group = self.group or [], None
            for item in group:
                self.apply(*item)
        elif self.group is not None:
            self.group.append((kind, payload, segment))
        else:
            self.apply(kind, payload, segment)

    def apply(self, kind: RecordType, payload: bytes, segment: int) -> None:
        queues = self.state.queues
        if kind is RecordType.QUEUE_CREATED:
            name, address, filter_, queue_kind = decode_queue_created(payload)
            existing = queues.get(name)
            if existing is None or existing.filter != filter_:
                queues[name] = RecoveredQueue(name, address, filter_, queue_kind, segment)
        elif kind is RecordType.QUEUE_DELETED:
            name = decode_name(payload)
            gone = queues.pop(name, None)
            if gone is not None:
                self._refer(segment, gone.segment)
                for item in gone.messages.values():
                    self._refer(segment, item.segment)
        elif kind is RecordType.MESSAGE_ADDED:
            queue_name, seq, message = decode_message_added(payload)
            queue = queues.get(queue_name)
            if queue is None:
                self.state.report.problems.append(
                    f"message for unknown queue {queue_name!r} ignored"
                )
                return
            queue.messages[seq] = RecoveredMessage(message, segment)
        elif kind is RecordType.MESSAGE_ACKED:
            queue_name, seq, _ = decode_queue_seq(payload)
            queue = queues.get(queue_name)
            acked = queue.messages.pop(seq, None) if queue is not None else None
            if acked is not None:
                self._refer(segment, acked.segment)
        elif kind is RecordType.MESSAGE_DELIVERED:
            queue_name, seq, count = decode_queue_seq(payload)
            queue = queues.get(queue_name)
            delivered = queue.messages.get(seq) if queue is not None else None
            if delivered is not None and count is not None:
                delivered.delivery_count = max(delivered.delivery_count, count)
                self._refer(segment, delivered.segment)

    def _refer(self, segment: int, older: int) -> None:
        if older != segment:
            self.state.references.setdefault(segment, set()).add(older)


def recover(directory: Path) -> RecoveredState:
    """Replay every segment in ``directory``; truncate at the first bad record (see module)."""
    state = RecoveredState()
    report = state.report
    replayer = _Replayer(state)
    segment_ids = list_segments(directory)
    for index, segment_id in enumerate(segment_ids):
        path = segment_path(directory, segment_id)
        data = path.read_bytes()
        report.bytes_read += len(data)
        good_end, problem = _replay_segment(data, segment_id, replayer, report)
        state.segments.append(segment_id)
        report.segments += 1
        if problem is None:
            state.segment_sizes[segment_id] = len(data)
            continue
        # Stop here: truncate this segment and set the later ones aside.
        lost = len(data) - good_end
        report.truncated_bytes += lost
        report.problems.append(
            f"segment {segment_id}: {problem} at offset {good_end}; truncated {lost} bytes"
        )
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
            handle.flush()
            os.fsync(handle.fileno())
        state.segment_sizes[segment_id] = good_end
        for later in segment_ids[index + 1 :]:
            later_path = segment_path(directory, later)
            later_path.rename(later_path.with_suffix(".dropped"))
            report.dropped_segments.append(later)
            report.problems.append(
                f"segment {later}: set aside as {later_path.name}.dropped (after a bad record)"
            )
        break
    if replayer.group is not None:
        report.discarded_groups += 1
        report.problems.append(
            f"an atomic group of {len(replayer.group)} records had no commit and was discarded"
        )
    for problem in report.problems:
        log.warning("journal recovery: %s", problem)
    return state


def _replay_segment(
    data: bytes, segment_id: int, replayer: _Replayer, report: RecoveryReport
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
    view = memoryview(data)
    while offset < len(data):
        try:
            record = read_record(view, offset)
        except CorruptRecord as exc:
            return offset, str(exc)
        if record is None:
            return offset, "torn record"
        kind, payload, next_offset = record
        try:
            replayer.feed(kind, payload, segment_id)
        except CorruptRecord as exc:
            return offset, str(exc)
        report.records += 1
        offset = next_offset
    return offset, None

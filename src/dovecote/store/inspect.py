"""Read-only views of a journal directory: ``dovecote store check`` and ``store dump``.

Neither changes anything on disk (recovery, at broker start, is what truncates).

Besides each record's framing and checksum, both report a journal that ends inside an atomic
group (an ATOMIC_BEGIN whose ATOMIC_COMMIT was never written): every record is well formed,
but recovery will discard the group and cut the journal off at its ATOMIC_BEGIN. Groups are
followed as recovery follows them (:class:`_OpenGroup`): up to the first other problem, where
recovery stops reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dovecote.store.record import (
    SEGMENT_HEADER,
    CorruptRecord,
    RecordType,
    SegmentHeader,
    UnsupportedFormat,
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
from dovecote.store.recovery import list_segments, segment_path


@dataclass(slots=True)
class CheckResult:
    segments: int = 0
    records: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def is_ok(self) -> bool:
        return not self.problems


def journal_directory(path: Path) -> Path:
    """Accept either the broker's data directory or its ``journal`` folder."""
    return path / "journal" if (path / "journal").is_dir() else path


def check(directory: Path) -> CheckResult:
    """Verify every segment header and record checksum, and that the journal does not end
    inside an atomic group; report each problem found."""
    result = CheckResult()
    group = _OpenGroup()
    for segment_id, offset, item in _walk(journal_directory(directory), result):
        group.follow(item, segment_id, offset)
        if isinstance(item, str):
            result.problems.append(f"segment {segment_id} offset {offset}: {item}")
        else:
            result.records += 1
    if group.start is not None:
        segment_id, offset = group.start
        result.problems.append(f"segment {segment_id} offset {offset}: {group.describe()}")
    return result


def dump(directory: Path) -> Iterator[str]:
    """One human-readable line per record, then any problems."""
    result = CheckResult()
    group = _OpenGroup()
    for segment_id, offset, item in _walk(journal_directory(directory), result):
        group.follow(item, segment_id, offset)
        if isinstance(item, str):
            yield f"{segment_id:08d}:{offset:<10d} !! {item}"
        else:
            kind, payload = item
            yield f"{segment_id:08d}:{offset:<10d} {describe(kind, payload)}"
    if group.start is not None:
        segment_id, offset = group.start
        yield f"{segment_id:08d}:{offset:<10d} !! {group.describe()}"


@dataclass(slots=True)
class _OpenGroup:
    """The atomic group open at the end of the journal, if any, as recovery sees it
    (``recovery._Replayer.feed``): an ATOMIC_BEGIN opens one (a new one replaces it), an
    ATOMIC_COMMIT closes it; recovery reads no further than the first problem, nor does this."""

    start: tuple[int, int] | None = None  # (segment, offset) of its ATOMIC_BEGIN
    records: int = 0  # records after its ATOMIC_BEGIN
    stopped: bool = False

    def follow(self, item: str | tuple[RecordType, bytes], segment_id: int, offset: int) -> None:
        if self.stopped:
            return
        if isinstance(item, str):
            self.stopped = True
        elif item[0] is RecordType.ATOMIC_BEGIN:
            self.start = (segment_id, offset)
            self.records = 0
        elif item[0] is RecordType.ATOMIC_COMMIT:
            self.start = None
        elif self.start is not None:
            self.records += 1

    def describe(self) -> str:
        plural = "" if self.records == 1 else "s"
        return (
            f"the journal ends inside an atomic group (ATOMIC_BEGIN, no ATOMIC_COMMIT) of "
            f"{self.records} record{plural}; recovery will discard them and cut the journal "
            "off at this offset"
        )


def describe(kind: RecordType, payload: bytes) -> str:
    """A record as one line of text."""
    if kind is RecordType.QUEUE_CREATED:
        name, address, filter_, queue_kind = decode_queue_created(payload)
        bound = f" filter={filter_}" if filter_ else ""
        selector = decode_queue_selector(payload)
        if selector is not None:
            bound += f" selector={selector!r}"
        return f"QUEUE_CREATED {name} address={address}{bound} kind={queue_kind.name.lower()}"
    if kind is RecordType.QUEUE_DELETED:
        return f"QUEUE_DELETED {decode_name(payload)}"
    if kind is RecordType.MESSAGE_ADDED:
        queue, seq, message = decode_message_added(payload)
        return (
            f"MESSAGE_ADDED {queue}#{seq} id={message.message_id} priority={message.priority} "
            f"expires={message.expires} properties={len(message.properties)} "
            f"body={len(message.body)}B"
        )
    if kind is RecordType.MESSAGE_DELIVERED:
        queue, seq, count, hold_until = decode_delivered(payload)
        extra = f" count={count}" if count is not None else ""
        if hold_until:
            extra += f" held-until={hold_until}"
        return f"MESSAGE_DELIVERED {queue}#{seq}{extra}"
    if kind is RecordType.MESSAGE_ACKED:
        queue, seq, _ = decode_queue_seq(payload)
        return f"MESSAGE_ACKED {queue}#{seq}"
    if kind is RecordType.DUPLICATE_ID:
        address, seq, duplicate_id = decode_duplicate_id(payload)
        return f"DUPLICATE_ID {address}#{seq} id={duplicate_id}"
    return f"{kind.name} group={decode_group(payload)}"


def _walk(
    directory: Path, result: CheckResult
) -> Iterator[tuple[int, int, str | tuple[RecordType, bytes]]]:
    if not directory.is_dir():
        yield 0, 0, f"{directory} is not a directory"
        return
    for segment_id in list_segments(directory):
        data = segment_path(directory, segment_id).read_bytes()
        result.segments += 1
        result.bytes += len(data)
        try:
            header = SegmentHeader.decode(data)
        except (CorruptRecord, UnsupportedFormat) as exc:
            yield segment_id, 0, str(exc)
            continue
        if header.segment_id != segment_id:
            yield segment_id, 0, f"header names segment {header.segment_id}"
        offset = SEGMENT_HEADER.size
        while offset < len(data):
            try:
                record = read_record(data, offset)
                if record is None:
                    yield segment_id, offset, f"torn record ({len(data) - offset} bytes)"
                    break
                kind, payload, next_offset = record
                describe(kind, payload)  # decodes every field: structure errors show here
            except CorruptRecord as exc:
                yield segment_id, offset, str(exc)
                break
            yield segment_id, offset, (kind, payload)
            offset = next_offset

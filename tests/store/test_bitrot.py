"""Bit rot (NATS's filestore test): flip random octets and cut segments at random offsets in a
journal of a few hundred records, then recover.

An independent model says exactly what recovery must make of the damaged journal: every record
before the first damaged one survives (a cut exactly between two records is no damage), the
damaged segment is truncated there and later segments are set aside, and an atomic group left
open at the end is discarded and cut off. Recovery must match it exactly, may raise nothing but
UnsupportedFormat (only when the version octets of a segment it reaches were hit), must never
return a message that was not written, and must leave a journal that checks clean.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dovecote.core.message import Message, RoutingType
from dovecote.store import inspect
from dovecote.store.record import (
    MAGIC,
    SEGMENT_HEADER,
    QueueKind,
    RecordType,
    SegmentHeader,
    UnsupportedFormat,
    encode_duplicate_id,
    encode_group,
    encode_message_added,
    encode_name,
    encode_queue_created,
    encode_queue_seq,
)
from dovecote.store.recovery import RecoveredState, recover, segment_path

BITROT = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

QueueDef = tuple[str, str | None, QueueKind]  # address, filter, kind


@dataclass(frozen=True)
class Written:
    """One record as written: where it is and what it means."""

    segment: int
    start: int
    end: int
    kind: RecordType
    queue: str = ""
    seq: int = 0
    message: Message | None = None
    duplicate_id: str = ""
    count: int = 0
    definition: QueueDef | None = None


@dataclass
class Journal:
    segments: dict[int, bytes]
    records: list[Written]
    messages: dict[tuple[str, int], list[Message]]  # every message ever written at (queue, seq)


def _build(seed: int = 20240601, operations: int = 320, segment_size: int = 9000) -> Journal:
    """A journal of three or four segments: two queues and a durable subscription, adds,
    acks, delivery counts, committed atomic groups, a queue deleted and defined again."""
    rng = random.Random(seed)
    segments: dict[int, bytearray] = {1: bytearray(SegmentHeader(1).encode())}
    records: list[Written] = []
    messages: dict[tuple[str, int], list[Message]] = {}
    live: dict[str, list[int]] = {}
    next_seq: dict[str, int] = {}

    def put(record: bytes, kind: RecordType, **fields: object) -> None:
        segment = max(segments)
        if len(segments[segment]) + len(record) > segment_size:
            segment += 1
            segments[segment] = bytearray(SegmentHeader(segment).encode())
        start = len(segments[segment])
        segments[segment] += record
        records.append(Written(segment, start, start + len(record), kind, **fields))  # type: ignore[arg-type]

    def define(name: str, address: str, filter_: str | None, kind: QueueKind) -> None:
        put(
            encode_queue_created(name, address, filter_, kind),
            RecordType.QUEUE_CREATED,
            queue=name,
            definition=(address, filter_, kind),
        )
        live[name] = []
        next_seq[name] = 1

    def add(name: str) -> None:
        seq = next_seq[name]
        next_seq[name] += 1
        routing = RoutingType.MULTICAST if name == "c1.prices" else RoutingType.ANYCAST
        body = rng.randbytes(rng.choice([0, 1, 7, 40, 300]))
        message = Message(
            f"ID:rot-{name}-{seq}",
            "prices.eu" if routing is RoutingType.MULTICAST else name,
            routing,
            body,
            {f"h{i}": f"välue-{rng.randrange(1000)}" for i in range(rng.randrange(4))},
            True,
            rng.randrange(10),
            rng.choice([0, 1_900_000_000_000]),
            1_700_000_000_000 + seq,
        )
        messages.setdefault((name, seq), []).append(message)
        put(
            encode_message_added(name, seq, message),
            RecordType.MESSAGE_ADDED,
            queue=name,
            seq=seq,
            message=message,
        )
        live[name].append(seq)

    def ack(name: str) -> None:
        if live[name]:
            seq = live[name].pop(rng.randrange(len(live[name])))
            put(
                encode_queue_seq(RecordType.MESSAGE_ACKED, name, seq),
                RecordType.MESSAGE_ACKED,
                queue=name,
                seq=seq,
            )

    def deliver(name: str) -> None:
        if live[name]:
            seq = rng.choice(live[name])
            count = rng.randrange(1, 5)
            put(
                encode_queue_seq(RecordType.MESSAGE_DELIVERED, name, seq, count),
                RecordType.MESSAGE_DELIVERED,
                queue=name,
                seq=seq,
                count=count,
            )

    define("orders", "orders", None, QueueKind.QUEUE)
    define("c1.prices", "prices.>", "prices.>", QueueKind.DURABLE_SUBSCRIPTION)
    define("old", "old", None, QueueKind.QUEUE)
    add("old")
    add("old")
    put(encode_name(RecordType.QUEUE_DELETED, "old"), RecordType.QUEUE_DELETED, queue="old")
    define("old", "old", None, QueueKind.QUEUE)
    add("old")
    group_ids = 0
    names = ["orders", "orders", "c1.prices", "old"]
    for _ in range(operations):
        name = rng.choice(names)
        roll = rng.random()
        if roll < 0.45:
            add(name)
        elif roll < 0.7:
            ack(name)
        elif roll < 0.85:
            deliver(name)
        else:
            group_ids += 1
            put(encode_group(RecordType.ATOMIC_BEGIN, group_ids), RecordType.ATOMIC_BEGIN)
            for _ in range(rng.randrange(1, 4)):
                add(rng.choice(names))
            dup_id = f"dup-{group_ids % 7}"  # some ids come again (a later copy wins)
            put(
                encode_duplicate_id(name, group_ids, dup_id),
                RecordType.DUPLICATE_ID,
                queue=name,
                seq=group_ids,
                duplicate_id=dup_id,
            )
            ack(name)
            put(encode_group(RecordType.ATOMIC_COMMIT, group_ids), RecordType.ATOMIC_COMMIT)
    return Journal({s: bytes(data) for s, data in segments.items()}, records, messages)


JOURNAL = _build()
SEGMENT_IDS = sorted(JOURNAL.segments)
TOTAL = sum(len(data) for data in JOURNAL.segments.values())
OFFSETS = {
    segment: sum(len(JOURNAL.segments[s]) for s in SEGMENT_IDS if s < segment)
    for segment in SEGMENT_IDS
}
HEADER_OCTETS = [OFFSETS[s] + i for s in SEGMENT_IDS for i in range(SEGMENT_HEADER.size)]


# --- the model ----------------------------------------------------------------------------------

ModelQueues = dict[str, tuple[QueueDef, dict[int, tuple[Message, int]]]]


@dataclass
class Expected:
    unsupported: bool = False
    sizes: dict[int, int] | None = None  # segment -> size after recovery (not dropped)
    dropped: list[int] | None = None
    truncated_bytes: int = 0
    records: int = 0
    discarded_groups: int = 0
    clean: bool = True
    queues: ModelQueues | None = None
    undefined: list[str] = field(default_factory=list)  # queues with messages, no definition
    duplicates: dict[str, dict[str, int]] = field(default_factory=dict)  # address -> id -> seq


def _model(damaged: dict[int, bytes]) -> Expected:
    expected = Expected(sizes={}, dropped=[])
    assert expected.sizes is not None
    assert expected.dropped is not None
    surviving: list[Written] = []
    stopped = False
    for segment in SEGMENT_IDS:
        data, original = damaged[segment], JOURNAL.segments[segment]
        if stopped:
            expected.dropped.append(segment)
            continue
        size = len(data)
        if len(data) < SEGMENT_HEADER.size or data[:4] != MAGIC:
            stopped, size = True, 0
        elif data[4:6] != original[4:6]:
            return Expected(unsupported=True)
        elif data[8:16] != original[8:16]:
            stopped, size = True, 0
        else:
            for record in (r for r in JOURNAL.records if r.segment == segment):
                if (
                    record.end <= len(data)
                    and data[record.start : record.end] == original[record.start : record.end]
                ):
                    surviving.append(record)
                    continue
                if record.start != len(data):  # cut inside a record, or damaged: a problem
                    stopped, size = True, record.start
                break
        if stopped:
            expected.truncated_bytes += len(data) - size
            expected.clean = False
        expected.sizes[segment] = size
    expected.records = len(surviving)
    queues, open_group, expected.undefined = _replay(surviving, expected.duplicates)
    if expected.undefined:
        expected.clean = False
    if open_group is not None:
        begin = open_group
        expected.discarded_groups = 1
        expected.clean = False
        expected.truncated_bytes += expected.sizes[begin.segment] - begin.start
        expected.sizes[begin.segment] = begin.start
        for segment in sorted(expected.sizes):
            if segment > begin.segment:
                del expected.sizes[segment]
                expected.dropped.append(segment)
        expected.dropped.sort()
    expected.queues = queues
    return expected


def _replay(
    records: list[Written], duplicates: dict[str, dict[str, int]]
) -> tuple[ModelQueues, Written | None, list[str]]:
    """What the surviving records mean, the ATOMIC_BEGIN of a group left open, and the queues
    whose messages survived without their definition.

    A segment cut exactly between two records, if it is not the last, leaves a hole nothing
    can detect, and later segments may then refer to what was in it: a message for a queue
    whose definition was lost is kept in a plain queue of that name (and reported).
    """
    queues: ModelQueues = {}
    undefined: set[str] = set()
    group: list[Written] | None = None
    begin: Written | None = None

    def apply(record: Written) -> None:
        name = record.queue
        if record.kind is RecordType.QUEUE_CREATED:
            assert record.definition is not None
            if name in undefined:
                undefined.discard(name)
                queues[name] = (record.definition, queues[name][1])
            elif name not in queues or queues[name][0][1] != record.definition[1]:
                queues[name] = (record.definition, {})
        elif record.kind is RecordType.QUEUE_DELETED:
            queues.pop(name, None)
            undefined.discard(name)
        elif record.kind is RecordType.MESSAGE_ADDED:
            assert record.message is not None
            if name not in queues:
                queues[name] = ((name, None, QueueKind.QUEUE), {})
                undefined.add(name)
            messages = queues[name][1]
            count = messages[record.seq][1] if record.seq in messages else 0
            messages[record.seq] = (record.message, count)
        elif record.kind is RecordType.MESSAGE_ACKED:
            if name in queues:
                queues[name][1].pop(record.seq, None)
        elif record.kind is RecordType.DUPLICATE_ID:
            duplicates.setdefault(name, {})[record.duplicate_id] = record.seq
        elif record.kind is RecordType.MESSAGE_DELIVERED:
            messages = queues[name][1] if name in queues else {}
            if record.seq in messages:
                message, count = messages[record.seq]
                messages[record.seq] = (message, max(count, record.count))

    for record in records:
        if record.kind is RecordType.ATOMIC_BEGIN:
            group, begin = [], record
        elif record.kind is RecordType.ATOMIC_COMMIT:
            for item in group or []:
                apply(item)
            group, begin = None, None
        elif group is not None:
            group.append(record)
        else:
            apply(record)
    return queues, begin, sorted(undefined)


def _recovered(state: RecoveredState) -> ModelQueues:
    return {
        name: (
            (queue.address, queue.filter, queue.kind),
            {seq: (item.message, item.delivery_count) for seq, item in queue.messages.items()},
        )
        for name, queue in state.queues.items()
    }


# --- the property ----------------------------------------------------------------------------


def _damage(flips: list[tuple[int, int]], cut: tuple[int, int] | None) -> dict[int, bytes]:
    data = {segment: bytearray(JOURNAL.segments[segment]) for segment in SEGMENT_IDS}
    for position, mask in flips:
        segment = max(s for s in SEGMENT_IDS if OFFSETS[s] <= position)
        data[segment][position - OFFSETS[segment]] ^= mask
    if cut is not None:
        index, length = cut
        segment = SEGMENT_IDS[index % len(SEGMENT_IDS)]
        del data[segment][length % (len(data[segment]) + 1) :]
    return {segment: bytes(content) for segment, content in data.items()}


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


POSITIONS = st.one_of(st.integers(0, TOTAL - 1), st.sampled_from(HEADER_OCTETS))
FLIPS = st.lists(st.tuples(POSITIONS, st.integers(1, 255)), max_size=4)
CUTS = st.none() | st.tuples(st.integers(0, 100), st.integers(0, 2**20))


def test_the_journal_is_big_enough_to_mean_something() -> None:
    assert len(SEGMENT_IDS) >= 3
    assert len(JOURNAL.records) >= 300
    kinds = {record.kind for record in JOURNAL.records}
    assert kinds == set(RecordType)
    undamaged = _model(dict(JOURNAL.segments))
    assert undamaged.clean
    assert undamaged.queues is not None
    assert sum(len(messages) for _, messages in undamaged.queues.values()) >= 40


@BITROT
@given(flips=FLIPS, cut=CUTS)
@example(flips=[], cut=None)
@example(flips=[(OFFSETS[SEGMENT_IDS[1]] + 5, 0x01)], cut=None)  # version of segment 2
@example(flips=[(4, 0x02)], cut=None)  # version of segment 1
@example(flips=[(0, 0x20)], cut=None)  # magic of segment 1
@example(flips=[(6, 0xFF), (7, 0x01)], cut=None)  # flags: no damage
@example(flips=[(OFFSETS[SEGMENT_IDS[1]] + 15, 0x01)], cut=None)  # segment id of segment 2
@example(flips=[], cut=(0, 10))  # segment 1 header torn
@example(flips=[(200, 0x10)], cut=(1, 2**19))
@example(flips=[], cut=(0, JOURNAL.records[2].start))  # a hole: "old" loses its definition
@example(flips=[], cut=(0, 16))  # every definition gone: problems not in the model's order
def test_recovery_of_a_damaged_journal_matches_the_model(
    flips: list[tuple[int, int]], cut: tuple[int, int] | None
) -> None:
    damaged = _damage(flips, cut)
    expected = _model(damaged)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for segment, data in damaged.items():
            segment_path(directory, segment).write_bytes(data)
        before = _files(directory)
        try:
            state = recover(directory)
        except UnsupportedFormat:
            assert expected.unsupported
            assert _files(directory) == before  # nothing touched
            return
        assert not expected.unsupported
        recovered = _recovered(state)
        # No invented data: every message recovered is one that was written, unchanged.
        for name, (_, messages) in recovered.items():
            for seq, (message, _) in messages.items():
                assert message in JOURNAL.messages[(name, seq)]
        assert recovered == expected.queues
        assert {
            address: {dup_id: found.seq for dup_id, found in ids.items()}
            for address, ids in state.duplicate_ids.items()
        } == expected.duplicates
        report = state.report
        assert report.is_clean == expected.clean
        assert report.truncated_bytes == expected.truncated_bytes
        assert report.dropped_segments == expected.dropped
        assert report.discarded_groups == expected.discarded_groups
        assert report.records == expected.records
        assert expected.sizes is not None
        assert expected.dropped is not None
        assert {s: state.segment_sizes[s] for s in expected.sizes} == expected.sizes
        files = _files(directory)
        assert sorted(files) == sorted(
            [segment_path(directory, s).name for s in expected.sizes]
            + [f"segment-{s:08d}.dropped" for s in expected.dropped]
        )
        for segment, size in expected.sizes.items():
            assert files[segment_path(directory, segment).name] == damaged[segment][:size]
        # What recovery leaves behind checks clean and recovers to the same state, unchanged;
        # except that a segment cut to nothing has no header until the journal writes one,
        # and a queue whose definition was lost is still without one.
        emptied = [s for s, size in expected.sizes.items() if size == 0]
        assert inspect.check(directory).problems == [
            f"segment {s} offset 0: segment header is truncated" for s in emptied
        ]
        again = recover(directory)
        # (Recovery names undefined queues in the order their messages come; the model, sorted.)
        assert sorted(again.report.problems) == sorted(
            [
                f"segment {s}: segment header is truncated at offset 0; truncated 0 bytes"
                for s in emptied
            ]
            + [
                f"queue {name!r} has messages but no definition; kept as a queue of that name"
                for name in expected.undefined
            ]
        )
        assert _recovered(again) == recovered
        assert _files(directory) == files

"""``dovecote store check`` and a journal that ends inside an atomic group: reported as a
problem (segment, offset of its ATOMIC_BEGIN, records in it) without changing a byte, and
exactly where recovery then discards one. Golden cases are in test_golden.py
(uncommitted-group, committed-group); these are built here: groups across segments, a second
group after a committed one, and groups cut short by a damaged record."""

from __future__ import annotations

from pathlib import Path

import pytest

from dovecote.cli import main as cli_main
from dovecote.core.message import Message, RoutingType
from dovecote.store import inspect
from dovecote.store.record import (
    QueueKind,
    RecordType,
    SegmentHeader,
    encode_group,
    encode_message_added,
    encode_queue_created,
)
from dovecote.store.recovery import recover, segment_path

ORDERS = encode_queue_created("orders", "orders", None, QueueKind.QUEUE)  # 28 octets
HEADER = 16


def added(seq: int) -> bytes:
    message = Message(f"ID:m-{seq}", "orders", RoutingType.ANYCAST, b"body", {}, True)
    return encode_message_added("orders", seq, message)


def begin(group: int) -> bytes:
    return encode_group(RecordType.ATOMIC_BEGIN, group)  # 17 octets


def commit(group: int) -> bytes:
    return encode_group(RecordType.ATOMIC_COMMIT, group)


def damaged(record: bytes) -> bytes:
    flipped = bytearray(record)
    flipped[-5] ^= 0x40  # a payload octet: the checksum no longer matches
    return bytes(flipped)


ADDED = len(added(1))
GROUP_AT = HEADER + len(ORDERS)  # where a group right after QUEUE_CREATED begins

# name: (segments' records, the open group check reports as (segment, offset, records) or
# None, other problems check reports)
CASES: dict[str, tuple[list[list[bytes]], tuple[int, int, int] | None, list[str]]] = {
    "committed": ([[ORDERS, begin(1), added(1), added(2), commit(1)]], None, []),
    "committed-across-segments": ([[ORDERS, begin(3), added(1)], [added(2), commit(3)]], None, []),
    "open-across-segments": (
        [[ORDERS, begin(3), added(1)], [added(2)]],
        (1, GROUP_AT, 2),
        [],
    ),
    "open-after-a-committed-one": (
        [[ORDERS, begin(1), added(1), commit(1), begin(2), added(2)]],
        (1, GROUP_AT + 17 + ADDED + 17, 1),
        [],
    ),
    "open-and-empty": ([[ORDERS, added(1), begin(5)]], (1, GROUP_AT + ADDED, 0), []),
    "open-cut-by-a-torn-record": (
        [[ORDERS, begin(4), added(1), added(2)[:20]]],
        (1, GROUP_AT, 1),
        [f"segment 1 offset {GROUP_AT + 17 + ADDED}: torn record (20 bytes)"],
    ),
    # Recovery stops at the damaged record: the commit after it is never read.
    "commit-after-a-damaged-record": (
        [[ORDERS, begin(6), damaged(added(1)), commit(6)]],
        (1, GROUP_AT, 0),
        [f"segment 1 offset {GROUP_AT + 17}: record checksum mismatch"],
    ),
}


def write_journal(directory: Path, segments: list[list[bytes]]) -> Path:
    directory.mkdir()
    for segment_id, records in enumerate(segments, start=1):
        data = SegmentHeader(segment_id).encode() + b"".join(records)
        segment_path(directory, segment_id).write_bytes(data)
    return directory


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        path.name: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.iterdir())
    }


def open_group(records: int) -> str:
    plural = "" if records == 1 else "s"
    return (
        "the journal ends inside an atomic group (ATOMIC_BEGIN, no ATOMIC_COMMIT) of "
        f"{records} record{plural}; recovery will discard them and cut the journal off at "
        "this offset"
    )


@pytest.mark.parametrize("name", list(CASES))
def test_check_reports_an_open_group_and_changes_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    segments, group, others = CASES[name]
    directory = write_journal(tmp_path / "journal", segments)
    before = snapshot(directory)
    expected = list(others)
    if group is not None:
        segment_id, offset, records = group
        expected.append(f"segment {segment_id} offset {offset}: {open_group(records)}")

    result = inspect.check(directory)
    assert result.problems == expected
    assert result.is_ok == (expected == [])
    status = cli_main(["store", "check", str(tmp_path)])
    assert status == (0 if not expected else 1)
    out = capsys.readouterr().out.splitlines()
    assert out[:-1] == [f"problem: {p}" for p in expected]
    dumped = list(inspect.dump(directory))
    if group is not None:
        assert dumped[-1] == f"{segment_id:08d}:{offset:<10d} !! {open_group(records)}"
    assert snapshot(directory) == before  # not a byte changed (nor touched)


@pytest.mark.parametrize("name", list(CASES))
def test_recovery_discards_the_group_check_reported(name: str, tmp_path: Path) -> None:
    segments, group, _ = CASES[name]
    directory = write_journal(tmp_path / "journal", segments)
    state = recover(directory)
    assert state.report.discarded_groups == (0 if group is None else 1)
    if group is not None:
        segment_id, offset, records = group
        assert any(
            problem.startswith(
                f"segment {segment_id}: an atomic group of {records} records had no commit "
                f"at offset {offset};"
            )
            for problem in state.report.problems
        )
        assert segment_path(directory, segment_id).stat().st_size == offset
    assert inspect.check(directory).is_ok

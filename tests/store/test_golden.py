"""Golden journal files (tests/fixtures/journal, made by make_fixtures.py): what recovery makes
of each, exactly, and what ``dovecote store check`` says of each without changing a byte."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from dovecote.cli import main as cli_main
from dovecote.core.message import Message, RoutingType
from dovecote.store import inspect
from dovecote.store.journal import Journal
from dovecote.store.record import QueueKind, UnsupportedFormat
from dovecote.store.recovery import RecoveredState, recover

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "journal"
NAMES = [
    "empty",
    "three-records",
    "torn-tail",
    "bad-checksum",
    "unsupported-version",
    "uncommitted-group",
    "committed-group",
]
SEGMENT = "segment-00000001.log"

# The fixtures' messages, written out again here (not imported) so that a change to the
# generator cannot silently change what the tests expect.
FIRST = Message(
    "ID:golden-1",
    "orders",
    RoutingType.ANYCAST,
    b"first",
    {"x-app": "golden"},
    True,
    4,
    0,
    1_700_000_000_000,
)
SECOND = Message(
    "ID:golden-2",
    "orders",
    RoutingType.ANYCAST,
    b"\x00second\x00\xff",
    {"x-app": "golden", "x-ünï": "cödé ✓"},
    True,
    9,
    1_900_000_000_000,
    1_700_000_000_001,
)

THIRD = Message(
    "ID:golden-3", "orders", RoutingType.ANYCAST, b"", {}, True, 0, 0, 1_700_000_000_002
)

# Record offsets in the fixtures: header 16 octets, QUEUE_CREATED orders 28, MESSAGE_ADDED
# orders#1 89, MESSAGE_ACKED 25, MESSAGE_ADDED orders#2 116, ATOMIC_BEGIN 17, orders#3 67,
# ATOMIC_COMMIT 17.
SIZES = {
    "empty": 16,
    "three-records": 303,
    "torn-tail": 191,
    "bad-checksum": 249,
    "unsupported-version": 133,
    "uncommitted-group": 333,
    "committed-group": 350,
}


def _copy(name: str, tmp_path: Path) -> Path:
    """A copy of fixture ``name``'s journal folder; returns the copy's journal directory."""
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target / "journal"


def _messages(state: RecoveredState, queue: str) -> dict[int, tuple[Message, int, int, int]]:
    """seq -> (message, delivery count, segment, offset) of one recovered queue."""
    return {
        seq: (item.message, item.delivery_count, item.segment, item.offset)
        for seq, item in state.queues[queue].messages.items()
    }


def _orders_queue(state: RecoveredState) -> tuple[str, str, str | None, QueueKind, int]:
    queue = state.queues["orders"]
    return queue.name, queue.address, queue.filter, queue.kind, queue.segment


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory``: (content, mtime in ns)."""
    return {
        str(path.relative_to(directory)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_fixtures_are_what_the_generator_makes() -> None:
    built = _load_generator().build()
    assert sorted(built) == sorted(NAMES)
    for name in NAMES:
        assert (FIXTURES / name / "journal" / SEGMENT).read_bytes() == built[name], name
        assert len(built[name]) == SIZES[name]


def test_empty(tmp_path: Path) -> None:
    directory = _copy("empty", tmp_path)
    state = recover(directory)
    assert state.queues == {}
    assert state.segments == [1]
    assert state.segment_sizes == {1: 16}
    assert state.report.records == 0
    assert state.report.problems == []
    assert state.report.truncated_bytes == 0
    assert state.report.is_clean
    assert (directory / SEGMENT).stat().st_size == 16


def test_three_records(tmp_path: Path) -> None:
    directory = _copy("three-records", tmp_path)
    state = recover(directory)
    assert list(state.queues) == ["orders"]
    assert _orders_queue(state) == ("orders", "orders", None, QueueKind.QUEUE, 1)
    assert _messages(state, "orders") == {2: (SECOND, 1, 1, 158)}
    assert state.report.records == 5
    assert state.report.problems == []
    assert state.report.truncated_bytes == 0
    assert state.report.dropped_segments == []
    assert state.report.discarded_groups == 0
    assert state.segment_sizes == {1: 303}
    assert (directory / SEGMENT).read_bytes() == (
        FIXTURES / "three-records" / "journal" / SEGMENT
    ).read_bytes()


def test_torn_tail_is_truncated_after_the_last_whole_record(tmp_path: Path) -> None:
    directory = _copy("torn-tail", tmp_path)
    state = recover(directory)
    assert _orders_queue(state) == ("orders", "orders", None, QueueKind.QUEUE, 1)
    assert _messages(state, "orders") == {1: (FIRST, 0, 1, 44)}
    assert state.report.records == 2
    assert state.report.problems == ["segment 1: torn record at offset 133; truncated 58 bytes"]
    assert state.report.truncated_bytes == 58
    assert not state.report.is_clean
    assert state.segment_sizes == {1: 133}
    original = (FIXTURES / "torn-tail" / "journal" / SEGMENT).read_bytes()
    assert (directory / SEGMENT).read_bytes() == original[:133]


def test_bad_checksum_truncates_at_the_damaged_record(tmp_path: Path) -> None:
    directory = _copy("bad-checksum", tmp_path)
    state = recover(directory)
    assert _orders_queue(state) == ("orders", "orders", None, QueueKind.QUEUE, 1)
    assert _messages(state, "orders") == {}
    assert state.report.records == 1
    assert state.report.problems == [
        "segment 1: record checksum mismatch at offset 44; truncated 205 bytes"
    ]
    assert state.report.truncated_bytes == 205
    assert (directory / SEGMENT).stat().st_size == 44


def test_unsupported_version_raises_and_changes_nothing(tmp_path: Path) -> None:
    directory = _copy("unsupported-version", tmp_path)
    before = _snapshot(directory)
    with pytest.raises(UnsupportedFormat) as info:
        recover(directory)
    assert str(info.value) == (
        "segment format version 2 is not supported (this build reads version 1)"
    )
    assert _snapshot(directory) == before


def test_unsupported_version_stops_the_journal_from_opening(tmp_path: Path) -> None:
    directory = _copy("unsupported-version", tmp_path)
    before = _snapshot(directory)

    async def scenario() -> None:
        journal = Journal(directory)
        with pytest.raises(UnsupportedFormat):
            journal.open(asyncio.get_running_loop())

    asyncio.run(scenario())
    assert _snapshot(directory) == before


def test_uncommitted_group_is_discarded_and_cut_off(tmp_path: Path) -> None:
    directory = _copy("uncommitted-group", tmp_path)
    state = recover(directory)
    assert _messages(state, "orders") == {1: (FIRST, 0, 1, 44)}
    assert state.report.discarded_groups == 1
    assert state.report.problems == [
        "segment 1: an atomic group of 2 records had no commit at offset 133; truncated 200 bytes"
    ]
    assert state.report.truncated_bytes == 200
    assert state.segment_sizes == {1: 133}
    assert (directory / SEGMENT).stat().st_size == 133


def test_committed_group_is_applied_whole(tmp_path: Path) -> None:
    directory = _copy("committed-group", tmp_path)
    state = recover(directory)
    assert _messages(state, "orders") == {
        1: (FIRST, 0, 1, 44),
        2: (SECOND, 0, 1, 150),
        3: (THIRD, 0, 1, 266),
    }
    assert state.report.records == 6
    assert state.report.problems == []
    assert state.report.discarded_groups == 0
    assert state.segment_sizes == {1: 350}
    assert (directory / SEGMENT).read_bytes() == (
        FIXTURES / "committed-group" / "journal" / SEGMENT
    ).read_bytes()


def test_records_appended_after_an_uncommitted_group_survive_the_next_restart(
    tmp_path: Path,
) -> None:
    """Regression: the cut-off group used to stay on disk, and at the next recovery it swallowed
    every record the broker had appended after it (confirmed messages were lost)."""
    directory = _copy("uncommitted-group", tmp_path)
    later = Message("ID:later-4", "orders", RoutingType.ANYCAST, b"later", {}, True)

    async def scenario() -> None:
        journal = Journal(directory)
        state = journal.open(asyncio.get_running_loop())
        assert sorted(state.queues["orders"].messages) == [1]
        journal.record_message("orders", 4, later)
        done = asyncio.Event()
        journal.call_when_durable(done.set)
        await asyncio.wait_for(done.wait(), 10)
        await journal.close()

    asyncio.run(scenario())
    state = recover(directory)
    assert state.report.problems == []
    assert {seq: item.message for seq, item in state.queues["orders"].messages.items()} == {
        1: FIRST,
        4: later,
    }


@pytest.mark.parametrize("name", [n for n in NAMES if n != "unsupported-version"])
def test_recovery_leaves_a_journal_that_check_accepts_and_is_idempotent(
    name: str, tmp_path: Path
) -> None:
    directory = _copy(name, tmp_path)
    first = recover(directory)
    assert inspect.check(directory).is_ok
    after_first = _snapshot(directory)
    second = recover(directory)
    assert second.report.problems == []
    assert second.report.truncated_bytes == 0
    assert {n: q.messages for n, q in second.queues.items()} == {
        n: q.messages for n, q in first.queues.items()
    }
    assert _snapshot(directory) == after_first


CHECK_VERDICTS = {
    "empty": (1, 0, 16, []),
    "three-records": (1, 5, 303, []),
    "torn-tail": (1, 2, 191, ["segment 1 offset 133: torn record (58 bytes)"]),
    "bad-checksum": (1, 1, 249, ["segment 1 offset 44: record checksum mismatch"]),
    "unsupported-version": (
        1,
        0,
        133,
        [
            "segment 1 offset 0: segment format version 2 is not supported "
            "(this build reads version 1)"
        ],
    ),
    # Every record is well formed, but recovery will discard the open group.
    "uncommitted-group": (
        1,
        5,
        333,
        [
            "segment 1 offset 133: the journal ends inside an atomic group (ATOMIC_BEGIN, no "
            "ATOMIC_COMMIT) of 2 records; recovery will discard them and cut the journal off "
            "at this offset"
        ],
    ),
    "committed-group": (1, 6, 350, []),
}


@pytest.mark.parametrize("name", NAMES)
def test_check_verdict_and_it_changes_nothing(name: str) -> None:
    data_dir = FIXTURES / name
    before = _snapshot(data_dir)
    result = inspect.check(data_dir)  # the data directory: check finds journal/ inside
    assert (result.segments, result.records, result.bytes, result.problems) == CHECK_VERDICTS[name]
    assert result.is_ok == (CHECK_VERDICTS[name][3] == [])
    # Given the journal directory itself, the same.
    again = inspect.check(data_dir / "journal")
    assert (again.segments, again.records, again.bytes, again.problems) == CHECK_VERDICTS[name]
    list(inspect.dump(data_dir))
    assert _snapshot(data_dir) == before


@pytest.mark.parametrize("name", NAMES)
def test_store_check_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    segments, records, size, problems = CHECK_VERDICTS[name]
    status = cli_main(["store", "check", str(FIXTURES / name)])
    verdict = "ok" if not problems else f"{len(problems)} problem(s)"
    expected = [f"problem: {p}" for p in problems]
    expected.append(f"{segments} segments, {records} records, {size} bytes: {verdict}")
    assert capsys.readouterr().out.splitlines() == expected
    assert status == (0 if not problems else 1)


def test_store_dump_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["store", "dump", str(FIXTURES / "three-records")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "00000001:16         QUEUE_CREATED orders address=orders kind=queue",
        "00000001:44         MESSAGE_ADDED orders#1 id=ID:golden-1 priority=4 expires=0 "
        "properties=1 body=5B",
        "00000001:133        MESSAGE_ACKED orders#1",
        "00000001:158        MESSAGE_ADDED orders#2 id=ID:golden-2 priority=9 "
        "expires=1900000000000 properties=2 body=9B",
        "00000001:274        MESSAGE_DELIVERED orders#2 count=1",
    ]
    assert cli_main(["store", "dump", str(FIXTURES / "torn-tail")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "00000001:133        !! torn record (58 bytes)"
    )

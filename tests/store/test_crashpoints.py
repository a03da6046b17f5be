"""kill -9 at every step of the journal's writer, deterministically.

A SIGKILL keeps whatever the process had written (the page cache survives it), so the files as
they are between two writer steps are exactly what a broker killed at that moment leaves. A
randomized workload (adds, acks, delivery counts, atomic groups, a queue deleted, a message
that is never acknowledged) runs on tiny segments, so that rotation, deletion and evacuation
happen many times; before every write (and with only half of it: a torn write), every
truncate and after every directory fsync, the test copies the segment files together with
what had been confirmed by then. Afterwards each copy is recovered and must hold:

- every message confirmed durable and not acknowledged since, unchanged (no loss);
- no message that was never written (no invention), and none whose ack was confirmed;
- at least the delivery count confirmed for each message (``redelivered`` after a crash);
- each atomic group all or nothing;
- every queue confirmed and not deleted since, and none whose deletion was confirmed.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from journal_os import JournalOs

import dovecote.store.writer as writer_module
from dovecote.core.message import Message, RoutingType
from dovecote.store.journal import Journal, JournalConfig
from dovecote.store.recovery import recover

Key = tuple[str, int]


@dataclass
class Facts:
    """What the workload had been told (or had asked for) at one moment."""

    confirmed: set[Key] = field(default_factory=set)  # adds confirmed durable
    acked: set[Key] = field(default_factory=set)  # acks asked for (durable or not)
    ack_confirmed: set[Key] = field(default_factory=set)
    delivered: dict[Key, int] = field(default_factory=dict)  # delivery counts confirmed
    queues: set[str] = field(default_factory=set)  # definitions confirmed
    forgotten: set[str] = field(default_factory=set)  # deletions asked for
    forgotten_confirmed: set[str] = field(default_factory=set)

    def copy(self) -> Facts:
        return Facts(
            set(self.confirmed),
            set(self.acked),
            set(self.ack_confirmed),
            dict(self.delivered),
            set(self.queues),
            set(self.forgotten),
            set(self.forgotten_confirmed),
        )


@dataclass
class Snapshot:
    label: str
    files: dict[str, bytes]
    facts: Facts


class Recorder:
    """Takes the snapshots (on the writer thread), consistent with the workload's facts."""

    def __init__(self, directory: Path, journal_os: JournalOs) -> None:
        self.directory = directory
        self.journal_os = journal_os
        self.lock = threading.Lock()
        self.facts = Facts()
        self.snapshots: list[Snapshot] = []

    def take(self, label: str, torn: tuple[int, bytes] | None = None) -> None:
        with self.lock:
            files = {
                path.name: path.read_bytes()
                for path in self.directory.iterdir()
                if path.name.endswith(".log")
            }
            self.snapshots.append(Snapshot(label, files, self.facts.copy()))
            if torn is not None:
                fd, data = torn
                name = os.path.basename(self.journal_os.paths[fd])
                if name in files and len(data) > 1:
                    partial = dict(files)
                    partial[name] = files[name] + bytes(data[: len(data) // 2])
                    self.snapshots.append(Snapshot(f"{label} (torn)", partial, self.facts.copy()))

    def update(self, change: Callable[[Facts], None]) -> None:
        with self.lock:
            change(self.facts)


def _install(recorder: Recorder, journal_os: JournalOs, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(fd: int, data: Any) -> int:
        recorder.take("write", (fd, bytes(data)))
        return os.write(fd, data)

    def ftruncate(fd: int, size: int) -> None:
        recorder.take("ftruncate")
        os.ftruncate(fd, size)

    def fdatasync(fd: int) -> None:
        time.sleep(0.001)  # a slow disk: batches queue up behind the one being written
        os.fdatasync(fd)

    real_fsync_directory = writer_module.fsync_directory

    def fsync_directory(directory: Path) -> None:
        real_fsync_directory(directory)
        recorder.take("directory fsync")  # after a segment was created or deleted

    journal_os.instead.update(write=write, ftruncate=ftruncate, fdatasync=fdatasync)
    monkeypatch.setattr(writer_module, "fsync_directory", fsync_directory)


@dataclass
class Workload:
    journal: Journal
    recorder: Recorder
    rng: random.Random
    written: dict[Key, Message] = field(default_factory=dict)
    groups: list[list[Key]] = field(default_factory=list)
    live: list[Key] = field(default_factory=list)
    counts: dict[Key, int] = field(default_factory=dict)
    next_seq: dict[str, int] = field(default_factory=dict)

    def define(self, name: str, address: str, filter_: str | None) -> None:
        self.journal.record_queue(name, address, filter_)
        self.next_seq[name] = 1
        self.journal.call_when_durable(lambda: self.recorder.update(lambda f: f.queues.add(name)))

    def add(self, name: str, *, keep: bool = False) -> Key:
        seq = self.next_seq[name]
        self.next_seq[name] += 1
        key = (name, seq)
        rng = self.rng
        message = Message(
            f"ID:crash-{name}-{seq}",
            "prices.eu" if name == "c1.prices" else name,
            RoutingType.MULTICAST if name == "c1.prices" else RoutingType.ANYCAST,
            rng.randbytes(rng.choice([0, 40, 200, 600])),
            {"n": str(seq)} if rng.random() < 0.5 else {},
            True,
            rng.randrange(10),
        )
        self.written[key] = message
        self.journal.record_message(name, seq, message)
        self.journal.call_when_durable(lambda: self.recorder.update(lambda f: f.confirmed.add(key)))
        if not keep:
            self.live.append(key)
        return key

    def ack(self, key: Key) -> None:
        self.live.remove(key)
        self.recorder.update(lambda f: f.acked.add(key))
        self.journal.record_ack(*key)
        self.journal.call_when_durable(
            lambda: self.recorder.update(lambda f: f.ack_confirmed.add(key))
        )

    def deliver(self, key: Key) -> None:
        count = self.counts[key] = self.counts.get(key, 0) + 1
        self.journal.record_delivery(key[0], key[1], count)

        def confirm(facts: Facts) -> None:
            facts.delivered[key] = max(facts.delivered.get(key, 0), count)

        self.journal.call_when_durable(lambda: self.recorder.update(confirm))

    def forget(self, name: str) -> None:
        for key in [k for k in self.live if k[0] == name]:
            self.live.remove(key)
        self.recorder.update(lambda f: f.forgotten.add(name))
        self.journal.forget_queue(name)
        self.journal.call_when_durable(
            lambda: self.recorder.update(lambda f: f.forgotten_confirmed.add(name))
        )

    def pick(self) -> Key | None:
        if not self.live:
            return None
        # Mostly the oldest (a consumer in order), sometimes any (out of order).
        return self.live[0] if self.rng.random() < 0.6 else self.rng.choice(self.live)


async def _run_workload(workload: Workload, turns: int) -> None:
    journal, rng = workload.journal, workload.rng
    workload.define("orders", "orders", None)
    workload.define("c1.prices", "prices.>", "prices.>")
    keeper = workload.add("orders", keep=True)  # never acknowledged: must not pin the journal
    await asyncio.sleep(0.01)
    workload.deliver(keeper)
    names = ["orders", "orders", "c1.prices"]
    for turn in range(turns):
        if turn == turns // 4:
            workload.define("temp", "temp", None)
            names.append("temp")
        if turn == turns // 2:
            names.remove("temp")
            workload.forget("temp")
        for _ in range(rng.randrange(1, 6)):
            roll = rng.random()
            if roll < 0.42:
                workload.add(rng.choice(names))
            elif roll < 0.8:
                key = workload.pick()
                if key is not None:
                    workload.ack(key)
            elif roll < 0.88:
                key = workload.pick()
                if key is not None:
                    workload.deliver(key)
            else:
                journal.begin_atomic()
                group = [workload.add(rng.choice(names)) for _ in range(rng.randrange(2, 4))]
                workload.groups.append(group)
                key = workload.pick()
                if key is not None and key not in group:
                    workload.ack(key)
                journal.end_atomic()
        await asyncio.sleep(0.002 if rng.random() < 0.2 else 0)
    done = asyncio.Event()
    journal.call_when_durable(done.set)
    await asyncio.wait_for(done.wait(), 10)


def _check(snapshot: Snapshot, workload: Workload, scratch: Path) -> None:
    for stale in scratch.iterdir():
        stale.unlink()
    for name, data in snapshot.files.items():
        (scratch / name).write_bytes(data)
    state = recover(scratch)
    facts = snapshot.facts
    where = f"crash at {snapshot.label}: "
    recovered = {
        (name, seq): (item.message, item.delivery_count)
        for name, queue in state.queues.items()
        for seq, item in queue.messages.items()
    }
    for key, (message, _) in recovered.items():
        assert workload.written.get(key) == message, where + f"invented {key}"
        assert key not in facts.ack_confirmed, where + f"{key} came back after a durable ack"
        assert key[0] not in facts.forgotten_confirmed, where + f"{key} of a deleted queue"
    for key in facts.confirmed - facts.acked:
        if key[0] not in facts.forgotten:
            assert key in recovered, where + f"lost {key}"
    for key, count in facts.delivered.items():
        if key in recovered and key not in facts.acked:
            assert recovered[key][1] >= count, where + f"{key} lost its delivery count"
    for group in workload.groups:
        present = {
            key in recovered
            for key in group
            if key not in facts.acked and key[0] not in facts.forgotten
        }
        assert len(present) <= 1, where + f"atomic group {group} half there"
    for name in facts.queues - facts.forgotten:
        assert name in state.queues, where + f"lost queue {name}"
    for name in facts.forgotten_confirmed:
        assert name not in state.queues, where + f"queue {name} came back"


@pytest.mark.parametrize("seed", [11, 22, 33])
def test_every_crash_point_recovers_what_was_confirmed(
    seed: int, tmp_path: Path, journal_os: JournalOs, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    recorder = Recorder(directory, journal_os)
    _install(recorder, journal_os, monkeypatch)

    async def scenario() -> Workload:
        journal = Journal(directory, JournalConfig(segment_size=4096))
        journal.open(asyncio.get_running_loop())
        workload = Workload(journal, recorder, random.Random(seed))
        await _run_workload(workload, turns=300)
        await journal.close()
        return workload

    workload = asyncio.run(scenario())
    recorder.take("the end")
    journal_os.instead.clear()  # no more snapshots, and a fast disk again
    monkeypatch.undo()
    snapshots = recorder.snapshots
    # The workload did rotate, delete and evacuate segments many times.
    assert len(snapshots) > 250
    assert sum(1 for s in snapshots if s.label == "directory fsync") > 30
    with tempfile.TemporaryDirectory() as scratch:
        for snapshot in snapshots:
            _check(snapshot, workload, Path(scratch))
    # And a broker restarted after some of those crashes carries on correctly from there.
    for snapshot in snapshots[:: max(1, len(snapshots) // 8)]:
        _restart_and_continue(snapshot, workload, tmp_path / "restarts", seed)


def _restart_and_continue(snapshot: Snapshot, workload: Workload, base: Path, seed: int) -> None:
    """Open a journal on the files of ``snapshot`` (a crash there), acknowledge half of what it
    recovered, add more (through more rotations and evacuations), close, and recover again:
    exactly the messages not acknowledged since must be there, with their delivery counts."""
    directory = base / f"after-{id(snapshot)}"
    directory.mkdir(parents=True)
    for name, data in snapshot.files.items():
        (directory / name).write_bytes(data)
    rng = random.Random(seed)

    async def scenario() -> dict[Key, tuple[Message, int]]:
        journal = Journal(directory, JournalConfig(segment_size=4096))
        state = journal.open(asyncio.get_running_loop())
        expected = {
            (name, seq): (item.message, item.delivery_count)
            for name, queue in state.queues.items()
            for seq, item in queue.messages.items()
        }
        next_seq = {
            name: max(queue.messages, default=0) + 1 for name, queue in state.queues.items()
        }
        for key in sorted(expected):
            if rng.random() < 0.5:
                journal.record_ack(*key)
                del expected[key]
            elif rng.random() < 0.3:
                count = expected[key][1] + 1
                journal.record_delivery(key[0], key[1], count)
                expected[key] = (expected[key][0], count)
        if "orders" not in state.queues:
            journal.record_queue("orders", "orders", None)
            next_seq["orders"] = 1
        names = sorted(next_seq)
        for turn in range(120):
            name = rng.choice(names)
            key = (name, next_seq[name])
            next_seq[name] += 1
            message = Message(f"ID:after-{key}", name, RoutingType.ANYCAST, rng.randbytes(300))
            journal.record_message(name, key[1], message)
            expected[key] = (message, 0)
            if turn % 3:
                done = asyncio.Event()
                journal.call_when_durable(done.set)
                await asyncio.wait_for(done.wait(), 10)
                journal.record_ack(*key)
                del expected[key]
        await journal.close()
        return expected

    expected = asyncio.run(scenario())
    state = recover(directory)
    recovered = {
        (name, seq): (item.message, item.delivery_count)
        for name, queue in state.queues.items()
        for seq, item in queue.messages.items()
    }
    assert recovered == expected, f"after a crash at {snapshot.label}"
    assert not [p for p in state.report.problems if "segment" in p], state.report.problems

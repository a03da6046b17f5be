"""The journal's writer thread: the only code that writes, syncs, creates or deletes segment
files (DESIGN.md §4).

The loop thread hands it jobs (a batch to write, a segment to delete, close) through a queue;
it reports back on the loop with ``on_done(batch)`` once a batch is durable per the sync
policy, or ``on_failed(reason)`` when the disk refuses (it then retries the same batch).

Invariants:
- A batch is written exactly once: a failed attempt is undone (partial write cut off,
  segments it started removed) before the retry, and no earlier segment is reopened as fresh.
- The thread never dies silently: an error outside a batch (an idle sync, a deletion) is
  reported or logged, and an unexpected one marks the journal failed before the thread ends.
- After :meth:`SegmentWriter.stop` a batch that cannot be written is abandoned (it was never
  confirmed), so shutdown never hangs on a full disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from dovecote.store.record import SegmentHeader
from dovecote.store.recovery import segment_path

log = logging.getLogger(__name__)


class SyncPolicy(Enum):
    ALWAYS = "always"  # fsync every batch before confirming it (survives power loss)
    INTERVAL = "interval"  # confirm once written; fsync at most every sync_interval
    NEVER = "never"  # confirm once written; the OS decides when to flush


@dataclass(frozen=True, slots=True)
class JournalConfig:
    segment_size: int = 32 * 1024 * 1024
    sync: SyncPolicy = SyncPolicy.ALWAYS
    sync_interval: float = 0.05
    evacuate_below: float = 0.5  # evacuate the oldest segment when less than this is live
    evacuation_slice: int = 2000  # records an evacuation copies per loop turn
    retry_interval: float = 1.0  # after a write error

    def __post_init__(self) -> None:
        if not 4096 <= self.segment_size < 2**32:
            raise ValueError("segment_size must be at least 4 KiB and below 4 GiB")


@dataclass(slots=True)
class Batch:
    pieces: list[tuple[int, bytes]]  # (segment id, bytes), segments ascending
    callbacks: list[Callable[[], None]]
    placed: list[tuple[str, int, int, int]]  # MESSAGE_ADDED (queue, seq, segment, offset)


class Job(Enum):
    DELETE = "delete"
    CLOSE = "close"


class SegmentWriter(threading.Thread):
    """Writes batches to the current segment, rotating to the segments the loop chose."""

    def __init__(
        self,
        directory: Path,
        config: JournalConfig,
        loop: asyncio.AbstractEventLoop,
        segment: int,
        *,
        fresh: bool,
        on_done: Callable[[Batch], None],
        on_failed: Callable[[str], None],
    ) -> None:
        super().__init__(name="dovecote-journal", daemon=True)
        self.jobs: queue.SimpleQueue[Batch | tuple[Job, int] | Job] = queue.SimpleQueue()
        self._directory = directory
        self._config = config
        self._loop = loop
        self._on_done = on_done
        self._on_failed = on_failed
        self._stopping = threading.Event()
        self._segment = segment
        self._fd = self._open(segment, fresh=fresh)
        self._last_sync = time.monotonic()
        self._dirty = False

    def stop(self) -> None:
        """Ask the thread to end after the jobs queued so far (abandoning a failing batch)."""
        self._stopping.set()
        self.jobs.put(Job.CLOSE)

    def run(self) -> None:
        try:
            self._serve()
        except Exception as exc:  # an unexpected error must not leave the broker hanging
            log.exception("journal writer stopped")
            self._report_failure(f"the journal writer stopped ({type(exc).__name__})")
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _serve(self) -> None:
        while True:
            try:
                job = self.jobs.get(timeout=self._config.sync_interval)
            except queue.Empty:
                if self._dirty:
                    self._idle_sync()
                continue
            if job is Job.CLOSE:
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    log.error("journal: final sync failed: %s", exc.strerror or exc)
                os.close(self._fd)
                return
            if isinstance(job, tuple):
                self._delete_segment(job[1])
                continue
            assert isinstance(job, Batch)
            self._write_until_done(job)

    def _idle_sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self._report_failure(exc.strerror or str(exc))  # stays dirty: retried next time
            return
        self._dirty = False

    def _delete_segment(self, segment: int) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                segment_path(self._directory, segment).unlink()
            fsync_directory(self._directory)
        except OSError as exc:
            # Nothing is lost: recovery replays a leftover segment's records, whose acks are
            # in the segments that remain.
            log.warning("journal: could not delete segment %d: %s", segment, exc.strerror or exc)

    def _report_failure(self, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._on_failed, reason)

    def _open(self, segment: int, *, fresh: bool) -> int:
        path = segment_path(self._directory, segment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if fresh:
            try:
                os.ftruncate(fd, 0)
                os.write(fd, SegmentHeader(segment).encode())
                os.fsync(fd)
                fsync_directory(self._directory)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def _write_until_done(self, batch: Batch) -> None:
        # Every failed attempt is undone back to here, so that the retry writes the batch
        # exactly once, and no earlier segment is ever reopened as a fresh one.
        start_segment, start = self._segment, os.lseek(self._fd, 0, os.SEEK_END)
        while True:
            try:
                self._write(batch)
            except OSError as exc:
                self._report_failure(exc.strerror or str(exc))
                self._stopping.wait(self._config.retry_interval)
                while not self._rewind(batch, start_segment, start):
                    if self._stopping.is_set():
                        return
                    time.sleep(self._config.retry_interval)
                if self._stopping.is_set():
                    return  # shutting down: the batch was never confirmed, so drop it
                continue
            self._loop.call_soon_threadsafe(self._on_done, batch)
            return

    def _rewind(self, batch: Batch, segment: int, size: int) -> bool:
        """Undo a failed attempt at ``batch``: remove the segments it started (they hold
        nothing else), then cut ``segment`` back to ``size``. False if that failed too."""
        try:
            if self._segment != segment:
                fd = os.open(segment_path(self._directory, segment), os.O_WRONLY | os.O_APPEND)
                os.close(self._fd)
                self._segment, self._fd = segment, fd
            for later in sorted({s for s, _ in batch.pieces if s > segment}):
                with contextlib.suppress(FileNotFoundError):
                    segment_path(self._directory, later).unlink()
            fsync_directory(self._directory)
            os.ftruncate(self._fd, size)
        except OSError:
            return False
        return True

    def _write(self, batch: Batch) -> None:
        for segment, data in batch.pieces:
            if segment != self._segment:
                os.fsync(self._fd)
                fd = self._open(segment, fresh=True)
                os.close(self._fd)
                self._segment, self._fd = segment, fd
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        policy = self._config.sync
        if policy is SyncPolicy.ALWAYS:
            os.fdatasync(self._fd)
        elif policy is SyncPolicy.INTERVAL:
            # Synced by the run loop once no batch has come for sync_interval, or here.
            now = time.monotonic()
            self._dirty = True
            if now - self._last_sync >= self._config.sync_interval:
                os.fdatasync(self._fd)
                self._last_sync = now
                self._dirty = False


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

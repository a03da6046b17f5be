"""Deadlines the core waits for (delayed redeliveries, the expiry reaper, scheduled delivery),
in one heap.

The core never sleeps and owns no event loop: it asks the :class:`~dovecote.core.ports.Wakeup`
port (the server drives it with the event loop; tests call :meth:`Timers.run_due` after moving
an injected clock) to call :meth:`Timers.run_due` once the earliest deadline is due.

Invariants:
- Callbacks run in deadline order (FIFO for equal deadlines), never before their deadline by
  the clock, and at most once; a cancelled one never runs.
- One :meth:`Timers.run_due` runs only timers set before it started: a callback that sets a
  timer due at once (to do more work in slices) is run by the next ``run_due``, so the driver
  gets control between the two (the server's driver calls it again on a later loop turn).
- The wakeup is asked again whenever a new deadline is earlier than every pending one.
- Cancelled timers leave the heap when they reach its top, or all at once when they are most
  of it: a timer cancelled and set again and again does not grow the heap.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dovecote.core.ports import Clock, Wakeup

_COMPACT_AT = 64  # cancelled timers from which the heap may be rebuilt without them


class TimerHandle:
    __slots__ = ("_timers", "callback", "cancelled", "due")

    def __init__(self, due: int, callback: Callable[[], None], timers: Timers) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False  # (also set once it has run)
        self._timers = timers

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._timers._count_cancelled()


class Timers:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int, TimerHandle]] = []
        self._order = itertools.count()
        self._wakeup: Wakeup | None = None
        self._cancelled = 0  # about how many heap entries are cancelled (for compaction)

    def __len__(self) -> int:
        """Heap entries, cancelled ones not yet dropped included."""
        return len(self._heap)

    def set_wakeup(self, wakeup: Wakeup | None) -> None:
        """Connect the driver; it is asked at once for any deadline already pending."""
        self._wakeup = wakeup
        due = self.next_due()
        if wakeup is not None and due is not None:
            wakeup.wake_at(due)

    def call_at(self, due_ms: int, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(due_ms, callback, self)
        heap = self._heap
        earliest = not heap or due_ms < heap[0][0]
        heapq.heappush(heap, (due_ms, next(self._order), handle))
        if earliest and self._wakeup is not None:
            self._wakeup.wake_at(due_ms)
        return handle

    def call_later(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(self._clock.now_ms() + delay_ms, callback)

    def next_due(self) -> int | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._uncount_cancelled()
        return heap[0][0] if heap else None

    def run_due(self) -> int:
        """Run every callback set before this call whose deadline has passed; returns how
        many ran. Those its callbacks set wait for the next call (see the module docstring);
        if a callback raises, the rest stay pending and the exception propagates."""
        now = self._clock.now_ms()
        heap = self._heap
        newest = next(self._order)  # timers numbered above this were set by the callbacks
        deferred: list[tuple[int, int, TimerHandle]] = []
        ran = 0
        try:
            while heap and heap[0][0] <= now:
                item = heapq.heappop(heap)
                handle = item[2]
                if handle.cancelled:
                    self._uncount_cancelled()
                elif item[1] > newest:
                    deferred.append(item)
                else:
                    handle.cancelled = True
                    handle.callback()
                    ran += 1
        finally:
            if deferred:
                for item in deferred:
                    heapq.heappush(heap, item)
                if self._wakeup is not None:
                    self._wakeup.wake_at(heap[0][0])
        return ran

    def _count_cancelled(self) -> None:
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > _COMPACT_AT and 2 * self._cancelled > len(heap):
            # In place: run_due may be iterating over this very list.
            heap[:] = [item for item in heap if not item[2].cancelled]
            heapq.heapify(heap)
            self._cancelled = 0

    def _uncount_cancelled(self) -> None:
        if self._cancelled:
            self._cancelled -= 1

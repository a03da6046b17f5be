"""Deadlines the core waits for (delayed redeliveries, the expiry reaper), in one heap.

The core never sleeps and owns no event loop: it asks the :class:`~dovecote.core.ports.Wakeup`
port (the server drives it with the event loop; tests call :meth:`Timers.run_due` after moving
an injected clock) to call :meth:`Timers.run_due` once the earliest deadline is due.

Invariants:
- Callbacks run in deadline order (FIFO for equal deadlines), never before their deadline by
  the clock, and at most once; a cancelled one never runs.
- The wakeup is asked again whenever a new deadline is earlier than every pending one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dovecote.core.ports import Clock, Wakeup


class TimerHandle:
    __slots__ = ("callback", "cancelled", "due")

    def __init__(self, due: int, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[int, int, TimerHandle]] = []
        self._order = itertools.count()
        self._wakeup: Wakeup | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def set_wakeup(self, wakeup: Wakeup | None) -> None:
        """Connect the driver; it is asked at once for any deadline already pending."""
        self._wakeup = wakeup
        due = self.next_due()
        if wakeup is not None and due is not None:
            wakeup.wake_at(due)

    def call_at(self, due_ms: int, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(due_ms, callback)
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
        return heap[0][0] if heap else None

    def run_due(self) -> int:
        """Run every callback whose deadline has passed; returns how many ran."""
        now = self._clock.now_ms()
        heap = self._heap
        ran = 0
        while heap and heap[0][0] <= now:
            handle = heapq.heappop(heap)[2]
            if not handle.cancelled:
                handle.cancelled = True
                handle.callback()
                ran += 1
        return ran

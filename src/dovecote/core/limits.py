"""The broker-wide memory budget for queued messages, and the producers waiting on it.

Every message held by a queue (ready or in flight) is charged its body size plus a fixed
overhead for its bookkeeping. Past ``page_at`` queues page out: bodies of persistent messages
already in the journal leave memory and are read back at dispatch. Past ``limit`` the budget is
exhausted: adapters stop reading from producing connections (back-pressure) instead of
dropping anything; once usage falls to ``resume_ratio`` of the limit, the waiting producers
are resumed in the order they stopped.
"""

from __future__ import annotations

from collections.abc import Callable

# The limit caps everything queued; persistent bodies page out long before it (at 1/8), so that
# most of it holds what cannot leave memory: the per-message bookkeeping of a large backlog
# (about 2M paged messages fit in the default) and non-persistent messages.
DEFAULT_MEMORY_LIMIT = 1024 * 1024 * 1024
DEFAULT_PAGE_RATIO = 0.125
# Bytes per queued message besides its body: the Message and its headers, id and timestamp,
# the queue entry and its seq, the journal's location of it. Measured with tracemalloc on a
# paged 100k x 1 KiB backlog (about 500 B); a paged-out message costs only this.
ENTRY_OVERHEAD = 512


class MemoryBudget:
    __slots__ = ("_resume_at", "_waiting", "limit", "page_at", "used")

    def __init__(
        self,
        limit: int = DEFAULT_MEMORY_LIMIT,
        resume_ratio: float = 0.8,
        page_ratio: float = DEFAULT_PAGE_RATIO,
    ) -> None:
        if limit <= 0:
            raise ValueError("the memory limit must be positive")
        self.limit = limit
        self.page_at = int(limit * page_ratio)
        self.used = 0
        self._resume_at = int(limit * resume_ratio)
        self._waiting: list[Callable[[], None]] = []

    def is_exhausted(self) -> bool:
        return self.used >= self.limit

    def is_paging(self) -> bool:
        """True while queues should move persistent bodies out of memory."""
        return self.used > self.page_at

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def charge(self, size: int, entries: int = 1) -> None:
        """``entries`` messages of ``size`` body bytes in all came into memory."""
        self.used += size + entries * ENTRY_OVERHEAD

    def release(self, size: int) -> None:
        self.used -= size + ENTRY_OVERHEAD
        self._wake()

    def page_out(self, size: int) -> None:
        """A body of ``size`` bytes left memory (its entry stays)."""
        self.used -= size
        self._wake()

    def page_in(self, size: int) -> None:
        self.used += size

    def _wake(self) -> None:
        if self._waiting and self.used <= self._resume_at:
            waiting, self._waiting = self._waiting, []
            for resume in waiting:
                resume()

    def call_when_available(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once usage is back under the resume level (now, if it is)."""
        if self.used <= self._resume_at:
            callback()
        else:
            self._waiting.append(callback)

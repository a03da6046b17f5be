"""Parked entries of one queue: ready messages dispatch examined and no consumer could take.

An entry is parked in the heap of each consumer that may take it but had no credit when it was
examined (``Consumer.parked``: highest message priority first, then oldest), or in no heap at
all when no consumer may take it. It leaves when a waiting consumer with credit takes it
(:meth:`Parking.next_for`), or when the queue releases it back to its fresh entries: all of
them when the consumer set changes, or those pinned to a message group when the group closes or
is forgotten (they waited for the group's owner only), or one whose group came to be owned by
another consumer than the one looking at it (:meth:`Parking.take_unwanted`: routed again).

Invariants:
- ``entry.parked`` is True exactly while the entry is in ``_entries``; a parked entry is ready.
- Heaps may hold stale items (an entry taken by another consumer, or parked again since):
  readers skip them, and a heap is compacted when it outgrows twice the parked count.
- Only consumers in ``_may_serve`` are looked at for parked entries: one gets there when it
  may have credit again (it acked, nacked or resumed) and leaves when it has no credit or
  nothing left. Parking only ever waits on consumers without credit, so nothing is missed.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from dovecote.core.consumer import GROUP_ID, Consumer
from dovecote.core.message import QueueEntry

if TYPE_CHECKING:
    from dovecote.core.queue import Queue

_HEAP_SLACK = 64  # stale items a heap may hold beyond twice the parked count


class Parking:
    __slots__ = ("_entries", "_may_serve", "_pinned", "_ticks", "_unwanted")

    def __init__(self) -> None:
        self._entries: dict[int, QueueEntry] = {}
        # Entries waiting for their group's owner: released when the group closes.
        self._pinned: dict[str, dict[int, QueueEntry]] = {}
        self._may_serve: dict[Consumer, None] = {}  # an ordered set
        self._ticks = itertools.count()  # tie-breaker: heap items never compare entries
        self._unwanted: list[QueueEntry] = []  # unparked by next_for: the queue routes them again

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterable[QueueEntry]:
        return self._entries.values()

    def oldest(self) -> QueueEntry | None:
        """The parked entry with the lowest seq (a scan: parked entries are few)."""
        entries = self._entries
        return entries[min(entries)] if entries else None

    def has_candidates(self) -> bool:
        """True if some consumer may now take a parked entry (worth a :meth:`next_for`)."""
        return bool(self._may_serve)

    def park(self, entry: QueueEntry, waiting: list[Consumer], pinned: str | None = None) -> None:
        """Park ``entry`` for the consumers in ``waiting`` (none: nobody may take it now);
        ``pinned`` names the group whose owner alone may take it."""
        entry.parked = True
        entries = self._entries
        entries[entry.seq] = entry
        if pinned is not None:
            self._pinned.setdefault(pinned, {})[entry.seq] = entry
        item = (-entry.message.priority, entry.seq, next(self._ticks), entry)
        for consumer in waiting:
            heap = consumer.parked
            heapq.heappush(heap, item)
            if len(heap) > 2 * len(entries) + _HEAP_SLACK:
                heap[:] = [i for i in heap if i[3].parked and i[3].ready]
                heapq.heapify(heap)

    def unpark(self, entry: QueueEntry) -> None:
        """Take one entry out (it stays ready: the caller delivers, drops or settles it)."""
        del self._entries[entry.seq]
        entry.parked = False
        group = entry.message.properties.get(GROUP_ID) if self._pinned else None
        if group is not None:
            waiting = self._pinned.get(group)
            if waiting is not None:
                waiting.pop(entry.seq, None)
                if not waiting:
                    del self._pinned[group]

    def credit_back(self, consumer: Consumer) -> None:
        """``consumer`` may have credit again: its parked entries are worth a look."""
        if consumer.parked:
            self._may_serve[consumer] = None

    def next_for(
        self, top: int, queue: Queue, may_take: Callable[[Consumer, QueueEntry], bool]
    ) -> tuple[Consumer, QueueEntry] | None:
        """A consumer with credit and the parked entry it takes next (already unparked), if
        one waits with priority >= ``top`` (fresh entries of higher priority go first).
        Higher consumer priority first, then attach order."""
        may_serve = self._may_serve
        candidates = list(may_serve)
        if len(candidates) > 1:
            candidates.sort(key=_minus_priority)  # stable: attach order within a priority
        for consumer in candidates:
            heap = consumer.parked
            if not consumer.has_credit() or consumer.queue is not queue:
                del may_serve[consumer]  # it comes back when it acks or resumes
                continue
            while heap:
                negative_priority, _seq, _tick, entry = heap[0]
                if not (entry.ready and entry.parked):
                    heapq.heappop(heap)  # taken by another consumer meanwhile
                    continue
                if -negative_priority < top:
                    break
                heapq.heappop(heap)
                if not may_take(consumer, entry):
                    # Now another consumer's (a group got an owner): parked for this one, it
                    # might wait in no heap and for no group. The queue routes it again.
                    self.unpark(entry)
                    self._unwanted.append(entry)
                    continue
                self.unpark(entry)
                return consumer, entry
            else:
                del may_serve[consumer]  # nothing left for it
        return None

    def take_unwanted(self) -> list[QueueEntry]:
        """The entries :meth:`next_for` unparked because their consumer may no longer take
        them (the caller puts them back among its fresh entries)."""
        unwanted = self._unwanted
        if not unwanted:
            return unwanted
        self._unwanted = []
        return unwanted

    def release_group(self, group: str) -> list[QueueEntry]:
        """Unpark what waited for ``group``'s owner (the group closed or was forgotten)."""
        waiting = self._pinned.pop(group, None)
        if not waiting:
            return []
        released = [e for e in waiting.values() if e.parked and e.ready]
        for entry in released:
            del self._entries[entry.seq]
            entry.parked = False
        return released

    def release_all(self, consumers: Iterable[Consumer]) -> list[QueueEntry]:
        """Unpark everything (the consumer set changed) and empty every heap."""
        for consumer in consumers:
            consumer.parked.clear()
        self._pinned.clear()
        self._may_serve.clear()
        released = list(self._entries.values())
        for entry in released:
            entry.parked = False
        self._entries.clear()
        return released


def _minus_priority(consumer: Consumer) -> int:
    return -consumer.priority

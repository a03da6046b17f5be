"""The paging half of a queue: which persistent bodies leave memory, and when.

Past the memory budget's paging level, a queue drops from memory the bodies of its newest
ready persistent messages whose records are already on disk; dispatch reads a paged body back
(``Store.load_body``) when it delivers the message. :class:`QueuePaging` is mixed into
:class:`~dovecote.core.queue.Queue`, which owns the state it works on.

Invariants:
- ``_pageable`` holds persistent entries, oldest first; an entry delivered, settled or paged
  meanwhile may still be in it (skipped when met), but the list never grows past about twice
  the ready entries (``_pageable_add`` drops the stale ones, amortized).
- A body leaves memory only once its record is on disk (records are written in order: past
  one that is, all older ones are too).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING

from dovecote.core.message import QueueEntry

if TYPE_CHECKING:
    from dovecote.core.limits import MemoryBudget
    from dovecote.core.ports import Store

PAGE_SCAN_LIMIT = 10_000  # unwritten entries page_out may step over before giving up
PAGE_EVERY = 256  # adds between two paging passes (each pass steps over the unwritten tail)


class QueuePaging:
    # The queue's own state (set by Queue.__init__).
    name: str
    _store: Store
    _budget: MemoryBudget
    _ready_count: int
    _pageable: deque[QueueEntry]
    _adds_since_page: int

    def _pageable_add(self, entry: QueueEntry) -> None:
        pageable = self._pageable
        pageable.append(entry)
        if len(pageable) > 2 * self._ready_count + PAGE_EVERY:
            # Below the paging level nothing pops delivered entries off: drop them here
            # (amortized), or the list would hold every message the queue ever had.
            self._pageable = deque(e for e in pageable if e.ready and not e.paged)

    def page_out(self) -> int:
        """Drop bodies already in the store from memory, newest first, while over the
        paging level. Returns how many bodies left memory."""
        self._adds_since_page = 0
        pageable, store, budget = self._pageable, self._store, self._budget
        not_yet: list[QueueEntry] = []  # newest records, still being written
        written = False  # records are written in order: past one on disk, all older are too
        paged = 0
        while pageable and budget.is_paging() and len(not_yet) < PAGE_SCAN_LIMIT:
            entry = pageable.pop()
            if not entry.ready or entry.paged:
                continue  # delivered meanwhile: no longer ours to page
            if not written and not store.is_on_disk(self.name, entry.seq):
                not_yet.append(entry)
                continue
            written = True
            size = len(entry.message.body)
            entry.message = replace(entry.message, body=b"")
            entry.paged = True
            budget.page_out(size)
            paged += 1
        pageable.extend(reversed(not_yet))
        return paged

"""The read side of a queue: its counts, consumers and groups, and browsing in dispatch order.

:class:`QueueView` is a base class of :class:`dovecote.core.queue.Queue`, kept apart from
dispatch: nothing here changes the queue. Browsing lists ready messages in the order dispatch
would hand them out (by priority, highest first; within one, parked entries oldest first, then
fresh ones in arrival order). :meth:`QueueView.browse_page` reads paged-out bodies back from the
store for the page it returns only (the admin side and STOMP ``browser:true`` use it).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from dovecote.core.consumer import Consumer, GroupTable
from dovecote.core.message import MAX_PRIORITY, Message, QueueEntry

if TYPE_CHECKING:
    from dovecote.core.parking import Parking
    from dovecote.core.ports import Store


def seq_of(entry: QueueEntry) -> int:
    """Sort key: an entry's place in its queue's arrival order."""
    return entry.seq


class QueueView:
    """Counts, consumers, groups and browsing over a queue's state; changes nothing."""

    # The queue's own state (set by Queue.__init__ and QueuePolicy._init_policy).
    name: str
    durable: bool
    _store: Store
    _ready: list[OrderedDict[int, QueueEntry]]  # fresh entries, per priority, by seq
    _parked: Parking
    _ready_count: int
    _held: dict[int, QueueEntry]
    _consumers: list[Consumer]
    _exclusive: Consumer | None
    _groups: GroupTable

    # --- counts -------------------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        return self._ready_count

    @property
    def parked_count(self) -> int:
        """Ready messages that dispatch examined and no consumer could take at the time."""
        return len(self._parked)

    @property
    def in_flight_count(self) -> int:
        return sum(len(c.in_flight) for c in self._consumers)

    @property
    def depth(self) -> int:
        """Messages held: ready, waiting to be redelivered, or delivered but not acknowledged."""
        return self._ready_count + len(self._held) + self.in_flight_count

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        """Attached consumers, highest consumer priority first, then in attach order."""
        return tuple(self._consumers)

    @property
    def exclusive_consumer(self) -> Consumer | None:
        """The consumer that receives everything while the queue has an exclusive one."""
        return self._exclusive

    @property
    def group_count(self) -> int:
        return len(self._groups)

    def group_owner(self, group: str) -> Consumer | None:
        return self._groups.owner(group)

    def is_persistent_for(self, message: Message) -> bool:
        """A message is journaled here only if both it and this queue are durable."""
        return self.durable and message.persistent

    def _entries(self) -> Iterator[QueueEntry]:
        """Ready entries in dispatch order: by priority, parked (oldest first) before fresh."""
        parked: list[list[QueueEntry]] = [[] for _ in self._ready]
        for entry in self._parked.entries():
            parked[entry.message.priority].append(entry)
        for level in range(MAX_PRIORITY, -1, -1):
            yield from sorted(parked[level], key=seq_of)
            yield from self._ready[level].values()

    def browse(self) -> Iterator[Message]:
        """Ready messages in dispatch order (highest priority first, FIFO within one), as
        held: a paged-out message has an empty body here (see :meth:`browse_page`)."""
        for entry in self._entries():
            yield entry.message

    def browse_page(self, offset: int = 0, limit: int | None = None) -> list[Message]:
        """Up to ``limit`` ready messages from position ``offset`` in dispatch order, with
        paged-out bodies read back from the store (raises StoreUnavailable if it cannot).
        Nothing is removed or marked delivered; bodies read back do not stay in memory."""
        stop = None if limit is None else offset + max(0, limit)
        page = []
        for entry in itertools.islice(self._entries(), max(0, offset), stop):
            message = entry.message
            if entry.paged:
                message = replace(message, body=self._store.load_body(self.name, entry.seq))
            page.append(message)
        return page

"""The policy half of a queue: redelivery holds, dead letters, expiry, bounds, last values.

:class:`QueuePolicy` is the base of :class:`dovecote.core.queue.Queue`, kept apart so that
dispatch (queue.py) and policies (here) can change independently. It works on the queue's
state (``_ready``, ``_ready_count``, ``_settle``, ``_requeue``, ``dispatch``) and owns its own:

- ``_held``: entries waiting out a redelivery delay (in neither ``ready`` nor any consumer's
  ``in_flight``), each with a timer that puts it back at the front of its priority level. A
  persistent one's hold is journaled (with its delivery count), so that after a restart it is
  held until the same moment (``Queue.restore``).
- ``_expiring``: a heap of (expires, n, entry) for ready entries that can expire; the reaper
  pops what is due, skipping entries no longer ready; rebuilt when mostly stale.
- ``_last_values``: the latest entry per value of the policy's ``last_value_key``.
- An entry taken out of the middle of ``ready`` (expired, replaced, dropped by overflow) leaves
  its priority level's map, or the queue's parking, at once (:meth:`QueuePolicy._remove_ready`).

A queue without a policy (``policy=None``) redelivers at once, forever, and never bounds.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from dovecote.core.message import QueueEntry
from dovecote.core.policy import AddressPolicy, Overflow

if TYPE_CHECKING:
    from dovecote.core.parking import Parking
    from dovecote.core.ports import Store
    from dovecote.core.timers import Timers

# Moves an entry that left its queue for good to the dead-letter queue (the router does it).
DeadLetterHook = Callable[["QueuePolicy", QueueEntry, str], None]


class QueuePolicy:
    # The queue's own state (set by Queue.__init__).
    name: str
    durable: bool
    filter: str | None
    expired: int
    _ready: list[OrderedDict[int, QueueEntry]]  # fresh entries, per priority, by seq
    _parked: Parking
    _fresh_count: int
    _ready_count: int
    _now_ms: Callable[[], int]
    _store: Store

    def _init_policy(
        self,
        policy: AddressPolicy | None,
        timers: Timers | None,
        dead_letter: DeadLetterHook | None,
        on_expiring: Callable[[QueuePolicy], None] | None,
    ) -> None:
        self.dead_lettered = 0
        self.dropped = 0  # by overflow (drop-oldest) or replaced in a last-value queue
        self.policy = policy
        self._timers = timers
        self._dead_letter = dead_letter
        self._on_expiring = on_expiring  # told when the first expiring message arrives
        self._held: dict[int, QueueEntry] = {}  # seq -> entry waiting out a redelivery delay
        self._expiring: list[tuple[int, int, QueueEntry]] = []  # heap: (expires, n, entry)
        self._watch_order = 0
        self._last_values: dict[str, QueueEntry] = {}
        self.bounded = policy is not None and policy.max_messages > 0
        self._checks_adds = policy is not None and (
            policy.last_value_key is not None or policy.max_messages > 0
        )

    # Implemented by Queue.
    def dispatch(self) -> None:
        raise NotImplementedError

    def _requeue(self, entries: list[QueueEntry]) -> None:
        raise NotImplementedError

    def _settle(self, entry: QueueEntry) -> None:
        raise NotImplementedError

    @property
    def held_count(self) -> int:
        """Messages waiting out a redelivery delay."""
        return len(self._held)

    def is_full(self) -> bool:
        """True when the policy bounds waiting messages and this queue has that many."""
        policy = self.policy
        return (
            policy is not None
            and policy.max_messages > 0
            and self._ready_count + len(self._held) >= policy.max_messages
        )

    def is_rejecting(self) -> bool:
        """True when a new message must be refused (full, with overflow reject-new)."""
        return (
            self.is_full()
            and self.policy is not None
            and (self.policy.overflow == Overflow.REJECT_NEW)
        )

    def _return(self, entries: list[QueueEntry], *, nacked: bool) -> None:
        """Entries back from a consumer: redeliver them (a NACKed one after the policy's delay)
        or, past ``max_redeliveries``, dead-letter them. Consumer loss counts as a failed
        delivery, as ActiveMQ counts a session closed before commit, but is not delayed: the
        message was not refused, its consumer went away."""
        policy = self.policy
        if policy is None:
            self._requeue(entries)
            return
        now = 0
        back = []
        for entry in entries:
            count = entry.delivery_count
            expires = entry.message.expires
            if expires:
                now = now or self._now_ms()
                if now >= expires:
                    self._expire(entry)
                    continue
            if self._superseded(entry):
                continue
            if policy.is_exhausted(count):
                self._dead(
                    entry,
                    f"Delivery[{count}] exceeds redelivery policy limit: "
                    f"max_redeliveries={policy.max_redeliveries}",
                )
                continue
            delay = policy.redelivery_delay(count) if nacked and self._timers is not None else 0
            if delay:
                self._hold(entry, delay)
            else:
                back.append(entry)
        if back:
            self._requeue(back)

    def _hold(self, entry: QueueEntry, delay_ms: int, *, record: bool = True) -> None:
        assert self._timers is not None
        entry.ready = False
        self._held[entry.seq] = entry
        self._timers.call_later(delay_ms, lambda: self._unhold(entry))
        if record and self.durable and entry.message.persistent:
            until = self._now_ms() + delay_ms
            self._store.record_delivery(self.name, entry.seq, entry.delivery_count, until)

    def _unhold(self, entry: QueueEntry) -> None:
        if self._held.get(entry.seq) is not entry:
            return  # purged (or its queue deleted) meanwhile
        del self._held[entry.seq]
        if entry.message.is_expired(self._now_ms()):
            self._expire(entry)
            return
        if self._superseded(entry):
            return
        self._requeue([entry])
        self.dispatch()

    def _superseded(self, entry: QueueEntry) -> bool:
        """In a last-value queue, settle ``entry`` (back from a consumer, or out of its hold)
        if a newer message with its key arrived meanwhile; True if it did."""
        key = self.policy.last_value_key if self.policy is not None else None
        if key is None:
            return False
        value = entry.message.properties.get(key)
        if value is None or self._last_values.get(value) is entry:
            return False
        self.dropped += 1
        self._settle(entry)
        return True

    def _expire(self, entry: QueueEntry) -> None:
        """``entry`` (out of ``ready``) has expired: dead-letter or drop it, per policy. With a
        dead-letter hook (the router's), the hook does either, and publishes the Expired
        advisory both ways."""
        self.expired += 1
        policy = self.policy
        if self._dead_letter is not None and policy is not None:
            self._dead_letter(self, entry, f"Message Expired. Expiration:{entry.message.expires}")
        else:
            self._settle(entry)

    def _dead(self, entry: QueueEntry, reason: str) -> None:
        hook = self._dead_letter
        if hook is None:
            self.dropped += 1
            self._settle(entry)
        else:
            hook(self, entry, reason)

    def discard(self, entry: QueueEntry) -> None:
        """Settle an entry that is neither ready nor in flight (the router moved it away)."""
        self._settle(entry)

    def _apply_policy_on_add(self, entry: QueueEntry) -> None:
        policy = self.policy
        assert policy is not None
        message = entry.message
        if message.expires:
            self._watch_expiry(entry)
        key = policy.last_value_key
        if key is not None:
            value = message.properties.get(key)
            if value is not None:
                old = self._last_values.get(value)
                self._last_values[value] = entry
                if old is not None and old.ready:
                    self._remove_ready(old)
                    self.dropped += 1
                    self._settle(old)
        limit = policy.max_messages
        if limit and policy.overflow == Overflow.DROP_OLDEST:
            # (reject-new is enforced by the router before the add; what it lets past, a
            # commit or a dead letter, is kept.)
            while self._ready_count + len(self._held) > limit:
                oldest = self._oldest_ready()
                held = self._held
                if held:
                    first_held = held[min(held)]  # (few: those NACKed in the last seconds)
                    if oldest is None or first_held.seq < oldest.seq:
                        del held[first_held.seq]  # its timer finds it gone
                        self.dropped += 1
                        self._settle(first_held)
                        continue
                assert oldest is not None  # the entry just added is ready
                self._remove_ready(oldest)
                self.dropped += 1
                self._settle(oldest)

    def _oldest_ready(self) -> QueueEntry | None:
        """The ready entry with the lowest seq: the first of some priority level (each is in
        seq order), or a parked one (few, normally: those no consumer with credit wanted)."""
        best: QueueEntry | None = None
        for level in self._ready:
            if level:
                first = next(iter(level.values()))
                if best is None or first.seq < best.seq:
                    best = first
        parked = self._parked.oldest()
        if parked is not None and (best is None or parked.seq < best.seq):
            best = parked
        return best

    def _remove_ready(self, entry: QueueEntry) -> None:
        """Take a ready entry out of the queue (the caller settles or moves it)."""
        if entry.parked:
            self._parked.unpark(entry)
        elif self._ready[entry.message.priority].pop(entry.seq, None) is not None:
            self._fresh_count -= 1
        entry.ready = False
        self._ready_count -= 1

    def _watch_expiry(self, entry: QueueEntry) -> None:
        heap = self._expiring
        if not heap and self._on_expiring is not None:
            self._on_expiring(self)
        self._watch_order += 1  # unique: the same entry may be pushed again after a requeue
        heapq.heappush(heap, (entry.message.expires, self._watch_order, entry))
        if len(heap) > 2 * self._ready_count + 1024:
            # Delivered entries linger until their time: drop them (amortized).
            self._expiring = [item for item in heap if item[2].ready]
            heapq.heapify(self._expiring)

    def has_expiring(self) -> bool:
        """True while some ready message has an expiry time the reaper must watch."""
        return bool(self._expiring)

    def reap(self) -> int:
        """Take out every ready message that has expired; returns how many. Costs
        O(log n) per message that expired, not a scan of the queue."""
        now = self._now_ms()
        heap = self._expiring
        reaped = 0
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.ready:
                self._remove_ready(entry)
                self._expire(entry)
                reaped += 1
        return reaped

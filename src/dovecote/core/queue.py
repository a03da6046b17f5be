"""A queue: ready messages in priority order, its consumers, and dispatch by credit.

Invariants:
- Every message in the queue is in exactly one place: ``ready`` or one consumer's
  ``in_flight``. A ready entry is *fresh* (in ``_ready``: one insertion-ordered map per
  priority, not yet examined by dispatch) or *parked* (in ``_parked``: examined, and no
  consumer that may take it had credit then). Auto-acknowledging consumers hold nothing in
  flight: a message handed to them has left the queue.
- A consumer gets a message only while it has credit: it is not paused (its connection's
  outbound buffer is below the limit) and, unless it auto-acknowledges, it holds fewer than
  ``prefetch`` unacknowledged messages.
- Which consumers *may* take an entry: only the active exclusive consumer while the queue has
  one (the first exclusive consumer in consumer-priority order); else only the owner of the
  entry's message group, if the group has one (unless the entry starts the group again,
  ``JMSXGroupSeq`` 1: then any, and the group goes to the one that takes it, with what waited
  for the former owner); and in every case only a consumer whose
  selector matches. Among those with credit: the highest consumer priority first, round robin
  within one priority, each dispatch starting after the last one served.
- Dispatch examines each fresh entry once. One that nobody may take right now is parked: in
  the ``parked`` heap of each consumer that may take it (it is served from there once that
  consumer has credit again) or, if no consumer may take it, in ``_parked`` alone (see
  :mod:`dovecote.core.parking`). Parked entries are examined again only when the consumer set
  changes (all of them go back to the front of ``_ready``) or, for those waiting on a message
  group's owner, when the group closes. So a message no consumer wants never stalls the ones
  behind it, and a queue with ten consumers with disjoint selectors costs about one selector
  evaluation per consumer per message, not a rescan of the queue per delivery.
- Priority is strict: a parked entry is served before fresh entries of its priority or lower,
  after fresh entries of higher priority. Within a priority, FIFO.
- A message that goes back to the queue (nack, consumer gone) goes to the front of its priority
  level, in its original order, and is marked redelivered on its next delivery. Each level
  stays in seq (arrival) order: one that came back earlier and is older stays ahead of it
  (``_merge_front``), so the first of a level is its oldest (drop-oldest relies on it).
- Expired messages are never delivered: dispatch (and the reaper, for queues nobody consumes)
  takes them out, to the dead-letter queue or nowhere, per policy.
- With a policy (:mod:`dovecote.core.policy`; the router always gives one, a bare Queue has
  none and redelivers at once, forever): a returned message past ``max_redeliveries`` is
  dead-lettered; a NACKed one is *held* for its redelivery delay, in neither ``ready`` nor any
  ``in_flight`` (so it blocks nothing behind it), then goes back to the front of its level.
  The policy half (holds, dead letters, expiry, bounds, last values) is
  :class:`~dovecote.core.queue_policy.QueuePolicy`; the read side (counts, browsing in
  dispatch order) is :class:`~dovecote.core.queue_view.QueueView`; which bodies leave memory
  is :class:`~dovecote.core.queue_paging.QueuePaging`.
- A topic subscription queue with a ``selector`` takes only the messages it matches; the others
  are not enqueued at all.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from dovecote.core.consumer import (
    DEFAULT_PREFETCH,
    GROUP_ID,
    GROUP_SEQ,
    AckMode,
    Consumer,
    GroupTable,
    is_group_end,
    is_group_start,
)
from dovecote.core.errors import NotFound, StoreUnavailable
from dovecote.core.limits import MemoryBudget
from dovecote.core.message import MAX_PRIORITY, Message, QueueEntry
from dovecote.core.parking import Parking
from dovecote.core.policy import AddressPolicy
from dovecote.core.queue_paging import PAGE_EVERY, QueuePaging
from dovecote.core.queue_policy import DeadLetterHook, QueuePolicy
from dovecote.core.queue_view import QueueView, seq_of

if TYPE_CHECKING:
    from dovecote.core.ports import Store
    from dovecote.core.selector import Selector
    from dovecote.core.timers import Timers

__all__ = ["DEFAULT_PREFETCH", "AckMode", "Consumer", "Queue", "consumer_queue"]


class _Stalled(Exception):
    """A paged body could not be read back: dispatch stops until something retries it."""


class Queue(QueueView, QueuePolicy, QueuePaging):
    """Messages for competing consumers: an anycast queue or one topic subscription."""

    def __init__(
        self,
        name: str,
        *,
        address: str,
        durable: bool,
        store: Store,
        now_ms: Callable[[], int],
        budget: MemoryBudget,
        filter_: str | None = None,
        selector: Selector | None = None,
        temporary_owner: object | None = None,
        policy: AddressPolicy | None = None,
        timers: Timers | None = None,
        dead_letter: DeadLetterHook | None = None,
        on_expiring: Callable[[QueuePolicy], None] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.durable = durable
        self.filter = filter_  # the topic pattern a subscription queue is bound with
        self.selector = selector  # a topic subscription's selector: what it enqueues
        self.temporary_owner = temporary_owner
        self._store = store
        self._now_ms = now_ms
        self._budget = budget
        self._ready: list[OrderedDict[int, QueueEntry]] = [
            OrderedDict() for _ in range(MAX_PRIORITY + 1)
        ]
        self._fresh_count = 0
        self._top = 0  # no fresh entry is above this priority
        self._parked = Parking()
        self._ready_count = 0  # fresh + parked
        self._pageable: deque[QueueEntry] = deque()  # persistent entries, oldest first
        self._adds_since_page = 0
        self._consumers: list[Consumer] = []  # highest consumer priority first, then oldest
        self._bands: list[list[Consumer]] = []  # _consumers split by consumer priority
        self._band_rr: list[int] = []  # per band: where the next round robin starts
        self._exclusive: Consumer | None = None
        self._groups = GroupTable()
        self._next_seq = 1
        self._dispatching = False
        self._no_credit = False  # dispatch last stopped because no consumer had credit
        self.last_error: str | None = None  # why dispatch last stopped short, if it did
        self.enqueued = 0
        self.dequeued = 0
        self.expired = 0
        self._init_policy(policy, timers, dead_letter, on_expiring)

    def __repr__(self) -> str:
        return f"<Queue {self.name} ready={self._ready_count} consumers={len(self._consumers)}>"

    # --- producing ----------------------------------------------------------------------------

    def add(self, message: Message) -> None:
        """Enqueue ``message`` and dispatch it if a consumer has credit.

        A topic subscription with a selector ignores messages the selector does not match.
        """
        if self.selector is not None and not self.selector.matches(message):
            return
        seq = self._next_seq
        self._next_seq = seq + 1
        self.enqueued += 1
        entry = QueueEntry(message, seq)
        persistent = self.durable and message.persistent
        if persistent:
            self._store.record_message(self.name, seq, message)
        self._budget.charge(len(message.body))
        if (
            not self._ready_count
            and self._consumers
            and not self._no_credit
            and not self._dispatching
            and not self._checks_adds
            and not message.expires
        ):
            # Nothing else waits: route it at once, without queueing it first (the hot path).
            self._ready_count = 1
            if self._route_new(entry):
                if persistent and entry.ready:
                    self._pageable_add(entry)  # parked: it waits, so it may page out
                return
            self._ready_count = 0
            self._no_credit = True  # _route found no consumer with credit: dispatch need not
        if persistent:
            self._pageable_add(entry)
        priority = message.priority
        self._ready[priority][seq] = entry
        if priority > self._top or not self._fresh_count:
            self._top = priority  # (an empty queue: nothing fresh above this one)
        self._fresh_count += 1
        self._ready_count += 1
        if self._checks_adds or (message.expires and self.policy is not None):
            self._apply_policy_on_add(entry)
        if self._consumers and not self._no_credit:
            self.dispatch()
        self._adds_since_page += 1
        budget = self._budget
        if (
            self._pageable
            and budget.is_paging()
            and (self._adds_since_page >= PAGE_EVERY or budget.is_exhausted())
        ):
            self.page_out()

    def drop_unselected(self) -> int:
        """Settle the ready messages this queue's selector does not match (a restored durable
        subscription learning its selector); returns how many."""
        selector = self.selector
        if selector is None:
            return 0
        dropped = [e for e in self._entries() if not selector.matches(e.message)]
        for entry in dropped:
            if entry.parked:
                self._parked.unpark(entry)
            else:
                del self._ready[entry.message.priority][entry.seq]
                self._fresh_count -= 1
            entry.ready = False
            self._ready_count -= 1
            self._settle(entry)
        return len(dropped)

    def restore(
        self, entries: Iterable[QueueEntry], holds: Mapping[int, int] | None = None
    ) -> None:
        """Put back entries recovered from the store (at start-up), in the order given (each
        level keeps it), keeping their seqs. One call per queue: a backlog of millions goes
        through this loop at start-up. ``holds``: seq -> when the redelivery delay an entry
        was waiting out ends (epoch ms); one not over yet is held until then."""
        ready, pageable = self._ready, self._pageable
        key = self.policy.last_value_key if self.policy is not None else None
        holds = holds or {}
        now = self._now_ms() if holds and self._timers is not None else None
        held: list[tuple[QueueEntry, int]] = []
        top, next_seq, count, size = self._top, self._next_seq, 0, 0
        for entry in entries:
            message = entry.message
            size += len(message.body)
            count += 1
            if entry.seq >= next_seq:
                next_seq = entry.seq + 1
            if key is not None and key in message.properties:
                self._last_values[message.properties[key]] = entry
            if now is not None and holds.get(entry.seq, 0) > now:
                held.append((entry, holds[entry.seq] - now))
                continue
            if not entry.paged:
                pageable.append(entry)
            priority = message.priority
            ready[priority][entry.seq] = entry
            if priority > top:
                top = priority
            if message.expires:
                self._watch_expiry(entry)
        self._budget.charge(size, count)
        self._top, self._next_seq = top, next_seq
        self._fresh_count += count - len(held)
        self._ready_count += count - len(held)
        for entry, delay_ms in held:
            self._hold(entry, delay_ms, record=False)  # (its record is there already)

    # --- consumers ----------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        consumer.queue = self
        consumer.parked.clear()
        # After every consumer of the same or higher priority: attach order within a band.
        index = len(self._consumers)
        for i, other in enumerate(self._consumers):
            if other.priority < consumer.priority:
                index = i
                break
        self._consumers.insert(index, consumer)
        self._consumers_changed()
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Detach ``consumer``; its unacknowledged messages return to the queue, redelivered,
        and the message groups it owned are free to go to another consumer."""
        if consumer in self._consumers:
            self._consumers.remove(consumer)
        consumer.queue = None
        consumer.parked.clear()
        self._groups.forget(consumer)
        self._consumers_changed()
        entries = list(consumer.in_flight.values())
        consumer.in_flight.clear()
        self._return(entries, nacked=False)
        self.dispatch()

    def resume(self, consumer: Consumer) -> None:
        consumer.paused = False
        self._parked.credit_back(consumer)
        self.dispatch()

    def _consumers_changed(self) -> None:
        """Recompute bands and the exclusive consumer; parked entries are examined again."""
        bands: list[list[Consumer]] = []
        for consumer in self._consumers:
            if bands and bands[-1][0].priority == consumer.priority:
                bands[-1].append(consumer)
            else:
                bands.append([consumer])
        old = self._band_rr
        self._bands = bands
        self._band_rr = [old[i] if i < len(old) else 0 for i in range(len(bands))]
        self._exclusive = next((c for c in self._consumers if c.exclusive), None)
        self._to_front(self._parked.release_all(self._consumers))

    # --- settling -----------------------------------------------------------------------------

    def ack(self, consumer: Consumer, seq: int) -> int:
        """Settle one delivery (client-individual) or all up to it (client). Returns how many."""
        if seq not in consumer.in_flight:
            raise NotFound(f"no unacknowledged message with ack id {seq} on this subscription")
        if consumer.ack_mode == AckMode.CLIENT:
            settled = []
            for s in consumer.in_flight:
                settled.append(s)
                if s == seq:
                    break
        else:
            settled = [seq]
        for s in settled:
            entry = consumer.in_flight.pop(s)
            self._settle(entry)
        self._parked.credit_back(consumer)
        self.dispatch()
        return len(settled)

    def nack(self, consumer: Consumer, seq: int) -> int:
        """Return one delivery (or all up to it, in client mode) to the queue for redelivery."""
        if seq not in consumer.in_flight:
            raise NotFound(f"no unacknowledged message with ack id {seq} on this subscription")
        if consumer.ack_mode == AckMode.CLIENT:
            returned = []
            for s in consumer.in_flight:
                returned.append(s)
                if s == seq:
                    break
        else:
            returned = [seq]
        self._return([consumer.in_flight.pop(s) for s in returned], nacked=True)
        self._parked.credit_back(consumer)
        self.dispatch()
        return len(returned)

    def purge(self) -> int:
        """Drop every waiting message (in-flight ones stay with their consumers)."""
        count = 0
        for entry in list(self._entries()):
            entry.ready = False
            entry.parked = False
            self._settle(entry)
            count += 1
        for level in self._ready:
            level.clear()
        self._parked.release_all(self._consumers)
        held, self._held = self._held, {}
        for entry in held.values():
            self._settle(entry)
            count += 1
        self._pageable.clear()
        self._expiring.clear()
        self._last_values.clear()
        self._fresh_count = 0
        self._ready_count = 0
        return count

    # --- dispatch -----------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Hand ready messages to consumers with credit until either runs out."""
        self._no_credit = False
        if self._dispatching or not self._ready_count or not self._consumers:
            return
        self._dispatching = True
        try:
            ready = self._ready
            while self._ready_count:
                if self._fresh_count:
                    top = self._top
                    while not ready[top]:
                        top -= 1
                    self._top = top
                else:
                    top = -1
                if self._parked.has_candidates() and self._serve_parked(top):
                    continue
                if top < 0:
                    return
                level = ready[top]
                seq, entry = level.popitem(last=False)
                self._fresh_count -= 1
                if entry.message.expires and self._drop_if_expired(entry):
                    continue
                properties = entry.message.properties
                group = properties.get(GROUP_ID) if properties else None
                consumer = self._route(entry, group)
                if consumer is _PARKED:
                    continue
                if consumer is None:
                    # Nobody has credit: leave it (and the rest) unexamined. Until credit
                    # comes back (every way it does calls dispatch), adds need not try.
                    level[seq] = entry
                    level.move_to_end(seq, last=False)
                    self._fresh_count += 1
                    self._no_credit = True
                    return
                try:
                    self._deliver(entry, consumer, group)
                except _Stalled:
                    level[seq] = entry
                    level.move_to_end(seq, last=False)
                    self._fresh_count += 1
                    return
        except _Stalled:
            return
        finally:
            self._dispatching = False

    def _route_new(self, entry: QueueEntry) -> bool:
        """Deliver or park ``entry``, the only ready one (counted in ``_ready_count``), as
        dispatch would; False, untouched, when no consumer has credit."""
        properties = entry.message.properties
        group = properties.get(GROUP_ID) if properties else None
        consumer = self._route(entry, group)
        if consumer is None:
            return False
        if consumer is not _PARKED:
            self._dispatching = True
            try:
                self._deliver(entry, consumer, group)  # (a new entry is never paged out)
            finally:
                self._dispatching = False
            if self._ready_count:
                self.dispatch()  # delivering released parked entries (a group closed)
        return True

    def _has_any_credit(self) -> bool:
        for consumer in self._consumers:
            if not consumer.paused and (
                consumer.auto_ack or len(consumer.in_flight) < consumer.prefetch
            ):
                return True
        return False

    def _may_take(self, consumer: Consumer, entry: QueueEntry) -> bool:
        exclusive = self._exclusive
        if exclusive is not None and consumer is not exclusive:
            return False
        properties = entry.message.properties
        group = properties.get(GROUP_ID)
        if group is not None and not is_group_start(properties.get(GROUP_SEQ)):
            owner = self._groups.owner(group)
            if owner is not None and owner is not consumer:
                return False
        return consumer.is_interested_in(entry)

    def _route(self, entry: QueueEntry, group: str | None) -> Consumer | None:
        """The consumer with credit that gets ``entry`` now; else ``entry`` is parked for the
        consumers that may take it later and _PARKED is returned; or None, untouched, when no
        consumer at all has credit. Each selector is evaluated at most once here."""
        only = self._exclusive
        pinned = None
        if (
            only is None
            and group is not None
            and not is_group_start(entry.message.properties.get(GROUP_SEQ))
        ):
            only = self._groups.owner(group)
            pinned = group
        if only is not None:
            if not only.is_interested_in(entry):
                waiting: list[Consumer] = []
            elif only.has_credit():
                return only
            else:
                waiting = [only]
            if not self._has_any_credit():
                return None
            self._parked.park(entry, waiting, pinned)
            return _PARKED
        message = entry.message
        band_rr = self._band_rr
        any_credit = False
        for i, band in enumerate(self._bands):
            count = len(band)
            start = band_rr[i]
            for k in range(count):
                j = (start + k) % count
                consumer = band[j]
                if consumer.paused or (
                    not consumer.auto_ack and len(consumer.in_flight) >= consumer.prefetch
                ):
                    continue
                any_credit = True
                selector = consumer.selector
                if selector is None or selector.matches(message):
                    band_rr[i] = j + 1
                    return consumer
        if not any_credit:
            return None
        # Consumers with credit do not want it (their selectors said no): park it for those
        # without credit that do, evaluating only their selectors.
        self._parked.park(
            entry,
            [c for c in self._consumers if not c.has_credit() and c.is_interested_in(entry)],
        )
        return _PARKED

    def _serve_parked(self, top: int) -> bool:
        """Deliver one parked entry of priority >= ``top`` to a consumer with credit that
        waits for it; True if an entry left the queue (delivered or expired) or went back
        among the fresh ones (to be routed again: its group got another owner)."""
        parked = self._parked
        found = parked.next_for(top, self, self._may_take)
        unwanted = parked.take_unwanted()
        if unwanted:
            self._to_front(unwanted)
        if found is None:
            return bool(unwanted)
        consumer, entry = found
        if self._drop_if_expired(entry):
            return True
        try:
            self._deliver(entry, consumer, entry.message.properties.get(GROUP_ID))
        except _Stalled:
            self._parked.park(entry, [consumer])
            raise
        return True

    def _to_front(self, entries: list[QueueEntry]) -> None:
        """Put unparked entries back at the front of their priority levels, oldest first."""
        if not entries:
            return
        self._merge_front(entries)
        self._fresh_count += len(entries)
        self._top = MAX_PRIORITY

    def _merge_front(self, entries: list[QueueEntry]) -> None:
        """Put ``entries`` (out of every level) back at the front of their priority levels,
        keeping each level in seq order: an older entry already at a level's front (one that
        came back earlier) stays ahead of them. They are nearly always older than all their
        level holds, and then this is a move to the front."""
        ready = self._ready
        levels: dict[int, list[QueueEntry]] = {}
        for entry in entries:
            levels.setdefault(entry.message.priority, []).append(entry)
        for priority, back in levels.items():
            level = ready[priority]
            newest = max(entry.seq for entry in back)
            while level and next(iter(level)) < newest:
                back.append(level.popitem(last=False)[1])  # (few: see the docstring)
            back.sort(key=seq_of, reverse=True)
            for entry in back:
                level[entry.seq] = entry
                level.move_to_end(entry.seq, last=False)

    def _drop_if_expired(self, entry: QueueEntry) -> bool:
        """Take ``entry`` (out of ready by the caller) away if it has expired: to the
        dead-letter queue or nowhere, per policy."""
        expires = entry.message.expires
        if expires and self._now_ms() >= expires:
            entry.ready = False
            self._ready_count -= 1
            self._expire(entry)
            return True
        return False

    def _deliver(self, entry: QueueEntry, consumer: Consumer, group: str | None) -> None:
        """Hand ``entry`` (taken out of ready by the caller) to ``consumer``; raises _Stalled,
        leaving the entry untouched, if its body cannot be read back."""
        if entry.paged:
            try:
                body = self._store.load_body(self.name, entry.seq)
            except StoreUnavailable as exc:
                # Never lose it: the caller puts it back; dispatch stops until a retry.
                self.last_error = exc.message
                raise _Stalled from None
            entry.message = replace(entry.message, body=body)
            entry.paged = False
            self._budget.page_in(len(body))
        entry.ready = False
        self._ready_count -= 1
        entry.delivery_count += 1
        if group is not None:
            # The group was not this consumer's until now (a closing message too: ActiveMQ's
            # assignGroup flags it, JMSXGroupFirstForConsumer). Ungrouped entries never set it.
            first = entry.group_first = self._groups.owner(group) is not consumer
            if is_group_end(entry.message.properties.get(GROUP_SEQ)):
                self._groups.close(group)
                self._to_front(self._parked.release_group(group))
            elif first:
                taken = self._groups.owner(group) is not None  # (a group starting again)
                evicted = self._groups.assign(group, consumer)
                if evicted is not None:
                    self._to_front(self._parked.release_group(evicted))
                if taken:
                    # What waited for the former owner now waits for this one.
                    self._to_front(self._parked.release_group(group))
        if consumer.auto_ack:
            self._settle(entry)
        else:
            consumer.in_flight[entry.seq] = entry
            if self.durable and entry.message.persistent:
                # Lets recovery mark it redelivered if the ack never became durable.
                self._store.record_delivery(self.name, entry.seq, entry.delivery_count)
        consumer.sink.deliver(consumer, entry)

    def _requeue(self, entries: list[QueueEntry]) -> None:
        for entry in entries:
            entry.ready = True
            entry.parked = False
        self._merge_front(entries)
        self._top = MAX_PRIORITY
        self._fresh_count += len(entries)
        self._ready_count += len(entries)
        if self.policy is not None:
            for entry in entries:
                if entry.message.expires:
                    self._watch_expiry(entry)  # the reaper dropped it while it was away

    def _settle(self, entry: QueueEntry) -> None:
        self.dequeued += 1
        self._budget.release(len(entry.message.body))
        if self.durable and entry.message.persistent:
            self._store.record_ack(self.name, entry.seq)


# What _route returns for an entry it parked (a sentinel no consumer can be).
_PARKED: Consumer = cast("Consumer", object())


def consumer_queue(consumer: Consumer) -> Queue:
    """The queue a consumer is attached to; NotFound once it has been detached."""
    if consumer.queue is None:
        raise NotFound("the subscription is closed")
    return consumer.queue

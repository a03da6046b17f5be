"""A queue: ready messages in priority order, its consumers, and dispatch by credit.

Invariants:
- Every message in the queue is in exactly one place: ``ready`` (one FIFO per priority) or one
  consumer's ``in_flight``. Auto-acknowledging consumers hold nothing in flight: a message
  handed to them has left the queue.
- A consumer gets a message only while it has credit: it is not paused (its connection's
  outbound buffer is below the limit) and, unless it auto-acknowledges, it holds fewer than
  ``prefetch`` unacknowledged messages.
- Consumers are served round robin, each dispatch starting after the last one served.
- A message that goes back to the queue (nack, consumer gone) goes to the front of its priority
  level, in its original order, and is marked redelivered on its next delivery.
- Expired messages are never delivered: dispatch (and the reaper, for queues nobody consumes)
  takes them out, to the dead-letter queue or nowhere, per policy.
- With a policy (:mod:`dovecote.core.policy`; the router always gives one, a bare Queue has
  none and redelivers at once, forever): a returned message past ``max_redeliveries`` is
  dead-lettered; a NACKed one is *held* for its redelivery delay, in neither ``ready`` nor any
  ``in_flight`` (so it blocks nothing behind it), then goes back to the front of its level.
- A message removed from the middle of ``ready`` (expired, replaced in a last-value queue,
  dropped by overflow) stays in its deque as a tombstone (``entry.ready`` False) until popped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from dovecote.core.errors import NotFound, StoreUnavailable
from dovecote.core.limits import MemoryBudget
from dovecote.core.message import MAX_PRIORITY, Message, QueueEntry
from dovecote.core.policy import AddressPolicy
from dovecote.core.queue_policy import DeadLetterHook, QueuePolicy

if TYPE_CHECKING:
    from dovecote.core.ports import DeliverySink, Store
    from dovecote.core.timers import Timers

DEFAULT_PREFETCH = 1000
_PAGE_SCAN_LIMIT = 10_000  # unwritten entries page_out may step over before giving up
_PAGE_EVERY = 256  # adds between two paging passes (each pass steps over the unwritten tail)


class AckMode:
    """How a consumer settles deliveries (STOMP's ``ack`` header values)."""

    AUTO = "auto"  # settled when sent
    CLIENT = "client"  # an ack settles this delivery and every earlier one (cumulative)
    INDIVIDUAL = "client-individual"  # an ack settles one delivery

    ALL = frozenset({AUTO, CLIENT, INDIVIDUAL})


class Consumer:
    """One subscriber on one queue. The adapter owns it; the queue hands it messages."""

    __slots__ = (
        "ack_mode",
        "auto_ack",
        "in_flight",
        "key",
        "paused",
        "prefetch",
        "queue",
        "sink",
    )

    def __init__(
        self,
        key: object,
        sink: DeliverySink,
        *,
        ack_mode: str = AckMode.AUTO,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        self.key = key  # opaque to the core: the adapter's handle for this subscription
        self.sink = sink
        self.ack_mode = ack_mode
        self.auto_ack = ack_mode == AckMode.AUTO
        self.prefetch = max(1, prefetch)
        self.paused = False
        self.in_flight: dict[int, QueueEntry] = {}  # seq -> entry, in delivery order
        self.queue: Queue | None = None

    def __repr__(self) -> str:
        return f"<Consumer {self.key!r} {self.ack_mode} in-flight={len(self.in_flight)}>"

    def has_credit(self) -> bool:
        return not self.paused and (self.auto_ack or len(self.in_flight) < self.prefetch)

    def find_in_flight(self, message_id: str) -> int | None:
        """The delivery tag of an unacknowledged message, by its message id (STOMP 1.0/1.1)."""
        for seq, entry in self.in_flight.items():
            if entry.message.message_id == message_id:
                return seq
        return None


class Queue(QueuePolicy):
    """Messages for competing consumers: an anycast queue or one topic subscription.

    The policy half (holds, dead letters, expiry, bounds, last values) is
    :class:`~dovecote.core.queue_policy.QueuePolicy`."""

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
        self.temporary_owner = temporary_owner
        self._store = store
        self._now_ms = now_ms
        self._budget = budget
        self._ready: list[deque[QueueEntry]] = [deque() for _ in range(MAX_PRIORITY + 1)]
        self._ready_count = 0
        self._pageable: deque[QueueEntry] = deque()  # persistent entries, oldest first
        self._adds_since_page = 0
        self._consumers: list[Consumer] = []
        self._rr = 0
        self._next_seq = 1
        self._dispatching = False
        self.last_error: str | None = None  # why dispatch last stopped short, if it did
        self.enqueued = 0
        self.dequeued = 0
        self.expired = 0
        self._init_policy(policy, timers, dead_letter, on_expiring)

    def __repr__(self) -> str:
        return f"<Queue {self.name} ready={self._ready_count} consumers={len(self._consumers)}>"

    # --- state --------------------------------------------------------------------------------

    @property
    def ready_count(self) -> int:
        return self._ready_count

    @property
    def in_flight_count(self) -> int:
        return sum(len(c.in_flight) for c in self._consumers)

    @property
    def depth(self) -> int:
        """Messages held: ready, waiting to be redelivered, or delivered but not acknowledged."""
        return self._ready_count + len(self._held) + self.in_flight_count

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(self._consumers)

    def is_persistent_for(self, message: Message) -> bool:
        """A message is journaled here only if both it and this queue are durable."""
        return self.durable and message.persistent

    def browse(self) -> Iterator[Message]:
        """Ready messages in dispatch order (highest priority first, FIFO within one)."""
        for level in reversed(self._ready):
            for entry in level:
                if entry.ready:
                    yield entry.message

    # --- producing ----------------------------------------------------------------------------

    def add(self, message: Message) -> None:
        """Enqueue ``message`` and dispatch it if a consumer has credit."""
        seq = self._next_seq
        self._next_seq = seq + 1
        self.enqueued += 1
        entry = QueueEntry(message, seq)
        if self.durable and message.persistent:
            self._store.record_message(self.name, seq, message)
            pageable = self._pageable
            pageable.append(entry)
            if len(pageable) > 2 * self._ready_count + _PAGE_EVERY:
                # Below the paging level nothing pops delivered entries off: drop them here
                # (amortized), or the list would hold every message the queue ever had.
                self._pageable = deque(e for e in pageable if e.ready and not e.paged)
        self._budget.charge(len(message.body))
        self._ready[message.priority].append(entry)
        self._ready_count += 1
        if self._checks_adds or (message.expires and self.policy is not None):
            self._apply_policy_on_add(entry)
        if self._consumers:
            self.dispatch()
        self._adds_since_page += 1
        budget = self._budget
        if (
            self._pageable
            and budget.is_paging()
            and (self._adds_since_page >= _PAGE_EVERY or budget.is_exhausted())
        ):
            self.page_out()

    def restore(self, entry: QueueEntry) -> None:
        """Put back an entry recovered from the store (at start-up), keeping its seq."""
        self._budget.charge(len(entry.message.body))
        if not entry.paged:
            self._pageable.append(entry)
        self._ready[entry.message.priority].append(entry)
        self._ready_count += 1
        self._next_seq = max(self._next_seq, entry.seq + 1)
        if entry.message.expires:
            self._watch_expiry(entry)
        key = self.policy.last_value_key if self.policy is not None else None
        if key is not None and key in entry.message.properties:
            self._last_values[entry.message.properties[key]] = entry

    # --- consumers ----------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        consumer.queue = self
        self._consumers.append(consumer)
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Detach ``consumer``; its unacknowledged messages return to the queue, redelivered."""
        if consumer in self._consumers:
            self._consumers.remove(consumer)
        consumer.queue = None
        entries = list(consumer.in_flight.values())
        consumer.in_flight.clear()
        self._return(entries, nacked=False)
        self.dispatch()

    def resume(self, consumer: Consumer) -> None:
        consumer.paused = False
        self.dispatch()

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
        self.dispatch()
        return len(returned)

    def purge(self) -> int:
        """Drop every waiting message (in-flight ones stay with their consumers)."""
        count = 0
        for level in self._ready:
            while level:
                entry = level.popleft()
                if not entry.ready:
                    continue  # a tombstone: already settled
                entry.ready = False
                self._settle(entry)
                count += 1
        held, self._held = self._held, {}
        for entry in held.values():
            self._settle(entry)
            count += 1
        self._pageable.clear()
        self._expiring.clear()
        self._last_values.clear()
        self._ready_count = 0
        self._tombstones = 0
        return count

    # --- dispatch -----------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Hand ready messages to consumers with credit, round robin, until either runs out."""
        if self._dispatching or not self._ready_count:
            return
        self._dispatching = True
        try:
            consumers = self._consumers
            while self._ready_count and consumers:
                count = len(consumers)
                start = self._rr % count
                for i in range(count):
                    consumer = consumers[(start + i) % count]
                    if consumer.has_credit():
                        self._rr = start + i + 1
                        break
                else:
                    return
                entry = self._pop()
                if entry is None:
                    return
                entry.delivery_count += 1
                if consumer.auto_ack:
                    self._settle(entry)
                else:
                    consumer.in_flight[entry.seq] = entry
                    if self.durable and entry.message.persistent:
                        # Lets recovery mark it redelivered if the ack never became durable.
                        self._store.record_delivery(self.name, entry.seq, entry.delivery_count)
                consumer.sink.deliver(consumer, entry)
        finally:
            self._dispatching = False

    def _pop(self) -> QueueEntry | None:
        """The next deliverable entry (its body paged back in); expired ones are dropped."""
        now = 0
        for level in reversed(self._ready):
            while level:
                entry = level.popleft()
                if not entry.ready:
                    self._tombstones -= 1  # removed in place earlier
                    continue
                self._ready_count -= 1
                entry.ready = False
                expires = entry.message.expires
                if expires:
                    now = now or self._now_ms()
                    if now >= expires:
                        self._expire(entry)
                        continue
                if entry.paged:
                    try:
                        body = self._store.load_body(self.name, entry.seq)
                    except StoreUnavailable as exc:
                        # Never lose it: put it back and stop dispatching until a retry.
                        entry.ready = True
                        level.appendleft(entry)
                        self._ready_count += 1
                        self.last_error = exc.message
                        return None
                    entry.message = replace(entry.message, body=body)
                    entry.paged = False
                    self._budget.page_in(len(body))
                return entry
        return None

    def page_out(self) -> int:
        """Drop bodies already in the store from memory, newest first, while over the
        paging level. Returns how many bodies left memory."""
        self._adds_since_page = 0
        pageable, store, budget = self._pageable, self._store, self._budget
        not_yet: list[QueueEntry] = []  # newest records, still being written
        written = False  # records are written in order: past one on disk, all older are too
        paged = 0
        while pageable and budget.is_paging() and len(not_yet) < _PAGE_SCAN_LIMIT:
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

    def _requeue(self, entries: list[QueueEntry]) -> None:
        for entry in sorted(entries, key=lambda e: e.seq, reverse=True):
            entry.ready = True
            self._ready[entry.message.priority].appendleft(entry)
            self._ready_count += 1
            if entry.message.expires and self.policy is not None:
                self._watch_expiry(entry)  # the reaper dropped it while it was away

    def _settle(self, entry: QueueEntry) -> None:
        self.dequeued += 1
        self._budget.release(len(entry.message.body))
        if self.durable and entry.message.persistent:
            self._store.record_ack(self.name, entry.seq)


def consumer_queue(consumer: Consumer) -> Queue:
    """The queue a consumer is attached to; NotFound once it has been detached."""
    if consumer.queue is None:
        raise NotFound("the subscription is closed")
    return consumer.queue

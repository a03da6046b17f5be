"""Scheduled delivery (ActiveMQ's ``AMQ_SCHEDULED_*`` properties): hold a message until its
time, then route it, once or repeatedly.

=========================  ==============================================================
property                   meaning (ActiveMQ's)
=========================  ==============================================================
``AMQ_SCHEDULED_DELAY``    milliseconds to wait before the first delivery
``AMQ_SCHEDULED_PERIOD``   milliseconds between repeated deliveries
``AMQ_SCHEDULED_REPEAT``   how many times to deliver again after the first
``AMQ_SCHEDULED_CRON``     five-field cron entry (UTC, :mod:`dovecote.core.cron`); it takes
                           precedence over the delay: without a repeat the message is
                           delivered at every cron time; with one, each cron time starts a
                           run of ``repeat + 1`` deliveries, ``delay`` after the cron time
                           and ``period`` apart
``scheduledJobId``         set on every delivered copy; a message that already carries it
                           is delivered at once, not scheduled again (as ActiveMQ)
=========================  ==============================================================

Invariants:
- Memory per scheduled message is a heap entry ``(due, seq)``; the message itself is held in
  memory only until its record is in the store and more than ``hold_limit`` are held (then it
  is read back with ``Store.load_message`` when it fires). Non-persistent scheduled messages
  stay in memory and are charged to the memory budget.
- A persistent scheduled message is a MESSAGE_ADDED record on the internal queue
  :data:`SCHEDULE_QUEUE`, carrying its schedule state (next due time, deliveries left in
  the current run) in ``_dovecote.*`` properties. Firing it routes a copy and acknowledges
  (or, for a repeat, replaces) that record in one atomic group: after a crash it has fired
  exactly once or not yet, and a repeat carries on from where it was.
- Time comes from the router's :class:`~dovecote.core.timers.Timers` (whose driver is the
  server's one loop timer): the scheduler keeps exactly one timer, at its earliest due time,
  cancelled and set again only when an earlier one appears (not once per message). When it
  fires, at most :data:`FIRE_SLICE` messages fire; if more are due, the timer is set again
  for now, which ``Timers.run_due`` leaves to its next run, so the event loop serves the
  connections between slices. The timer is set again even when a firing raises.
- Management (ActiveMQ's ``ActiveMQ.Scheduler.Management``, see
  :mod:`dovecote.core.schedule_management`): :meth:`Scheduler.browse`, :meth:`Scheduler.remove`
  (by job id) and :meth:`Scheduler.remove_due`. Job ids are unique among scheduled messages
  (a second message with a live job id, as from a composite send, gets a new message id), so
  ``_jobs`` maps each to its seq: one dict slot and one int per message, plus the id string
  once its message is paged out (measured with tracemalloc at 1,000,000: about 135 B per
  message, 63 B while its message is held and shares the id string). Removing
  acks the record (all of a range in one atomic group) and leaves the heap entry behind in
  ``_removed``, skipped when it comes up: no heap scan and nothing read from disk.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from dovecote.core.cron import CronExpression, parse_cron
from dovecote.core.errors import InvalidRequest, StoreUnavailable
from dovecote.core.limits import MemoryBudget
from dovecote.core.message import Message, destination_uri
from dovecote.core.policy import ORIGINAL_DESTINATION

if TYPE_CHECKING:
    from dovecote.core.ports import Store
    from dovecote.core.timers import TimerHandle, Timers

SCHEDULE_QUEUE = "$dovecote.scheduled"  # the internal queue persistent schedules live in
DELAY = "AMQ_SCHEDULED_DELAY"
PERIOD = "AMQ_SCHEDULED_PERIOD"
REPEAT = "AMQ_SCHEDULED_REPEAT"
CRON = "AMQ_SCHEDULED_CRON"
JOB_ID = "scheduledJobId"
SCHEDULE_PROPERTIES = frozenset({DELAY, PERIOD, REPEAT, CRON})
_DUE = "_dovecote.due"
_LEFT = "_dovecote.left"
_BASE = "_dovecote.cron-base"
_TEMPORARY = "_dovecote.temporary"  # scheduled to a temporary queue (gone: dropped at firing)
_STATE = frozenset({_DUE, _LEFT, _BASE, _TEMPORARY})
DEFAULT_HOLD_LIMIT = 10_000
FIRE_SLICE = 1000  # messages fired per timer callback, the loop serving connections between
_RETRY_MS = 1000  # a body that cannot be read back is retried this much later
_MAX_MS = 10 * 365 * 24 * 3600 * 1000  # delays and periods past ten years are refused
_SEQ_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1


@dataclass(frozen=True, slots=True)
class Schedule:
    delay: int = 0
    period: int = 0
    repeat: int = 0
    cron: CronExpression | None = None


def schedule_of(properties: Mapping[str, str]) -> Schedule | None:
    """The schedule a message's properties ask for; None to deliver it now.

    Raises InvalidRequest for a negative or non-numeric value or a bad cron entry.
    """
    if JOB_ID in properties or SCHEDULE_PROPERTIES.isdisjoint(properties):
        return None
    delay = _number(properties, DELAY)
    period = _number(properties, PERIOD)
    repeat = _number(properties, REPEAT)
    cron_text = properties.get(CRON, "").strip()
    cron = parse_cron(cron_text) if cron_text else None
    if cron is None and delay == 0 and repeat == 0:
        return None
    return Schedule(delay, period, repeat, cron)


def _number(properties: Mapping[str, str], name: str) -> int:
    text = properties.get(name)
    if text is None or not text.strip():
        return 0
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a whole number, not {text[:20]!r}") from None
    if value < 0 or value > _MAX_MS:
        raise InvalidRequest(f"{name} must be between 0 and {_MAX_MS}, not {value}")
    return value


def _first(schedule: Schedule, now: int) -> tuple[int, int, int]:
    """(due, deliveries left in this run, cron base) for a newly scheduled message."""
    if schedule.cron is None:
        return now + schedule.delay, schedule.repeat + 1, 0
    base = schedule.cron.next_after(now)
    if schedule.repeat:
        return base + schedule.delay, schedule.repeat + 1, base
    return base, 1, base


def _after(
    schedule: Schedule, due: int, left: int, base: int, now: int
) -> tuple[int, int, int] | None:
    """The state after a delivery due at ``due`` (made at ``now``); None when it is over.

    Cron times missed while the broker was down (or busy) collapse into one delivery."""
    if left > 1:
        return due + schedule.period, left - 1, base
    if schedule.cron is None:
        return None
    return _first(schedule, max(due, base, now))


class Scheduler:
    """Scheduled messages by due time (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        timers: Timers,
        route: Callable[[Message, bool], object],
        now_ms: Callable[[], int],
        new_id: Callable[[], str],
        budget: MemoryBudget,
        atomic: Callable[[bool], None],
        hold_limit: int = DEFAULT_HOLD_LIMIT,
    ) -> None:
        self._store = store
        self._route = route
        self._now_ms = now_ms
        self._new_id = new_id
        self._budget = budget
        self._atomic = atomic  # atomic(True) begins a group, atomic(False) ends it
        self.hold_limit = hold_limit
        self._timers = timers
        self._timer: TimerHandle | None = None  # the one timer, at (or before) next_due()
        # due << _SEQ_BITS | seq, one int per message (a tuple would cost three objects).
        self._heap: list[int] = []
        self._held: dict[int, Message] = {}  # seq -> message, for those in memory
        self._persistent = 0  # how many have a record in the store
        self._pageable: deque[int] = deque()  # held persistent seqs, oldest first
        self._jobs: dict[str, int] = {}  # job id (the message's id) -> its seq
        self._removed: set[int] = set()  # seqs removed but still in the heap
        self._next_seq = 1
        self._queue_recorded = False
        self.fired = 0
        self.last_error: str | None = None

    def __len__(self) -> int:
        return len(self._heap) - len(self._removed)

    @property
    def held_count(self) -> int:
        return len(self._held)

    def next_due(self) -> int | None:
        return self._heap[0] >> _SEQ_BITS if self._heap else None

    # --- adding -------------------------------------------------------------------------------

    def schedule(self, message: Message, schedule: Schedule, *, temporary: bool = False) -> None:
        """Hold ``message`` until its first due time. ``temporary``: its queue is a temporary
        one, whose going (with its connection) takes the message with it."""
        due, left, base = _first(schedule, self._now_ms())
        if message.message_id in self._jobs:
            message = replace(message, message_id=self._new_id())  # job ids are unique
        if temporary:
            message = replace(message, properties={**message.properties, _TEMPORARY: "1"})
        self._add(_with_state(message, due, left, base), due)

    def restore(self, seq: int, message: Message, *, paged: bool) -> None:
        """Take back a scheduled message recovered from the store (start-up)."""
        self._queue_recorded = True
        self._next_seq = max(self._next_seq, seq + 1)
        due = int(message.properties.get(_DUE, "0"))
        self._persistent += 1
        self._jobs[message.message_id] = seq
        if not paged:
            self._hold(seq, message, persistent=True)
        self._push(due, seq)

    def _add(self, message: Message, due: int) -> None:
        seq = self._next_seq
        self._next_seq += 1
        persistent = message.persistent
        if persistent:
            if not self._queue_recorded:
                self._store.record_queue(SCHEDULE_QUEUE, SCHEDULE_QUEUE, None)
                self._queue_recorded = True
            self._store.record_message(SCHEDULE_QUEUE, seq, message)
            self._persistent += 1
        self._jobs[message.message_id] = seq
        self._hold(seq, message, persistent=persistent)
        self._push(due, seq)

    def _push(self, due: int, seq: int) -> None:
        if seq > _SEQ_MASK:
            raise InvalidRequest("the scheduler ran out of sequence numbers; restart the broker")
        earliest = self.next_due()
        heapq.heappush(self._heap, due << _SEQ_BITS | seq)
        if earliest is None or due < earliest:
            self._arm(due)

    def _arm(self, due: int) -> None:
        """Have the timer go off at ``due`` unless it already goes off no later."""
        timer = self._timer
        if timer is not None:
            if timer.due <= due:
                return
            timer.cancel()
        self._timer = self._timers.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.fire_due(FIRE_SLICE)
        finally:
            # Set again even if firing raised (the driver reports it): scheduled delivery
            # never stops for good. If more are due now, Timers runs this on its next run.
            due = self.next_due()
            if due is not None:
                self._arm(due)

    def _hold(self, seq: int, message: Message, *, persistent: bool) -> None:
        self._held[seq] = message
        self._budget.charge(len(message.body))
        if persistent:
            pageable = self._pageable
            pageable.append(seq)
            if len(pageable) > 2 * len(self._held) + 1024:
                # Fired entries are only popped while paging: drop them here (amortized).
                self._pageable = deque(s for s in pageable if s in self._held)
            if len(self._held) > self.hold_limit:
                self.page_out()

    def page_out(self) -> int:
        """Forget held persistent messages already in the store, oldest first, down to
        ``hold_limit``; returns how many left memory."""
        dropped = 0
        pageable, held, store = self._pageable, self._held, self._store
        while pageable and len(held) > self.hold_limit:
            seq = pageable[0]
            message = held.get(seq)
            if message is not None:
                if not store.is_on_disk(SCHEDULE_QUEUE, seq):
                    break  # written in order: the newer ones are not on disk either
                del held[seq]
                self._budget.release(len(message.body))
                dropped += 1
            pageable.popleft()
        return dropped

    # --- firing -------------------------------------------------------------------------------

    def fire_due(self, limit: int = FIRE_SLICE) -> int:
        """Route up to ``limit`` messages whose time has come; returns how many fired.

        The scheduler's timer calls it; the timer is not moved by a direct call."""
        now = self._now_ms()
        heap = self._heap
        fired = 0
        if not heap or heap[0] >> _SEQ_BITS > now:
            return 0
        atomic = self._persistent > 0  # (no empty groups in the journal)
        if atomic:
            self._atomic(True)
        try:
            while heap and heap[0] >> _SEQ_BITS <= now and fired < limit:
                key = heapq.heappop(heap)
                due, seq = key >> _SEQ_BITS, key & _SEQ_MASK
                if seq in self._removed:
                    self._removed.discard(seq)
                    continue
                if not self._fire(due, seq, now):
                    break
                fired += 1
        finally:
            if atomic:
                self._atomic(False)
        self.fired += fired
        if self._pageable and len(self._held) > self.hold_limit:
            self.page_out()
        return fired

    def _fire(self, due: int, seq: int, now: int) -> bool:
        message = self._held.pop(seq, None)
        if message is None:
            try:
                message = self._store.load_message(SCHEDULE_QUEUE, seq)
            except StoreUnavailable as exc:
                self.last_error = exc.message
                # Later than now (not than its due time): a long-overdue message must not
                # be retried in a busy loop.
                heapq.heappush(self._heap, (now + _RETRY_MS) << _SEQ_BITS | seq)
                return False
        else:
            self._budget.release(len(message.body))
        props = message.properties
        following = None
        repeats = False
        if REPEAT in props or CRON in props:  # (else it was a single delayed delivery)
            left, base = int(props.get(_LEFT, "1")), int(props.get(_BASE, "0"))
            schedule = schedule_of({k: v for k, v in props.items() if k != JOB_ID})
            if schedule is not None:
                following = _after(schedule, due, left, base, now)
                repeats = following is not None or left > 1 or schedule.repeat > 0
        delivered = _delivered_properties(message)
        self._route(
            Message(
                self._new_id() if repeats else message.message_id,
                message.address,
                message.routing,
                message.body,
                delivered,
                message.persistent,
                message.priority,
                message.expires,
                message.timestamp,
            ),
            _TEMPORARY in props,
        )
        if message.persistent:
            self._persistent -= 1
            self._store.record_ack(SCHEDULE_QUEUE, seq)
        if self._jobs.get(message.message_id) == seq:
            del self._jobs[message.message_id]  # (a repeat's _add maps it to its new seq)
        if following is not None:
            next_due, next_left, next_base = following
            self._add(_with_state(message, next_due, next_left, next_base), next_due)
        return True

    # --- management ---------------------------------------------------------------------------

    def browse(self, start: int = 0, end: int | None = None) -> Iterator[Message]:
        """Copies of the scheduled messages next due within ``start`` .. ``end`` (inclusive),
        earliest first, as they would be delivered (``JOB_ID`` set, the scheduler's own state
        left out), with ``ORIGINAL_DESTINATION`` set. Paged-out ones are read back from the
        store (StoreUnavailable if they cannot be); the caller sets the address."""
        removed, held = self._removed, self._held
        for key in sorted(self._heap):
            due, seq = key >> _SEQ_BITS, key & _SEQ_MASK
            if due < start or seq in removed:
                continue
            if end is not None and due > end:
                break
            message = held.get(seq)
            if message is None:
                message = self._store.load_message(SCHEDULE_QUEUE, seq)
            properties = _delivered_properties(message)
            properties[ORIGINAL_DESTINATION] = destination_uri(message.routing, message.address)
            yield replace(message, properties=properties)

    def remove(self, job_id: str) -> bool:
        """Remove the scheduled message with this job id, all its future firings; False if
        there is none (as ActiveMQ: nothing happens)."""
        seq = self._jobs.pop(job_id, None)
        if seq is None:
            return False
        self._drop([seq])
        return True

    def remove_due(self, start: int = 0, end: int | None = None) -> int:
        """Remove every scheduled message next due within ``start`` .. ``end`` (inclusive);
        returns how many. Persistent ones are acknowledged in one atomic group."""
        removed = self._removed
        seqs = [
            key & _SEQ_MASK
            for key in self._heap
            if start <= key >> _SEQ_BITS
            and (end is None or key >> _SEQ_BITS <= end)
            and key & _SEQ_MASK not in removed
        ]
        if not seqs:
            return 0
        if len(seqs) == len(self):
            self._jobs.clear()
        else:
            gone = set(seqs)
            self._jobs = {job: seq for job, seq in self._jobs.items() if seq not in gone}
        self._drop(seqs)
        return len(seqs)

    def _drop(self, seqs: list[int]) -> None:
        """Forget these live seqs (already out of ``_jobs``) and ack their records."""
        held, store = self._held, self._store
        persistent = []
        for seq in seqs:
            message = held.pop(seq, None)
            if message is not None:
                self._budget.release(len(message.body))
            if message is None or message.persistent:  # (paged out: persistent)
                persistent.append(seq)
        if persistent:
            if len(persistent) > 1:
                self._atomic(True)
            try:
                for seq in persistent:
                    store.record_ack(SCHEDULE_QUEUE, seq)
                    self._persistent -= 1
            finally:
                if len(persistent) > 1:
                    self._atomic(False)
        removed, heap = self._removed, self._heap
        removed.update(seqs)
        if 2 * len(removed) > len(heap):
            self._heap = heap = [key for key in heap if key & _SEQ_MASK not in removed]
            heapq.heapify(heap)
            removed.clear()
        while heap and heap[0] & _SEQ_MASK in removed:  # keep next_due() true
            removed.discard(heapq.heappop(heap) & _SEQ_MASK)
        if not heap and self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _delivered_properties(message: Message) -> dict[str, str]:
    """A scheduled message's properties as delivered: its job id set, our state left out."""
    delivered = {k: v for k, v in message.properties.items() if k not in _STATE}
    delivered[JOB_ID] = message.message_id
    return delivered


def _with_state(message: Message, due: int, left: int, base: int) -> Message:
    properties = dict(message.properties)
    properties[_DUE] = str(due)
    properties[_LEFT] = str(left)
    if base:
        properties[_BASE] = str(base)
    return replace(message, properties=properties)

"""The router's half of the per-address policies: dead-letter moves, the expiry reaper,
``reject-new`` refusals and default TTLs.

A queue applies its own policy (:mod:`dovecote.core.queue_policy`); what needs more than one
queue, or time, is done here for the :class:`~dovecote.core.router.Router`, which builds one
:class:`DeadLetters` and one :class:`ExpiryReaper` and hands their methods to every queue:

- :meth:`DeadLetters.move` takes an entry that left its queue for good to its dead-letter
  queue, atomically in the store: the copy is recorded there and the original acknowledged in
  one group, so a crash leaves exactly one of them. It then publishes the ``MessageDLQd``
  advisory (and ``Expired``, for an expired message). An expired message that is dropped
  instead (``expired = "drop"``, or no dead-letter queue) gets the ``Expired`` advisory alone.
- :class:`ExpiryReaper` is one timer that re-arms itself every ``expiry_check_ms`` only while
  some queue holds a message that can expire; each queue keeps those in a heap by expiry time,
  so no queue is scanned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dovecote.core import advisory
from dovecote.core.errors import ResourceLimitExceeded, StoreUnavailable
from dovecote.core.message import Message, QueueEntry, RoutingType, destination_uri
from dovecote.core.policy import (
    DEFAULT_POLICY,
    DELIVERY_COUNT,
    FAILURE_CAUSE,
    ORIGINAL_DESTINATION,
    ORIGINAL_EXPIRATION,
    ExpiredAction,
)
from dovecote.core.ports import Store
from dovecote.core.queue import Queue
from dovecote.core.queue_policy import QueuePolicy
from dovecote.core.timers import TimerHandle, Timers


class DeadLetters:
    """Moves dead letters for the router (each queue's ``dead_letter`` hook is :meth:`move`).

    ``queue`` finds or creates a queue by name, ``atomic(True)``/``atomic(False)`` open and
    close a (nesting) store group, ``advise`` is :meth:`Router.advise`.
    """

    __slots__ = ("_advise", "_atomic", "_now_ms", "_queue", "_store")

    def __init__(
        self,
        store: Store,
        *,
        now_ms: Callable[[], int],
        queue: Callable[[str], Queue],
        atomic: Callable[[bool], None],
        advise: Callable[..., bool],
    ) -> None:
        self._store = store
        self._now_ms = now_ms
        self._queue = queue
        self._atomic = atomic
        self._advise = advise

    def move(self, queue: QueuePolicy, entry: QueueEntry, reason: str) -> None:
        """Move ``entry`` (out of ``queue``'s ready and in-flight sets) to its dead-letter queue,
        atomically in the store; drop it if the policy names no dead-letter queue."""
        policy = queue.policy or DEFAULT_POLICY
        message = entry.message
        expired = message.is_expired(self._now_ms())
        subscription = queue.filter is not None and not queue.durable
        target = policy.dead_letter_target(queue.name, subscription=subscription)
        if target is None or (expired and policy.expired == ExpiredAction.DROP):
            if target is None:
                queue.dropped += 1
            queue.discard(entry)
            if expired:
                fields = {"messageId": message.message_id, "deliveryCount": entry.delivery_count}
                self._advise(
                    advisory.EXPIRED, fields, routing=message.routing, address=message.address
                )
            return
        if entry.paged:
            try:
                message = replace(message, body=self._store.load_body(queue.name, entry.seq))
            except StoreUnavailable:
                # Only an expired message can be paged out here: drop it rather than stall.
                queue.dropped += 1
                queue.discard(entry)
                return
        properties = dict(message.properties)
        properties.setdefault(
            ORIGINAL_DESTINATION, destination_uri(message.routing, message.address)
        )
        properties[FAILURE_CAUSE] = reason
        properties[DELIVERY_COUNT] = str(entry.delivery_count)
        if message.expires:
            properties[ORIGINAL_EXPIRATION] = str(message.expires)
        dead = replace(
            message,
            address=target,
            routing=RoutingType.ANYCAST,
            properties=properties,
            expires=0,  # as ActiveMQ: it must not expire again in the dead-letter queue
        )
        dlq = self._queue(target)
        queue.dead_lettered += 1
        self._atomic(True)
        try:
            dlq.add(dead)
            queue.discard(entry)
        finally:
            self._atomic(False)
        self._advise_moved(message, entry.delivery_count, reason, target)

    def _advise_moved(self, message: Message, count: int, reason: str, dlq: str) -> None:
        """ActiveMQ.Advisory.MessageDLQd (and .Expired, for an expired message) about the
        message's original destination (nothing is published while advisories are off)."""
        fields = {
            "messageId": message.message_id,
            "deadLetterQueue": dlq,
            "deliveryCount": count,
            "reason": reason,
        }
        if message.is_expired(self._now_ms()):
            self._advise(advisory.EXPIRED, fields, routing=message.routing, address=message.address)
        self._advise(
            advisory.DEAD_LETTERED, fields, routing=message.routing, address=message.address
        )


class ExpiryReaper:
    """Expires what is due in every queue that holds expiring messages (idle ones included).

    A queue calls :meth:`watch` when its first expiring message arrives; the reaper's timer
    runs only while at least one queue is watched.
    """

    __slots__ = ("_handle", "_queues", "_timers", "check_ms")

    def __init__(self, timers: Timers, check_ms: int) -> None:
        self._timers = timers
        self.check_ms = check_ms
        self._queues: set[QueuePolicy] = set()  # queues holding messages that can expire
        self._handle: TimerHandle | None = None

    def watch(self, queue: QueuePolicy) -> None:
        self._queues.add(queue)
        if self._handle is None:
            self._handle = self._timers.call_later(self.check_ms, self._reap)

    def _reap(self) -> None:
        self._handle = None
        for queue in list(self._queues):
            queue.reap()
            if not queue.has_expiring():
                self._queues.discard(queue)
        if self._queues:
            self._handle = self._timers.call_later(self.check_ms, self._reap)


def full_queue_error(queue: QueuePolicy) -> ResourceLimitExceeded:
    """The refusal of a send to ``queue``, full with overflow ``reject-new``."""
    limit = queue.policy.max_messages if queue.policy is not None else 0
    return ResourceLimitExceeded(
        f"queue {queue.name[:200]!r} is full ({limit} messages waiting; overflow policy reject-new)"
    )


def with_default_ttl(message: Message, ttl_ms: int, now_ms: int) -> Message:
    """``message`` expiring ``ttl_ms`` after its timestamp (the policy's ``default_ttl_ms``)."""
    return replace(message, expires=(message.timestamp or now_ms) + ttl_ms)

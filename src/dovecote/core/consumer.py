"""A consumer on a queue, and the message-group table that pins groups to consumers.

A :class:`Consumer` carries what dispatch needs to decide whether it may take a message:
credit (prefetch, paused), its selector (compiled once, at subscribe), its consumer priority
and whether it asked to be exclusive. ``parked`` is the queue's index of ready entries that
this consumer may take but could not when they were examined (it had no credit): a heap
ordered like dispatch (highest message priority first, then oldest), read when the consumer
has credit again. It may hold stale items (taken by another consumer meanwhile); the queue
skips those and compacts the heap when they dominate.

Invariants of :class:`GroupTable`: at most ``limit`` groups are remembered (the least
recently assigned is forgotten first, as ActiveMQ's cached group map does); a group maps to a
consumer still attached to the queue (the queue forgets a consumer's groups when it leaves).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dovecote.core.message import QueueEntry
    from dovecote.core.ports import DeliverySink
    from dovecote.core.queue import Queue
    from dovecote.core.selector import Selector

DEFAULT_PREFETCH = 1000
DEFAULT_CONSUMER_PRIORITY = 0  # ActiveMQ's default consumer priority
MAX_GROUPS = 65_536  # groups remembered per queue (ActiveMQ's default cache holds 1024)

# JMS names of the message-group properties (JMS 1.1 §3.5.9). A group sequence below zero
# closes the group (ActiveMQ: JMSXGroupSeq -1): the next message of it may go anywhere.
GROUP_ID = "JMSXGroupID"
GROUP_SEQ = "JMSXGroupSeq"


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
        "exclusive",
        "in_flight",
        "key",
        "parked",
        "paused",
        "prefetch",
        "priority",
        "queue",
        "selector",
        "sink",
    )

    def __init__(
        self,
        key: object,
        sink: DeliverySink,
        *,
        ack_mode: str = AckMode.AUTO,
        prefetch: int = DEFAULT_PREFETCH,
        selector: Selector | None = None,
        priority: int = DEFAULT_CONSUMER_PRIORITY,
        exclusive: bool = False,
    ) -> None:
        self.key = key  # opaque to the core: the adapter's handle for this subscription
        self.sink = sink
        self.ack_mode = ack_mode
        self.auto_ack = ack_mode == AckMode.AUTO
        self.prefetch = max(1, prefetch)
        self.selector = selector
        self.priority = priority
        self.exclusive = exclusive
        self.paused = False
        self.in_flight: dict[int, QueueEntry] = {}  # seq -> entry, in delivery order
        # A heap of (-priority, seq, tick, entry): see the module docstring.
        self.parked: list[tuple[int, int, int, QueueEntry]] = []
        self.queue: Queue | None = None

    def __repr__(self) -> str:
        return f"<Consumer {self.key!r} {self.ack_mode} in-flight={len(self.in_flight)}>"

    def has_credit(self) -> bool:
        return not self.paused and (self.auto_ack or len(self.in_flight) < self.prefetch)

    def is_interested_in(self, entry: QueueEntry) -> bool:
        """True if its selector (if any) matches the entry's message."""
        selector = self.selector
        return selector is None or selector.matches(entry.message)

    def find_in_flight(self, message_id: str) -> int | None:
        """The delivery tag of an unacknowledged message, by its message id (STOMP 1.0/1.1)."""
        for seq, entry in self.in_flight.items():
            if entry.message.message_id == message_id:
                return seq
        return None


class GroupTable:
    """Which consumer owns each message group of one queue (bounded, oldest forgotten)."""

    __slots__ = ("_owners", "limit")

    def __init__(self, limit: int = MAX_GROUPS) -> None:
        self.limit = limit
        self._owners: OrderedDict[str, Consumer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owners)

    def owner(self, group: str) -> Consumer | None:
        return self._owners.get(group)

    def assign(self, group: str, consumer: Consumer) -> str | None:
        """Give ``group`` to ``consumer``; returns the group forgotten to make room, if any."""
        owners = self._owners
        evicted = None
        if group not in owners and len(owners) >= self.limit:
            evicted, _ = owners.popitem(last=False)
        owners[group] = consumer
        return evicted

    def close(self, group: str) -> None:
        self._owners.pop(group, None)

    def forget(self, consumer: Consumer) -> int:
        """Drop every group ``consumer`` owns (it left); returns how many."""
        gone = [group for group, owner in self._owners.items() if owner is consumer]
        for group in gone:
            del self._owners[group]
        return len(gone)


def is_group_start(sequence: str | None) -> bool:
    """True for ``JMSXGroupSeq`` 1: this message starts its group again, and the consumer that
    takes it owns the group from then on, whoever owned it (ActiveMQ's assignGroup)."""
    if sequence is None:
        return False
    try:
        return int(sequence) == 1
    except ValueError:
        return False


def is_group_end(sequence: str | None) -> bool:
    """True for a ``JMSXGroupSeq`` below zero: this message closes its group."""
    if sequence is None:
        return False
    try:
        return int(sequence) < 0
    except ValueError:
        return False

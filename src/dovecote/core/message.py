"""Messages as the core sees them, and the per-queue entry that tracks one delivery.

A :class:`Message` is immutable and shared by every queue it is routed to (a topic with ten
subscriptions holds one message, not ten). A :class:`QueueEntry` is a message's place in one
queue: its sequence number there, how often it has been delivered, and what its current
delivery is (``group_first``): per-delivery facts live on the entry, never on the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from enum import Enum

from dovecote.values import value_class

DEFAULT_PRIORITY = 4
MAX_PRIORITY = 9

# The properties of every message that has none: one shared dict instead of an empty one per
# message (64 B each, for every message of a backlog, paged or not). Typed Mapping, as
# Message.properties is, so no code can change it; whoever needs changed properties copies.
# A dict, not a read-only proxy, because the C accelerators read properties as a dict.
NO_PROPERTIES: Mapping[str, str] = {}


class RoutingType(Enum):
    """How an address routes: to one queue (point-to-point) or to every subscription (topic)."""

    ANYCAST = "anycast"
    MULTICAST = "multicast"


_URI_KINDS = {"queue": RoutingType.ANYCAST, "topic": RoutingType.MULTICAST}


def destination_uri(routing: RoutingType, address: str) -> str:
    """The core's written form of a destination, as ActiveMQ writes them in properties:
    ``queue://<address>`` or ``topic://<address>`` (``originalDestination``, a scheduler
    management ``reply-to``). :func:`parse_destination_uri` reads it back."""
    return f"{'queue' if routing is RoutingType.ANYCAST else 'topic'}://{address}"


def parse_destination_uri(text: str) -> tuple[RoutingType, str] | None:
    """(routing, address) of a :func:`destination_uri`; None if ``text`` is not one."""
    kind, separator, address = text.partition("://")
    routing = _URI_KINDS.get(kind)
    if not separator or routing is None or not address:
        return None
    return routing, address


@value_class
class Message:
    """An application message. ``properties`` are the headers the sender set (passed through
    unchanged to every protocol); the named fields are the ones the broker itself acts on."""

    message_id: str
    address: str
    routing: RoutingType
    body: bytes
    properties: Mapping[str, str] = field(default_factory=dict)
    persistent: bool = False
    priority: int = DEFAULT_PRIORITY
    expires: int = 0  # epoch milliseconds; 0 means never
    timestamp: int = 0  # epoch milliseconds when the broker accepted it

    def is_expired(self, now_ms: int) -> bool:
        return self.expires != 0 and now_ms >= self.expires


class QueueEntry:
    """A message held by one queue. ``seq`` is unique within the queue and orders FIFO."""

    __slots__ = ("delivery_count", "group_first", "message", "paged", "parked", "ready", "seq")

    def __init__(self, message: Message, seq: int, delivery_count: int = 0) -> None:
        self.message = message
        self.seq = seq
        self.delivery_count = delivery_count
        self.ready = True  # waiting in the queue (not with a consumer)
        self.paged = False  # its body is on disk only (``message.body`` is empty)
        self.parked = False  # ready, examined, and waiting for a consumer (see core.queue)
        # This delivery gave the message's group (JMSXGroupID) to its consumer: the first of
        # the group that consumer gets since it came to own it (ActiveMQ's
        # JMSXGroupFirstForConsumer). Set on every delivery of a grouped message; never set
        # for a message without a group.
        self.group_first = False

    @property
    def redelivered(self) -> bool:
        """True once the message has been handed to a consumer before this delivery."""
        return self.delivery_count > 1

    def __repr__(self) -> str:
        return f"<QueueEntry #{self.seq} {self.message.message_id} x{self.delivery_count}>"

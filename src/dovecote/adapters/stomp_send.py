"""SEND headers -> the core message: the table of headers the broker acts on, and their parsing.

Headers the broker acts on (ActiveMQ's names); every other header passes through unchanged,
as a message property (the session builds the message in ``StompSession._on_send``):

==========================  ====================================================
SEND header                 effect
==========================  ====================================================
``destination``             see :mod:`dovecote.adapters.stomp_mapping`
``persistent: true``        journaled on durable queues; RECEIPT after durable
``priority: 0-9``           dispatch priority (default 4)
``expires: <epoch ms>``     never delivered after this time (0: never expires)
``reply-to``                temp destinations rewritten to ``/remote-temp-*``
``transaction``             held until COMMIT
``receipt``                 RECEIPT once accepted (and durable, if persistent)
``AMQ_SCHEDULED_*``         scheduled delivery (passed to the core as properties)
``_AMQ_DUPL_ID``            duplicate detection (or ``dovecote-dedup-id``)
==========================  ====================================================

A bad ``priority`` or ``expires`` is refused (an ERROR frame naming the header).

Producers (:class:`Producing`): STOMP has no producer frame, so a connection is a producer of
a destination from its first accepted SEND to it (in a transaction too: accepted when held)
until it closes, one core producer per destination of a composite SEND; the core counts at
most ``MAX_TRACKED_PRODUCERS`` destinations per connection (docs/stomp.md "Advisory messages").
"""

from __future__ import annotations

from collections.abc import Sequence

from dovecote.adapters.stomp_mapping import CoreDestination
from dovecote.core.errors import InvalidRequest
from dovecote.core.message import MAX_PRIORITY
from dovecote.core.producers import Producers

_SEEN_LIMIT = 4096  # SEND destination texts remembered per connection (cleared past it)

# SEND headers consumed by the broker rather than passed through to subscribers.
NOT_PASSED_THROUGH = frozenset(
    {
        "destination",
        "transaction",
        "receipt",
        "content-length",
        "persistent",
        "priority",
        "expires",
        "message-id",
        "subscription",
        "ack",
        "redelivered",
        "timestamp",
        "JMSXGroupFirstForConsumer",  # the broker's to set, per delivery (StompSession.deliver)
    }
)


_PRIORITIES = {str(n): n for n in range(MAX_PRIORITY + 1)}  # the values senders use


def priority_of(value: str | None) -> int:
    """The ``priority`` header as a dispatch priority: absent is 4, clamped to 0-9."""
    if value is None:
        return 4
    known = _PRIORITIES.get(value)
    if known is not None:
        return known
    try:
        return min(MAX_PRIORITY, max(0, int(value)))
    except ValueError:
        raise InvalidRequest(f"priority must be an integer 0-9, not {value[:20]!r}") from None


def expires_of(value: str | None) -> int:
    """The ``expires`` header as epoch milliseconds: absent (or negative) is 0, never."""
    if value is None:
        return 0
    try:
        expires = int(value)
    except ValueError:
        raise InvalidRequest(f"expires must be epoch milliseconds, not {value[:20]!r}") from None
    return max(0, expires)


class Producing:
    """One connection's producers in the core (see the module docstring).

    ``seen`` holds the SEND destination texts already handled, so that a connection sending
    again to the same destination costs one set membership test (the session's, before it
    calls :meth:`add`). It is a cache, cleared past ``_SEEN_LIMIT``: the core ignores a
    producer it already has, and bounds how many it keeps per connection.
    """

    __slots__ = ("_connection_id", "_count", "_producers", "seen")

    def __init__(self, producers: Producers, connection_id: str) -> None:
        self._producers = producers
        self._connection_id = connection_id
        self._count = 0  # producers this connection has had: numbers their ids
        self.seen: set[str] = set()

    def add(self, text: str, destinations: Sequence[CoreDestination], info: dict[str, str]) -> None:
        """The first accepted SEND to ``text`` (whose parts are ``destinations``): a producer
        of each. ``info`` is the connection's advisory fields; each gets its ``producerId``,
        ``<n>@<connection id>`` (as a consumer's is ``<subscription id>@<connection id>``)."""
        seen = self.seen
        if len(seen) >= _SEEN_LIMIT:
            seen.clear()
        seen.add(text)
        for destination in destinations:
            producer_info = {**info, "producerId": f"{self._count + 1}@{self._connection_id}"}
            owner, routing = self._connection_id, destination.routing
            if self._producers.add(owner, routing, destination.address, producer_info):
                self._count += 1

    def close(self) -> None:
        """The connection closed: its producers go (each advised ``remove``)."""
        self.seen.clear()
        self._producers.remove_owner(self._connection_id)

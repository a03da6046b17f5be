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
"""

from __future__ import annotations

from dovecote.core.errors import InvalidRequest
from dovecote.core.message import MAX_PRIORITY

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

"""Advisory messages: broker events published on ``ActiveMQ.Advisory.*`` topics.

=============================  ===========================================================
kind                           topic
=============================  ===========================================================
``Connection``                 ``ActiveMQ.Advisory.Connection``
``Consumer``                   ``ActiveMQ.Advisory.Consumer.Queue.<name>`` / ``.Topic.<name>``
``Producer``                   ``ActiveMQ.Advisory.Producer.Queue.<name>`` / ``.Topic.<name>``
``Expired``                    ``ActiveMQ.Advisory.Expired.Queue.<name>`` / ``.Topic.<name>``
``MessageDLQd``                ``ActiveMQ.Advisory.MessageDLQd.Queue.<name>`` / ``.Topic...``
=============================  ===========================================================

ActiveMQ sends its command objects; over STOMP they reach clients as JSON when they ask for
``transformation: jms-advisory-json``. Dovecote always sends JSON (``content-type:
application/json``, ``type: Advisory``): an object with ``type`` (the kind), ``event`` and the
event's fields (strings and numbers), plus ``timestamp`` (epoch ms).

Who publishes them: the protocol adapters (``Connection``); the router as consumers attach and
leave (``Consumer``); :mod:`dovecote.core.producers` as adapters tell it who sends where
(``Producer``; a STOMP producer is a connection's first SEND to a destination, see
docs/stomp.md); the router's dead-letter handling (``Expired``, ``MessageDLQd``).

Advisories are non-persistent, and built only when some subscription matches the topic
(:meth:`dovecote.core.router.Router.advise` asks the subscription trie first). No advisory is
published about an advisory topic, or about a wildcard subscription (its name is no address).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from dovecote.core.matching import is_wildcard
from dovecote.core.message import Message, RoutingType

PREFIX = "ActiveMQ.Advisory."
CONNECTION = "Connection"
CONSUMER = "Consumer"
PRODUCER = "Producer"
EXPIRED = "Expired"
DEAD_LETTERED = "MessageDLQd"
KINDS = frozenset({CONNECTION, CONSUMER, PRODUCER, EXPIRED, DEAD_LETTERED})


def advisory_topic(kind: str, routing: RoutingType | None = None, address: str = "") -> str | None:
    """The topic an advisory of ``kind`` about ``address`` goes to; None if there is none."""
    if kind not in KINDS:
        raise ValueError(f"unknown advisory kind {kind!r}")
    if routing is None:
        return PREFIX + kind
    if not address or address.startswith(PREFIX) or is_wildcard(address):
        return None
    family = "Queue" if routing is RoutingType.ANYCAST else "Topic"
    return f"{PREFIX}{kind}.{family}.{address}"


def advisory_message(
    message_id: str, topic: str, kind: str, fields: Mapping[str, object], now_ms: int
) -> Message:
    body = {"type": kind, **fields, "timestamp": now_ms}
    return Message(
        message_id,
        topic,
        RoutingType.MULTICAST,
        json.dumps(body, separators=(",", ":"), sort_keys=True).encode(),
        {"type": "Advisory", "content-type": "application/json", "advisoryType": kind},
        persistent=False,
        timestamp=now_ms,
    )

"""SUBSCRIBE headers -> what the core needs to attach a consumer: one function, one table.

==================================  ==========================================================
SUBSCRIBE header                    effect
==================================  ==========================================================
``ack``                             auto (default), client, client-individual
``activemq.prefetchSize``           in-flight window (default 1000; below 1 counts as 1)
``selector``                        JMS 1.1 selector, compiled once; a bad one is refused
``activemq.exclusive: true``        exclusive consumer (queues): it alone receives, the next
                                    exclusive consumer takes over when it leaves
``activemq.priority: 0-127``        consumer priority (default 0): higher ones are served
                                    first while they have credit (ActiveMQ's range, a byte)
``browser: true``                   queue browser: the queue's current messages, then a
                                    MESSAGE with ``browser:end``; nothing is consumed
``activemq.subscriptionName``       durable topic subscription name (needs CONNECT
(or ``durable-subscription-name``)  ``client-id``); ignored on queues
==================================  ==========================================================

Boolean headers take ``true`` or ``false`` in any case; anything else is refused (an ERROR
frame naming the header), as is a priority that is not an integer 0-127. The ``selector``
header is applied on queues (per consumer: what it skips stays for the others) and on topics
(per subscription: what it does not match is not enqueued for it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dovecote.core.consumer import DEFAULT_CONSUMER_PRIORITY, DEFAULT_PREFETCH, AckMode
from dovecote.core.errors import InvalidRequest
from dovecote.core.selector import Selector, SelectorError, compile_selector

MAX_CONSUMER_PRIORITY = 127  # ActiveMQ's consumer priority is a byte


@dataclass(frozen=True, slots=True)
class SubscribeOptions:
    ack_mode: str = AckMode.AUTO
    prefetch: int = DEFAULT_PREFETCH
    selector: Selector | None = None
    exclusive: bool = False
    priority: int = DEFAULT_CONSUMER_PRIORITY
    browser: bool = False
    durable: str | None = None  # the subscription name as the client gave it


def subscribe_options(headers: Mapping[str, str]) -> SubscribeOptions:
    """Read and check every subscription header; raises InvalidRequest naming the bad one."""
    ack_mode = headers.get("ack", AckMode.AUTO)
    if ack_mode not in AckMode.ALL:
        raise InvalidRequest(f"unknown ack mode {ack_mode[:40]!r}")
    text = headers.get("selector")
    selector = None
    if text is not None and text.strip():
        try:
            selector = compile_selector(text)
        except SelectorError as exc:
            raise InvalidRequest(f"invalid selector: {exc.message}") from None
    return SubscribeOptions(
        ack_mode=ack_mode,
        prefetch=positive_int(
            headers.get("activemq.prefetchSize"), "activemq.prefetchSize", DEFAULT_PREFETCH
        ),
        selector=selector,
        exclusive=_boolean(headers.get("activemq.exclusive"), "activemq.exclusive"),
        priority=_consumer_priority(headers.get("activemq.priority")),
        browser=_boolean(headers.get("browser"), "browser"),
        durable=headers.get("activemq.subscriptionName")
        or headers.get("durable-subscription-name"),
    )


def positive_int(value: str | None, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer, not {value[:20]!r}") from None
    return max(1, number)


def _boolean(value: str | None, name: str) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise InvalidRequest(f"{name} must be true or false, not {value[:20]!r}")
    return lowered == "true"


def _consumer_priority(value: str | None) -> int:
    if value is None:
        return DEFAULT_CONSUMER_PRIORITY
    try:
        priority = int(value)
    except ValueError:
        priority = -1
    if not 0 <= priority <= MAX_CONSUMER_PRIORITY:
        raise InvalidRequest(
            f"activemq.priority must be an integer 0-{MAX_CONSUMER_PRIORITY}, not {value[:20]!r}"
        )
    return priority

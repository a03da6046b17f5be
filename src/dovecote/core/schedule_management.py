"""ActiveMQ's scheduler management address: a message sent to the topic
``ActiveMQ.Scheduler.Management`` asks the scheduler to act, and is never routed.

==========================  ==================================================================
property                    meaning (ActiveMQ's)
==========================  ==================================================================
``AMQ_SCHEDULER_ACTION``    ``BROWSE``: a copy of every scheduled message (its properties,
                            ``AMQ_SCHEDULED_*`` included, and ``scheduledJobId``) is sent to
                            the ``reply-to`` destination, earliest first; ``REMOVE``: the
                            scheduled message whose job id is the ``scheduledJobId``
                            property goes, with all its future firings (an unknown id: nothing
                            happens); ``REMOVEALL``: every scheduled message goes
``ACTION_START_TIME``       with ``ACTION_END_TIME`` (epoch ms, either may be left out):
                            ``BROWSE`` and ``REMOVEALL`` only act on messages next due within
                            that range, both ends included
``reply-to``                where ``BROWSE`` sends its copies, in the core's form
                            ``queue://<address>`` or ``topic://<address>`` (the adapter maps
                            its protocol's form to it); required for ``BROWSE``
==========================  ==================================================================

Invariants: an unknown action, a ``BROWSE`` without a usable ``reply-to`` or a bad time is an
InvalidRequest, and nothing is done. Browsed copies are non-persistent, get new message ids,
carry ``originalDestination`` and are routed without the queue bound (as ActiveMQ, which
sends them without flow control).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from dovecote.core.errors import InvalidRequest
from dovecote.core.message import Message, RoutingType, parse_destination_uri
from dovecote.core.scheduler import JOB_ID, Scheduler

MANAGEMENT_ADDRESS = "ActiveMQ.Scheduler.Management"  # a multicast (topic) address
ACTION = "AMQ_SCHEDULER_ACTION"
BROWSE = "BROWSE"
REMOVE = "REMOVE"
REMOVEALL = "REMOVEALL"
START_TIME = "ACTION_START_TIME"
END_TIME = "ACTION_END_TIME"
REPLY_TO = "reply-to"


def is_management_destination(routing: RoutingType, address: str) -> bool:
    """True for the topic ``ActiveMQ.Scheduler.Management``: what is sent there is an order
    to the scheduler, never routed (nor a producer's destination)."""
    return address == MANAGEMENT_ADDRESS and routing is RoutingType.MULTICAST


def is_management(message: Message) -> bool:
    return is_management_destination(message.routing, message.address)


def manage(
    scheduler: Scheduler,
    message: Message,
    *,
    route: Callable[[Message], int],
    new_id: Callable[[], str],
) -> int:
    """Do what a management ``message`` asks of ``scheduler``; returns how many scheduled
    messages it browsed or removed. ``route`` sends a browsed copy on."""
    properties = message.properties
    action = properties.get(ACTION, "").strip().upper()
    if action == REMOVE:
        job_id = properties.get(JOB_ID)
        if not job_id:
            raise InvalidRequest(f"{ACTION}:{REMOVE} needs a {JOB_ID} header")
        return 1 if scheduler.remove(job_id) else 0
    if action not in (BROWSE, REMOVEALL):
        raise InvalidRequest(
            f"{ACTION} must be {BROWSE}, {REMOVE} or {REMOVEALL}, not {action[:40]!r}"
        )
    start, end = _time(properties, START_TIME), _time(properties, END_TIME)
    if action == REMOVEALL:
        return scheduler.remove_due(start or 0, end)
    routing, address = reply_destination(properties.get(REPLY_TO))
    count = 0
    for copy in scheduler.browse(start or 0, end):
        route(
            replace(copy, message_id=new_id(), address=address, routing=routing, persistent=False)
        )
        count += 1
    return count


def reply_destination(text: str | None) -> tuple[RoutingType, str]:
    """``queue://<address>`` or ``topic://<address>`` as (routing, address)."""
    if text is None:
        raise InvalidRequest(f"{ACTION}:{BROWSE} needs a reply-to destination")
    found = parse_destination_uri(text)
    if found is None:
        raise InvalidRequest(f"reply-to {text[:100]!r} is not a destination the broker knows")
    return found


def _time(properties: Mapping[str, str], name: str) -> int | None:
    text = properties.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be epoch milliseconds, not {text[:20]!r}") from None
    if value < 0:
        raise InvalidRequest(f"{name} must not be negative")
    return value

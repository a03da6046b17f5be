"""STOMP names and headers <-> core addresses and messages: one function per direction.

Destinations (ActiveMQ's STOMP names; ``<c>`` is the owning connection's id):

=============================  =========================================  =================
STOMP destination              core                                       notes
=============================  =========================================  =================
``/queue/orders``              anycast ``orders``                         created on use
``/topic/prices.eu``           multicast ``prices.eu``                    ``*``/``>`` in SUBSCRIBE
``/temp-queue/r1``             anycast ``ID:<c>:r1``, owned by ``<c>``    deleted with ``<c>``
``/temp-topic/r1``             multicast ``ID:<c>:r1``
``/remote-temp-queue/ID:..``   anycast ``ID:..``                          how others reply
``/remote-temp-topic/ID:..``   multicast ``ID:..``
=============================  =========================================  =================

Anything else is refused: ActiveMQ, too, needs a ``/queue/`` or ``/topic/`` prefix.

Message properties: a dead letter's core ``originalDestination`` (``queue://orders``) is sent
as ``original-destination:/queue/orders``, ActiveMQ's STOMP header.
A SEND destination may be composite (ActiveMQ's composite destinations): a comma-separated
list, each item one of the forms above or ``queue://<name>`` / ``topic://<name>``; an item with
no prefix has the kind of the item before it (``/queue/a,b`` is two queues). SUBSCRIBE takes
the same lists (ActiveMQ's composite consumers: one consumer per destination, see stomp.py).

A SEND to ``/topic/ActiveMQ.Scheduler.Management`` (``MANAGEMENT_ADDRESS``) is an order
to the scheduler: its ``reply-to`` goes to the core as ``queue://<address>`` or
``topic://<address>`` (``core.message.destination_uri``), the core's form, so the core can route the
browsed copies without knowing STOMP names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dovecote.core.errors import InvalidRequest
from dovecote.core.message import RoutingType, parse_destination_uri
from dovecote.core.policy import ORIGINAL_DESTINATION

ORIGINAL_DESTINATION_HEADER = "original-destination"

QUEUE = "/queue/"
TOPIC = "/topic/"
TEMP_QUEUE = "/temp-queue/"
TEMP_TOPIC = "/temp-topic/"
REMOTE_TEMP_QUEUE = "/remote-temp-queue/"
REMOTE_TEMP_TOPIC = "/remote-temp-topic/"
TEMP_PREFIX = "ID:"
MAX_COMPOSITE = 100  # destinations in one composite SEND


@dataclass(frozen=True, slots=True)
class CoreDestination:
    routing: RoutingType
    address: str
    temporary: bool = False  # a temp queue/topic created by (and owned by) this connection
    remote_temporary: bool = False  # another connection's temp destination (must exist)


def destination_to_core(destination: str, connection_id: str) -> CoreDestination:
    """Map a STOMP destination header to a core address (see the module table)."""
    for prefix, routing in ((QUEUE, RoutingType.ANYCAST), (TOPIC, RoutingType.MULTICAST)):
        if destination.startswith(prefix):
            name = destination[len(prefix) :]
            if not name:
                break
            return CoreDestination(routing, name)
    for prefix, routing in (
        (TEMP_QUEUE, RoutingType.ANYCAST),
        (TEMP_TOPIC, RoutingType.MULTICAST),
    ):
        if destination.startswith(prefix) and len(destination) > len(prefix):
            name = destination[len(prefix) :]
            return CoreDestination(routing, f"{TEMP_PREFIX}{connection_id}:{name}", temporary=True)
    for prefix, routing in (
        (REMOTE_TEMP_QUEUE, RoutingType.ANYCAST),
        (REMOTE_TEMP_TOPIC, RoutingType.MULTICAST),
    ):
        if destination.startswith(prefix + TEMP_PREFIX):
            return CoreDestination(routing, destination[len(prefix) :], remote_temporary=True)
    raise InvalidRequest(
        f"invalid destination {destination[:200]!r}: use /queue/<name> or /topic/<name>"
    )


def destinations_to_core(destination: str, connection_id: str) -> list[CoreDestination]:
    """Map a (possibly composite, comma-separated) SEND destination; see the module text."""
    if "," not in destination:
        return [destination_to_core(destination, connection_id)]
    items = [item.strip() for item in destination.split(",")]
    if len(items) > MAX_COMPOSITE:
        raise InvalidRequest(f"a composite destination may name at most {MAX_COMPOSITE}")
    found: list[CoreDestination] = []
    for item in items:
        parsed = parse_destination_uri(item)  # queue://<name> or topic://<name>
        if parsed is not None:
            core = CoreDestination(*parsed)
        elif item.startswith("/"):
            core = destination_to_core(item, connection_id)
        elif item and found:
            core = CoreDestination(found[-1].routing, item)
        else:
            raise InvalidRequest(
                f"invalid composite destination {destination[:200]!r}: each item needs "
                "/queue/, /topic/, queue:// or topic:// (or follows one that has it)"
            )
        if core not in found:
            found.append(core)
    return found


def destination_from_core(routing: RoutingType, address: str, connection_id: str = "") -> str:
    """Map a core address back to the STOMP destination a subscriber sees.

    A temp destination shows as ``/temp-queue/<name>`` to the connection that created it and
    as ``/remote-temp-queue/ID:<c>:<name>`` to every other connection, as in ActiveMQ.
    """
    own = f"{TEMP_PREFIX}{connection_id}:"
    if connection_id and address.startswith(own):
        prefix = TEMP_QUEUE if routing is RoutingType.ANYCAST else TEMP_TOPIC
        return prefix + address[len(own) :]
    if address.startswith(TEMP_PREFIX):
        prefix = REMOTE_TEMP_QUEUE if routing is RoutingType.ANYCAST else REMOTE_TEMP_TOPIC
    else:
        prefix = QUEUE if routing is RoutingType.ANYCAST else TOPIC
    return prefix + address


def reply_to_from_client(value: str, connection_id: str) -> str:
    """Rewrite a ``reply-to`` of this connection's temp destination to the form others can use.

    ``/temp-queue/r1`` from connection ``c7`` becomes ``/remote-temp-queue/ID:c7:r1``, as in
    ActiveMQ; every other value passes through unchanged.
    """
    if value.startswith((TEMP_QUEUE, TEMP_TOPIC)):
        core = destination_to_core(value, connection_id)
        return destination_from_core(core.routing, core.address)
    return value


def properties_from_core(properties: Mapping[str, str]) -> Mapping[str, str]:
    """The headers a MESSAGE frame carries for core ``properties`` (see the module docstring).

    Only a dead letter is rewritten; every other message's properties pass as they are.
    """
    original = properties.get(ORIGINAL_DESTINATION)
    if original is None:
        return properties
    parsed = parse_destination_uri(original)
    headers = {k: v for k, v in properties.items() if k != ORIGINAL_DESTINATION}
    if parsed is not None:
        headers[ORIGINAL_DESTINATION_HEADER] = destination_from_core(*parsed)
    else:
        headers[ORIGINAL_DESTINATION_HEADER] = original
    return headers

"""Producers: who sends to which destination, and the ``Producer`` advisories about them.

A producer is an owner (whatever object its protocol adapter names: a STOMP connection's id,
an AMQP sender link) and a destination (routing type and address). The registry keeps how
many producers each destination has and, per owner, the destinations it produces to, so that
an owner's producers all go at once when it closes (:meth:`Producers.remove_owner`).

Each producer that appears or goes is advised on ``ActiveMQ.Advisory.Producer.Queue.<name>``
(or ``.Topic.<name>``; :mod:`dovecote.core.advisory`) with the fields of a consumer advisory:
the owner's ``info`` (connection id, client id, producer id), then ``event`` (``add`` or
``remove``), ``destination`` (the address) and ``producerCount`` (after the event). The fields
are built only when someone subscribes to that topic (:meth:`Router.advise
<dovecote.core.router.Router.advise>` asks the trie first and takes them lazily): otherwise
adding or removing a producer is two dictionary updates.

Invariants:
- (owner, destination) is one producer: adding it again changes nothing and advises nothing.
- An owner has at most ``limit`` producers (``MAX_TRACKED_PRODUCERS`` unless told): past it,
  :meth:`Producers.add` returns False and nothing is counted or advised, so a client sending
  to ever new names cannot grow the registry without bound.
- Advisory topics and the scheduler management topic are never a producer's destination
  (:func:`is_producer_destination`), nor are wildcards.
- A destination's count is the number of owners producing to it; a count that reaches 0 is
  deleted, as is an owner left with no producer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from dovecote.core import advisory
from dovecote.core.matching import is_wildcard
from dovecote.core.message import RoutingType
from dovecote.core.schedule_management import is_management_destination

MAX_TRACKED_PRODUCERS = 1000  # destinations per owner (per STOMP connection)

Destination = tuple[RoutingType, str]


def is_producer_destination(routing: RoutingType, address: str) -> bool:
    """False for what a send does not make a producer of: advisory topics, the scheduler's
    management topic (an order, never routed), and wildcard or empty names (never routed)."""
    if not address or address.startswith(advisory.PREFIX) or is_wildcard(address):
        return False
    return not is_management_destination(routing, address)


class Producers:
    """The producer registry (see the module docstring); ``advise`` is :meth:`Router.advise`."""

    __slots__ = ("_advise", "_by_owner", "_counts", "limit")

    def __init__(self, advise: Callable[..., bool], limit: int = MAX_TRACKED_PRODUCERS) -> None:
        if limit < 0:
            raise ValueError("the producer limit cannot be negative")
        self._advise = advise
        self.limit = limit
        self._counts: dict[Destination, int] = {}
        self._by_owner: dict[object, dict[Destination, Mapping[str, object]]] = {}

    def add(
        self, owner: object, routing: RoutingType, address: str, info: Mapping[str, object]
    ) -> bool:
        """``owner`` produces to ``address``: True if that is a new producer (then advised).

        False if it is one already, if ``owner`` has ``limit`` producers, or if the address
        is no producer's destination."""
        destination = (routing, address)
        owned = self._by_owner.get(owner)
        if owned is not None and (destination in owned or len(owned) >= self.limit):
            return False
        if not self.limit or not is_producer_destination(routing, address):
            return False
        if owned is None:
            owned = self._by_owner[owner] = {}
        owned[destination] = info
        count = self._counts.get(destination, 0) + 1
        self._counts[destination] = count
        self._advise_change("add", destination, info, count)
        return True

    def remove(self, owner: object, routing: RoutingType, address: str) -> bool:
        """``owner`` no longer produces to ``address``: True if it did (then advised)."""
        owned = self._by_owner.get(owner)
        if owned is None:
            return False
        destination = (routing, address)
        info = owned.pop(destination, None)
        if info is None:
            return False
        if not owned:
            del self._by_owner[owner]
        self._forget(destination, info)
        return True

    def remove_owner(self, owner: object) -> int:
        """Remove every producer of ``owner`` (its connection closed); returns how many."""
        owned = self._by_owner.pop(owner, None)
        if owned is None:
            return 0
        for destination, info in owned.items():
            self._forget(destination, info)
        return len(owned)

    def count(self, routing: RoutingType, address: str) -> int:
        """How many producers send to ``address``."""
        return self._counts.get((routing, address), 0)

    def destinations(self, owner: object) -> Iterator[Destination]:
        """The destinations ``owner`` produces to, first added first."""
        yield from self._by_owner.get(owner, ())

    def _forget(self, destination: Destination, info: Mapping[str, object]) -> None:
        count = self._counts[destination] - 1
        if count:
            self._counts[destination] = count
        else:
            del self._counts[destination]
        self._advise_change("remove", destination, info, count)

    def _advise_change(
        self, event: str, destination: Destination, info: Mapping[str, object], count: int
    ) -> None:
        routing, address = destination

        def fields() -> Mapping[str, object]:
            return {**info, "event": event, "destination": address, "producerCount": count}

        self._advise(advisory.PRODUCER, fields, routing=routing, address=address)

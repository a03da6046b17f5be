"""Composite subscriptions: one SUBSCRIBE id over several destinations (ActiveMQ's composite
consumer, ``/queue/a,/queue/b,topic://c``).

:class:`CompositeSubscriptions` is mixed into :class:`~dovecote.adapters.stomp.StompSession`,
which owns the state it works on.

Invariants:
- Each destination is a part: a :class:`Subscription` with a core consumer of its own,
  registered in the session's ``_subscriptions`` under ``"<id>\\0<k>"`` (a NUL: no client's
  id can collide) and numbered like any subscription, so ``ack`` ids name the part. Every part
  sends ``subscription:<id>``. ``_composites`` maps the id to its number of parts.
- A composite is attached whole or not at all (a part the core refuses detaches the others),
  and UNSUBSCRIBE of the id detaches every part.
- With ``ack:client`` the parts share one :class:`DeliveryOrder`: an ACK or NACK settles, in
  every part, what was delivered before it (:meth:`CompositeSubscriptions._settled_with`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dovecote.adapters.stomp_encoding import Subscription
from dovecote.adapters.stomp_mapping import destinations_to_core
from dovecote.adapters.stomp_subscribe import SubscribeOptions
from dovecote.core.errors import CoreError, InvalidRequest
from dovecote.core.queue import AckMode, Consumer

if TYPE_CHECKING:
    from collections.abc import Callable

    from dovecote.adapters.stomp_link import Link
    from dovecote.adapters.stomp_mapping import CoreDestination
    from dovecote.protocols.stomp import Frame, StompConnection


class CompositeSubscriptions:
    __slots__ = ()

    # The session's own state and methods (StompSession).
    _link: Link
    _stomp: StompConnection
    _subscriptions: dict[str, Subscription]
    _composites: dict[str, int]
    _max_subscriptions: int
    _next_number: int

    if TYPE_CHECKING:

        def _attach(
            self,
            key: str,
            sub: Subscription,
            destination: CoreDestination,
            options: SubscribeOptions,
        ) -> None: ...

        def _detach(self, key: str) -> Subscription | None: ...

        def _start(self, sub: Subscription) -> None: ...

        def _receipt(self, frame: Frame, then: Callable[[], None] | None = None) -> None: ...

    def _subscribe_composite(
        self, frame: Frame, sub_id: str, text: str, options: SubscribeOptions
    ) -> None:
        """Attach a part per destination of ``text``; they start once the RECEIPT is out."""
        if options.browser or options.durable:
            raise InvalidRequest("a composite destination cannot be browsed or durable")
        # A cumulative ACK settles the other parts' earlier deliveries too: in delivery order.
        order = DeliveryOrder() if options.ack_mode == AckMode.CLIENT else None
        destinations = destinations_to_core(text, self._link.connection_id)
        if len(self._subscriptions) + len(destinations) > self._max_subscriptions:
            raise InvalidRequest(f"more than {self._max_subscriptions} subscriptions")
        parts: list[Subscription] = []
        try:
            for destination in destinations:
                sub = Subscription(sub_id, self._next_number, text, self._stomp.version)
                sub.order = order
                self._attach(f"{sub_id}\0{len(parts)}", sub, destination, options)
                parts.append(sub)
        except CoreError:
            for k in range(len(parts)):
                self._detach(f"{sub_id}\0{k}")
            raise
        self._composites[sub_id] = len(parts)

        def start() -> None:
            for sub in parts:
                self._start(sub)

        self._receipt(frame, then=start)

    def _unsubscribe_composite(self, sub_id: str) -> bool:
        """Detach every part of composite ``sub_id``; False if it is no composite."""
        parts = self._composites.pop(sub_id, 0)
        for k in range(parts):
            self._detach(f"{sub_id}\0{k}")
        return parts > 0

    def _composite_parts(self, sub_id: str) -> list[Subscription]:
        return [self._subscriptions[f"{sub_id}\0{k}"] for k in range(self._composites[sub_id])]

    def _settled_with(self, consumer: Consumer, seq: int) -> list[tuple[Consumer, int]]:
        """What an ACK or NACK of (``consumer``, ``seq``) settles: that delivery (in client
        mode, the consumer's earlier ones with it, by the core), or, on a part of a composite
        ``ack:client`` subscription, every part's deliveries up to it."""
        sub = consumer.key
        if not isinstance(sub, Subscription) or sub.order is None:
            return [(consumer, seq)]
        parts = [(p.number, p.consumer) for p in self._composite_parts(sub.id) if p.consumer]
        return sub.order.up_to(sub.number, seq, parts)


class DeliveryOrder:
    """The order in which the parts of one composite ``ack:client`` subscription (a consumer
    per destination) were sent their messages, so that a cumulative ACK or NACK settles every
    part's earlier deliveries too, as ActiveMQ's single consumer over the composite
    destination does. Each delivery gets a tick; a part's in-flight messages are in delivery
    order, so per part the ones to settle are a prefix.

    Ticks of deliveries settled otherwise (by a transaction, a consumer gone) are dropped
    lazily: the table is rebuilt from what is in flight once it is twice that size.
    """

    __slots__ = ("_next", "_ticks")

    def __init__(self) -> None:
        self._next = 0
        self._ticks: dict[tuple[int, int], int] = {}  # (part number, seq) -> tick

    def delivered(self, part: int, seq: int) -> None:
        self._next += 1
        self._ticks[(part, seq)] = self._next

    def up_to(
        self, part: int, seq: int, parts: Sequence[tuple[int, Consumer]]
    ) -> list[tuple[Consumer, int]]:
        """For an ACK or NACK of ``seq`` on ``part``: per part (number, consumer), the last
        in-flight delivery sent at or before it (the part's cumulative ACK goes up to it)."""
        limit = self._ticks[(part, seq)]
        found: list[tuple[Consumer, int]] = []
        in_flight = 0
        for number, consumer in parts:
            in_flight += len(consumer.in_flight)
            last = None
            for s in consumer.in_flight:
                tick = self._ticks.get((number, s))
                if tick is None or tick > limit:
                    break
                last = s
            if last is not None:
                found.append((consumer, last))
        if len(self._ticks) > 2 * in_flight + 64:
            self._forget_settled(parts)
        return found

    def _forget_settled(self, parts: Sequence[tuple[int, Consumer]]) -> None:
        ticks = self._ticks
        self._ticks = {
            (number, s): ticks[(number, s)]
            for number, consumer in parts
            for s in consumer.in_flight
            if (number, s) in ticks
        }

"""Local transactions: sends and acknowledgements held back until commit.

Nothing in an open transaction is visible: its messages are routed, and its acknowledgements
applied, only at :meth:`Transaction.commit`. :meth:`Transaction.abort` forgets both; messages
whose acknowledgement is forgotten stay unacknowledged with their consumer (they are
redelivered if it goes away), as STOMP's ABORT leaves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dovecote.core.errors import NotFound
from dovecote.core.message import Message
from dovecote.core.queue import Consumer
from dovecote.core.router import Router

MAX_TRANSACTION_OPERATIONS = 100_000


@dataclass(slots=True)
class Transaction:
    tx_id: str
    sends: list[Message] = field(default_factory=list)
    acks: list[tuple[Consumer, int, bool]] = field(default_factory=list)  # (consumer, seq, ack?)

    @property
    def size(self) -> int:
        return len(self.sends) + len(self.acks)

    def add_send(self, message: Message) -> None:
        self.sends.append(message)

    def add_ack(self, consumer: Consumer, seq: int, *, ack: bool = True) -> None:
        """Hold an ack (or, with ``ack=False``, a nack) of a delivery currently in flight."""
        if seq not in consumer.in_flight:
            raise NotFound(f"no unacknowledged message with ack id {seq} on this subscription")
        self.acks.append((consumer, seq, ack))

    def commit(self, router: Router) -> None:
        """Apply every held operation, in order; durable ones survive a crash all or none."""
        for message in self.sends:  # all or nothing: refuse before applying anything
            router.check_routable(message)
        router.begin_atomic()
        try:
            self._apply(router)
        finally:
            router.end_atomic()
        self.sends.clear()
        self.acks.clear()

    def _apply(self, router: Router) -> None:
        for message in self.sends:
            router.send(message)
        for consumer, seq, ack in self.acks:
            queue = consumer.queue
            if queue is None or seq not in consumer.in_flight:
                # The consumer left (its messages went back to the queue) or a cumulative
                # ack earlier in this transaction already settled it.
                continue
            if ack:
                queue.ack(consumer, seq)
            else:
                queue.nack(consumer, seq)

    def abort(self) -> None:
        self.sends.clear()
        self.acks.clear()

"""What the core needs from outside, as Protocols implemented elsewhere and injected.

- :class:`Store` makes durable what must survive a restart. Calls are made synchronously from
  the core as state changes; an implementation may batch them (group commit) and reports
  durability through :meth:`Store.call_when_durable`.
- :class:`Clock` gives wall-clock milliseconds (timestamps, expiry).
- :class:`DeliverySink` is how a queue hands a message to a consumer's connection.
- :class:`Wakeup` is how the core's timers (:mod:`dovecote.core.timers`) get called back: the
  server implements it on the event loop, tests drive the timers by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dovecote.core.message import Message, QueueEntry
    from dovecote.core.queue import Consumer


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the epoch."""
        ...


class Wakeup(Protocol):
    def wake_at(self, due_ms: int) -> None:
        """Call ``Timers.run_due`` once the clock reaches ``due_ms`` (epoch milliseconds).

        Each call names the earliest pending deadline; an earlier one supersedes a later one.
        ``run_due`` leaves the timers its callbacks set to the next run (and asks for them):
        a driver that runs it again at once still lets other work in between.
        """
        ...


class Store(Protocol):
    def is_available(self) -> bool:
        """False while the store cannot write (disk full, I/O error): refuse persistent sends."""
        ...

    def record_queue(
        self, name: str, address: str, filter_: str | None, selector: str | None = None
    ) -> None:
        """A durable queue (or durable subscription, with its topic pattern ``filter_`` and
        the text of its selector, if any) now exists. The core passes ``selector`` only when
        there is one, so a store written before selectors keeps working."""
        ...

    def forget_queue(self, name: str) -> None:
        """A durable queue and everything in it is gone."""
        ...

    def record_message(self, queue: str, seq: int, message: Message) -> None:
        """A persistent message was added to a durable queue at ``seq``."""
        ...

    def record_ack(self, queue: str, seq: int) -> None:
        """The message at ``seq`` left the queue for good (acknowledged, expired, purged)."""
        ...

    def record_delivery(
        self, queue: str, seq: int, delivery_count: int, hold_until: int = 0
    ) -> None:
        """The message at ``seq`` was handed to a consumer (for ``redelivered`` after a crash);
        with ``hold_until`` (epoch ms), it came back and waits out a redelivery delay until
        then (so that it is not available at once after a restart)."""
        ...

    def is_on_disk(self, queue: str, seq: int) -> bool:
        """True once the message at ``seq`` can be read back with :meth:`load_body`."""
        ...

    def load_body(self, queue: str, seq: int) -> bytes:
        """The body of a message whose entry was paged out (raises StoreUnavailable)."""
        ...

    def load_message(self, queue: str, seq: int) -> Message:
        """The whole message recorded at ``seq`` (raises StoreUnavailable if it cannot)."""
        ...

    def record_duplicate_id(self, address: str, seq: int, duplicate_id: str) -> None:
        """``duplicate_id`` was accepted on ``address`` (``seq`` orders ids per address)."""
        ...

    def forget_duplicate_id(self, address: str, duplicate_id: str) -> None:
        """``duplicate_id`` left the address's bounded cache: its record may go."""
        ...

    def begin_atomic(self) -> None:
        """Records until :meth:`end_atomic` survive a crash together or not at all."""
        ...

    def end_atomic(self) -> None: ...

    def call_when_durable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything recorded so far is durable."""
        ...


class DeliverySink(Protocol):
    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        """Send ``entry`` to the consumer's peer. Must not call back into the queue."""
        ...

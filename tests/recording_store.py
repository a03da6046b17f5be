"""The recording Store of the core's tests: what the core tells its Store port, in order.

Each call it records is one tuple in ``calls``:

- ``("queue", name, address, filter)``, with the selector last when there is one
- ``("forget", name)``
- ``("message", queue, seq, message_id)``
- ``("ack", queue, seq)``
- ``("delivery", queue, seq, delivery_count)``, with the hold's end last when there is one
- ``("begin",)`` and ``("end",)`` around an atomic group

Every other port method is the memory store's. Set ``available`` to False to make the core
see the store refuse persistent messages.
"""

from __future__ import annotations

from dovecote.core.message import Message
from dovecote.store.memory import MemoryStore


class RecordingStore(MemoryStore):
    """The memory store (so every port method exists), recording what the core tells it."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.available = True

    def is_available(self) -> bool:
        return self.available

    def record_queue(
        self, name: str, address: str, filter_: str | None, selector: str | None = None
    ) -> None:
        chosen = (selector,) if selector is not None else ()
        self.calls.append(("queue", name, address, filter_, *chosen))

    def forget_queue(self, name: str) -> None:
        self.calls.append(("forget", name))

    def record_message(self, queue: str, seq: int, message: Message) -> None:
        self.calls.append(("message", queue, seq, message.message_id))

    def record_ack(self, queue: str, seq: int) -> None:
        self.calls.append(("ack", queue, seq))

    def record_delivery(
        self, queue: str, seq: int, delivery_count: int, hold_until: int = 0
    ) -> None:
        held = (hold_until,) if hold_until else ()
        self.calls.append(("delivery", queue, seq, delivery_count, *held))

    def begin_atomic(self) -> None:
        self.calls.append(("begin",))

    def end_atomic(self) -> None:
        self.calls.append(("end",))

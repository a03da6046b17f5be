"""A store that keeps nothing: the broker's state lives only in the core's queues.

Every confirmation is immediate. Used for brokers that need no durability (tests, caches) and
until the journal is configured; messages do not survive a restart.
"""

from __future__ import annotations

from collections.abc import Callable

from dovecote.core.errors import StoreUnavailable
from dovecote.core.message import Message


class MemoryStore:
    def is_available(self) -> bool:
        return True

    def record_delivery(
        self, queue: str, seq: int, delivery_count: int, hold_until: int = 0
    ) -> None:
        return None

    def is_on_disk(self, queue: str, seq: int) -> bool:
        return False  # nothing is: no body ever leaves memory

    def load_body(self, queue: str, seq: int) -> bytes:
        raise StoreUnavailable("the memory store keeps no message bodies")

    def load_message(self, queue: str, seq: int) -> Message:
        raise StoreUnavailable("the memory store keeps no messages")

    def record_duplicate_id(self, address: str, seq: int, duplicate_id: str) -> None:
        return None

    def forget_duplicate_id(self, address: str, duplicate_id: str) -> None:
        return None

    def begin_atomic(self) -> None:
        return None

    def end_atomic(self) -> None:
        return None

    def record_queue(
        self, name: str, address: str, filter_: str | None, selector: str | None = None
    ) -> None:
        return None

    def forget_queue(self, name: str) -> None:
        return None

    def record_message(self, queue: str, seq: int, message: Message) -> None:
        return None

    def record_ack(self, queue: str, seq: int) -> None:
        return None

    def call_when_durable(self, callback: Callable[[], None]) -> None:
        callback()

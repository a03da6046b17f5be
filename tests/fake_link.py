"""A STOMP session's connection, faked: what ``adapters.stomp_link.Link`` asks of it, with
what the session wrote kept in ``written`` (for adapter tests without sockets)."""

from __future__ import annotations

from collections.abc import Callable


class Timer:
    def cancel(self) -> None:
        return None


class FakeLink:
    """What a session needs of its connection (adapters.stomp_link.Link)."""

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.last_received = 0.0
        self.last_sent = 0.0
        self.written: list[bytes] = []
        self.closed: str | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self, reason: str) -> None:
        self.closed = reason

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def now(self) -> float:
        return 0.0

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return Timer()

"""The injected clock of the core's tests: time moves only when a test moves it."""

from __future__ import annotations

T0 = 1_000_000  # epoch milliseconds the tests start at unless they say otherwise


class FakeClock:
    """The core's Clock port; set ``now`` (epoch milliseconds) to move time."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def now_ms(self) -> int:
        return self.now

"""The core's timers on an injected clock (no sleeps): order, cancelling, the wakeup port,
runs that leave what their callbacks set to the next run, and a bounded heap."""

from __future__ import annotations

import pytest

from dovecote.core.timers import Timers
from fake_clock import FakeClock

T0 = 1_000_000


class Wakeup:
    def __init__(self) -> None:
        self.asked: list[int] = []

    def wake_at(self, due_ms: int) -> None:
        self.asked.append(due_ms)


def test_timers_run_in_order_once_and_not_when_cancelled() -> None:
    clock = FakeClock()
    timers = Timers(clock)
    ran: list[str] = []
    wakeup = Wakeup()
    timers.call_later(20, lambda: ran.append("b"))
    timers.set_wakeup(wakeup)
    assert wakeup.asked == [T0 + 20]
    timers.call_later(10, lambda: ran.append("a"))
    timers.call_later(30, lambda: ran.append("never")).cancel()
    assert wakeup.asked == [T0 + 20, T0 + 10]  # asked again only for an earlier deadline
    clock.now += 19
    assert timers.run_due() == 1
    clock.now += 100
    assert timers.run_due() == 1
    assert ran == ["a", "b"]
    assert timers.next_due() is None


def test_a_timer_set_by_a_callback_waits_for_the_next_run() -> None:
    """Even when due at once (or earlier): the driver gets control between the two runs."""
    clock = FakeClock()
    timers = Timers(clock)
    wakeup = Wakeup()
    timers.set_wakeup(wakeup)
    ran: list[str] = []

    def slice_(n: int) -> None:
        ran.append(f"slice {n}")
        if n < 3:
            timers.call_at(clock.now - n, lambda: slice_(n + 1))

    timers.call_at(T0, lambda: slice_(1))
    timers.call_at(T0, lambda: ran.append("other"))
    assert timers.run_due() == 2
    assert ran == ["slice 1", "other"]
    assert timers.next_due() == T0 - 1
    assert wakeup.asked[-1] == T0 - 1  # the driver is asked to come back at once
    assert timers.run_due() == 1
    assert timers.run_due() == 1
    assert timers.run_due() == 0
    assert ran == ["slice 1", "other", "slice 2", "slice 3"]


def test_a_callback_that_raises_leaves_the_rest_pending() -> None:
    clock = FakeClock()
    timers = Timers(clock)
    ran: list[str] = []

    def boom() -> None:
        timers.call_at(T0, lambda: ran.append("set by boom"))
        raise RuntimeError("boom")

    timers.call_at(T0, boom)
    timers.call_at(T0, lambda: ran.append("after"))
    with pytest.raises(RuntimeError, match="boom"):
        timers.run_due()
    assert timers.next_due() == T0
    assert timers.run_due() == 2
    assert ran == ["after", "set by boom"]


def test_cancelled_timers_do_not_pile_up() -> None:
    """One timer moved earlier 10,000 times (the scheduler's, under ever earlier messages)."""
    clock = FakeClock()
    timers = Timers(clock)
    ran: list[int] = []
    keep = timers.call_at(T0 + 50_000, lambda: ran.append(-1))
    handle = None
    for n in range(10_000):
        if handle is not None:
            handle.cancel()
        handle = timers.call_at(T0 + 20_000 - n, lambda n=n: ran.append(n))
        assert len(timers) <= 70
    clock.now = T0 + 100_000
    assert timers.run_due() == 2
    assert ran == [9_999, -1]
    keep.cancel()  # (already ran: nothing to do)
    assert len(timers) == 0

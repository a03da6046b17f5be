"""MemoryBudget: charging, exhaustion, and resuming waiting producers in order."""

from __future__ import annotations

import pytest

from dovecote.core.limits import ENTRY_OVERHEAD, MemoryBudget


def test_charge_and_release_count_body_plus_overhead() -> None:
    budget = MemoryBudget(limit=10_000)
    budget.charge(100)
    budget.charge(0)
    assert budget.used == 100 + 2 * ENTRY_OVERHEAD
    budget.release(100)
    assert budget.used == ENTRY_OVERHEAD
    budget.release(0)
    assert budget.used == 0


def test_exhausted_at_the_limit() -> None:
    budget = MemoryBudget(limit=ENTRY_OVERHEAD + 10)
    budget.charge(9)
    assert budget.is_exhausted() is False
    budget.release(9)
    budget.charge(10)
    assert budget.used == budget.limit
    assert budget.is_exhausted() is True


@pytest.mark.parametrize("limit", [0, -1])
def test_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError, match=r"^the memory limit must be positive$"):
        MemoryBudget(limit=limit)


def test_call_when_available_runs_at_once_below_the_resume_level() -> None:
    budget = MemoryBudget(limit=1000 + ENTRY_OVERHEAD, resume_ratio=1.0)
    calls: list[str] = []
    budget.call_when_available(lambda: calls.append("now"))
    assert calls == ["now"]
    assert budget.waiting == 0


def test_waiting_producers_resume_in_order_once_usage_falls_to_the_resume_level() -> None:
    # limit 4 entries of 0 bytes; resume at half of it: 2 entries.
    budget = MemoryBudget(limit=4 * ENTRY_OVERHEAD, resume_ratio=0.5)
    for _ in range(4):
        budget.charge(0)
    calls: list[str] = []
    budget.call_when_available(lambda: calls.append("first"))
    budget.call_when_available(lambda: calls.append("second"))
    assert budget.waiting == 2
    budget.release(0)  # 3 entries: above the resume level
    assert calls == []
    assert budget.waiting == 2
    budget.release(0)  # 2 entries: at the resume level
    assert calls == ["first", "second"]
    assert budget.waiting == 0
    budget.release(0)
    assert calls == ["first", "second"]


def test_a_resumed_producer_may_wait_again() -> None:
    budget = MemoryBudget(limit=2 * ENTRY_OVERHEAD, resume_ratio=0.5)
    budget.charge(0)
    budget.charge(0)
    calls: list[int] = []

    def resume() -> None:
        calls.append(budget.used)
        budget.charge(0)
        budget.charge(0)
        budget.call_when_available(resume)

    budget.call_when_available(resume)
    budget.release(0)
    assert calls == [ENTRY_OVERHEAD]
    assert budget.waiting == 1
    budget.release(0)
    budget.release(0)
    assert calls == [ENTRY_OVERHEAD, ENTRY_OVERHEAD]

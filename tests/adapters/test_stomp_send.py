"""SEND header values the broker acts on: priority."""

from __future__ import annotations

import pytest

from dovecote.adapters.stomp_send import priority_of
from dovecote.core.errors import InvalidRequest


@pytest.mark.parametrize(
    ("value", "priority"),
    [(None, 4), *((str(n), n) for n in range(10)), ("-3", 0), ("12", 9), (" 5", 5), ("07", 7)],
)
def test_priority_header_is_clamped_to_0_9(value: str | None, priority: int) -> None:
    assert priority_of(value) == priority


@pytest.mark.parametrize("value", ["", "high", "4.5"])
def test_a_priority_that_is_not_an_integer_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="priority must be an integer 0-9"):
        priority_of(value)

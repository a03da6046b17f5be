"""Exact loss and duplicate accounting, and latency percentiles.

Every message a run sends has a global index ``producer * per_producer + sequence``. A
consumer keeps one counter per index (an ``array('I')``: four bytes a message, no objects)
and hands the whole array back; from those arrays the run knows exactly which messages
arrived, how often, and which never did.

Invariants: ``received == unique + duplicates`` and ``unique + lost == expected`` for every
``Tally``; counts of several consumers of one queue are summed before tallying, counts of
topic subscribers are tallied one by one (each must see every message).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .frames import MAX_PRODUCERS, MAX_SEQUENCE


def new_counts(total: int) -> array[int]:
    """A zeroed counter per message of a run."""
    return array("I", bytes(4 * total))


def merge(all_counts: Iterable[array[int]]) -> array[int]:
    """Element-wise sum: what several consumers of one queue received together."""
    merged: array[int] | None = None
    for counts in all_counts:
        if merged is None:
            merged = array("I", counts)
        elif len(counts) != len(merged):
            raise ValueError(f"cannot merge counts of {len(counts)} and {len(merged)} messages")
        else:
            merged = array("I", map(sum, zip(merged, counts, strict=True)))
    if merged is None:
        raise ValueError("no counts to merge")
    return merged


@dataclass(frozen=True, slots=True)
class Tally:
    """What arrived out of ``expected`` messages."""

    expected: int
    received: int
    unique: int
    lost: int
    duplicates: int
    first_lost: tuple[int, ...]  # up to ten missing global indexes, for the report

    @property
    def is_exact(self) -> bool:
        """True when every message arrived exactly once."""
        return self.lost == 0 and self.duplicates == 0


def tally(counts: array[int]) -> Tally:
    """Count arrivals, losses and duplicates in one counter array."""
    expected = len(counts)
    lost = counts.count(0)
    received = sum(counts)
    unique = expected - lost
    first_lost: list[int] = []
    if lost:
        first_lost = [i for i, c in enumerate(counts) if c == 0][:10]
    return Tally(
        expected=expected,
        received=received,
        unique=unique,
        lost=lost,
        duplicates=received - unique,
        first_lost=tuple(first_lost),
    )


def describe_missing(first_lost: Sequence[int], per_producer: int) -> str:
    """Missing global indexes as ``producer/seq`` pairs, for an error message."""
    return ", ".join(f"{i // per_producer}/{i % per_producer}" for i in first_lost)


def percentile(ordered: Sequence[int], fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence (fraction in 0..1)."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def check_id_space(producers: int, per_producer: int) -> None:
    """Refuse runs whose ids do not fit the fixed-width body layout."""
    if not 0 < producers <= MAX_PRODUCERS:
        raise ValueError(f"producers must be 1..{MAX_PRODUCERS}, not {producers}")
    if not 0 < per_producer <= MAX_SEQUENCE:
        raise ValueError(f"messages per producer must be 1..{MAX_SEQUENCE}, not {per_producer}")

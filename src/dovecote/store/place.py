"""A message record's place in the journal: segment, offset and size, packed in one int.

The journal's location tables (queue -> seq -> place) hold one per live message; the journal
and its compaction (:mod:`dovecote.store.compaction`) both read and write them.

Invariants:
- Offset 0 means "not yet written": every record of a segment follows its header, so no
  written record starts at 0.
- Offset and size each take 32 bits, the segment the bits above them.
"""

from __future__ import annotations


def pack_place(segment: int, size: int, offset: int = 0) -> int:
    """A message record's place: segment, offset (0 until written) and size, in one int."""
    return segment << 64 | offset << 32 | size


def segment_of(packed: int) -> int:
    return packed >> 64


def offset_of(packed: int) -> int:
    return (packed >> 32) & 0xFFFFFFFF


def size_of(packed: int) -> int:
    return packed & 0xFFFFFFFF

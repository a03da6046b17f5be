"""Broker-side duplicate detection: a bounded cache of producer-supplied ids per address.

A message carrying ``_AMQ_DUPL_ID`` (Artemis's name) or ``dovecote-dedup-id`` is routed only
if its id is not in its address's cache; a resend after a lost receipt is then dropped (and
still confirmed). Each address remembers its last ``size`` ids (Artemis's ``id-cache-size``,
default 20,000); the oldest is forgotten first.

Invariants:
- An id is remembered only once its message is routed, in the same atomic store group as the
  message's own records (persistent messages only): after a crash, an id whose message was
  journaled is still a duplicate, and an id whose message was lost is not.
- The store is told of every id that leaves a cache, so its record can be reclaimed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from dovecote.core.message import Message, RoutingType

if TYPE_CHECKING:
    from dovecote.core.ports import Store

DUPLICATE_ID_HEADERS = ("_AMQ_DUPL_ID", "dovecote-dedup-id")
DEFAULT_CACHE_SIZE = 20_000


def duplicate_id_of(properties: Mapping[str, str]) -> str | None:
    for name in DUPLICATE_ID_HEADERS:
        value = properties.get(name)
        if value:
            return value
    return None


def cache_key(message: Message) -> str:
    """The cache an id belongs to: a queue's name, or ``topic://`` and the topic's."""
    if message.routing is RoutingType.ANYCAST:
        return message.address
    return f"topic://{message.address}"


class DuplicateCache:
    def __init__(self, store: Store, size: int = DEFAULT_CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError("the duplicate-id cache size must be at least 1")
        self.size = size
        self._store = store
        self._ids: dict[str, dict[str, int]] = {}  # key -> id -> seq (insertion = age order)
        self._seqs: dict[str, int] = {}

    def is_duplicate(self, key: str, duplicate_id: str) -> bool:
        ids = self._ids.get(key)
        return ids is not None and duplicate_id in ids

    def remember(self, key: str, duplicate_id: str, *, persistent: bool) -> None:
        seq = self._seqs.get(key, 0) + 1
        self._seqs[key] = seq
        ids = self._ids.setdefault(key, {})
        ids[duplicate_id] = seq
        if persistent:
            self._store.record_duplicate_id(key, seq, duplicate_id)
        self._trim(key, ids)

    def restore(self, key: str, ids: Iterable[tuple[int, str]]) -> None:
        """Ids recovered from the store, as (seq, id); the newest ``size`` are kept."""
        cache = self._ids.setdefault(key, {})
        for seq, duplicate_id in sorted(ids):
            cache[duplicate_id] = seq
            self._seqs[key] = max(self._seqs.get(key, 0), seq)
        self._trim(key, cache)

    def _trim(self, key: str, ids: dict[str, int]) -> None:
        while len(ids) > self.size:
            oldest = next(iter(ids))
            del ids[oldest]
            self._store.forget_duplicate_id(key, oldest)

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._ids.values())

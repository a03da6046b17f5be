"""Wildcard subscriptions in a trie (ActiveMQ syntax): ``.`` separates words, ``*`` matches one
word, ``>`` matches one or more words at the end.

Matching walks the trie along the address's words, so its cost depends on the address's length
and the wildcards present, never on the number of subscriptions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

ANY_WORD = "*"
ANY_TAIL = ">"
SEPARATOR = "."

V = TypeVar("V", bound=Hashable)


def is_wildcard(pattern: str) -> bool:
    """True when ``pattern`` has a ``*`` or ``>`` word."""
    return any(word in (ANY_WORD, ANY_TAIL) for word in pattern.split(SEPARATOR))


def is_valid_pattern(pattern: str) -> bool:
    """``>`` may only be the last word; words may not be empty."""
    words = pattern.split(SEPARATOR)
    return all(words) and ANY_TAIL not in words[:-1]


class _Node(Generic[V]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.values: set[V] = set()


class TopicTrie(Generic[V]):
    """A map from wildcard patterns to sets of values (subscriptions)."""

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: str, value: V) -> None:
        node = self._root
        for word in pattern.split(SEPARATOR):
            node = node.children.setdefault(word, _Node())
        if value not in node.values:
            node.values.add(value)
            self._count += 1

    def remove(self, pattern: str, value: V) -> bool:
        """Remove ``value`` from ``pattern``; prune empty nodes. False if it was not there."""
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for word in pattern.split(SEPARATOR):
            child = node.children.get(word)
            if child is None:
                return False
            path.append((node, word))
            node = child
        if value not in node.values:
            return False
        node.values.discard(value)
        self._count -= 1
        for parent, word in reversed(path):
            child = parent.children[word]
            if child.values or child.children:
                break
            del parent.children[word]
        return True

    def match(self, address: str) -> set[V]:
        """Every value whose pattern matches the (wildcard-free) ``address``."""
        found: set[V] = set()
        self._walk(self._root, address.split(SEPARATOR), 0, found)
        return found

    def _walk(self, node: _Node[V], words: list[str], i: int, found: set[V]) -> None:
        tail = node.children.get(ANY_TAIL)
        if tail is not None and i < len(words):
            found |= tail.values
        if i == len(words):
            found |= node.values
            return
        exact = node.children.get(words[i])
        if exact is not None:
            self._walk(exact, words, i + 1, found)
        star = node.children.get(ANY_WORD)
        if star is not None:
            self._walk(star, words, i + 1, found)

    def values(self) -> Iterator[V]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from node.values
            stack.extend(node.children.values())

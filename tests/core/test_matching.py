"""TopicTrie and the pattern predicates (ActiveMQ wildcards: ``.`` words, ``*`` one, ``>`` rest)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovecote.core.matching import TopicTrie, is_valid_pattern, is_wildcard


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param("a", False, id="word"),
        pytest.param("a.b.c", False, id="words"),
        pytest.param("*", True, id="star"),
        pytest.param(">", True, id="tail"),
        pytest.param("a.*.c", True, id="star-in-middle"),
        pytest.param("a.>", True, id="tail-at-end"),
        pytest.param("a*", False, id="star-inside-a-word"),
        pytest.param("a.b>", False, id="tail-inside-a-word"),
        pytest.param("**", False, id="double-star-word"),
        pytest.param("", False, id="empty"),
        pytest.param("a.>.b", True, id="misplaced-tail-is-still-wildcard"),
    ],
)
def test_is_wildcard(pattern: str, expected: bool) -> None:
    assert is_wildcard(pattern) is expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        pytest.param("a", True, id="word"),
        pytest.param("a.b.c", True, id="words"),
        pytest.param("*", True, id="star"),
        pytest.param(">", True, id="tail"),
        pytest.param("*.*", True, id="stars"),
        pytest.param("a.*.>", True, id="star-then-tail"),
        pytest.param("a.>", True, id="tail-last"),
        pytest.param("a.>.b", False, id="tail-not-last"),
        pytest.param(">.>", False, id="two-tails"),
        pytest.param("", False, id="empty"),
        pytest.param("a..b", False, id="empty-word"),
        pytest.param(".a", False, id="leading-dot"),
        pytest.param("a.", False, id="trailing-dot"),
    ],
)
def test_is_valid_pattern(pattern: str, expected: bool) -> None:
    assert is_valid_pattern(pattern) is expected


SUBSCRIPTIONS = {
    "exact": "prices.eu.gbp",
    "star-last": "prices.eu.*",
    "star-middle": "prices.*.gbp",
    "star-first": "*.eu.gbp",
    "tail": "prices.>",
    "tail-deep": "prices.eu.>",
    "everything": ">",
    "two-words": "*.*",
    "other": "orders.>",
    "short": "prices",
}


@pytest.fixture
def trie() -> TopicTrie[str]:
    trie: TopicTrie[str] = TopicTrie()
    for name, pattern in SUBSCRIPTIONS.items():
        trie.add(pattern, name)
    return trie


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param(
            "prices.eu.gbp",
            {"exact", "star-last", "star-middle", "star-first", "tail", "tail-deep", "everything"},
            id="prices.eu.gbp",
        ),
        pytest.param(
            "prices.eu.usd", {"star-last", "tail", "tail-deep", "everything"}, id="prices.eu.usd"
        ),
        pytest.param("prices.us.gbp", {"star-middle", "tail", "everything"}, id="prices.us.gbp"),
        pytest.param("prices.eu", {"tail", "everything", "two-words"}, id="prices.eu"),
        # ">" needs at least one word: "prices.>" does not match "prices".
        pytest.param("prices", {"short", "everything"}, id="prices"),
        pytest.param(
            "prices.eu.gbp.spot", {"tail", "tail-deep", "everything"}, id="prices.eu.gbp.spot"
        ),
        pytest.param("orders.new", {"other", "everything", "two-words"}, id="orders.new"),
        pytest.param("orders", {"everything"}, id="orders"),
        pytest.param("x.eu.gbp", {"star-first", "everything"}, id="x.eu.gbp"),
    ],
)
def test_match(trie: TopicTrie[str], address: str, expected: set[str]) -> None:
    assert trie.match(address) == expected


def test_empty_trie_matches_nothing() -> None:
    trie: TopicTrie[str] = TopicTrie()
    assert trie.match("a.b") == set()
    assert len(trie) == 0
    assert list(trie.values()) == []


def test_len_counts_pattern_value_pairs_and_ignores_duplicates() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a.b", "s1")
    trie.add("a.b", "s1")
    assert len(trie) == 1
    trie.add("a.b", "s2")
    trie.add("a.*", "s1")
    assert len(trie) == 3
    # One value under two matching patterns is reported once.
    assert trie.match("a.b") == {"s1", "s2"}
    assert sorted(trie.values()) == ["s1", "s1", "s2"]


def test_remove_returns_whether_it_was_there() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a.b", "s1")
    assert trie.remove("a.b", "s2") is False
    assert trie.remove("a.c", "s1") is False
    assert trie.remove("a.b.c", "s1") is False
    assert trie.remove("a", "s1") is False
    assert len(trie) == 1
    assert trie.remove("a.b", "s1") is True
    assert trie.remove("a.b", "s1") is False
    assert len(trie) == 0
    assert trie.match("a.b") == set()


def test_remove_one_value_keeps_the_others() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a.>", "s1")
    trie.add("a.>", "s2")
    trie.add("a.b", "s3")
    assert trie.remove("a.>", "s1") is True
    assert trie.match("a.b") == {"s2", "s3"}
    assert trie.match("a.c.d") == {"s2"}


def test_remove_prunes_empty_nodes() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a.b.c.d", "deep")
    trie.add("a.b", "mid")
    trie.add("x.>", "tail")
    assert trie.remove("a.b.c.d", "deep") is True
    # "c" and "d" are gone; "a.b" still holds "mid".
    assert list(trie._root.children) == ["a", "x"]
    assert list(trie._root.children["a"].children) == ["b"]
    assert trie._root.children["a"].children["b"].children == {}
    assert trie.remove("a.b", "mid") is True
    assert list(trie._root.children) == ["x"]
    assert trie.remove("x.>", "tail") is True
    assert trie._root.children == {}
    assert len(trie) == 0


def test_remove_stops_pruning_at_a_node_with_values() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a", "top")
    trie.add("a.b.c", "deep")
    assert trie.remove("a.b.c", "deep") is True
    assert list(trie._root.children) == ["a"]
    assert trie._root.children["a"].children == {}
    assert trie._root.children["a"].values == {"top"}


def test_values_lists_every_value() -> None:
    trie: TopicTrie[int] = TopicTrie()
    for i, pattern in enumerate(["a", "a.b", "*", ">", "a.*.c"]):
        trie.add(pattern, i)
    assert sorted(trie.values()) == [0, 1, 2, 3, 4]


def test_re_adding_after_prune_works() -> None:
    trie: TopicTrie[str] = TopicTrie()
    trie.add("a.b", "s")
    trie.remove("a.b", "s")
    trie.add("a.b", "s")
    assert trie.match("a.b") == {"s"}
    assert len(trie) == 1


# --- against an independent matcher -------------------------------------------------------------


def brute_force_matches(pattern: str, address: str) -> bool:
    """ActiveMQ wildcard semantics as a regular expression over the whole address."""
    parts = []
    for word in pattern.split("."):
        if word == "*":
            parts.append(r"[^.]+")
        elif word == ">":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(re.escape(word))
    return re.fullmatch(r"\.".join(parts), address) is not None


WORD = st.sampled_from(["a", "b", "c"])
PATTERN = st.lists(st.sampled_from(["a", "b", "c", "*"]), min_size=1, max_size=4).flatmap(
    lambda words: st.sampled_from([".".join(words), ".".join([*words[:-1], ">"])])
)
ADDRESS = st.lists(WORD, min_size=1, max_size=5).map(".".join)


@settings(max_examples=200, deadline=None)
@given(
    patterns=st.lists(PATTERN, max_size=12), removed=st.sets(st.integers(0, 11)), address=ADDRESS
)
def test_match_agrees_with_brute_force(
    patterns: list[str], removed: set[int], address: str
) -> None:
    trie: TopicTrie[int] = TopicTrie()
    for i, pattern in enumerate(patterns):
        assert is_valid_pattern(pattern)
        trie.add(pattern, i)
    live = dict(enumerate(patterns))
    for i in sorted(removed):
        if i in live:
            assert trie.remove(live.pop(i), i) is True
    assert len(trie) == len(live)
    expected = {i for i, pattern in live.items() if brute_force_matches(pattern, address)}
    assert trie.match(address) == expected

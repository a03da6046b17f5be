"""The core's written form of a destination (queue://x, topic://y), both ways."""

from __future__ import annotations

import pytest

from dovecote.core.message import RoutingType, destination_uri, parse_destination_uri


@pytest.mark.parametrize(
    ("routing", "address", "text"),
    [
        (RoutingType.ANYCAST, "orders", "queue://orders"),
        (RoutingType.MULTICAST, "prices.eu", "topic://prices.eu"),
        (RoutingType.ANYCAST, "ID:c7:r1", "queue://ID:c7:r1"),
        (RoutingType.MULTICAST, "a://b", "topic://a://b"),
    ],
)
def test_round_trip(routing: RoutingType, address: str, text: str) -> None:
    assert destination_uri(routing, address) == text
    assert parse_destination_uri(text) == (routing, address)


@pytest.mark.parametrize("text", ["orders", "queue://", "queue:/x", "fifo://x", "://x", ""])
def test_what_is_not_one(text: str) -> None:
    assert parse_destination_uri(text) is None

"""SUBSCRIBE headers -> SubscribeOptions: every header, defaults, and a table of bad values."""

from __future__ import annotations

import pytest

from dovecote.adapters.stomp_subscribe import SubscribeOptions, subscribe_options
from dovecote.core.errors import InvalidRequest


def test_defaults() -> None:
    assert subscribe_options({}) == SubscribeOptions()


def test_every_header() -> None:
    options = subscribe_options(
        {
            "ack": "client-individual",
            "activemq.prefetchSize": "10",
            "selector": "a = 'b'",
            "activemq.exclusive": "TRUE",
            "activemq.priority": "127",
            "browser": "false",
            "activemq.subscriptionName": "s",
        }
    )
    assert options.ack_mode == "client-individual"
    assert options.prefetch == 10
    assert options.selector is not None
    assert options.selector.text == "a = 'b'"
    assert options.exclusive is True
    assert options.priority == 127
    assert options.browser is False
    assert options.durable == "s"


def test_a_blank_selector_is_no_selector() -> None:
    assert subscribe_options({"selector": "  "}).selector is None


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"ack": "sometimes"}, "unknown ack mode 'sometimes'"),
        ({"activemq.prefetchSize": "lots"}, "activemq.prefetchSize must be an integer, not 'lots'"),
        ({"selector": "a = "}, "invalid selector: unexpected end of selector at column 5"),
        ({"selector": "a = 'x"}, "invalid selector: "),
        ({"activemq.exclusive": "yes"}, "activemq.exclusive must be true or false, not 'yes'"),
        ({"browser": "1"}, "browser must be true or false, not '1'"),
        ({"activemq.priority": "high"}, "activemq.priority must be an integer 0-127, not 'high'"),
        ({"activemq.priority": "-1"}, "activemq.priority must be an integer 0-127, not '-1'"),
        ({"activemq.priority": "128"}, "activemq.priority must be an integer 0-127, not '128'"),
    ],
)
def test_bad_values_are_refused_naming_the_header(headers: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        subscribe_options(headers)
    assert info.value.message.startswith(message)

"""JMS message selectors (JMS 1.1 §3.8.1): every operator, NULL and the three-valued tables,
malformed selectors with their columns, and a hypothesis comparison against an independent
reference evaluator that walks the generated expression tree."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dovecote.core.errors import ErrorCode, InvalidRequest
from dovecote.core.message import Message, RoutingType
from dovecote.core.selector import (
    MAX_NESTING,
    MAX_SELECTOR_LENGTH,
    Selector,
    SelectorError,
    compile_selector,
)


def message(properties: Mapping[str, str] | None = None, **fields: Any) -> Message:
    return Message(
        message_id=fields.pop("message_id", "ID:1"),
        address="orders",
        routing=RoutingType.ANYCAST,
        body=b"",
        properties=dict(properties or {}),
        **fields,
    )


def matches(selector: str, properties: Mapping[str, str] | None = None, **fields: Any) -> bool:
    return compile_selector(selector).matches(message(properties, **fields))


MATCHES = [
    # string comparison and literals
    ("color = 'red'", {"color": "red"}, True),
    ("color = 'red'", {"color": "blue"}, False),
    ("color = 'red'", {}, False),
    ("color <> 'red'", {"color": "blue"}, True),
    ("color <> 'red'", {}, False),
    ("'red' = color", {"color": "red"}, True),
    ("name = 'O''Brien'", {"name": "O'Brien"}, True),
    ("name = ''''", {"name": "'"}, True),
    ("name = ''", {"name": ""}, True),
    ("color = 'Red'", {"color": "red"}, False),
    ("'a' = 'a'", {}, True),
    ("'a' <> 'b'", {}, True),
    # numeric comparison: property text read as a number
    ("weight > 10", {"weight": "11"}, True),
    ("weight > 10", {"weight": "10"}, False),
    ("weight > 10", {"weight": "10.5"}, True),
    ("weight > 10", {"weight": "heavy"}, False),
    ("weight > 10", {"weight": ""}, False),
    ("weight > 10", {"weight": " 11"}, False),
    ("weight > 10", {}, False),
    ("weight >= 10", {"weight": "10"}, True),
    ("weight < 10", {"weight": "-3"}, True),
    ("weight <= 10", {"weight": "10.0"}, True),
    ("weight = 10", {"weight": "10.0"}, True),
    ("weight = 10", {"weight": "+10"}, True),
    ("weight <> 10", {"weight": "11"}, True),
    ("10 < weight", {"weight": "11"}, True),
    ("weight = 1e1", {"weight": "10"}, True),
    ("weight = 1.5E-2", {"weight": "0.015"}, True),
    ("weight = .5", {"weight": "5e-1"}, True),
    ("weight = 7.", {"weight": "7"}, True),
    ("weight = 1.5f", {"weight": "1.5"}, True),
    ("weight = 2d", {"weight": "2"}, True),
    ("weight = 10L", {"weight": "10"}, True),
    ("weight = 0x1F", {"weight": "31"}, True),
    ("weight = 010", {"weight": "8"}, True),
    ("weight = 0", {"weight": "0"}, True),
    ("weight = -957", {"weight": "-957"}, True),
    ("weight = +62", {"weight": "62"}, True),
    ("weight = 9223372036854775807", {"weight": "9223372036854775807"}, True),
    ("weight = -9223372036854775808", {"weight": "-9223372036854775808"}, True),
    ("weight > 9223372036854775807", {"weight": "9223372036854775808"}, True),
    ("weight = 0xFFFFFFFFFFFFFFFF", {"weight": "-1"}, True),
    ("weight > 1e24", {"weight": "1" + "0" * 25}, True),
    ("2 > 1", {}, True),
    ("2.5 > 2", {}, True),
    # a value that is not a number is UNKNOWN, not FALSE: NOT does not rescue it
    ("NOT weight > 10", {"weight": "heavy"}, False),
    ("NOT weight > 10", {"weight": "9"}, True),
    # two properties: = compares strings, < compares numbers
    ("a = b", {"a": "x", "b": "x"}, True),
    ("a = b", {"a": "1", "b": "1.0"}, False),
    ("a < b", {"a": "1", "b": "1.5"}, True),
    ("a = b", {"a": "x"}, False),
    ("a = b + 0", {"a": "1", "b": "1.0"}, True),
    # booleans
    ("flag = TRUE", {"flag": "true"}, True),
    ("flag = TRUE", {"flag": "TRUE"}, True),
    ("flag = true", {"flag": "True"}, True),
    ("flag = TRUE", {"flag": "yes"}, False),
    ("flag = FALSE", {"flag": "false"}, True),
    ("flag <> TRUE", {"flag": "false"}, True),
    ("flag", {"flag": "true"}, True),
    ("flag", {"flag": "false"}, False),
    ("NOT flag", {"flag": "false"}, True),
    ("NOT flag", {"flag": "maybe"}, False),
    ("NOT flag", {}, False),
    ("TRUE", {}, True),
    ("FALSE", {}, False),
    ("NOT FALSE", {}, True),
    ("true = TRUE", {}, True),
    ("(a = 1) = TRUE", {"a": "1"}, True),
    ("(a = 1) <> (b = 1)", {"a": "1", "b": "2"}, True),
    # arithmetic and precedence
    ("a + b = 5", {"a": "2", "b": "3"}, True),
    ("a - b * 2 = -4", {"a": "2", "b": "3"}, True),
    ("(a - b) * 2 = -2", {"a": "2", "b": "3"}, True),
    ("1 + 2 * 3 = 7", {}, True),
    ("(1 + 2) * 3 = 9", {}, True),
    ("10 - 4 - 3 = 3", {}, True),
    ("12 / 2 / 3 = 2", {}, True),
    ("2 * 3 / 4 = 1", {}, True),
    ("-2 * 3 = -6", {}, True),
    ("- -2 = 2", {}, True),
    ("-a = -2", {"a": "2"}, True),
    ("- -a = 2", {"a": "2"}, True),
    ("+a = 2", {"a": "2"}, True),
    ("-(a + 1) = -3", {"a": "2"}, True),
    ("a * 2 > 4", {"a": "2.5"}, True),
    ("a + 1 = 2", {"a": "x"}, False),
    ("a + 1 = 2", {}, False),
    ("a + b + 1 = 2", {"a": "1"}, False),
    ("a / 0 / 2 = 1", {"a": "1"}, False),
    ("a + 1 + 1 = 3", {}, False),
    ("a + 1 IS NULL", {"a": "x"}, True),
    # Java numeric promotion: long division truncates toward zero, longs wrap at 64 bits
    ("a / b = 2", {"a": "7", "b": "3"}, True),
    ("a / b = -2", {"a": "-7", "b": "3"}, True),
    ("a / b = -2", {"a": "7", "b": "-3"}, True),
    ("a / b = 3.5", {"a": "7", "b": "2.0"}, True),
    ("a / 2.0 = 3.5", {"a": "7"}, True),
    ("a + 1 < 0", {"a": "9223372036854775807"}, True),
    ("a * 2 = -2", {"a": "9223372036854775807"}, True),
    ("a / -1 = a", {"a": "-9223372036854775808"}, True),
    ("-a = a", {"a": "-9223372036854775808"}, True),
    # division by zero is UNKNOWN
    ("a / 0 = 1", {"a": "1"}, False),
    ("NOT (a / 0 = 1)", {"a": "1"}, False),
    ("a / 0.0 IS NULL", {"a": "1"}, True),
    ("a / b IS NULL", {"a": "1", "b": "0"}, True),
    # BETWEEN: bounds inclusive; NOT BETWEEN is x < lo OR x > hi
    ("age BETWEEN 15 AND 19", {"age": "15"}, True),
    ("age BETWEEN 15 AND 19", {"age": "19"}, True),
    ("age BETWEEN 15 AND 19", {"age": "17.5"}, True),
    ("age BETWEEN 15 AND 19", {"age": "14"}, False),
    ("age BETWEEN 15 AND 19", {"age": "20"}, False),
    ("age BETWEEN 15 AND 19", {"age": "x"}, False),
    ("age BETWEEN 15 AND 19", {}, False),
    ("age NOT BETWEEN 15 AND 19", {"age": "14"}, True),
    ("age NOT BETWEEN 15 AND 19", {"age": "20"}, True),
    ("age NOT BETWEEN 15 AND 19", {"age": "15"}, False),
    ("age NOT BETWEEN 15 AND 19", {}, False),
    ("NOT age BETWEEN 15 AND 19", {}, False),
    ("age BETWEEN 10 + 5 AND 20 - 1", {"age": "19"}, True),
    ("age BETWEEN lo AND hi", {"age": "3", "lo": "1", "hi": "5"}, True),
    ("age BETWEEN 1 AND 2 AND age > 0", {"age": "2"}, True),
    ("19 BETWEEN age AND 20", {"age": "19"}, True),
    ("age BETWEEN 19 AND 15", {"age": "17"}, False),
    # a NULL bound: UNKNOWN AND FALSE is FALSE, so NOT of it matches
    ("age BETWEEN lo AND 19", {"age": "25"}, False),
    ("NOT (age BETWEEN lo AND 19)", {"age": "25"}, True),
    ("NOT (age BETWEEN lo AND 19)", {"age": "17"}, False),
    ("age NOT BETWEEN lo AND 19", {"age": "25"}, True),
    ("age NOT BETWEEN lo AND 19", {"age": "17"}, False),
    ("age NOT BETWEEN 15 AND hi", {"age": "10"}, True),
    # IN
    ("country IN ('UK', 'US', 'France')", {"country": "UK"}, True),
    ("country IN ('UK', 'US', 'France')", {"country": "Peru"}, False),
    ("country IN ('UK', 'US', 'France')", {}, False),
    ("country NOT IN ('UK', 'US')", {"country": "Peru"}, True),
    ("country NOT IN ('UK', 'US')", {"country": "UK"}, False),
    ("country NOT IN ('UK', 'US')", {}, False),
    ("NOT country IN ('UK')", {}, False),
    ("country IN ('it''s')", {"country": "it's"}, True),
    ("country IN ('uk')", {"country": "UK"}, False),
    ("JMSType IN ('order', 'refund')", {"type": "refund"}, True),
    # LIKE
    ("phone LIKE '12%3'", {"phone": "123"}, True),
    ("phone LIKE '12%3'", {"phone": "12993"}, True),
    ("phone LIKE '12%3'", {"phone": "1234"}, False),
    ("word LIKE 'l_se'", {"word": "lose"}, True),
    ("word LIKE 'l_se'", {"word": "loose"}, False),
    ("word NOT LIKE 'l_se'", {"word": "lose"}, False),
    ("word NOT LIKE 'l_se'", {"word": "loose"}, True),
    ("word NOT LIKE 'l_se'", {}, False),
    ("word LIKE 'l_se'", {}, False),
    ("u LIKE '\\_%' ESCAPE '\\'", {"u": "_foo"}, True),
    ("u LIKE '\\_%' ESCAPE '\\'", {"u": "bar"}, False),
    ("u LIKE '%!%%' ESCAPE '!'", {"u": "50%off"}, True),
    ("u LIKE '%!%%' ESCAPE '!'", {"u": "50off"}, False),
    ("u LIKE '!!%' ESCAPE '!'", {"u": "!x"}, True),
    ("u LIKE '!a' ESCAPE '!'", {"u": "a"}, True),
    ("u LIKE '%''%'", {"u": "it's"}, True),
    ("u LIKE '%'", {"u": ""}, True),
    ("u LIKE ''", {"u": ""}, True),
    ("u LIKE ''", {"u": "a"}, False),
    ("u LIKE 'abc'", {"u": "abc"}, True),
    ("u LIKE 'abc'", {"u": "abcd"}, False),
    ("u LIKE 'A%'", {"u": "abc"}, False),
    ("u LIKE '%b%'", {"u": "abc"}, True),
    ("u LIKE '%a%b%'", {"u": "xaxbx"}, True),
    ("u LIKE '%a%b%'", {"u": "ba"}, False),
    ("u LIKE 'a%a'", {"u": "a"}, False),
    ("u LIKE 'a%a'", {"u": "aa"}, True),
    ("u LIKE 'a%%a'", {"u": "aba"}, True),
    ("u LIKE '_%_'", {"u": "ab"}, True),
    ("u LIKE '_%_'", {"u": "a"}, False),
    ("u LIKE '___'", {"u": "abc"}, True),
    ("u LIKE '___'", {"u": "ab"}, False),
    ("u LIKE 'a_c%'", {"u": "a\nc"}, True),
    ("u LIKE '%.*%'", {"u": "a.*b"}, True),
    ("u LIKE '%.*%'", {"u": "ab"}, False),
    ("u LIKE '%a_b%c'", {"u": "xxaxbyc"}, True),
    ("u LIKE '%a_b%c'", {"u": "xxaxbyd"}, False),
    ("u LIKE 'x_%_y'", {"u": "x12y"}, True),
    ("u LIKE 'x_%_y'", {"u": "x1y"}, False),
    ("u LIKE '%a_%_a%'", {"u": "aXYa"}, True),
    ("u LIKE '%a_%_a%'", {"u": "aXa"}, False),
    ("u LIKE '%ab%ba%'", {"u": "aba"}, False),
    ("u LIKE '%ab%ba%'", {"u": "abba"}, True),
    # IS NULL tests presence, not type
    ("x IS NULL", {}, True),
    ("x IS NULL", {"x": ""}, False),
    ("x IS NOT NULL", {"x": "heavy"}, True),
    ("x IS NOT NULL", {}, False),
    ("(x = 1) IS NULL", {}, True),
    ("(x = 1) IS NOT NULL", {"x": "1"}, True),
    ("JMSPriority IS NOT NULL", {}, True),
    # logic and precedence
    ("a = 1 OR b = 1 AND c = 1", {"a": "1", "b": "0", "c": "0"}, True),
    ("(a = 1 OR b = 1) AND c = 1", {"a": "1", "b": "0", "c": "0"}, False),
    ("NOT a = 1 AND b = 1", {"a": "2", "b": "1"}, True),
    ("NOT (a = 1 AND b = 1)", {"a": "1", "b": "2"}, True),
    ("NOT NOT a = 1", {"a": "1"}, True),
    ("a = 1 AND b = 1 AND c = 1", {"a": "1", "b": "1", "c": "1"}, True),
    ("a = 1 AND b = 1 AND c = 1", {"a": "1", "b": "1"}, False),
    ("a = 1 OR b = 1 OR c = 1", {"c": "1"}, True),
    ("a = 1 OR b = 1 OR c = 1", {"c": "2"}, False),
    ("color = 'red' and weight between 1 and 20", {"color": "red", "weight": "20"}, True),
    ("\tcolor\n=\r'red'\f", {"color": "red"}, True),
    ("((color = 'red'))", {"color": "red"}, True),
    # identifiers: Java rules, case-sensitive
    ("$x = 'a'", {"$x": "a"}, True),
    ("_x1 = 'a'", {"_x1": "a"}, True),
    ("café = 'au lait'", {"café": "au lait"}, True),
    ("été = 'chaud'", {"été": "chaud"}, True),
    ("€uro = 1", {"€uro": "1"}, True),
    ("Color = 'red'", {"color": "red"}, False),
    ("JMSXGroupID = 'g'", {"JMSXGroupID": "g"}, True),
    ("jmspriority = 4", {}, False),
    ("nulls = 'x'", {"nulls": "x"}, True),
    ("ORDER = 'x'", {"ORDER": "x"}, True),
]


@pytest.mark.parametrize(("selector", "properties", "expected"), MATCHES)
def test_matches(selector: str, properties: dict[str, str], expected: bool) -> None:
    assert matches(selector, properties) is expected


@pytest.mark.parametrize(
    ("selector", "properties", "fields", "expected"),
    [
        pytest.param("JMSPriority > 4", {}, {"priority": 5}, True, id="priority"),
        pytest.param("JMSPriority = 4", {}, {}, True, id="default-priority"),
        pytest.param(
            "JMSPriority BETWEEN 0 AND 3", {}, {"priority": 9}, False, id="priority-between"
        ),
        pytest.param(
            "JMSDeliveryMode = 'PERSISTENT'", {}, {"persistent": True}, True, id="persistent"
        ),
        pytest.param("JMSDeliveryMode = 'NON_PERSISTENT'", {}, {}, True, id="non-persistent"),
        pytest.param("JMSMessageID = 'ID:7'", {}, {"message_id": "ID:7"}, True, id="message-id"),
        pytest.param("JMSMessageID LIKE 'ID:%'", {}, {}, True, id="message-id-like"),
        pytest.param("JMSTimestamp > 1000", {}, {"timestamp": 2000}, True, id="timestamp"),
        pytest.param("JMSExpiration = 0", {}, {}, True, id="expiration-never"),
        pytest.param(
            "JMSExpiration > JMSTimestamp",
            {},
            {"expires": 9, "timestamp": 8},
            True,
            id="header-with-header",
        ),
        pytest.param(
            "JMSCorrelationID = 'c-1'", {"correlation-id": "c-1"}, {}, True, id="correlation-id"
        ),
        pytest.param("JMSCorrelationID IS NULL", {}, {}, True, id="correlation-id-absent"),
        pytest.param("JMSType = 'order'", {"type": "order"}, {}, True, id="type"),
        pytest.param("JMSType IS NULL", {}, {}, True, id="type-absent"),
        pytest.param("JMSPriority = priority", {"priority": "4"}, {}, True, id="header-and-prop"),
    ],
)
def test_header_fields(
    selector: str, properties: dict[str, str], fields: dict[str, Any], expected: bool
) -> None:
    assert matches(selector, properties, **fields) is expected


# JMS 1.1 §3.8.1.2, with p and q boolean properties: 'true', 'false' or absent (UNKNOWN).
T, F, U = True, False, None
AND_TABLE = {
    (T, T): T, (T, F): F, (T, U): U,
    (F, T): F, (F, F): F, (F, U): F,
    (U, T): U, (U, F): F, (U, U): U,
}  # fmt: skip
OR_TABLE = {
    (T, T): T, (T, F): T, (T, U): T,
    (F, T): T, (F, F): F, (F, U): U,
    (U, T): T, (U, F): U, (U, U): U,
}  # fmt: skip
NOT_TABLE = {T: F, F: T, U: U}


def truth(selector: str, properties: Mapping[str, str]) -> bool | None:
    """TRUE, FALSE or UNKNOWN, told apart by evaluating the selector and its negation."""
    positive = matches(selector, properties)
    negative = matches(f"NOT ({selector})", properties)
    assert not (positive and negative)
    return True if positive else False if negative else None


def booleans(**values: bool | None) -> dict[str, str]:
    return {name: str(value).lower() for name, value in values.items() if value is not None}


@pytest.mark.parametrize(("p", "q"), list(AND_TABLE))
def test_and_truth_table(p: bool | None, q: bool | None) -> None:
    assert truth("p AND q", booleans(p=p, q=q)) is AND_TABLE[p, q]


@pytest.mark.parametrize(("p", "q"), list(OR_TABLE))
def test_or_truth_table(p: bool | None, q: bool | None) -> None:
    assert truth("p OR q", booleans(p=p, q=q)) is OR_TABLE[p, q]


@pytest.mark.parametrize("p", list(NOT_TABLE))
def test_not_truth_table(p: bool | None) -> None:
    assert truth("NOT p", booleans(p=p)) is NOT_TABLE[p]


@pytest.mark.parametrize(("p", "q"), list(AND_TABLE))
def test_three_operand_chains_follow_the_tables(p: bool | None, q: bool | None) -> None:
    properties = booleans(p=p, q=q)
    assert truth("p AND q AND TRUE", properties) is AND_TABLE[p, q]
    assert truth("p OR q OR FALSE", properties) is OR_TABLE[p, q]


@pytest.mark.parametrize(
    ("selector", "fragment", "column"),
    [
        pytest.param("", "empty selector", None, id="empty"),
        pytest.param(" \t\n", "empty selector", None, id="blank"),
        pytest.param("(color = 'red'", "expected ')'", 15, id="unclosed-paren"),
        pytest.param("((a = 1)", "expected ')' for the '(' at column 1", 9, id="unclosed-outer"),
        pytest.param("color = 'red')", "unbalanced ')'", 14, id="extra-paren"),
        pytest.param("()", "unexpected ')'", 2, id="empty-parens"),
        pytest.param("color = 'red", "unterminated string", 9, id="unterminated-string"),
        pytest.param("color = 'red''", "unterminated string", 9, id="unterminated-escaped"),
        pytest.param("color == 'red'", "unexpected '='", 8, id="double-equals"),
        pytest.param("color != 'red'", "unexpected character '!'", 7, id="bang-equals"),
        pytest.param("color # 'red'", "unexpected character '#'", 7, id="unknown-character"),
        pytest.param('color = "red"', "unexpected character '\"'", 9, id="double-quotes"),
        pytest.param("a.b = 1", "unexpected character '.'", 2, id="dot-in-name"),
        pytest.param("color = 'red' blue", "unexpected 'blue'", 15, id="trailing-identifier"),
        pytest.param("color = 'red' AND", "unexpected end of selector", 18, id="trailing-and"),
        pytest.param("AND a = 1", "reserved word AND", 1, id="leading-and"),
        pytest.param("and = 1", "reserved word AND cannot be an identifier", 1, id="and-name"),
        pytest.param("x = 1 OR in = 2", "reserved word IN", 10, id="in-name"),
        pytest.param("escape = 'x'", "reserved word ESCAPE", 1, id="escape-name"),
        pytest.param("NULL = a", "NULL may only follow IS", 1, id="null-literal"),
        pytest.param("a = NULL", "NULL may only follow IS", 5, id="equals-null"),
        pytest.param(
            "a LIKE 5", "expected a string literal after LIKE, found '5'", 8, id="like-num"
        ),
        pytest.param("a LIKE b", "expected a string literal after LIKE", 8, id="like-identifier"),
        pytest.param("a LIKE 'x' ESCAPE 'ab'", "one-character", 19, id="long-escape"),
        pytest.param("a LIKE 'x' ESCAPE ''", "one-character", 19, id="empty-escape"),
        pytest.param(
            "a LIKE 'x' ESCAPE 1", "expected a string literal after ESCAPE", 19, id="numeric-escape"
        ),
        pytest.param("a LIKE 'x!' ESCAPE '!'", "ends with its escape", 8, id="dangling-escape"),
        pytest.param(
            "JMSPriority LIKE '4%'", "expected a string, found a number", 1, id="like-on-number"
        ),
        pytest.param(
            "(a + 1) LIKE '4%'", "expected a string, found a number", 2, id="like-on-arithmetic"
        ),
        pytest.param("a IN (1, 2)", "expected a string literal in IN, found '1'", 7, id="in-nums"),
        pytest.param(
            "a IN ('x', b)", "expected a string literal in IN, found 'b'", 12, id="in-identifier"
        ),
        pytest.param("a IN ()", "empty IN list", 7, id="in-empty"),
        pytest.param("a IN 'x'", "expected '(' after IN", 6, id="in-no-parens"),
        pytest.param("a IN ('x' 'y')", "expected ',' or ')'", 11, id="in-no-comma"),
        pytest.param("a IN ('x',)", "expected a string literal in IN", 11, id="in-trailing-comma"),
        pytest.param(
            "JMSPriority IN ('4')", "expected a string, found a number", 1, id="in-on-number"
        ),
        pytest.param("'a' + 1", "expected a number, found a string", 1, id="string-plus"),
        pytest.param("x = 'a' + 1", "expected a number, found a string", 5, id="string-plus-cmp"),
        pytest.param("1 + TRUE = 2", "expected a number, found a condition", 5, id="bool-plus"),
        pytest.param("-'a' = 1", "expected a number, found a string", 2, id="negated-string"),
        pytest.param("'a' = 1", "cannot compare a string with a number", 5, id="string-vs-num"),
        pytest.param("TRUE = 1", "cannot compare a condition with a number", 6, id="bool-vs-num"),
        pytest.param(
            "JMSPriority = 'high'", "cannot compare a number with a string", 13, id="header-type"
        ),
        pytest.param("JMSType = 1", "cannot compare a string with a number", 9, id="type-vs-num"),
        pytest.param("color < 'red'", "'<' compares numbers", 7, id="string-ordering"),
        pytest.param("'a' >= 'b'", "'>=' compares numbers", 5, id="literal-ordering"),
        pytest.param("TRUE > FALSE", "'>' compares numbers", 6, id="boolean-ordering"),
        pytest.param(
            "a BETWEEN 'x' AND 'y'", "expected a number, found a string", 11, id="between-strings"
        ),
        pytest.param("a BETWEEN 1", "expected AND, found end of selector", 12, id="between-no-and"),
        pytest.param("a BETWEEN 1 OR 2", "expected AND, found 'OR'", 13, id="between-or"),
        pytest.param("5", "expected a condition, found a number", 1, id="bare-number"),
        pytest.param("a + 1", "expected a condition, found a number", 1, id="bare-arithmetic"),
        pytest.param("'abc'", "expected a condition, found a string", 1, id="bare-string"),
        pytest.param("a = 1 AND 5", "expected a condition, found a number", 11, id="and-number"),
        pytest.param("NOT 'x'", "expected a condition, found a string", 5, id="not-string"),
        pytest.param("a = 1 = 2", "cannot follow a comparison", 7, id="chained-equals"),
        pytest.param("a < b < c", "cannot follow a comparison", 7, id="chained-less"),
        pytest.param("a = 1 IS NULL", "cannot follow a comparison", 7, id="chained-is"),
        pytest.param("a = NOT b", "NOT needs parentheses", 5, id="not-in-comparison"),
        pytest.param("1 + NOT a", "NOT needs parentheses", 5, id="not-in-arithmetic"),
        pytest.param("-NOT a", "NOT needs parentheses", 2, id="negated-not"),
        pytest.param("a NOT 5", "expected BETWEEN, IN or LIKE, found '5'", 7, id="not-operator"),
        pytest.param("a IS 5", "expected NULL, found '5'", 6, id="is-number"),
        pytest.param("a IS NOT 5", "expected NULL", 10, id="is-not-number"),
        pytest.param("a = 9223372036854775808", "out of range of a Java long", 5, id="long-max+1"),
        pytest.param("a = -9223372036854775809", "out of range of a Java long", 6, id="long-min-1"),
        pytest.param("a = 1" + "0" * 30, "out of range of a Java long", 5, id="huge-integer"),
        pytest.param("a = 0x1FFFFFFFFFFFFFFFF", "out of range of a Java long", 5, id="huge-hex"),
        pytest.param("a = 1e999", "out of range of a Java double", 5, id="huge-double"),
        pytest.param("a = 08", "malformed octal literal", 5, id="bad-octal"),
        pytest.param("a = 1.2.3", "malformed number", 5, id="two-points"),
        pytest.param("a = 12abc", "malformed number", 5, id="digits-then-letters"),
        pytest.param("a = 0x", "malformed number", 5, id="empty-hex"),
        pytest.param("a = 1e", "malformed number", 5, id="empty-exponent"),
        pytest.param("a = .", "unexpected character '.'", 5, id="lone-point"),
        pytest.param("x" * (MAX_SELECTOR_LENGTH + 1), "longer than 4096", None, id="too-long"),
        pytest.param(
            "(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1),
            "nest deeper than 100",
            MAX_NESTING + 1,
            id="too-deep",
        ),
    ],
)
def test_malformed(selector: str, fragment: str, column: int | None) -> None:
    with pytest.raises(SelectorError) as caught:
        compile_selector(selector)
    assert fragment in caught.value.message
    assert caught.value.column == column
    if column is not None:
        assert caught.value.message.endswith(f"at column {column}")


def test_selector_error_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as caught:
        compile_selector("a =")
    assert caught.value.code is ErrorCode.INVALID


def test_selector_keeps_its_text() -> None:
    selector = compile_selector("color = 'red'")
    assert isinstance(selector, Selector)
    assert selector.text == "color = 'red'"
    assert repr(selector) == "Selector(\"color = 'red'\")"


@pytest.mark.parametrize(
    ("selector", "properties"),
    [
        pytest.param("(" * MAX_NESTING + "a = 1" + ")" * MAX_NESTING, {"a": "1"}, id="parens"),
        pytest.param("NOT " * 1000 + "a", {"a": "true"}, id="not-run"),
        pytest.param("-" * 2000 + "a = a", {"a": "1"}, id="sign-run"),
        pytest.param("a + " * 1000 + "0 = 0", {"a": "0"}, id="sum-chain"),
        pytest.param("a * " * 1000 + "1 = 0", {"a": "0"}, id="product-chain"),
        pytest.param("a = 0 AND " * 400 + "TRUE", {"a": "0"}, id="and-chain"),
        pytest.param("a = 1 OR " * 400 + "TRUE", {"a": "0"}, id="or-chain"),
        pytest.param(
            "(NOT (-(a) = -1 AND " * 49 + "TRUE" + "))" * 49,  # 99 levels deep
            {"a": "1"},
            id="nested-mixed",
        ),
    ],
)
def test_size_limits_do_not_exhaust_the_stack(selector: str, properties: dict[str, str]) -> None:
    assert len(selector) <= MAX_SELECTOR_LENGTH
    compiled = compile_selector(selector)
    assert compiled.matches(message(properties)) in (True, False)


# The deepest legal nestings: per level an OR, an AND, a NOT and a comparison (the most frames
# evaluation spends on one level), or an arithmetic chain with a sign.
DEEPEST = [
    "(x OR y AND NOT z = " * MAX_NESTING + "w" + ")" * MAX_NESTING,
    "(1 + 2 * -" * MAX_NESTING + "a" + ")" * MAX_NESTING + " IS NOT NULL",
    "(x OR y AND NOT (" * (MAX_NESTING // 2) + "w" + ") IS NULL)" * (MAX_NESTING // 2),
]


def at_depth(frames: int, action: Callable[[], Any]) -> Any:
    """Run ``action`` with ``frames`` more frames on the stack than the caller has: a broker
    compiles and evaluates selectors from well inside its own call stack."""
    return action() if frames == 0 else at_depth(frames - 1, action)


@pytest.mark.parametrize("selector", DEEPEST)
def test_deepest_selectors_leave_stack_to_spare(selector: str) -> None:
    assert len(selector) <= MAX_SELECTOR_LENGTH
    properties = {"x": "false", "y": "true", "z": "true", "w": "true", "a": "-2"}
    compiled = at_depth(300, lambda: compile_selector(selector))
    assert at_depth(300, lambda: compiled.matches(message(properties))) is True


def test_deep_nesting_is_a_selector_error_not_a_recursion_error() -> None:
    # 100 levels of OR, AND, NOT, comparison, +, * and sign: the parser keeps its own stacks
    selector = "(x OR y AND NOT a = 1 + 2 * -" * MAX_NESTING + "1" + ")" * MAX_NESTING
    with pytest.raises(SelectorError, match="expected a number, found a condition"):
        at_depth(300, lambda: compile_selector(selector))


def test_length_limit_is_inclusive() -> None:
    selector = "a = 1" + " " * (MAX_SELECTOR_LENGTH - 5)
    assert compile_selector(selector).matches(message({"a": "1"})) is True


def test_evaluation_compiles_no_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    selector = compile_selector(
        "u LIKE '%a_b%' AND u NOT LIKE 'z%' AND weight > 10 AND weight / 2 < 1e6"
        " AND (country IN ('UK', 'US') OR JMSPriority BETWEEN 5 AND 9)"
    )

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a regex was compiled while evaluating")

    monkeypatch.setattr(re, "compile", refuse)
    monkeypatch.setattr(re, "_compile", refuse)  # behind re.match, re.search, re.fullmatch
    messages = [
        message({"u": f"xa{i % 10}b", "weight": str(i), "country": "UK" if i % 3 else "FR"})
        for i in range(10_000)
    ]
    matched = sum(selector.matches(m) for m in messages)
    assert matched == sum(1 for i in range(10_000) if i > 10 and i % 3)


# -- property test: the selector against an independent evaluator of the same tree ------------
# The generator builds a tree, renders it to text with only the parentheses precedence needs,
# and evaluates the tree itself (never the text) with explicit three-valued logic.

IDENTIFIERS = ("n", "m", "s", "t")
VALUES = ("0", "3", "-7", "12", "2.5", "red", "ab", "a%b", "b_a", "it's", "true", "FALSE", "")
STRINGS = ("red", "ab", "a%b", "it's", "", "3")


@dataclass(frozen=True)
class Lit:
    value: int | float


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Neg:
    operand: Any


@dataclass(frozen=True)
class Arith:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Group:
    inner: Any


@dataclass(frozen=True)
class Cmp:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class StrCmp:
    op: str
    left: Ref | str
    right: Ref | str


@dataclass(frozen=True)
class BoolCmp:
    op: str
    ref: Ref
    value: bool


@dataclass(frozen=True)
class Between:
    negated: bool
    subject: Any
    low: Any
    high: Any


@dataclass(frozen=True)
class In:
    negated: bool
    ref: Ref
    values: tuple[str, ...]


@dataclass(frozen=True)
class Like:
    negated: bool
    ref: Ref
    pattern: tuple[str, ...]  # items: "%", "_", or one literal character


@dataclass(frozen=True)
class IsNull:
    negated: bool
    operand: Any


@dataclass(frozen=True)
class Flag:
    ref: Ref


@dataclass(frozen=True)
class Const:
    value: bool


@dataclass(frozen=True)
class Not:
    operand: Any


@dataclass(frozen=True)
class Logic:
    op: str
    left: Any
    right: Any


refs = st.builds(Ref, st.sampled_from(IDENTIFIERS))
numbers = st.recursive(
    st.one_of(
        st.builds(Lit, st.integers(-10, 12)),
        st.builds(Lit, st.sampled_from([0.5, 2.5, -1.25])),
        refs,
    ),
    lambda inner: st.one_of(
        st.builds(Neg, inner),
        st.builds(Arith, st.sampled_from("+-*/"), inner, inner),
        st.builds(Group, inner),
    ),
    max_leaves=5,
)
string_operands = st.one_of(refs, st.sampled_from(STRINGS))
like_items = st.sampled_from(["a", "b", "'", "%", "_", "!%", "!_", "!!"])
predicates = st.one_of(
    st.builds(Cmp, st.sampled_from(["=", "<>", "<", ">", "<=", ">="]), numbers, numbers),
    st.builds(StrCmp, st.sampled_from(["=", "<>"]), string_operands, string_operands),
    st.builds(BoolCmp, st.sampled_from(["=", "<>"]), refs, st.booleans()),
    st.builds(Between, st.booleans(), numbers, numbers, numbers),
    st.builds(
        In,
        st.booleans(),
        refs,
        st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(Like, st.booleans(), refs, st.lists(like_items, max_size=5).map(tuple)),
    st.builds(IsNull, st.booleans(), numbers),
    st.builds(Flag, refs),
    st.builds(Const, st.booleans()),
)
conditions = st.recursive(
    predicates,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(Logic, st.sampled_from(["AND", "OR"]), inner, inner),
        st.builds(Group, inner),
    ),
    max_leaves=6,
)
property_sets = st.fixed_dictionaries(
    {}, optional={name: st.sampled_from(VALUES) for name in IDENTIFIERS}
)

# Precedence for rendering: OR 1, AND 2, NOT 3, predicates 4, + - 5, * / 6, sign 7, atoms 8.
PRECEDENCE = {"OR": 1, "AND": 2, "+": 5, "-": 5, "*": 6, "/": 6}


def precedence(node: Any) -> int:
    if isinstance(node, Logic):
        return PRECEDENCE[node.op]
    if isinstance(node, Not):
        return 3
    if isinstance(node, Arith):
        return PRECEDENCE[node.op]
    if isinstance(node, Neg):
        return 7
    if isinstance(node, (Lit, Ref, Group, str, Flag, Const)):
        return 8
    return 4


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def render(node: Any) -> str:
    if isinstance(node, Lit):
        return repr(node.value)
    if isinstance(node, Ref):
        return node.name
    if isinstance(node, str):
        return quote(node)
    if isinstance(node, Group):
        return f"({render(node.inner)})"
    if isinstance(node, Neg):
        inner = render(node.operand)
        return f"- {inner}" if precedence(node.operand) >= 7 else f"-({inner})"
    if isinstance(node, (Arith, Logic)):
        mine = precedence(node)
        left, right = render(node.left), render(node.right)
        if precedence(node.left) < mine:
            left = f"({left})"
        # arithmetic is left-associative, so an equal-precedence right operand needs parentheses;
        # AND and OR are associative and need them only for lower precedence
        if precedence(node.right) < mine or (
            isinstance(node, Arith) and precedence(node.right) == mine
        ):
            right = f"({right})"
        return f"{left} {node.op} {right}"
    if isinstance(node, Not):
        inner = render(node.operand)
        return f"NOT {inner}" if precedence(node.operand) >= 3 else f"NOT ({inner})"
    if isinstance(node, Cmp):
        return f"{render(node.left)} {node.op} {render(node.right)}"
    if isinstance(node, StrCmp):
        return f"{render(node.left)} {node.op} {render(node.right)}"
    if isinstance(node, BoolCmp):
        return f"{node.ref.name} {node.op} {'TRUE' if node.value else 'FALSE'}"
    if isinstance(node, Between):
        keyword = "NOT BETWEEN" if node.negated else "BETWEEN"
        return f"{render(node.subject)} {keyword} {render(node.low)} AND {render(node.high)}"
    if isinstance(node, In):
        items = ", ".join(quote(v) for v in node.values)
        return f"{node.ref.name} {'NOT IN' if node.negated else 'IN'} ({items})"
    if isinstance(node, Like):
        escape = " ESCAPE '!'" if any(len(item) == 2 for item in node.pattern) else ""
        pattern = quote("".join(node.pattern))
        return f"{node.ref.name} {'NOT LIKE' if node.negated else 'LIKE'} {pattern}{escape}"
    if isinstance(node, IsNull):
        return f"{render(node.operand)} IS {'NOT NULL' if node.negated else 'NULL'}"
    if isinstance(node, Flag):
        return node.ref.name
    assert isinstance(node, Const)
    return "TRUE" if node.value else "FALSE"


def unwrap(node: Any) -> Any:
    while isinstance(node, Group):
        node = node.inner
    return node


def ref_number(text: str | None) -> int | float | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def ref_boolean(text: str | None) -> bool | None:
    if text is None or text.lower() not in ("true", "false"):
        return None
    return text.lower() == "true"


def ref_divide(a: int | float, b: int | float) -> int | float | None:
    if b == 0:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return int(a / b)  # Java: truncate toward zero (exact for these small values)
    return a / b


def ref_like(value: str, items: tuple[str, ...]) -> bool:
    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(items):
            return j == len(value)
        item = items[i]
        if item == "%":
            return any(match(i + 1, k) for k in range(j, len(value) + 1))
        if j == len(value):
            return False
        if item == "_":
            return match(i + 1, j + 1)
        return value[j] == item[-1] and match(i + 1, j + 1)

    return match(0, 0)


def ref_num(node: Any, p: Mapping[str, str]) -> int | float | None:
    node = unwrap(node)
    if isinstance(node, Lit):
        return node.value
    if isinstance(node, Ref):
        return ref_number(p.get(node.name))
    if isinstance(node, Neg):
        v = ref_num(node.operand, p)
        return None if v is None else -v
    a, b = ref_num(node.left, p), ref_num(node.right, p)
    if a is None or b is None:
        return None
    ops = {
        "+": lambda: a + b,
        "-": lambda: a - b,
        "*": lambda: a * b,
        "/": lambda: ref_divide(a, b),
    }
    return ops[node.op]()


def ref_compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    return {
        "=": a == b, "<>": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b,
    }[op]  # fmt: skip


def ref_string(node: Ref | str, p: Mapping[str, str]) -> str | None:
    return p.get(node.name) if isinstance(node, Ref) else node


def ref_eval(node: Any, p: Mapping[str, str]) -> bool | None:
    node = unwrap(node)
    if isinstance(node, Cmp):
        if (
            node.op in ("=", "<>")
            and isinstance(unwrap(node.left), Ref)
            and isinstance(unwrap(node.right), Ref)
        ):  # two bare properties compare as strings
            left, right = unwrap(node.left), unwrap(node.right)
            return ref_compare(node.op, p.get(left.name), p.get(right.name))
        return ref_compare(node.op, ref_num(node.left, p), ref_num(node.right, p))
    if isinstance(node, StrCmp):
        return ref_compare(node.op, ref_string(node.left, p), ref_string(node.right, p))
    if isinstance(node, BoolCmp):
        return ref_compare(node.op, ref_boolean(p.get(node.ref.name)), node.value)
    if isinstance(node, Between):
        x, lo, hi = (ref_num(n, p) for n in (node.subject, node.low, node.high))
        if node.negated:
            return OR_TABLE[ref_compare("<", x, lo), ref_compare(">", x, hi)]
        return AND_TABLE[ref_compare(">=", x, lo), ref_compare("<=", x, hi)]
    if isinstance(node, In):
        value = p.get(node.ref.name)
        return None if value is None else (value in node.values) != node.negated
    if isinstance(node, Like):
        value = p.get(node.ref.name)
        return None if value is None else ref_like(value, node.pattern) != node.negated
    if isinstance(node, IsNull):
        operand = unwrap(node.operand)
        # a bare property: presence; anything else: whether it has a numeric value
        missing = operand.name not in p if isinstance(operand, Ref) else ref_num(operand, p) is None
        return missing != node.negated
    if isinstance(node, Flag):
        return ref_boolean(p.get(node.ref.name))
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Not):
        return NOT_TABLE[ref_eval(node.operand, p)]
    assert isinstance(node, Logic)
    table = AND_TABLE if node.op == "AND" else OR_TABLE
    return table[ref_eval(node.left, p), ref_eval(node.right, p)]


@settings(max_examples=200, deadline=None)
@given(tree=conditions, properties=property_sets)
def test_agrees_with_reference_evaluator(tree: Any, properties: dict[str, str]) -> None:
    text = render(tree)
    expected = ref_eval(tree, properties)
    assert compile_selector(text).matches(message(properties)) is (expected is True), text
    negated = compile_selector(f"NOT ({text})").matches(message(properties))
    assert negated is (expected is False), text


# --- the equality shortcut (``property = 'text'``: one dictionary lookup) ---------------------


@pytest.mark.parametrize(
    ("text", "equality"),
    [
        ("shard = '3'", ("shard", "3")),
        ("'3' = shard", ("shard", "3")),
        ("shard='it''s'", ("shard", "it's")),
        ("JMSType = 'x'", None),  # a header field, read from another place
        ("JMSMessageID = 'x'", None),
        ("shard = 3", None),  # numeric context
        ("(shard = '3')", None),
        ("shard <> '3'", None),
        ("shard = '3' AND kind = 'a'", None),
        ("shard = other", None),
    ],
)
def test_equality_shortcut_is_taken_only_for_a_property_equals_a_string(
    text: str, equality: tuple[str, str] | None
) -> None:
    assert compile_selector(text).equality == equality


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["shard = 'a'", "'a' = shard", "shard = ''", "shard = 'A'"]),
    st.dictionaries(st.sampled_from(["shard", "other", "SHARD"]), st.sampled_from(["a", "A", ""])),
)
def test_equality_shortcut_agrees_with_the_evaluator(text: str, properties: dict[str, str]) -> None:
    selector = compile_selector(text)
    assert selector.equality is not None
    full = selector._test(message(properties)) is True
    assert selector.matches(message(properties)) is full

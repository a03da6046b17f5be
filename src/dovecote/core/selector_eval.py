"""The evaluators a compiled selector is made of: closures over a message (JMS 1.1 §3.8.1).

:mod:`dovecote.core.selector` parses and type-checks a selector and builds its tree from these
functions; nothing here parses or raises. Each function returns a closure that is called per
message, so they are built once and take the fewest steps at evaluation:

- Three-valued logic (§3.8.1.2): a condition returns True, False or None (UNKNOWN);
  :func:`connective` (AND, OR), :func:`logical_not` (NOT) follow the tables in
  :mod:`dovecote.core.selector`'s docstring; a NULL operand makes a comparison UNKNOWN.
- Numbers follow Java's promotion: long op long wraps at 64 bits (:func:`wrap_long`), ``/``
  truncates toward zero, division by zero is UNKNOWN, a double operand makes a double.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Final

from dovecote.core.message import Message
from dovecote.core.selector_lexer import LONG_MAX, LONG_MIN

Number = int | float
NumFn = Callable[[Message], Number | None]
StrFn = Callable[[Message], str | None]
BoolFn = Callable[[Message], bool | None]
ArithOp = Callable[[Number, Number], Number | None]

_LONG_MASK: Final = (1 << 64) - 1


def connective(conditions: list[BoolFn], decisive: bool) -> BoolFn:
    """AND (``decisive`` False) or OR (True): any decisive operand decides, else any UNKNOWN
    makes the result UNKNOWN (the tables in :mod:`dovecote.core.selector`'s docstring)."""
    if len(conditions) == 2:
        first, second = conditions

        def pair(message: Message) -> bool | None:
            a = first(message)
            if a is decisive:
                return decisive
            b = second(message)
            if b is decisive:
                return decisive
            return None if a is None or b is None else not decisive

        return pair

    def chain(message: Message) -> bool | None:
        unknown = False
        for condition in conditions:
            result = condition(message)
            if result is decisive:
                return decisive
            if result is None:
                unknown = True
        return None if unknown else not decisive

    return chain


def logical_not(condition: BoolFn) -> BoolFn:
    def negation(message: Message) -> bool | None:
        result = condition(message)
        return None if result is None else not result

    return negation


def null_test(value: Callable[[Message], object], negated: bool) -> BoolFn:
    if negated:
        return lambda message: value(message) is not None
    return lambda message: value(message) is None


def comparison(
    compare: Callable[[Any, Any], bool],
    left: Callable[[Message], object],
    right: Callable[[Message], object],
    right_const: object,
) -> BoolFn:
    if right_const is not None:

        def with_constant(message: Message) -> bool | None:
            a = left(message)
            return None if a is None else compare(a, right_const)

        return with_constant

    def general(message: Message) -> bool | None:
        a = left(message)
        if a is None:
            return None
        b = right(message)
        return None if b is None else compare(a, b)

    return general


def membership(subject: StrFn, values: frozenset[str], negated: bool) -> BoolFn:
    if negated:
        return lambda m: None if (v := subject(m)) is None else v not in values
    return lambda m: None if (v := subject(m)) is None else v in values


def wrap_long(value: int) -> int:
    """Java long overflow: keep the low 64 bits, signed."""
    if LONG_MIN <= value <= LONG_MAX:
        return value
    return ((value - LONG_MIN) & _LONG_MASK) + LONG_MIN


def _long_op(op: Callable[[Any, Any], Number]) -> ArithOp:
    def arithmetic(a: Number, b: Number) -> Number:
        r = op(a, b)
        return wrap_long(r) if isinstance(r, int) else r

    return arithmetic


def _divide(a: Number, b: Number) -> Number | None:
    if b == 0:
        return None
    if isinstance(a, int) and isinstance(b, int):
        quotient = abs(a) // abs(b)  # Java truncates toward zero; // floors
        return wrap_long(quotient if (a < 0) == (b < 0) else -quotient)
    return a / b


ARITHMETIC: Final[dict[str, ArithOp]] = {
    "+": _long_op(operator.add),
    "-": _long_op(operator.sub),
    "*": _long_op(operator.mul),
    "/": _divide,
}


def arithmetic(first: NumFn, steps: list[tuple[ArithOp, NumFn]]) -> NumFn:
    """Left to right: ``a - b - c`` is ``(a - b) - c``."""

    def chain(message: Message) -> Number | None:
        result = first(message)
        for op, operand in steps:
            if result is None:
                return None
            b = operand(message)
            if b is None:
                return None
            result = op(result, b)
        return result

    return chain

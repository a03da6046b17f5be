"""JMS message selectors (JMS 1.1 §3.8.1): compiled once per subscription, evaluated per message.

:func:`compile_selector` parses (tokens, LIKE patterns and property numbers come from
:mod:`selector_lexer`), type-checks and builds a tree of closures (the evaluators in
:mod:`selector_eval`); :meth:`Selector.matches` runs it. Evaluation compiles nothing and
allocates only the values it computes.

**Syntax** (§3.8.1.1): string, exact and approximate numeric, TRUE/FALSE literals;
identifiers; ``( )``; ``= <> < > <= >=``; ``+ - * /`` and unary ``+ -``; ``[NOT] BETWEEN a
AND b``; ``[NOT] IN ('s', ...)``; ``[NOT] LIKE 'p' [ESCAPE 'c']``; ``IS [NOT] NULL``; NOT,
AND, OR. Precedence, tightest first: sign; ``* /``; ``+ -``; comparison, BETWEEN, IN, LIKE,
IS (these do not chain: ``a = b = c`` is an error); NOT; AND; OR. Arithmetic is left to right.

**Identifiers.** ``JMSDeliveryMode`` ('PERSISTENT'/'NON_PERSISTENT'), ``JMSPriority``,
``JMSMessageID``, ``JMSTimestamp`` and ``JMSExpiration`` (0: never) are message fields;
``JMSCorrelationID`` and ``JMSType`` are the properties ``correlation-id`` and ``type``. Any
other identifier names a property; an absent one is NULL.

**Property types.** Properties are strings (STOMP headers), so a property reference takes its
type from its context, and a value that does not fit is NULL there. Numeric context
(``+ - * /``, ``< > <= >=``, BETWEEN, ``=``/``<>`` with a number): the text must be a decimal
number (``property_number``: '10', '-2.5', '1e3'). Boolean context (NOT, AND, OR, the whole
selector, ``=``/``<>`` with a boolean): 'true' or 'false', any case. String context
(``=``/``<>`` with a string, IN, LIKE): the text. Two properties compare as strings with
``=``/``<>`` ('1' <> '1.0'), as numbers with ``<`` etc. ``IS NULL`` tests presence. JMS calls
a comparison of unlike types *false*; here it is UNKNOWN, so ``NOT weight > 10`` does not
match ``weight: heavy`` (ActiveMQ with string conversion would).

**Three-valued logic** (§3.8.1.2). A comparison, arithmetic, IN or LIKE with a NULL operand
is UNKNOWN (U); a selector matches only when TRUE::

    AND | T F U     OR | T F U     NOT
     T  | T F U      T | T T T      T -> F
     F  | F F F      F | T F U      F -> T
     U  | U F U      U | T U U      U -> U

``x BETWEEN a AND b`` is ``x >= a AND x <= b``; ``x NOT BETWEEN a AND b`` is ``x < a OR
x > b``, under these tables.

**Numbers** follow Java's promotion: long op long is a long that wraps at 64 bits, and ``/``
truncates toward zero; a double operand makes a double. Division by zero is UNKNOWN. Longs
compare with doubles exactly (Java converts first; they differ only beyond 2**53).

**Type errors** known at compile time are SelectorErrors: ``'a' + 1``, ``'a' = 1``,
``JMSPriority = 'x'``, ``'a' < 'b'``, LIKE or IN on a number, a selector that is not a
condition (``5``).

**Limits.** At most 4,096 characters and 100 levels of parentheses. The parser keeps its own
stacks (no recursion); chains of AND, OR or one arithmetic level are one n-ary node and runs
of NOT or signs one node, so evaluation recurses about four frames per level of parentheses.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from dovecote.core.message import Message
from dovecote.core.selector_eval import (
    ARITHMETIC,
    BoolFn,
    Number,
    NumFn,
    StrFn,
    arithmetic,
    comparison,
    connective,
    logical_not,
    membership,
    null_test,
)
from dovecote.core.selector_lexer import (
    LONG_MAX,
    LONG_MIN,
    SelectorError,
    Token,
    TokenKind,
    like_matcher,
    property_boolean,
    property_number,
    simple_equality,
    tokenize,
)

__all__ = ["MAX_NESTING", "MAX_SELECTOR_LENGTH", "Selector", "SelectorError", "compile_selector"]

MAX_SELECTOR_LENGTH: Final = 4096
MAX_NESTING: Final = 100

_T = TypeVar("_T")


class Selector:
    """A compiled selector. ``matches`` is TRUE-only: FALSE and UNKNOWN do not match.

    ``equality`` is (property, text) when the whole selector is ``property = 'text'`` (either
    way round; not a JMS header field): it then matches exactly the messages whose property
    has that text, tested with one dictionary lookup (the sharding case dispatch sees most).
    """

    __slots__ = ("_test", "equality", "text")

    def __init__(self, text: str, test: BoolFn, equality: tuple[str, str] | None = None) -> None:
        self.text = text
        self._test = test
        self.equality = equality

    def matches(self, message: Message) -> bool:
        equality = self.equality
        if equality is not None:
            return message.properties.get(equality[0]) == equality[1]
        return self._test(message) is True

    def __repr__(self) -> str:
        return f"Selector({self.text!r})"


def compile_selector(text: str) -> Selector:
    """Parse and type-check ``text`` once; raise SelectorError saying what and at which column."""
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorError(f"selector is longer than {MAX_SELECTOR_LENGTH} characters")
    tokens = tokenize(text)
    equality = simple_equality(tokens)
    if equality is not None and (equality[0] in _NUMBER_HEADERS or equality[0] in _STRING_HEADERS):
        equality = None  # a header field, not a property
    return Selector(text, _Parser(tokens).parse(), equality)


# -- compile-time expressions: an evaluator plus its static type ------------------------------
# A property reference (_Prop) is the only expression whose type is decided by its context;
# the _as_* functions below apply that context once, at compile time.


@dataclass(frozen=True, slots=True)
class _Num:
    fn: NumFn
    column: int
    const: Number | None = None  # the value of a literal, so comparisons can specialise


@dataclass(frozen=True, slots=True)
class _Str:
    fn: StrFn
    column: int
    const: str | None = None


@dataclass(frozen=True, slots=True)
class _Bool:
    fn: BoolFn
    column: int
    const: bool | None = None


@dataclass(frozen=True, slots=True)
class _Prop:
    name: str
    fn: StrFn  # the raw property value
    column: int


_Expr = _Num | _Str | _Bool | _Prop
_KIND_NAMES: Final = {_Num: "a number", _Str: "a string", _Bool: "a condition", _Prop: "a property"}


def _constant(value: _T) -> Callable[[Message], _T]:
    return lambda _message: value


def _property(name: str) -> StrFn:
    return lambda message: message.properties.get(name)


def _as_num(expr: _Expr) -> _Num:
    if isinstance(expr, _Num):
        return expr
    if isinstance(expr, _Prop):
        name = expr.name  # looked up here, not through expr.fn: one call less per message

        def number(message: Message) -> Number | None:
            text = message.properties.get(name)
            return None if text is None else property_number(text)

        return _Num(number, expr.column)
    raise SelectorError(f"expected a number, found {_KIND_NAMES[type(expr)]}", expr.column)


def _as_str(expr: _Expr) -> _Str:
    if isinstance(expr, _Str):
        return expr
    if isinstance(expr, _Prop):
        return _Str(expr.fn, expr.column)
    raise SelectorError(f"expected a string, found {_KIND_NAMES[type(expr)]}", expr.column)


def _as_bool(expr: _Expr) -> _Bool:
    if isinstance(expr, _Bool):
        return expr
    if isinstance(expr, _Prop):
        name = expr.name

        def boolean(message: Message) -> bool | None:
            text = message.properties.get(name)
            return None if text is None else property_boolean(text)

        return _Bool(boolean, expr.column)
    raise SelectorError(f"expected a condition, found {_KIND_NAMES[type(expr)]}", expr.column)


_NUMBER_HEADERS: Final[dict[str, NumFn]] = {
    "JMSPriority": lambda message: message.priority,
    "JMSTimestamp": lambda message: message.timestamp,
    "JMSExpiration": lambda message: message.expires,
}
_STRING_HEADERS: Final[dict[str, StrFn]] = {
    "JMSDeliveryMode": lambda m: "PERSISTENT" if m.persistent else "NON_PERSISTENT",
    "JMSMessageID": lambda message: message.message_id,
    "JMSCorrelationID": _property("correlation-id"),
    "JMSType": _property("type"),
}


# -- parser: operator precedence with explicit stacks, so no selector can exhaust the stack ---

_OR, _AND, _NOT, _COMPARE, _ADD, _MULTIPLY, _SIGN = 1, 2, 3, 4, 5, 6, 7

_BINARY: Final = {
    **{(TokenKind.KEYWORD, w): _COMPARE for w in ("NOT", "BETWEEN", "IN", "LIKE", "IS")},
    **{(TokenKind.OPERATOR, s): _COMPARE for s in ("=", "<>", "<", ">", "<=", ">=")},
    **{(TokenKind.OPERATOR, s): _ADD if s in "+-" else _MULTIPLY for s in ("+", "-", "*", "/")},
    (TokenKind.KEYWORD, "OR"): _OR,
    (TokenKind.KEYWORD, "AND"): _AND,
}


@dataclass(slots=True)
class _Pending:
    """An operator on the parser's stack, waiting for its operands. ``kind`` is "(", "NOT",
    "SIGN", "BETWEEN", a comparison symbol, or for a chain (AND, OR, + -, * /) the level's
    first symbol, with every symbol of the chain in ``symbols``."""

    kind: str
    precedence: int  # 0 for "(": no operator reduces past a parenthesis
    column: int
    symbols: list[str] = field(default_factory=list)
    negated: bool = False  # NOT and SIGN: an odd number of them; BETWEEN: NOT BETWEEN
    complete: bool = True  # BETWEEN: its AND has been read


class _Parser:
    """Reads tokens left to right, alternating between wanting an operand and wanting an
    operator; operators wait on ``_ops`` until one of lower precedence (or a ")" or the end)
    reduces them onto ``_operands``. Chains of one connective or one arithmetic level become a
    single n-ary node, and runs of NOT or of signs a single node, so the tree is only as deep
    as the parentheses."""

    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._pos = 0
        self._ops: list[_Pending] = []
        self._operands: list[_Expr] = []
        self._depth = 0
        self._predicate_on_top = False  # the last operand is a comparison: another can't follow

    def parse(self) -> BoolFn:
        if self._peek().kind is TokenKind.END:
            raise SelectorError("empty selector")
        want_operand = True
        while True:
            token = self._next()
            if want_operand:
                want_operand = self._operand(token)
            elif token.kind is TokenKind.END:
                self._reduce(_OR, token)
                if self._ops:  # only "(" stops a reduction
                    raise SelectorError(
                        f"expected ')' for the '(' at column {self._ops[-1].column}, "
                        "found end of selector",
                        token.column,
                    )
                return _as_bool(self._operands.pop()).fn
            else:
                want_operand = self._operator(token)

    def _peek(self) -> Token:
        return self._tokens[self._pos]

    def _next(self) -> Token:
        token = self._tokens[self._pos]
        if token.kind is not TokenKind.END:
            self._pos += 1
        return token

    def _expect(self, expected: str, kind: TokenKind, *texts: str) -> Token:
        token = self._next()
        if token.kind is not kind or (texts and token.text not in texts):
            raise SelectorError(f"expected {expected}, found {token.describe()}", token.column)
        return token

    def _push(self, expr: _Expr, is_predicate: bool = False) -> None:
        self._operands.append(expr)
        self._predicate_on_top = is_predicate

    def _operand(self, token: Token) -> bool:
        """Handle ``token`` where an operand belongs; return whether one is still wanted."""
        top = self._ops[-1] if self._ops else None
        kind = token.kind
        if token.is_keyword("NOT"):
            if top is not None and top.kind == "NOT":  # NOT NOT x is x, also for UNKNOWN
                top.negated = not top.negated
            elif top is not None and top.precedence > _NOT:
                raise SelectorError("NOT needs parentheses here", token.column)
            else:
                self._ops.append(_Pending("NOT", _NOT, token.column, negated=True))
            return True
        if token.is_operator("+", "-"):
            if top is not None and top.kind == "SIGN":
                top.negated ^= token.text == "-"
            else:
                self._ops.append(_Pending("SIGN", _SIGN, token.column, negated=token.text == "-"))
            return True
        if kind is TokenKind.EXACT or kind is TokenKind.APPROX:
            negative = False
            if top is not None and top.kind == "SIGN":  # fold the sign into the literal
                negative = self._ops.pop().negated
            value = -token.number if negative else token.number
            if kind is TokenKind.EXACT and not LONG_MIN <= value <= LONG_MAX:
                raise SelectorError("integer literal out of range of a Java long", token.column)
            self._push(_Num(_constant(value), token.column, value))
        elif kind is TokenKind.STRING:
            self._push(_Str(_constant(token.text), token.column, token.text))
        elif kind is TokenKind.IDENT:
            name = token.text
            if name in _NUMBER_HEADERS:
                self._push(_Num(_NUMBER_HEADERS[name], token.column))
            elif name in _STRING_HEADERS:
                self._push(_Str(_STRING_HEADERS[name], token.column))
            else:
                self._push(_Prop(name, _property(name), token.column))
        elif token.is_keyword("TRUE", "FALSE"):
            value = token.text == "TRUE"
            self._push(_Bool(_constant(value), token.column, value))
        elif token.is_operator("("):
            self._depth += 1
            if self._depth > MAX_NESTING:
                raise SelectorError(f"parentheses nest deeper than {MAX_NESTING}", token.column)
            self._ops.append(_Pending("(", 0, token.column))
            return True
        elif token.is_keyword("NULL"):
            raise SelectorError("NULL may only follow IS or IS NOT", token.column)
        elif kind is TokenKind.KEYWORD:
            raise SelectorError(f"reserved word {token.text} cannot be an identifier", token.column)
        elif kind is TokenKind.END:
            raise SelectorError("unexpected end of selector", token.column)
        else:
            raise SelectorError(f"unexpected {token.describe()}", token.column)
        return False

    def _operator(self, token: Token) -> bool:
        """Handle ``token`` after an operand; return whether an operand is wanted next."""
        if token.is_operator(")"):
            self._reduce(_OR, token)
            if not self._ops:
                raise SelectorError("unbalanced ')'", token.column)
            self._ops.pop()
            self._depth -= 1
            self._predicate_on_top = False
            return False
        precedence = _BINARY.get((token.kind, token.text), 0)
        if precedence == 0:
            raise SelectorError(f"unexpected {token.describe()}", token.column)
        if precedence == _COMPARE:
            return self._comparison(token)
        if token.is_keyword("AND"):  # perhaps the AND of a BETWEEN
            self._reduce(_ADD, token)
            top = self._ops[-1] if self._ops else None
            if top is not None and not top.complete:
                top.complete = True
                return True
        self._reduce(precedence + 1, token)
        top = self._ops[-1] if self._ops else None
        if top is not None and top.precedence == precedence:  # extend the chain
            top.symbols.append(token.text)
        else:
            self._ops.append(_Pending(token.text, precedence, token.column, [token.text]))
        return True

    def _comparison(self, token: Token) -> bool:
        self._reduce(_COMPARE, token)
        if self._predicate_on_top:
            raise SelectorError(
                f"{token.describe()} cannot follow a comparison; add parentheses", token.column
            )
        if token.kind is TokenKind.OPERATOR:
            self._ops.append(_Pending(token.text, _COMPARE, token.column))
            return True
        left = self._operands.pop()
        if token.text == "IS":
            negated = self._peek().is_keyword("NOT")
            if negated:
                self._next()
            self._expect("NULL", TokenKind.KEYWORD, "NULL")
            self._push(_Bool(null_test(left.fn, negated), token.column), is_predicate=True)
            return False
        negated = token.text == "NOT"
        if negated:
            token = self._expect("BETWEEN, IN or LIKE", TokenKind.KEYWORD, "BETWEEN", "IN", "LIKE")
        if token.text == "BETWEEN":
            self._operands.append(left)
            self._ops.append(_Pending("BETWEEN", _COMPARE, token.column, [], negated, False))
            return True
        subject = _as_str(left).fn
        if token.text == "IN":
            test = membership(subject, self._in_list(), negated)
        else:
            test = self._like(subject, negated)
        self._push(_Bool(test, token.column), is_predicate=True)
        return False

    def _reduce(self, min_precedence: int, at: Token) -> None:
        """Apply every waiting operator of at least ``min_precedence`` (never a "(")."""
        ops, operands = self._ops, self._operands
        while ops and ops[-1].precedence >= min_precedence:
            op = ops.pop()
            is_predicate = op.precedence == _COMPARE
            if op.kind == "NOT":
                condition = _as_bool(operands.pop())
                result: _Expr = (
                    _Bool(logical_not(condition.fn), op.column) if op.negated else condition
                )
            elif op.kind == "SIGN":
                number = _as_num(operands.pop())
                if op.negated:  # as 0 - x: Java's wrap of -Long.MIN_VALUE, and -0.0 == 0.0
                    negation = arithmetic(_constant(0), [(ARITHMETIC["-"], number.fn)])
                    number = _Num(negation, op.column)
                result = number
            elif op.kind == "BETWEEN":
                if not op.complete:
                    raise SelectorError(f"expected AND, found {at.describe()}", at.column)
                x, low, high = (_as_num(e) for e in operands[-3:])
                del operands[-3:]
                result = _Bool(_between(x, low, high, op.negated), op.column)
            elif is_predicate:
                right, left = operands.pop(), operands.pop()
                result = _compare(op.kind, left, right, op.column)
            else:
                count = len(op.symbols) + 1
                chain, operands[-count:] = operands[-count:], []
                result = _chain(op, chain)
            operands.append(result)
            self._predicate_on_top = is_predicate

    def _in_list(self) -> frozenset[str]:
        self._expect("'(' after IN", TokenKind.OPERATOR, "(")
        if self._peek().is_operator(")"):
            raise SelectorError("empty IN list", self._peek().column)
        values: set[str] = set()
        while True:
            values.add(self._expect("a string literal in IN", TokenKind.STRING).text)
            if self._expect("',' or ')'", TokenKind.OPERATOR, ",", ")").text == ")":
                return frozenset(values)

    def _like(self, subject: StrFn, negated: bool) -> BoolFn:
        pattern = self._expect("a string literal after LIKE", TokenKind.STRING)
        escape = None
        if self._peek().is_keyword("ESCAPE"):
            self._next()
            literal = self._expect("a string literal after ESCAPE", TokenKind.STRING)
            if len(literal.text) != 1:
                raise SelectorError("ESCAPE takes a one-character string literal", literal.column)
            escape = literal.text
        match = like_matcher(pattern.text, escape, pattern.column)

        def like(message: Message) -> bool | None:
            value = subject(message)
            return None if value is None else match(value) is not negated

        return like


def _chain(op: _Pending, operands: list[_Expr]) -> _Expr:
    """An n-ary AND, OR, or left-to-right arithmetic chain."""
    if op.precedence in (_AND, _OR):
        conditions = [_as_bool(operand).fn for operand in operands]
        return _Bool(connective(conditions, op.precedence == _OR), operands[0].column)
    first, *rest = (_as_num(operand) for operand in operands)
    steps = [(ARITHMETIC[symbol], e.fn) for symbol, e in zip(op.symbols, rest, strict=True)]
    return _Num(arithmetic(first.fn, steps), first.column)


# -- comparisons and BETWEEN: type-checked here, evaluated by selector_eval -----------------

_ORDERING: Final = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}
_EQUALITY: Final = {"=": operator.eq, "<>": operator.ne}


def _compare(op: str, left: _Expr, right: _Expr, column: int) -> _Bool:
    typed = [type(e) for e in (left, right) if not isinstance(e, _Prop)]
    if len(typed) == 2 and typed[0] is not typed[1]:
        raise SelectorError(
            f"cannot compare {_KIND_NAMES[typed[0]]} with {_KIND_NAMES[typed[1]]}", column
        )
    kind = typed[0] if typed else None
    a: _Num | _Str | _Bool
    b: _Num | _Str | _Bool
    if op in _ORDERING:
        if kind is not None and kind is not _Num:
            raise SelectorError(
                f"'{op}' compares numbers; {_KIND_NAMES[kind]} allows only = and <>", column
            )
        a, b = _as_num(left), _as_num(right)
    elif kind is _Num:
        a, b = _as_num(left), _as_num(right)
    elif kind is _Bool:
        a, b = _as_bool(left), _as_bool(right)
    else:  # strings, or two properties
        a, b = _as_str(left), _as_str(right)
    compare = _ORDERING.get(op) or _EQUALITY[op]
    return _Bool(comparison(compare, a.fn, b.fn, b.const), column)


def _between(subject: _Num, low: _Num, high: _Num, negated: bool) -> BoolFn:
    x, lo, hi = subject.fn, low.fn, high.fn
    if low.const is not None and high.const is not None:
        a, b = low.const, high.const
        if negated:  # not `not (a <= v <= b)`: a NaN is outside nothing and inside nothing
            return lambda m: None if (v := x(m)) is None else (v < a or v > b)
        return lambda m: None if (v := x(m)) is None else a <= v <= b

    # JMS 1.1 §3.8.1.1 defines BETWEEN by these two comparisons, so build it from them
    if negated:
        below = comparison(operator.lt, x, lo, low.const)
        return connective([below, comparison(operator.gt, x, hi, high.const)], True)
    above = comparison(operator.ge, x, lo, low.const)
    return connective([above, comparison(operator.le, x, hi, high.const)], False)

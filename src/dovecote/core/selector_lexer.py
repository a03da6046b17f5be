"""The character-level syntax of JMS message selectors (JMS 1.1 §3.8.1.1): tokens, LIKE
patterns, and the numbers and booleans a property's text can hold; and the selector's error.

:func:`tokenize` turns selector text into a list of :class:`Token` ending with one ``END``
token. It decodes literals (so the parser never looks at characters) and reports every error
with the 1-based column where it starts. :func:`like_matcher` turns a LIKE pattern into a
predicate once, at compile time. Only :func:`property_number`, :func:`property_boolean` and
those predicates run per message, and they compile nothing.

Lexical rules:

- Whitespace is space, tab, form feed, CR and LF.
- String literals are in single quotes; ``''`` inside stands for one quote.
- Exact numeric literals use Java's integer literal syntax: decimal (``57``), hex (``0x1F``),
  octal (``017``), optional ``L`` suffix. Hex and octal give the 64-bit two's-complement value
  (``0xFFFFFFFFFFFFFFFF`` is -1), as Java's long literals do. The parser checks that a
  decimal literal fits a Java long once its sign is known.
- Approximate numeric literals use Java's floating-point syntax without hex floats: ``7.``,
  ``.5``, ``1.5E-2``, ``1e3``, optional ``f``/``d`` suffix (``f`` is read as a double, not
  rounded to 32 bits). A value too large for a double is an error.
- Identifiers follow Java's rules (approximated with Unicode categories: a letter, ``$``,
  ``_``, a currency symbol or a letter number, then also digits and combining marks).
  Identifiers are case-sensitive.
- Keywords (``AND OR NOT BETWEEN IN LIKE ESCAPE IS NULL TRUE FALSE``) are case-insensitive
  and ASCII only; they are never identifiers.
- Operators: ``= <> < > <= >= + - * / ( ) ,``.

A property's text is a number when all of it is a decimal integer (a long if it fits, else a
double, as Java's ``Long.valueOf`` then ``Double.valueOf``) or a decimal floating-point
number: ASCII digits, optional sign, fraction and exponent; no spaces, hex, NaN or Infinity.

LIKE patterns: ``%`` any run, ``_`` one character, the ESCAPE character makes the next one
literal (a pattern may not end with it); matching is case-sensitive. The pattern is split at
``%``; each piece is a literal or a regex compiled once. Matching anchors the first and last
pieces and finds the middle ones leftmost-first (leftmost placement never rules out a later
piece), so it costs at most value length x pattern length and cannot backtrack
catastrophically.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from dovecote.core.errors import InvalidRequest

KEYWORDS = frozenset(
    {"AND", "OR", "NOT", "BETWEEN", "IN", "LIKE", "ESCAPE", "IS", "NULL", "TRUE", "FALSE"}
)

_WHITESPACE = frozenset(" \t\f\r\n")
_TWO_CHAR_OPERATORS = frozenset({"<>", "<=", ">="})
_ONE_CHAR_OPERATORS = frozenset("=<>+-*/(),")
_START_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Sc", "Pc"})
_PART_CATEGORIES = _START_CATEGORIES | {"Nd", "Mn", "Mc", "Cf"}

_BITS64 = (1 << 64) - 1
LONG_MIN = -(1 << 63)
LONG_MAX = (1 << 63) - 1
_BOOLEAN_TEXT = {"true": True, "false": False}
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# Alternatives are tried in order: hex first, then anything with a point, exponent or float
# suffix, and plain digits last.
_NUMBER = re.compile(
    r"""
      0[xX](?P<hex>[0-9a-fA-F]+)[lL]?
    | (?P<float>(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)[fFdD]?
    | (?P<suffixed>[0-9]+)[fFdD]
    | (?P<int>[0-9]+)[lL]?
    """,
    re.VERBOSE,
)


class SelectorError(InvalidRequest):
    """A selector that cannot be compiled. ``column`` (1-based) is where the problem starts;
    the message ends with it, e.g. ``unexpected ')' at column 14``."""

    def __init__(self, what: str, column: int | None = None) -> None:
        super().__init__(what if column is None else f"{what} at column {column}")
        self.column = column


class TokenKind(Enum):
    STRING = "string"
    EXACT = "exact number"
    APPROX = "approximate number"
    IDENT = "identifier"
    KEYWORD = "keyword"
    OPERATOR = "operator"
    END = "end"


@dataclass(frozen=True, slots=True)
class Token:
    """``text`` is the decoded string, the identifier, the upper-cased keyword or the operator;
    ``number`` is the value of a numeric literal."""

    kind: TokenKind
    text: str
    column: int
    number: int | float = 0

    def is_keyword(self, *words: str) -> bool:
        return self.kind is TokenKind.KEYWORD and self.text in words

    def is_operator(self, *symbols: str) -> bool:
        return self.kind is TokenKind.OPERATOR and self.text in symbols

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind is TokenKind.END:
            return "end of selector"
        if self.kind is TokenKind.STRING:
            return "string literal"
        return repr(self.text)


def is_identifier_start(char: str) -> bool:
    if char.isascii():
        return char.isalpha() or char in "$_"
    return unicodedata.category(char) in _START_CATEGORIES


def is_identifier_part(char: str) -> bool:
    if char.isascii():
        return char.isalnum() or char in "$_"
    return unicodedata.category(char) in _PART_CATEGORIES


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with an ``END`` token; raise SelectorError."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        column = i + 1
        if char in _WHITESPACE:
            i += 1
        elif char == "'":
            value, i = _string(text, i)
            tokens.append(Token(TokenKind.STRING, value, column))
        elif "0" <= char <= "9" or (char == "." and i + 1 < n and "0" <= text[i + 1] <= "9"):
            token, i = _number(text, i)
            tokens.append(token)
        elif is_identifier_start(char):
            end = i + 1
            while end < n and is_identifier_part(text[end]):
                end += 1
            word = text[i:end]
            upper = word.upper()
            if word.isascii() and upper in KEYWORDS:
                tokens.append(Token(TokenKind.KEYWORD, upper, column))
            else:
                tokens.append(Token(TokenKind.IDENT, word, column))
            i = end
        elif text[i : i + 2] in _TWO_CHAR_OPERATORS:
            tokens.append(Token(TokenKind.OPERATOR, text[i : i + 2], column))
            i += 2
        elif char in _ONE_CHAR_OPERATORS:
            tokens.append(Token(TokenKind.OPERATOR, char, column))
            i += 1
        else:
            raise SelectorError(f"unexpected character {char!r}", column)
    tokens.append(Token(TokenKind.END, "", n + 1))
    return tokens


def _string(text: str, start: int) -> tuple[str, int]:
    """Decode the string literal whose opening quote is at ``start``; return it and the index
    after its closing quote."""
    parts: list[str] = []
    i = start + 1
    while True:
        quote = text.find("'", i)
        if quote < 0:
            raise SelectorError("unterminated string literal", start + 1)
        parts.append(text[i:quote])
        if text.startswith("'", quote + 1):  # '' stands for one quote
            parts.append("'")
            i = quote + 2
        else:
            return "".join(parts), quote + 1


def _number(text: str, start: int) -> tuple[Token, int]:
    column = start + 1
    match = _NUMBER.match(text, start)
    assert match is not None  # called only at a digit, or "." then a digit: both match
    end = match.end()
    if end < len(text) and (is_identifier_part(text[end]) or text[end] == "."):
        raise SelectorError(f"malformed number {text[start : end + 1]!r}", column)
    if match["float"] is not None or match["suffixed"] is not None:
        value = float(match["float"] or match["suffixed"])
        if math.isinf(value):
            raise SelectorError("number out of range of a Java double", column)
        return Token(TokenKind.APPROX, match[0], column, value), end
    if match["hex"] is not None:
        value = _long_bits(int(match["hex"], 16), column)
        return Token(TokenKind.EXACT, match[0], column, value), end
    digits = match["int"]
    if len(digits) > 1 and digits.startswith("0"):  # Java: a leading 0 means octal
        if "8" in digits or "9" in digits:
            raise SelectorError(f"malformed octal literal {digits!r}", column)
        return Token(TokenKind.EXACT, match[0], column, _long_bits(int(digits, 8), column)), end
    if len(digits) > 20:  # far outside a long; keep int() away from huge digit strings
        raise SelectorError("integer literal out of range of a Java long", column)
    return Token(TokenKind.EXACT, match[0], column, int(digits)), end


def _long_bits(value: int, column: int) -> int:
    """A hex or octal literal's 64 bits read as a signed long, as Java reads ``0x...L``."""
    if value > _BITS64:
        raise SelectorError("integer literal out of range of a Java long", column)
    return value + 2 * LONG_MIN if value > -LONG_MIN - 1 else value


def property_boolean(text: str) -> bool | None:
    """'true' or 'false' in any case, as Java's ``Boolean.valueOf`` but strict; else None."""
    return _BOOLEAN_TEXT.get(text.lower())


def property_number(text: str) -> int | float | None:
    """The number a property's text holds, or None (see the module docstring)."""
    if text.isdigit() and text.isascii() and len(text) < 19:  # the common case, always a long
        return int(text)
    if _INTEGER_TEXT.fullmatch(text) is not None:
        if len(text) <= 20:  # sign and 19 digits; longer ones cannot be longs
            value = int(text)
            if LONG_MIN <= value <= LONG_MAX:
                return value
        return float(text)  # as Java: Long.valueOf fails, Double.valueOf succeeds
    if _DECIMAL_TEXT.fullmatch(text) is not None:
        return float(text)
    return None


@dataclass(frozen=True, slots=True)
class _Piece:
    """Part of a LIKE pattern between two ``%``: fixed ``length``; ``literal`` when it has no
    ``_``, else ``regex`` (``.`` for each ``_``), compiled here, once."""

    length: int
    literal: str | None
    regex: re.Pattern[str] | None

    def is_at(self, value: str, pos: int) -> bool:
        if self.literal is not None:
            return value.startswith(self.literal, pos)
        assert self.regex is not None
        return self.regex.match(value, pos) is not None

    def find(self, value: str, start: int, end: int) -> int:
        if self.literal is not None:
            return value.find(self.literal, start, end)
        assert self.regex is not None
        found = self.regex.search(value, start, end)
        return -1 if found is None else found.start()


def _piece(chars: list[str | None]) -> _Piece:
    if None not in chars:
        return _Piece(len(chars), "".join(c for c in chars if c is not None), None)
    source = "".join("." if c is None else re.escape(c) for c in chars)
    return _Piece(len(chars), None, re.compile(source, re.DOTALL))


def like_matcher(pattern: str, escape: str | None, column: int) -> Callable[[str], bool]:
    pieces: list[list[str | None]] = [[]]  # None stands for '_'
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == escape:
            if i + 1 == len(pattern):
                raise SelectorError("LIKE pattern ends with its escape character", column)
            pieces[-1].append(pattern[i + 1])
            i += 1
        elif char == "%":
            pieces.append([])
        elif char == "_":
            pieces[-1].append(None)
        else:
            pieces[-1].append(char)
        i += 1
    first, last = _piece(pieces[0]), _piece(pieces[-1])
    if len(pieces) == 1:
        if first.literal is not None:
            return first.literal.__eq__
        return lambda value: len(value) == first.length and first.is_at(value, 0)
    middle = [_piece(chars) for chars in pieces[1:-1] if chars]
    if not middle and first.literal is not None and last.literal is not None:
        prefix, suffix, least = first.literal, last.literal, first.length + last.length
        return lambda v: len(v) >= least and v.startswith(prefix) and v.endswith(suffix)
    shortest = first.length + last.length + sum(p.length for p in middle)

    def like(value: str) -> bool:
        end = len(value) - last.length
        if len(value) < shortest or not first.is_at(value, 0) or not last.is_at(value, end):
            return False
        pos = first.length
        for piece in middle:
            found = piece.find(value, pos, end)
            if found < 0:
                return False
            pos = found + piece.length
        return True

    return like


def simple_equality(tokens: list[Token]) -> tuple[str, str] | None:
    """(identifier, string) if ``tokens`` are exactly ``identifier = 'string'`` (or the other
    way round), else None."""
    if len(tokens) != 4 or not tokens[1].is_operator("="):
        return None
    left, right = tokens[0], tokens[2]
    if left.kind is TokenKind.STRING:
        left, right = right, left
    if left.kind is TokenKind.IDENT and right.kind is TokenKind.STRING:
        return left.text, right.text
    return None

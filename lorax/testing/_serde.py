"""A small re-enactment of serde_json + serde_path_to_error, for exact 400/422 texts.

LoRAX reads every POST body with axum's ``Json<T>`` extractor, which runs
``serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))``
and prints the error as ``{path}: {message} at line {l} column {c}``. Reproducing those
texts byte for byte means reproducing *how* serde_json walks the bytes: it parses and
type-checks in one pass, so a type error early in the body wins over a syntax error later
on, and the reported column is wherever the reader stood when the error was noticed
(just after a scalar token, before a ``[``/``{``, or after the ``}`` of the struct whose
visitor complained). So this module is a byte-level reader that mirrors serde_json
1.0.132's ``Deserializer`` method by method (same peeks, same ``fix_position`` points,
same ``end_map``/``end_seq`` calls), driven by a schema of Rust-like types
(:class:`Str`, :class:`Int`, :class:`Struct`, :class:`Untagged`, ...), with
serde_path_to_error 0.1.16's path rules on top.

Known gaps, all rare: float values come from Python's correctly rounded parser (serde_json
without ``float_roundtrip`` can differ in the last bit, which only shows in the text of an
``invalid type: floating point`` error); Rust's ``{:?}`` escaping of unusual Unicode in
strings is approximated; duplicate keys inside an untagged enum's buffered content keep
the last value.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

__all__ = [
    "Any_",
    "Bool",
    "F32",
    "Field",
    "Int",
    "MapOf",
    "NoMatch",
    "Opt",
    "SerdeError",
    "Str",
    "Struct",
    "UnitEnum",
    "Untagged",
    "VecOf",
    "deserialize",
    "rust_f64",
    "rust_str_debug",
]

Segment = tuple[str, Any]  # ("seq", index) | ("map", key) | ("enum", variant) | ("unknown", None)
Chain = tuple[Segment, ...]
_UNKNOWN: Segment = ("unknown", None)

SYNTAX = "syntax"
EOF = "eof"
DATA = "data"


class SerdeError(Exception):
    """A serde_json error: its message, category, position (line 0 = unknown) and path."""

    def __init__(self, message: str, category: str = DATA, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.line = line
        self.column = column
        self.path: Chain | None = None

    def inner_text(self) -> str:
        """serde_json's ``Display``: the message, then the position when it is known."""
        if self.line == 0:
            return self.message
        return f"{self.message} at line {self.line} column {self.column}"

    def text(self) -> str:
        """serde_path_to_error's ``Display``: ``{path}: `` unless the path is only unknown segments."""
        path = self.path or ()
        if all(seg[0] == "unknown" for seg in path):
            return self.inner_text()
        return f"{format_path(path)}: {self.inner_text()}"

    @property
    def is_data(self) -> bool:
        """True for a type or shape mismatch (axum answers 422), False for syntax/EOF (400)."""
        return self.category == DATA


class NoMatch(Exception):
    """Raised by content matchers when buffered content does not fit a type."""


def format_path(path: Chain) -> str:
    """Print a path the way serde_path_to_error does (``.`` for the root)."""
    if not path:
        return "."
    out: list[str] = []
    sep = ""
    for kind, value in path:
        if kind != "seq":
            out.append(sep)
        if kind == "seq":
            out.append(f"[{value}]")
        elif kind == "unknown":
            out.append("?")
        else:
            out.append(str(value))
        sep = "."
    return "".join(out)


def _trigger(err: SerdeError, chain: Chain) -> SerdeError:
    if err.path is None:
        err.path = chain
    return err


# ---------------------------------------------------------------------------------
# Rust formatting helpers


def rust_f64(value: float) -> str:
    """Rust's ``Display`` for an f64: shortest round-trip digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(value)
    if "e" not in text and "E" not in text:
        if text.endswith(".0"):
            return text[:-2]
        return text
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exp_text = text.lstrip("-").partition("e")
    exp = int(exp_text)
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0") or "0"
    point = len(int_part) + exp  # position of the decimal point within `digits`
    if int_part == "0":
        point = exp + 1 - (len(int_part + frac_part) - len(digits) - 1)
    if point <= 0:
        body = "0." + "0" * -point + digits
    elif point >= len(digits):
        body = digits + "0" * (point - len(digits))
    else:
        body = digits[:point] + "." + digits[point:]
    return sign + body


def _with_decimal_point(value: float) -> str:
    # serde >= 1.0.181 prints Unexpected::Float so that it always looks like a float.
    text = rust_f64(value)
    if math.isfinite(value) and "." not in text:
        text += ".0"
    return text


_DEBUG_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", '"': '\\"', "\0": "\\0"}


def rust_str_debug(text: str) -> str:
    """Rust's ``{:?}`` for a str (quotes included), approximating its printable table."""
    out = ['"']
    for ch in text:
        esc = _DEBUG_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Mn", "Me") or (cat == "Zs" and ch != " "):
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# serde::de::Unexpected, as displayed.
def _unexp_number(num: int | float) -> str:
    if isinstance(num, float):
        return f"floating point `{_with_decimal_point(num)}`"
    return f"integer `{num}`"


def _invalid_type(unexp: str, expected: str) -> SerdeError:
    return SerdeError(f"invalid type: {unexp}, expected {expected}")


def _invalid_value(unexp: str, expected: str) -> SerdeError:
    return SerdeError(f"invalid value: {unexp}, expected {expected}")


def _one_of(names: Sequence[str]) -> str:
    if len(names) == 1:
        return f"`{names[0]}`"
    if len(names) == 2:
        return f"`{names[0]}` or `{names[1]}`"
    return "one of " + ", ".join(f"`{n}`" for n in names)


# ---------------------------------------------------------------------------------
# The reader (serde_json::Deserializer over a SliceRead)

_STR_STOP = re.compile(rb'["\\\x00-\x1f]')
_HEX = re.compile(rb"[0-9A-Fa-f]{4}")
_WS = b" \n\t\r"


class Reader:
    """serde_json's ``Deserializer<SliceRead>``: a byte cursor with its error positions."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.index = 0
        self.remaining_depth = 128

    # -- positions
    def _position_of(self, i: int) -> tuple[int, int]:
        start_of_line = self.data.rfind(b"\n", 0, i) + 1
        return 1 + self.data.count(b"\n", 0, start_of_line), i - start_of_line

    def error(self, message: str, category: str = SYNTAX) -> SerdeError:
        """An error at the last consumed byte (serde_json ``error``)."""
        line, col = self._position_of(self.index)
        return SerdeError(message, category, line, col)

    def peek_error(self, message: str, category: str = SYNTAX) -> SerdeError:
        """An error at the next, peeked byte (serde_json ``peek_error``)."""
        line, col = self._position_of(min(len(self.data), self.index + 1))
        return SerdeError(message, category, line, col)

    def fix_position(self, err: SerdeError) -> SerdeError:
        """Give a position to an error raised by a visitor (the last consumed byte)."""
        if err.line == 0:
            err.line, err.column = self._position_of(self.index)
        return err

    # -- bytes
    def peek(self) -> int | None:
        """The next byte, not consumed; None at the end."""
        return self.data[self.index] if self.index < len(self.data) else None

    def peek_or_null(self) -> int:
        """The next byte, or 0 at the end."""
        return self.data[self.index] if self.index < len(self.data) else 0

    def eat(self) -> None:
        """Consume the peeked byte."""
        self.index += 1

    def next(self) -> int | None:
        """Consume and return the next byte; None at the end."""
        if self.index < len(self.data):
            self.index += 1
            return self.data[self.index - 1]
        return None

    def parse_whitespace(self) -> int | None:
        """Skip JSON whitespace; return the next byte without consuming it."""
        data, i, n = self.data, self.index, len(self.data)
        while i < n and data[i] in _WS:
            i += 1
        self.index = i
        return data[i] if i < n else None

    def check_recursion(self) -> None:
        """serde_json's 128-level nesting limit."""
        self.remaining_depth -= 1
        if self.remaining_depth == 0:
            raise self.peek_error("recursion limit exceeded")

    # -- tokens
    def parse_ident(self, ident: bytes) -> None:
        """Consume the rest of ``null``, ``true`` or ``false``."""
        for expected in ident:
            got = self.next()
            if got is None:
                raise self.error("EOF while parsing a value", EOF)
            if got != expected:
                raise self.error("expected ident")

    def parse_number(self, positive: bool) -> int | float:
        """``parse_integer`` and friends: the value as serde_json's ParserNumber would hold it."""
        start = self.index - (0 if positive else 1)
        first = self.next()
        if first is None:
            raise self.error("EOF while parsing a value", EOF)
        if first == 0x30:  # b'0'
            if 0x30 <= self.peek_or_null() <= 0x39:
                raise self.peek_error("invalid number")
        elif 0x31 <= first <= 0x39:
            while 0x30 <= self.peek_or_null() <= 0x39:
                self.eat()
        else:
            raise self.error("invalid number")
        is_float = False
        if self.peek_or_null() == 0x2E:  # '.'
            is_float = True
            self.eat()
            digits = 0
            while 0x30 <= self.peek_or_null() <= 0x39:
                self.eat()
                digits += 1
            if digits == 0:
                if self.peek() is not None:
                    raise self.peek_error("invalid number")
                raise self.peek_error("EOF while parsing a value", EOF)
        if self.peek_or_null() in (0x65, 0x45):  # e, E
            is_float = True
            self.eat()
            if self.peek_or_null() in (0x2B, 0x2D):
                self.eat()
            nxt = self.next()
            if nxt is None:
                raise self.error("EOF while parsing a value", EOF)
            if not 0x30 <= nxt <= 0x39:
                raise self.error("invalid number")
            while 0x30 <= self.peek_or_null() <= 0x39:
                self.eat()
        text = self.data[start : self.index].decode("ascii")
        if not is_float:
            value = int(text)
            if positive and value <= 0xFFFF_FFFF_FFFF_FFFF:
                return value
            if not positive and value != 0 and value >= -(2**63):
                return value
            # u64 overflow, i64 underflow, and -0 become f64 (-0 keeps its sign).
            return -0.0 if value == 0 else float(value)
        result = float(text)
        if math.isinf(result):
            raise self.error("number out of range")
        return result

    def ignore_number(self, positive: bool) -> None:
        """Check a number's grammar without keeping its value."""
        # ignore_integer/ignore_decimal/ignore_exponent: the grammar without a value.
        first = self.next()
        if first == 0x30:
            if 0x30 <= self.peek_or_null() <= 0x39:
                raise self.peek_error("invalid number")
        elif first is not None and 0x31 <= first <= 0x39:
            while 0x30 <= self.peek_or_null() <= 0x39:
                self.eat()
        else:
            raise self.error("invalid number")
        if self.peek_or_null() == 0x2E:
            self.eat()
            digits = 0
            while 0x30 <= self.peek_or_null() <= 0x39:
                self.eat()
                digits += 1
            if digits == 0:
                raise self.peek_error("invalid number")
        if self.peek_or_null() in (0x65, 0x45):
            self.eat()
            if self.peek_or_null() in (0x2B, 0x2D):
                self.eat()
            nxt = self.next()
            if nxt is None or not 0x30 <= nxt <= 0x39:
                raise self.error("invalid number")
            while 0x30 <= self.peek_or_null() <= 0x39:
                self.eat()
        del positive

    def parse_str(self) -> str:
        """The body of a string after its opening quote (``SliceRead::parse_str``)."""
        data = self.data
        out = bytearray()
        while True:
            m = _STR_STOP.search(data, self.index)
            if m is None:
                out += data[self.index :]
                self.index = len(data)
                raise self.error("EOF while parsing a string", EOF)
            pos = m.start()
            out += data[self.index : pos]
            ch = data[pos]
            if ch == 0x22:
                self.index = pos + 1
                try:
                    return out.decode("utf-8")
                except UnicodeDecodeError:
                    raise self.error("invalid unicode code point") from None
            if ch == 0x5C:
                self.index = pos + 1
                self._parse_escape(out)
                continue
            self.index = pos + 1
            raise self.error("control character (\\u0000-\\u001F) found while parsing a string")

    def _next_or_eof(self) -> int:
        ch = self.next()
        if ch is None:
            raise self.error("EOF while parsing a string", EOF)
        return ch

    def _hex_escape(self) -> int:
        chunk = self.data[self.index : self.index + 4]
        if len(chunk) < 4:
            self.index = len(self.data)
            raise self.error("EOF while parsing a string", EOF)
        self.index += 4
        if not _HEX.fullmatch(chunk):
            raise self.error("invalid escape")
        return int(chunk, 16)

    def _parse_escape(self, out: bytearray) -> None:
        ch = self._next_or_eof()
        simple = {0x22: b'"', 0x5C: b"\\", 0x2F: b"/", 0x62: b"\b", 0x66: b"\f", 0x6E: b"\n", 0x72: b"\r", 0x74: b"\t"}
        if ch in simple:
            out += simple[ch]
            return
        if ch != 0x75:
            raise self.error("invalid escape")
        n = self._hex_escape()
        if 0xDC00 <= n <= 0xDFFF:
            raise self.error("lone leading surrogate in hex escape")
        while True:
            if n < 0xD800 or n > 0xDBFF:
                out += chr(n).encode("utf-8")
                return
            n1 = n
            if self.peek() is None:
                raise self.error("EOF while parsing a string", EOF)
            if self.peek() != 0x5C:
                self.eat()
                raise self.error("unexpected end of hex escape")
            self.eat()
            if self.peek() is None:
                raise self.error("EOF while parsing a string", EOF)
            if self.peek() != 0x75:
                self.eat()
                raise self.error("unexpected end of hex escape")
            self.eat()
            n2 = self._hex_escape()
            if n2 < 0xDC00 or n2 > 0xDFFF:
                raise self.error("lone leading surrogate in hex escape")
            out += chr((((n1 - 0xD800) << 10) | (n2 - 0xDC00)) + 0x10000).encode("utf-8")
            return

    def ignore_str(self) -> None:
        """Skip a string body; unlike ``parse_str`` it does not check UTF-8 or surrogates."""
        data = self.data
        while True:
            m = _STR_STOP.search(data, self.index)
            if m is None:
                self.index = len(data)
                raise self.error("EOF while parsing a string", EOF)
            pos = m.start()
            ch = data[pos]
            if ch == 0x22:
                self.index = pos + 1
                return
            if ch == 0x5C:
                self.index = pos + 1
                esc = self._next_or_eof()
                if esc == 0x75:
                    self._hex_escape()
                elif esc not in b'"\\/bfnrt':
                    raise self.error("invalid escape")
                continue
            self.index = pos
            raise self.error("control character (\\u0000-\\u001F) found while parsing a string")

    def peek_invalid_type(self, expected: str) -> SerdeError:
        """serde_json's ``peek_invalid_type``: consume the offending scalar, then describe it."""
        peek = self.peek_or_null()
        if peek == 0x6E:
            self.eat()
            self.parse_ident(b"ull")
            err = _invalid_type("null", expected)
        elif peek == 0x74:
            self.eat()
            self.parse_ident(b"rue")
            err = _invalid_type("boolean `true`", expected)
        elif peek == 0x66:
            self.eat()
            self.parse_ident(b"alse")
            err = _invalid_type("boolean `false`", expected)
        elif peek == 0x2D:
            self.eat()
            err = _invalid_type(_unexp_number(self.parse_number(False)), expected)
        elif 0x30 <= peek <= 0x39:
            err = _invalid_type(_unexp_number(self.parse_number(True)), expected)
        elif peek == 0x22:
            self.eat()
            err = _invalid_type(f"string {rust_str_debug(self.parse_str())}", expected)
        elif peek == 0x5B:
            err = _invalid_type("sequence", expected)
        elif peek == 0x7B:
            err = _invalid_type("map", expected)
        else:
            return self.peek_error("expected value")
        return self.fix_position(err)

    def ignore_value(self) -> None:
        """serde_json's ``ignore_value`` (used for unknown keys): syntax only, no values kept."""
        stack: list[int] = []
        enclosing: int | None = None
        while True:
            peek = self.parse_whitespace()
            if peek is None:
                raise self.peek_error("EOF while parsing a value", EOF)
            frame: int | None = None
            if peek == 0x6E:
                self.eat()
                self.parse_ident(b"ull")
            elif peek == 0x74:
                self.eat()
                self.parse_ident(b"rue")
            elif peek == 0x66:
                self.eat()
                self.parse_ident(b"alse")
            elif peek == 0x2D:
                self.eat()
                self.ignore_number(False)
            elif 0x30 <= peek <= 0x39:
                self.ignore_number(True)
            elif peek == 0x22:
                self.eat()
                self.ignore_str()
            elif peek in (0x5B, 0x7B):
                if enclosing is not None:
                    stack.append(enclosing)
                    enclosing = None
                self.eat()
                frame = peek
            else:
                raise self.peek_error("expected value")
            if frame is not None:
                accept_comma = False
            else:
                if enclosing is not None:
                    frame, enclosing = enclosing, None
                elif stack:
                    frame = stack.pop()
                else:
                    return
                accept_comma = True
            while True:
                nxt = self.parse_whitespace()
                if nxt == 0x2C and accept_comma:
                    self.eat()
                    break
                if (nxt == 0x5D and frame == 0x5B) or (nxt == 0x7D and frame == 0x7B):
                    pass
                elif nxt is not None:
                    if accept_comma:
                        raise self.peek_error("expected `,` or `]`" if frame == 0x5B else "expected `,` or `}`")
                    break
                else:
                    raise self.peek_error(
                        "EOF while parsing a list" if frame == 0x5B else "EOF while parsing an object", EOF
                    )
                self.eat()
                if not stack:
                    return
                frame = stack.pop()
                accept_comma = True
            if frame == 0x7B:
                nxt = self.parse_whitespace()
                if nxt == 0x22:
                    self.eat()
                elif nxt is not None:
                    raise self.peek_error("key must be a string")
                else:
                    raise self.peek_error("EOF while parsing an object", EOF)
                self.ignore_str()
                nxt = self.parse_whitespace()
                if nxt == 0x3A:
                    self.eat()
                elif nxt is not None:
                    raise self.peek_error("expected `:`")
                else:
                    raise self.peek_error("EOF while parsing an object", EOF)
            enclosing = frame

    # -- containers
    def end_seq(self) -> None:
        """Expect the closing ``]``."""
        peek = self.parse_whitespace()
        if peek == 0x5D:
            self.eat()
            return
        if peek == 0x2C:
            self.eat()
            if self.parse_whitespace() == 0x5D:
                raise self.peek_error("trailing comma")
            raise self.peek_error("trailing characters")
        if peek is not None:
            raise self.peek_error("trailing characters")
        raise self.peek_error("EOF while parsing a list", EOF)

    def end_map(self) -> None:
        """Expect the closing ``}``."""
        peek = self.parse_whitespace()
        if peek == 0x7D:
            self.eat()
            return
        if peek == 0x2C:
            raise self.peek_error("trailing comma")
        if peek is not None:
            raise self.peek_error("trailing characters")
        raise self.peek_error("EOF while parsing an object", EOF)

    def parse_object_colon(self) -> None:
        """Expect the ``:`` after a key."""
        peek = self.parse_whitespace()
        if peek == 0x3A:
            self.eat()
            return
        if peek is not None:
            raise self.peek_error("expected `:`")
        raise self.peek_error("EOF while parsing an object", EOF)

    def container(self, opener: int, visit: Callable[[], Any]) -> Any:
        """``check_recursion! { eat; visit }`` then ``match (ret, end_*())`` then ``fix_position``."""
        self.check_recursion()
        self.eat()
        ret_err: SerdeError | None = None
        result: Any = None
        try:
            result = visit()
        except SerdeError as exc:
            ret_err = exc
        finally:
            self.remaining_depth += 1
        end_err: SerdeError | None = None
        try:
            if opener == 0x5B:
                self.end_seq()
            else:
                self.end_map()
        except SerdeError as exc:
            end_err = exc
        err = ret_err or end_err
        if err is not None:
            raise self.fix_position(err)
        return result


class SeqAccess:
    """serde_json's SeqAccess with serde_path_to_error's element tracking."""

    def __init__(self, de: Reader, chain: Chain) -> None:
        self.de = de
        self.chain = chain
        self.first = True
        self.index = 0

    def next(self, ty: Type) -> tuple[bool, Any]:
        """The next element as `ty`: (False, None) at the closing bracket."""
        de = self.de
        index = self.index
        self.index += 1
        try:
            peek = de.parse_whitespace()
            if peek is None:
                raise de.peek_error("EOF while parsing a list", EOF)
            if peek == 0x5D:
                return False, None
            if self.first:
                self.first = False
            elif peek == 0x2C:
                de.eat()
                nxt = de.parse_whitespace()
                if nxt == 0x5D:
                    raise de.peek_error("trailing comma")
                if nxt is None:
                    raise de.peek_error("EOF while parsing a value", EOF)
            else:
                raise de.peek_error("expected `,` or `]`")
        except SerdeError as exc:
            raise _trigger(exc, self.chain) from None
        return True, ty.deserialize(de, (*self.chain, ("seq", index)))


class MapAccess:
    """serde_json's MapAccess with serde_path_to_error's key capture."""

    def __init__(self, de: Reader, chain: Chain) -> None:
        self.de = de
        self.chain = chain
        self.first = True

    def next_key(self) -> str | None:
        """The next key, or None at the closing brace."""
        de = self.de
        try:
            peek = de.parse_whitespace()
            if peek is None:
                raise de.peek_error("EOF while parsing an object", EOF)
            if peek == 0x7D:
                return None
            if self.first:
                self.first = False
                if peek != 0x22:
                    raise de.peek_error("key must be a string")
            elif peek == 0x2C:
                de.eat()
                nxt = de.parse_whitespace()
                if nxt == 0x7D:
                    raise de.peek_error("trailing comma")
                if nxt is None:
                    raise de.peek_error("EOF while parsing a value", EOF)
                if nxt != 0x22:
                    raise de.peek_error("key must be a string")
            else:
                raise de.peek_error("expected `,` or `}`")
            de.eat()
            return de.parse_str()
        except SerdeError as exc:
            # The key was not captured (errors come before or while reading it): "?".
            raise _trigger(exc, (*self.chain, _UNKNOWN)) from None

    def next_value(self, ty: Type, key: str) -> Any:
        """The value of `key`, as `ty`."""
        try:
            self.de.parse_object_colon()
        except SerdeError as exc:
            raise _trigger(exc, self.chain) from None
        return ty.deserialize(self.de, (*self.chain, ("map", key)))

    def skip_value(self, key: str) -> None:
        """Skip the value of an unknown `key` (syntax still checked)."""
        try:
            self.de.parse_object_colon()
        except SerdeError as exc:
            raise _trigger(exc, self.chain) from None
        try:
            self.de.ignore_value()
        except SerdeError as exc:
            raise _trigger(exc, (*self.chain, ("map", key))) from None


# ---------------------------------------------------------------------------------
# Types


class Type:
    """A Rust type that knows how serde deserializes it from serde_json and from Content."""

    expecting: ClassVar[str] = "a value"
    #: Absent from a struct, an Option is None without `#[serde(default)]` (serde's missing_field).
    optional_when_missing: ClassVar[bool] = False

    def deserialize(self, de: Reader, chain: Chain) -> Any:
        """Read a value of this type at `chain`; errors get that path unless they have one."""
        try:
            return self._deserialize(de, chain)
        except SerdeError as exc:
            raise _trigger(exc, chain) from None

    def _deserialize(self, de: Reader, chain: Chain) -> Any:
        raise NotImplementedError

    def from_content(self, content: Any) -> Any:
        """Deserialize from buffered content (inside an untagged enum); raise NoMatch if it does not fit."""
        raise NoMatch


def _scalar(de: Reader, expected: str, accept: Callable[[int], Any]) -> Any:
    """The shape of deserialize_bool/str/number: peek, accept or peek_invalid_type, fix_position."""
    peek = de.parse_whitespace()
    if peek is None:
        raise de.peek_error("EOF while parsing a value", EOF)
    try:
        return accept(peek)
    except SerdeError as exc:
        raise de.fix_position(exc) from None


class Str(Type):
    """``String``."""

    expecting = "a string"

    def _deserialize(self, de: Reader, chain: Chain) -> str:
        def accept(peek: int) -> str:
            if peek == 0x22:
                de.eat()
                return de.parse_str()
            raise de.peek_invalid_type(self.expecting)

        result: str = _scalar(de, self.expecting, accept)
        return result

    def from_content(self, content: Any) -> str:
        if isinstance(content, str):
            return content
        raise NoMatch


class Bool(Type):
    """``bool``."""

    expecting = "a boolean"

    def _deserialize(self, de: Reader, chain: Chain) -> bool:
        def accept(peek: int) -> bool:
            if peek == 0x74:
                de.eat()
                de.parse_ident(b"rue")
                return True
            if peek == 0x66:
                de.eat()
                de.parse_ident(b"alse")
                return False
            raise de.peek_invalid_type(self.expecting)

        result: bool = _scalar(de, self.expecting, accept)
        return result

    def from_content(self, content: Any) -> bool:
        if isinstance(content, bool):
            return content
        raise NoMatch


def _number_scalar(de: Reader, expected: str) -> int | float:
    def accept(peek: int) -> int | float:
        if peek == 0x2D:
            de.eat()
            return de.parse_number(False)
        if 0x30 <= peek <= 0x39:
            return de.parse_number(True)
        raise de.peek_invalid_type(expected)

    result: int | float = _scalar(de, expected, accept)
    return result


_INT_RANGES = {
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "usize": (0, 2**64 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "i64": (-(2**63), 2**63 - 1),
}


class Int(Type):
    """``u32``, ``u64``, ``usize``, ``i32`` or ``i64``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.lo, self.hi = _INT_RANGES[kind]

    def _check(self, value: int | float) -> int:
        if isinstance(value, float):
            raise _invalid_type(_unexp_number(value), self.kind)
        if not self.lo <= value <= self.hi:
            raise _invalid_value(_unexp_number(value), self.kind)
        return value

    def _deserialize(self, de: Reader, chain: Chain) -> int:
        value = _number_scalar(de, self.kind)
        try:
            return self._check(value)
        except SerdeError as exc:
            raise de.fix_position(exc) from None

    def from_content(self, content: Any) -> int:
        if isinstance(content, bool) or not isinstance(content, int):
            raise NoMatch
        if not self.lo <= content <= self.hi:
            raise NoMatch
        return content


class F32(Type):
    """``f32``: any JSON number."""

    def _deserialize(self, de: Reader, chain: Chain) -> float:
        return float(_number_scalar(de, "f32"))

    def from_content(self, content: Any) -> float:
        if isinstance(content, bool) or not isinstance(content, (int, float)):
            raise NoMatch
        return float(content)


class Opt(Type):
    """``Option<T>``: ``null`` is None; anything else is T."""

    optional_when_missing = True

    def __init__(self, inner: Type) -> None:
        self.inner = inner

    def _deserialize(self, de: Reader, chain: Chain) -> Any:
        if de.parse_whitespace() == 0x6E:
            de.eat()
            de.parse_ident(b"ull")
            return None
        return self.inner.deserialize(de, chain)

    def from_content(self, content: Any) -> Any:
        if content is None:
            return None
        return self.inner.from_content(content)


class VecOf(Type):
    """``Vec<T>``."""

    expecting = "a sequence"

    def __init__(self, inner: Type) -> None:
        self.inner = inner

    def _deserialize(self, de: Reader, chain: Chain) -> list[Any]:
        peek = de.parse_whitespace()
        if peek is None:
            raise de.peek_error("EOF while parsing a value", EOF)
        if peek != 0x5B:
            raise de.peek_invalid_type(self.expecting)

        def visit() -> list[Any]:
            seq = SeqAccess(de, chain)
            out: list[Any] = []
            while True:
                present, value = seq.next(self.inner)
                if not present:
                    return out
                out.append(value)

        result: list[Any] = de.container(0x5B, visit)
        return result

    def from_content(self, content: Any) -> list[Any]:
        if not isinstance(content, list):
            raise NoMatch
        return [self.inner.from_content(item) for item in content]


class MapOf(Type):
    """``HashMap<String, V>``."""

    expecting = "a map"

    def __init__(self, value: Type) -> None:
        self.value = value

    def _deserialize(self, de: Reader, chain: Chain) -> dict[str, Any]:
        peek = de.parse_whitespace()
        if peek is None:
            raise de.peek_error("EOF while parsing a value", EOF)
        if peek != 0x7B:
            raise de.peek_invalid_type(self.expecting)

        def visit() -> dict[str, Any]:
            access = MapAccess(de, chain)
            out: dict[str, Any] = {}
            while True:
                key = access.next_key()
                if key is None:
                    return out
                out[key] = access.next_value(self.value, key)

        result: dict[str, Any] = de.container(0x7B, visit)
        return result

    def from_content(self, content: Any) -> dict[str, Any]:
        if not isinstance(content, dict):
            raise NoMatch
        return {k: self.value.from_content(v) for k, v in content.items()}


class Any_(Type):
    """``serde_json::Value`` (and serde's buffered ``Content``): any JSON, key order kept."""

    def _deserialize(self, de: Reader, chain: Chain) -> Any:
        peek = de.parse_whitespace()
        if peek is None:
            raise de.peek_error("EOF while parsing a value", EOF)
        if peek == 0x6E:
            de.eat()
            de.parse_ident(b"ull")
            return None
        if peek == 0x74:
            de.eat()
            de.parse_ident(b"rue")
            return True
        if peek == 0x66:
            de.eat()
            de.parse_ident(b"alse")
            return False
        if peek == 0x2D:
            de.eat()
            return de.parse_number(False)
        if 0x30 <= peek <= 0x39:
            return de.parse_number(True)
        if peek == 0x22:
            de.eat()
            return de.parse_str()
        if peek == 0x5B:

            def visit_seq() -> list[Any]:
                seq = SeqAccess(de, chain)
                out: list[Any] = []
                while True:
                    present, value = seq.next(self)
                    if not present:
                        return out
                    out.append(value)

            return de.container(0x5B, visit_seq)
        if peek == 0x7B:

            def visit_map() -> dict[str, Any]:
                access = MapAccess(de, chain)
                out: dict[str, Any] = {}
                while True:
                    key = access.next_key()
                    if key is None:
                        return out
                    out[key] = access.next_value(self, key)

            return de.container(0x7B, visit_map)
        raise de.peek_error("expected value")

    def from_content(self, content: Any) -> Any:
        return content


@dataclass
class Field:
    """One struct field: its JSON key, type, and default (a factory) when it has one."""

    key: str
    ty: Type
    default: Callable[[], Any] | None = None


@dataclass
class Struct(Type):
    """A ``#[derive(Deserialize)]`` struct: unknown keys ignored, duplicates and missing keys refused."""

    name: str
    fields: list[Field]
    by_key: dict[str, Field] = field(init=False)

    def __post_init__(self) -> None:
        self.by_key = {f.key: f for f in self.fields}

    @property
    def expecting(self) -> str:  # type: ignore[override]
        return f"struct {self.name}"

    def _missing(self, f: Field) -> Any:
        if f.default is not None:
            return f.default()
        if f.ty.optional_when_missing:
            return None
        raise SerdeError(f"missing field `{f.key}`")

    def _deserialize(self, de: Reader, chain: Chain) -> dict[str, Any]:
        peek = de.parse_whitespace()
        if peek is None:
            raise de.peek_error("EOF while parsing a value", EOF)
        if peek == 0x7B:
            result: dict[str, Any] = de.container(0x7B, lambda: self._visit_map(de, chain))
            return result
        if peek == 0x5B:
            return cast("dict[str, Any]", de.container(0x5B, lambda: self._visit_seq(de, chain)))
        raise de.peek_invalid_type(self.expecting)

    def _visit_map(self, de: Reader, chain: Chain) -> dict[str, Any]:
        access = MapAccess(de, chain)
        values: dict[str, Any] = {}
        while True:
            key = access.next_key()
            if key is None:
                break
            f = self.by_key.get(key)
            if f is None:
                access.skip_value(key)
                continue
            if f.key in values:
                raise SerdeError(f"duplicate field `{f.key}`")
            values[f.key] = access.next_value(f.ty, key)
        for f in self.fields:
            if f.key not in values:
                values[f.key] = self._missing(f)
        return {f.key: values[f.key] for f in self.fields}

    def _visit_seq(self, de: Reader, chain: Chain) -> dict[str, Any]:
        seq = SeqAccess(de, chain)
        values: dict[str, Any] = {}
        for i, f in enumerate(self.fields):
            present, value = seq.next(f.ty)
            if present:
                values[f.key] = value
            elif f.default is not None:
                values[f.key] = f.default()
            else:
                n = len(self.fields)
                raise SerdeError(f"invalid length {i}, expected struct {self.name} with {n} element{'s' * (n != 1)}")
        return values

    def from_content(self, content: Any) -> dict[str, Any]:
        if isinstance(content, dict):
            values: dict[str, Any] = {}
            for key, value in content.items():
                f = self.by_key.get(key)
                if f is not None:
                    values[f.key] = f.ty.from_content(value)
            for f in self.fields:
                if f.key not in values:
                    try:
                        values[f.key] = self._missing(f)
                    except SerdeError:
                        raise NoMatch from None
            return values
        if isinstance(content, list):
            values = {}
            for i, f in enumerate(self.fields):
                if i < len(content):
                    values[f.key] = f.ty.from_content(content[i])
                elif f.default is not None:
                    values[f.key] = f.default()
                else:
                    raise NoMatch
            if len(content) > len(self.fields):
                raise NoMatch
            return values
        raise NoMatch


class UnitEnum(Type):
    """An enum of unit variants, each with optional aliases (``ResponseFormatType``)."""

    def __init__(self, name: str, variants: dict[str, tuple[str, ...]]) -> None:
        self.name = name
        self.variants = list(variants)
        self.lookup = {alias: v for v, aliases in variants.items() for alias in (v, *aliases)}

    def _identifier(self, de: Reader) -> str:
        def accept(peek: int) -> str:
            if peek != 0x22:
                raise de.peek_invalid_type("variant identifier")
            de.eat()
            text = de.parse_str()
            variant = self.lookup.get(text)
            if variant is None:
                raise SerdeError(f"unknown variant `{text}`, expected {_one_of(self.variants)}")
            return variant

        result: str = _scalar(de, "variant identifier", accept)
        return result

    @staticmethod
    def _unit(de: Reader) -> None:
        # A unit variant's value in the `{"Variant": ...}` form: deserialize_unit.
        def accept(peek: int) -> None:
            if peek != 0x6E:
                raise de.peek_invalid_type("unit")
            de.eat()
            de.parse_ident(b"ull")

        _scalar(de, "unit", accept)

    def _deserialize(self, de: Reader, chain: Chain) -> str:
        peek = de.parse_whitespace()
        if peek == 0x22:
            return self._identifier(de)
        if peek == 0x7B:
            de.check_recursion()
            de.eat()
            try:
                start = de.index
                variant = self._identifier(de)
                written = de.data[start : de.index]
                de.parse_object_colon()
                try:
                    self._unit(de)
                except SerdeError as exc:
                    label = written.strip()[1:-1].decode("utf-8", "replace")
                    raise _trigger(exc, (*chain, ("enum", label))) from None
            finally:
                de.remaining_depth += 1
            nxt = de.parse_whitespace()
            if nxt == 0x7D:
                de.eat()
                return variant
            if nxt is not None:
                raise de.error("expected value")
            raise de.error("EOF while parsing an object", EOF)
        if peek is not None:
            raise de.peek_error("expected value")
        raise de.peek_error("EOF while parsing a value", EOF)

    def from_content(self, content: Any) -> str:
        if isinstance(content, str) and content in self.lookup:
            return self.lookup[content]
        if isinstance(content, dict) and len(content) == 1:
            ((key, value),) = content.items()
            if key in self.lookup and value is None:
                return self.lookup[key]
        raise NoMatch


class Untagged(Type):
    """``#[serde(untagged)]``: buffer the value as content, then try each variant in order."""

    def __init__(self, name: str, variants: Sequence[Callable[[Any], Any]]) -> None:
        self.name = name
        self.variants = list(variants)

    def _deserialize(self, de: Reader, chain: Chain) -> Any:
        content = Any_().deserialize(de, chain)
        return self.from_content_or_error(content)

    def from_content_or_error(self, content: Any) -> Any:
        """The first variant that accepts `content`, or serde's untagged error."""
        for variant in self.variants:
            try:
                return variant(content)
            except NoMatch:
                continue
        raise SerdeError(f"data did not match any variant of untagged enum {self.name}")

    def from_content(self, content: Any) -> Any:
        try:
            return self.from_content_or_error(content)
        except SerdeError:
            raise NoMatch from None


def deserialize(ty: Type, body: bytes) -> Any:
    """Deserialize ``body`` as axum's ``Json<T>`` does (trailing bytes are never looked at).

    Raises :class:`SerdeError`; its :meth:`SerdeError.text` is what axum prints.
    """
    return ty.deserialize(Reader(body), ())

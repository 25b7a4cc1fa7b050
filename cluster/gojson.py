"""Decode JSON the way Go's encoding/json does, with Go's error texts.

Consul users see these texts (`Body decoding failed: json: unknown field "Foo"`), so the API
reproduces them: case-insensitive keys, unknown fields refused (strict mode), null as zero value,
type errors naming the Go struct field.

Valid input is parsed by Python's json module. When it refuses the input, a port of Go's syntax
scanner (encoding/json/scanner.go) runs over the raw bytes and supplies Go's exact message.
Every failure is a GoJSONError; nothing else escapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# field name -> "string" | "[]string" | "map[string]string" | "int" | "bool" | "any" |
# a nested Schema (a struct) | ListOf(a Schema, Go type name) (a slice of structs)
Schema = dict[str, Any]
_INT64 = 1 << 63


class ListOf:
    """A slice of structs in a Schema; `go_type` names it in type errors."""

    def __init__(self, item: Schema, go_type: str) -> None:
        self.item = item
        self.go_type = go_type


class GoJSONError(ValueError):
    pass


# ---- Go's quoting of runes and strings (strconv.Quote) ----

_GO_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
             "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """Go's %q / strconv.Quote: what Consul puts in messages like `Peering not found for "x"`."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_SHORT:
            out.append(_GO_SHORT[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate: not a valid rune
            out.append("\\ufffd")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _quote_char(c: int) -> str:
    """Go's quoteChar: one input byte, shown as the rune of that value."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    return "'" + go_quote(chr(c))[1:-1] + "'"


# ---- Go's scanner, for the error texts ----

_CONT, _CLOSE, _END, _ERROR = range(4)
_OBJ_KEY, _OBJ_VALUE, _ARR_VALUE = range(3)
_MAX_DEPTH = 10000  # encoding/json maxNestingDepth
_SPACE = frozenset(b" \t\n\r")
_DIGIT = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class _Scanner:
    """encoding/json's scanner state machine, one byte at a time (states named as in Go)."""

    def __init__(self) -> None:
        self.step: Callable[[int], int] = self.begin_value
        self.stack: list[int] = []
        self.end_top = False
        self.err: str | None = None

    def error(self, c: int, context: str) -> int:
        self.step = lambda c: _ERROR
        self.err = f"invalid character {_quote_char(c)} {context}"
        return _ERROR

    def eof(self) -> str | None:
        if self.err is not None:
            return self.err
        if self.end_top:
            return None
        self.step(0x20)
        if self.end_top:
            return None
        if self.err is None:
            self.err = "unexpected end of JSON input"
        return self.err

    def push(self, c: int, state: int) -> int:
        self.stack.append(state)
        if len(self.stack) <= _MAX_DEPTH:
            return _CONT
        return self.error(c, "exceeded max depth")

    def pop(self) -> None:
        self.stack.pop()
        if not self.stack:
            self.step = self.end_top_state
            self.end_top = True
        else:
            self.step = self.end_value

    def begin_value_or_empty(self, c: int) -> int:
        if c in _SPACE:
            return _CONT
        if c == 0x5D:  # ]
            return self.end_value(c)
        return self.begin_value(c)

    def begin_value(self, c: int) -> int:
        if c in _SPACE:
            return _CONT
        if c == 0x7B:  # {
            self.step = self.begin_string_or_empty
            return self.push(c, _OBJ_KEY)
        if c == 0x5B:  # [
            self.step = self.begin_value_or_empty
            return self.push(c, _ARR_VALUE)
        if c == 0x22:  # "
            self.step = self.in_string
        elif c == 0x2D:  # -
            self.step = self.neg
        elif c == 0x30:  # 0
            self.step = self.zero
        elif c in b"tfn":
            word = {0x74: b"true", 0x66: b"false", 0x6E: b"null"}[c]
            self.step = self.literal(word, 1)
        elif c in _DIGIT:
            self.step = self.digits
        else:
            return self.error(c, "looking for beginning of value")
        return _CONT

    def begin_string_or_empty(self, c: int) -> int:
        if c in _SPACE:
            return _CONT
        if c == 0x7D:  # }
            self.stack[-1] = _OBJ_VALUE
            return self.end_value(c)
        return self.begin_string(c)

    def begin_string(self, c: int) -> int:
        if c in _SPACE:
            return _CONT
        if c == 0x22:
            self.step = self.in_string
            return _CONT
        return self.error(c, "looking for beginning of object key string")

    def end_value(self, c: int) -> int:
        if not self.stack:
            self.step = self.end_top_state
            self.end_top = True
            return self.end_top_state(c)
        if c in _SPACE:
            self.step = self.end_value
            return _CONT
        state = self.stack[-1]
        if state == _OBJ_KEY:
            if c == 0x3A:  # :
                self.stack[-1] = _OBJ_VALUE
                self.step = self.begin_value
                return _CONT
            return self.error(c, "after object key")
        if state == _OBJ_VALUE:
            if c == 0x2C:  # ,
                self.stack[-1] = _OBJ_KEY
                self.step = self.begin_string
                return _CONT
            if c == 0x7D:
                self.pop()
                return _CLOSE
            return self.error(c, "after object key:value pair")
        if c == 0x2C:
            self.step = self.begin_value
            return _CONT
        if c == 0x5D:
            self.pop()
            return _CLOSE
        return self.error(c, "after array element")

    def end_top_state(self, c: int) -> int:
        if c not in _SPACE:
            self.error(c, "after top-level value")  # reported on the next byte or at EOF
        return _END

    def in_string(self, c: int) -> int:
        if c == 0x22:
            self.step = self.end_value
        elif c == 0x5C:  # backslash
            self.step = self.in_string_esc
        elif c < 0x20:
            return self.error(c, "in string literal")
        return _CONT

    def in_string_esc(self, c: int) -> int:
        if c in b'bfnrt\\/"':
            self.step = self.in_string
            return _CONT
        if c == 0x75:  # u
            self.step = self.esc_u(0)
            return _CONT
        return self.error(c, "in string escape code")

    def esc_u(self, seen: int) -> Callable[[int], int]:
        def step(c: int) -> int:
            if c not in _HEX:
                return self.error(c, "in \\u hexadecimal character escape")
            self.step = self.in_string if seen == 3 else self.esc_u(seen + 1)
            return _CONT

        return step

    def literal(self, word: bytes, pos: int) -> Callable[[int], int]:
        def step(c: int) -> int:
            if c != word[pos]:
                name = word.decode()
                return self.error(c, f"in literal {name} (expecting {_quote_char(word[pos])})")
            self.step = self.end_value if pos == len(word) - 1 else self.literal(word, pos + 1)
            return _CONT

        return step

    def neg(self, c: int) -> int:
        if c == 0x30:
            self.step = self.zero
            return _CONT
        if c in _DIGIT:
            self.step = self.digits
            return _CONT
        return self.error(c, "in numeric literal")

    def digits(self, c: int) -> int:
        if c in _DIGIT:
            return _CONT
        return self.zero(c)

    def zero(self, c: int) -> int:
        if c == 0x2E:  # .
            self.step = self.dot
            return _CONT
        if c in b"eE":
            self.step = self.exp
            return _CONT
        return self.end_value(c)

    def dot(self, c: int) -> int:
        if c in _DIGIT:
            self.step = self.dot_digits
            return _CONT
        return self.error(c, "after decimal point in numeric literal")

    def dot_digits(self, c: int) -> int:
        if c in _DIGIT:
            return _CONT
        if c in b"eE":
            self.step = self.exp
            return _CONT
        return self.end_value(c)

    def exp(self, c: int) -> int:
        if c in b"+-":
            self.step = self.exp_sign
            return _CONT
        return self.exp_sign(c)

    def exp_sign(self, c: int) -> int:
        if c in _DIGIT:
            self.step = self.exp_digits
            return _CONT
        return self.error(c, "in exponent of numeric literal")

    def exp_digits(self, c: int) -> int:
        if c in _DIGIT:
            return _CONT
        return self.end_value(c)


def _check_valid(data: bytes, limit: int) -> str | None:
    """json.Unmarshal's checkValid: the error text for the whole input, or None. Only the
    first `limit` bytes are scanned; None for a longer input means "no error in them"."""
    scan = _Scanner()
    for c in data[:limit]:
        if scan.step(c) == _ERROR:
            return scan.err
    return scan.eof() if len(data) <= limit else scan.err


def _read_value(data: bytes, limit: int) -> str | None:
    """json.Decoder.readValue: the error text for the first value of a stream, or None
    (also when the first `limit` bytes hold neither the value's end nor an error)."""
    scan = _Scanner()
    for c in data[:limit]:
        code = scan.step(c)
        if code == _END:
            return None
        if code == _CLOSE and scan.end_value(0x20) == _END:
            return None
        if code == _ERROR:
            return scan.err
    if len(data) > limit or scan.step(0x20) == _END:
        return None
    return "unexpected EOF" if data.strip(b" \t\n\r") else "EOF"


# ---- parsing valid input ----


class _Constant(ValueError):
    """NaN / Infinity: Python's json accepts them, Go's does not."""


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def _parse_int(text: str) -> int | float:
    # Python refuses int() of more than 4300 digits; Go only needs to know it is a number.
    return int(text) if len(text) <= 4000 else float(text)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_parse_int)
_PARSE_FAILURES = (ValueError, RecursionError)  # JSONDecodeError and _Constant are ValueErrors
_BAD_TEXT = re.compile("[\ud800-\udfff]")


def _text(raw: bytes) -> str:
    # Like Go, each byte of invalid UTF-8 (and, below, each unpaired surrogate escape) becomes
    # U+FFFD inside strings; outside strings it is a syntax error either way.
    return raw.decode("utf-8", "surrogateescape")


def _valid(value: str) -> str:
    return value if value.isascii() else _BAD_TEXT.sub("\ufffd", value)


# The scanner is a Python loop (~0.4 us a byte), so it reads at most this much: an error past
# it gets an approximate text from Python's error instead (no CPU second for a megabyte of junk).
_SCAN_LIMIT = 64 * 1024


def _failure(raw: bytes, doc: str, exc: Exception, scan: Callable[[bytes, int], str | None],
             eof_text: str, type_name: str) -> GoJSONError:
    if isinstance(exc, _Constant):  # only ever seen where a value starts
        if exc.args[0] == "-Infinity":
            return GoJSONError("invalid character 'I' in numeric literal")
        return GoJSONError(f"invalid character '{exc.args[0][0]}' looking for beginning of value")
    if (found := scan(raw, _SCAN_LIMIT)) is not None:
        return GoJSONError(found)
    if isinstance(exc, json.JSONDecodeError) and len(raw) > _SCAN_LIMIT:
        return _approximate(doc, exc, eof_text)
    # Go's scanner accepts what Python refused only when nesting exceeds Python's recursion
    # limit but not Go's (10000). A top-level array is still the wrong type; an object would
    # need the decode we cannot do, so say what stopped us.
    if raw.lstrip(b" \t\n\r")[:1] == b"[":
        return GoJSONError(f"json: cannot unmarshal array into Go value of type {type_name}")
    return GoJSONError("json: nesting too deep")


_CONTEXTS = {
    "Expecting property name enclosed in double quotes": "looking for beginning of object key "
                                                         "string",
    "Expecting ':' delimiter": "after object key",
    "Expecting ',' delimiter": "after object key:value pair",
    "Extra data": "after top-level value",
    "Invalid control character at": "in string literal",
}


def _approximate(doc: str, err: json.JSONDecodeError, eof_text: str) -> GoJSONError:
    """Go's text for the usual cases, from where Python stopped (large inputs only)."""
    rest = doc[err.pos:]
    if not rest.strip(" \t\n\r") or err.msg.startswith("Unterminated string"):
        return GoJSONError(eof_text)
    context = _CONTEXTS.get(err.msg, "looking for beginning of value")
    first_byte = rest[0].encode("utf-8", "surrogateescape")[0]
    return GoJSONError(f"invalid character {_quote_char(first_byte)} {context}")


# ---- conversion to the Go types ----

_FOLD = str.maketrans(
    {**{chr(c): chr(c - 32) for c in range(0x61, 0x7B)},
     "\u0130": "I", "\u0131": "I", "\u017f": "S", "\u212a": "K"}
)


def _fold(name: str) -> str:
    """Go's foldName as far as it can reach an ASCII field name: ASCII upper case, plus the
    four runes whose simple case folding is an ASCII letter."""
    return name.translate(_FOLD)


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _convert(value: Any, schema: Any, path: str, strict: bool) -> Any:
    if value is None or schema == "any":
        return value
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise _type_error(value, path, "struct")
        return _struct(value, schema, path, strict)
    if schema == "string":
        if not isinstance(value, str):
            raise _type_error(value, path, "string")
        return _valid(value)
    if schema == "[]string":
        if not isinstance(value, list):
            raise _type_error(value, path, "[]string")
        out = []
        for item in value:
            if item is not None and not isinstance(item, str):
                raise _type_error(item, path, "string")
            out.append(_valid(item or ""))
        return out
    if schema == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(value, path, "int")
        if isinstance(value, float) or not -_INT64 <= value < _INT64:
            literal = repr(value) if isinstance(value, float) else str(value)
            raise _type_error(value, path, "int", f"number {literal}")
        return value
    if schema == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, path, "bool")
        return value
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            raise _type_error(value, path, schema.go_type)
        return [_convert(item if item is not None else {}, schema.item, path, strict)
                for item in value]
    if schema == "map[string]string":
        if not isinstance(value, dict):
            raise _type_error(value, path, "map[string]string")
        out_map = {}
        for k, item in value.items():
            if item is not None and not isinstance(item, str):
                raise _type_error(item, path, "string")
            out_map[_valid(k)] = _valid(item or "")
        return out_map
    raise AssertionError(f"unknown schema type {schema!r}")


def _type_error(value: Any, path: str, go_type: str, what: str = "") -> GoJSONError:
    what = what or _json_kind(value)
    type_name, _, field = path.partition(".")
    if not field:
        return GoJSONError(f"json: cannot unmarshal {what} into Go value of type {type_name}")
    return GoJSONError(
        f"json: cannot unmarshal {what} into Go struct field {path} of type {go_type}"
    )


def _struct(obj: dict[str, Any], schema: Schema, path: str, strict: bool) -> dict[str, Any]:
    folded = {_fold(name): name for name in schema}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in schema else folded.get(_fold(key))
        if name is None:
            if strict:
                raise GoJSONError(f"json: unknown field {go_quote(_valid(key))}")
            continue
        out[name] = _convert(value, schema[name], f"{path}.{name}", strict)
    return {k: v for k, v in out.items() if v is not None}


def _top(value: Any, schema: Schema, type_name: str, strict: bool) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GoJSONError(
            f"json: cannot unmarshal {_json_kind(value)} into Go value of type {type_name}"
        )
    return _struct(value, schema, type_name.rpartition(".")[2], strict)


def go_decode_strict(
    raw: bytes, schema: Schema, type_name: str, strict: bool = True
) -> dict[str, Any]:
    """json.NewDecoder(body) with DisallowUnknownFields (strict=False: without it, as
    Consul's catalog endpoints decode): one value, trailing data ignored."""
    doc = _text(raw)
    start = len(doc) - len(doc.lstrip(" \t\n\r"))
    if start == len(doc):
        raise GoJSONError("EOF")
    try:
        value, _ = _DECODER.raw_decode(doc, start)
    except _PARSE_FAILURES as e:
        raise _failure(raw, doc, e, _read_value, "unexpected EOF", type_name) from None
    if _json_kind(value) == "number" and (found := _read_value(raw, _SCAN_LIMIT)) is not None:
        raise GoJSONError(found)  # Python stops a top-level `1.x` or `1e` where Go refuses it
    return _top(value, schema, type_name, strict=strict)


def go_unmarshal(raw: bytes, schema: Schema, type_name: str) -> dict[str, Any]:
    """json.Unmarshal: the whole input is one value; unknown fields ignored."""
    doc = _text(raw)
    try:
        value = _DECODER.decode(doc)
    except _PARSE_FAILURES as e:
        raise _failure(raw, doc, e, _check_valid, "unexpected end of JSON input", type_name) \
            from None
    return _top(value, schema, type_name, strict=False)


def go_decode_object(raw: bytes, type_name: str = "map[string]interface {}") -> dict[str, Any]:
    """json.NewDecoder(body).Decode(&map[string]interface{}): the raw object (Consul decodes
    config entries this way, then maps it onto a struct itself)."""
    doc = _text(raw)
    start = len(doc) - len(doc.lstrip(" \t\n\r"))
    if start == len(doc):
        raise GoJSONError("EOF")
    try:
        value, _ = _DECODER.raw_decode(doc, start)
    except _PARSE_FAILURES as e:
        raise _failure(raw, doc, e, _read_value, "unexpected EOF", type_name) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GoJSONError(
            f"json: cannot unmarshal {_json_kind(value)} into Go value of type {type_name}"
        )
    return _clean(value)


def _clean(value: Any) -> Any:
    """Invalid UTF-8 and lone surrogates become U+FFFD everywhere, as Go decodes them."""
    if isinstance(value, str):
        return _valid(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_valid(k): _clean(v) for k, v in value.items()}
    return value

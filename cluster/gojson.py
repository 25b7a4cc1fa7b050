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

from .goscan import check_valid, go_quote, quote_char, read_value

__all__ = ["GoJSONError", "ListOf", "Schema", "go_decode_object", "go_decode_strict",
           "go_quote", "go_unmarshal"]

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
    return GoJSONError(f"invalid character {quote_char(first_byte)} {context}")


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


_FOLDED: dict[int, tuple[Schema, dict[str, str]]] = {}  # id(schema) -> (schema, folded names)


def _folded(schema: Schema) -> dict[str, str]:
    """A schema's field names by folded name, made once per schema (schemas are constants;
    the entry keeps its schema alive, so an id is never reused for another)."""
    hit = _FOLDED.get(id(schema))
    if hit is None or hit[0] is not schema:
        if len(_FOLDED) > 1024:  # schemas made on the fly (tests): keep the cache bounded
            _FOLDED.clear()
        hit = _FOLDED[id(schema)] = (schema, {_fold(name): name for name in schema})
    return hit[1]


def _struct(obj: dict[str, Any], schema: Schema, path: str, strict: bool) -> dict[str, Any]:
    folded = _folded(schema)
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


def _first_value(raw: bytes, type_name: str) -> Any:
    """What json.NewDecoder(body).Decode reads: the first JSON value, trailing data ignored."""
    doc = _text(raw)
    start = len(doc) - len(doc.lstrip(" \t\n\r"))
    if start == len(doc):
        raise GoJSONError("EOF")
    try:
        value, _ = _DECODER.raw_decode(doc, start)
    except _PARSE_FAILURES as e:
        raise _failure(raw, doc, e, read_value, "unexpected EOF", type_name) from None
    return value


def go_decode_strict(
    raw: bytes, schema: Schema, type_name: str, strict: bool = True
) -> dict[str, Any]:
    """json.NewDecoder(body) with DisallowUnknownFields (strict=False: without it, as
    Consul's catalog endpoints decode): one value, trailing data ignored."""
    value = _first_value(raw, type_name)
    if _json_kind(value) == "number" and (found := read_value(raw, _SCAN_LIMIT)) is not None:
        raise GoJSONError(found)  # Python stops a top-level `1.x` or `1e` where Go refuses it
    return _top(value, schema, type_name, strict=strict)


def go_unmarshal(raw: bytes, schema: Schema, type_name: str) -> dict[str, Any]:
    """json.Unmarshal: the whole input is one value; unknown fields ignored."""
    doc = _text(raw)
    try:
        value = _DECODER.decode(doc)
    except _PARSE_FAILURES as e:
        raise _failure(raw, doc, e, check_valid, "unexpected end of JSON input", type_name) \
            from None
    return _top(value, schema, type_name, strict=False)


def go_decode_object(raw: bytes, type_name: str = "map[string]interface {}") -> dict[str, Any]:
    """json.NewDecoder(body).Decode(&map[string]interface{}): the raw object (Consul decodes
    config entries this way, then maps it onto a struct itself)."""
    value = _first_value(raw, type_name)
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

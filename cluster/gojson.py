"""Decode JSON the way Go's encoding/json does, with Go's error texts.

Consul users see these texts (`Body decoding failed: json: unknown field "Foo"`), so the API
reproduces them: case-insensitive keys, unknown fields refused (strict mode), null as zero value,
type errors naming the Go struct field.
"""

from __future__ import annotations

import json
from typing import Any

Schema = dict[str, Any]  # field name -> "string" | "[]string" | "map[string]string" | "any" | Schema

_GO_TYPES = {"string": "string", "[]string": "[]string", "map[string]string": "map[string]string"}


class GoJSONError(ValueError):
    pass


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


def _syntax_error(doc: str, err: json.JSONDecodeError, eof_text: str) -> GoJSONError:
    rest = doc[err.pos:]
    if not rest.strip() or err.msg.startswith("Unterminated string"):
        return GoJSONError(eof_text)
    c = rest[0]
    shown = json.dumps(c)[1:-1] if c in "\n\r\t" else c.replace("'", "\\'")
    context = {
        "Expecting value": "looking for beginning of value",
        "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
        "Expecting ':' delimiter": "after object key",
        "Expecting ',' delimiter": "after object key:value pair",
        "Invalid control character at": "in string literal",
    }.get(err.msg, "looking for beginning of value")
    return GoJSONError(f"invalid character '{shown}' {context}")


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
        return value
    if schema == "[]string":
        if not isinstance(value, list):
            raise _type_error(value, path, "[]string")
        out = []
        for item in value:
            if item is not None and not isinstance(item, str):
                raise _type_error(item, path, "string")
            out.append(item or "")
        return out
    if schema == "map[string]string":
        if not isinstance(value, dict):
            raise _type_error(value, path, "map[string]string")
        out_map = {}
        for k, item in value.items():
            if item is not None and not isinstance(item, str):
                raise _type_error(item, path, "string")
            out_map[k] = item or ""
        return out_map
    raise AssertionError(f"unknown schema type {schema!r}")


def _type_error(value: Any, path: str, go_type: str) -> GoJSONError:
    type_name, _, field = path.partition(".")
    if not field:
        return GoJSONError(f"json: cannot unmarshal {_json_kind(value)} into Go value of type {type_name}")
    return GoJSONError(
        f"json: cannot unmarshal {_json_kind(value)} into Go struct field {path} of type {go_type}"
    )


def _struct(obj: dict[str, Any], schema: Schema, path: str, strict: bool) -> dict[str, Any]:
    folded = {name.lower(): name for name in schema}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in schema else folded.get(key.lower())
        if name is None:
            if strict:
                raise GoJSONError(f"json: unknown field {json.dumps(key)}")
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


def go_decode_strict(raw: bytes, schema: Schema, type_name: str) -> dict[str, Any]:
    """json.NewDecoder(body) with DisallowUnknownFields: one value, trailing data ignored."""
    doc = raw.decode("utf-8", "replace")
    if not doc.strip():
        raise GoJSONError("EOF")
    start = len(doc) - len(doc.lstrip())
    try:
        value, _ = json.JSONDecoder().raw_decode(doc, start)
    except json.JSONDecodeError as e:
        raise _syntax_error(doc, e, "unexpected EOF") from None
    except RecursionError:
        raise GoJSONError("exceeded max depth") from None
    return _top(value, schema, type_name, strict=True)


def go_unmarshal(raw: bytes, schema: Schema, type_name: str) -> dict[str, Any]:
    """json.Unmarshal: the whole input is one value; unknown fields ignored."""
    doc = raw.decode("utf-8", "replace")
    if not doc.strip():
        raise GoJSONError("unexpected end of JSON input")
    try:
        value = json.loads(doc)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            c = doc[e.pos]
            raise GoJSONError(f"invalid character '{c}' after top-level value") from None
        raise _syntax_error(doc, e, "unexpected end of JSON input") from None
    except RecursionError:
        raise GoJSONError("exceeded max depth") from None
    return _top(value, schema, type_name, strict=False)

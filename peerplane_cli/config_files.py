"""Configuration files (JSON, or HCL as Consul writes it) read into option values: every key
known (peerplane_cli/options.py), every value of its option's type, or ConfigError naming the
file, the key and the reason."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from .options import FILE_BLOCKS, FILE_KEYS, KIND_NAMES, OPTIONS, ConfigError


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals ('"dc1"'); JSON never has them."""
    from hcl2.utils import process_escape_sequences

    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return process_escape_sequences(value[1:-1])
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _hcl_blocks(value: Any) -> Any:
    """HCL blocks come as [{..., "__is_block__": True}]; a map attribute as a dict."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        merged: dict[str, Any] = {}
        for block in value:
            merged.update({k: _hcl_blocks(v) for k, v in block.items() if k != "__is_block__"})
        return merged
    if isinstance(value, dict):
        return {k: _hcl_blocks(v) for k, v in value.items() if k != "__is_block__"}
    return _unquote(value)


def parse_text(text: str, path: str) -> dict[str, Any]:
    """A file's settings as a nested dict (JSON when it ends in .json, else HCL)."""
    if path.endswith(".json"):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"config file {path}: invalid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"config file {path}: invalid JSON: expected an object")
        return doc
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(with_comments=False, explicit_blocks=True,
                                   preserve_heredocs=False)
    try:
        doc = hcl2.api.serialize(hcl2.parses(text, discard_comments=True),
                                 serialization_options=options)
    except Exception as e:  # noqa: BLE001 - lark raises many types; all are parse errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file {path}: invalid HCL: {first}") from None
    return _hcl_blocks(doc)


def _flatten(doc: Mapping[str, Any], path: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = prefix + str(key)
        if dotted in FILE_KEYS:
            out[dotted] = value
        elif dotted in FILE_BLOCKS:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: {dotted}: expected a block")
            out.update(_flatten(value, path, dotted + "."))
        else:
            raise ConfigError(f'config file {path}: unknown key "{dotted}"')
    return out


def _coerce(value: Any, kind: str) -> Any:
    """A file (JSON/HCL) value of the given kind, or ValueError with the reason."""
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        raise ValueError(f"expected {KIND_NAMES[kind]}, got {json.dumps(value)}")
    return float(value) if kind == "float" else value


def read_file(path: str) -> dict[str, Any]:
    """dest -> value for one file; ConfigError naming the file, the key and the reason."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from None
    out: dict[str, Any] = {}
    flat = _flatten(parse_text(text, path), path)
    for o in OPTIONS:
        for key in o.keys:  # the first key the file has wins (tls.https over tls.defaults)
            if key not in flat:
                continue
            _, kind, convert = (o.from_file if o.from_file and o.from_file[0] == key
                                else (key, o.kind, lambda v: v))
            try:
                value = convert(_coerce(flat[key], kind))
            except ValueError as e:
                raise ConfigError(f"config file {path}: {key}: {e}") from None
            if o.choices and value not in o.choices:
                raise ConfigError(f"config file {path}: {key}: must be one of "
                                  f"{', '.join(o.choices)}, got {json.dumps(value)}")
            out[o.dest] = value
            break
    return out


def config_paths(files: list[str], dirs: list[str]) -> list[str]:
    paths = list(files)
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            raise ConfigError(f"config dir {d}: {e}") from None
        paths += [os.path.join(d, n) for n in names if n.endswith((".json", ".hcl"))]
    return paths

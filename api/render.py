"""JSON responses as Consul writes them (compact, or 4-space indented with ?pretty)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

# Go's encoding/json writes UTF-8 as is but escapes <, >, & and U+2028/2029. These bytes only
# ever occur inside JSON strings, so replacing them in the encoded document is safe.
_GO_ESCAPES = (
    (b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"),
)


def go_json(body: Any, pretty: bool = False) -> bytes:
    if pretty:
        data = (json.dumps(body, indent=4, ensure_ascii=False) + "\n").encode()
    else:
        data = orjson.dumps(body)
    for raw, escaped in _GO_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def json_response(
    request: web.Request, body: Any, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=go_json(body, "pretty" in request.query),
        content_type="application/json",
        headers=headers,
    )


class RenderedList:
    """The JSON array of a list endpoint, built from per-record JSON kept between requests.

    Records are never mutated in place (cluster/fsm.py), so a record object that is still in
    the list renders to the same bytes: only new or replaced records are encoded again, and a
    list of 10,000 is a join of cached parts - or, when the same records are listed again and
    none has live data, the previous body itself. Records with live extra data (a peering's
    stream status, which changes in place) are always encoded afresh. One cache per list key
    (e.g. a partition); parts of records no longer listed are dropped now and then."""

    def __init__(self) -> None:
        self._parts: dict[Any, dict[str, tuple[dict[str, Any], bytes]]] = {}
        self._last: dict[Any, tuple[list[dict[str, Any]], bytes]] = {}

    def render(
        self, key: Any, recs: list[dict[str, Any]], live: Mapping[str, Any],
        encode: Callable[[dict[str, Any], Any], Any],
    ) -> bytes:
        """`live` maps a record's ID to its live extra data; `encode(rec, extra)` gives the
        JSON value of one record (extra None when it has none)."""
        last = self._last.get(key)
        if (not live and last is not None and len(last[0]) == len(recs)
                and all(a is b for a, b in zip(last[0], recs, strict=True))):
            return last[1]
        parts = self._parts.setdefault(key, {})
        out = []
        for rec in recs:
            rid = rec["ID"]
            extra = live.get(rid)
            hit = parts.get(rid)
            if extra is None and hit is not None and hit[0] is rec:
                out.append(hit[1])
                continue
            part = go_json(encode(rec, extra))
            if extra is None:
                parts[rid] = (rec, part)
            out.append(part)
        if len(parts) > 2 * len(recs) + 100:  # deleted records: keep only listed ones
            listed = {rec["ID"] for rec in recs}
            self._parts[key] = {k: v for k, v in parts.items() if k in listed}
        body = b"[" + b",".join(out) + b"]"
        self._last[key] = (list(recs), body)
        return body

"""JSON responses as Consul writes them (compact, or 4-space indented with ?pretty)."""

from __future__ import annotations

import json
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

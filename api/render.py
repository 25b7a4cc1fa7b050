"""JSON responses as Consul writes them (compact, or 4-space indented with ?pretty)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

_GO_ESCAPES = str.maketrans({
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029",
})


def json_response(
    request: web.Request, body: Any, headers: dict[str, str] | None = None
) -> web.Response:
    # Go's encoding/json: UTF-8 as is, but <, >, & and U+2028/2029 escaped (these only ever
    # occur inside JSON strings, so translating the whole text is safe).
    if "pretty" in request.query:
        text = json.dumps(body, indent=4, ensure_ascii=False) + "\n"
    else:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return web.Response(
        text=text.translate(_GO_ESCAPES), content_type="application/json", headers=headers
    )

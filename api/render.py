"""JSON responses as Consul writes them (compact, or 4-space indented with ?pretty)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def json_response(
    request: web.Request, body: Any, headers: dict[str, str] | None = None
) -> web.Response:
    if "pretty" in request.query:
        text = json.dumps(body, indent=4) + "\n"
    else:
        text = json.dumps(body, separators=(",", ":"))
    return web.Response(text=text, content_type="application/json", headers=headers)

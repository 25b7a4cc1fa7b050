"""`GET /v1/openapi.json`: the OpenAPI description of the API this server serves.

`api/openapi.yaml` describes every endpoint in Consul's shapes, including ones a build may not
serve yet; the document served here keeps only the operations this server's router answers, so
it is true of the running binary (tests/test_openapi.py checks that every route is described).
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .authz import OPEN
from .pipeline import LOCAL, Route
from .render import json_response

SPEC_FILE = Path(__file__).with_name("openapi.yaml")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_PARAM = re.compile(r"\{[^}]*\}")
_DOC = web.AppKey("openapi_document", list)  # [document] once built


@functools.cache
def load_spec() -> dict[str, Any]:
    with SPEC_FILE.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def route_key(path: str) -> str:
    """A path with its parameter names dropped: `/v1/peering/{name}` -> `/v1/peering/{}`."""
    return _PARAM.sub("{}", path)


def served_operations(app: web.Application) -> set[tuple[str, str]]:
    """(path key, lower-case method) of every route the app answers, HEAD/OPTIONS/`*` aside."""
    out = set()
    for route in app.router.routes():
        method = route.method.lower()
        if method not in _METHODS or method in ("head", "options"):
            continue
        canonical = route.resource.canonical if route.resource is not None else ""
        out.add((route_key(canonical), method))
    return out


def served_spec(app: web.Application) -> dict[str, Any]:
    served = served_operations(app)
    doc = copy.deepcopy(load_spec())
    paths = {}
    for path, item in doc.get("paths", {}).items():
        kept = {k: v for k, v in item.items()
                if k not in _METHODS or (route_key(path), k) in served}
        if any(k in _METHODS for k in kept):
            paths[path] = kept
    doc["paths"] = paths
    return doc


async def openapi_json(request: web.Request, _: None) -> web.StreamResponse:
    cache = request.app[_DOC]
    if not cache:  # built on first use: the router is complete by then
        cache.append(served_spec(request.app))
    return json_response(request, cache[0])


ROUTES = [Route("GET", "/v1/openapi.json", LOCAL, OPEN, openapi_json, without_journal=True)]


def install(app: web.Application) -> None:
    app[_DOC] = []

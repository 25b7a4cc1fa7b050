"""The aiohttp application: the route table (api/pipeline.py) plus the cross-cutting middlewares
(request log and metrics, Consul's headers and error texts, body and blocking-query limits)."""

from __future__ import annotations

import logging

from aiohttp import web

from . import (
    acl,
    acl_tokens,
    agent,
    catalog,
    config_entries,
    limits,
    observe,
    openapi,
    peering,
    pipeline,
    status,
    ui,
)
from .context import SERVER, ServerContext
from .errors import APIError, disk_unavailable
from .forward import FORWARDED, NOT_LEADER

log = logging.getLogger("peerplane.api")

SERVED_BY = "X-Peerplane-Served-By"

_METHOD_ORDER = ("GET", "HEAD", "PUT", "POST", "DELETE")


def _allow(methods: set[str]) -> str:
    ordered = [m for m in _METHOD_ORDER if m in methods and m != "HEAD"]
    return ",".join(["OPTIONS", *ordered])


@web.middleware
async def consul_errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure becomes a plain-text answer with Consul's text; no traceback leaves."""
    try:
        return await handler(request)
    except APIError as e:
        return e.response()
    except web.HTTPMethodNotAllowed as e:
        allow = _allow(set(e.allowed_methods))
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": allow})
        return web.Response(
            status=405, text=f"method {request.method} not allowed", headers={"Allow": allow}
        )
    except web.HTTPNotFound:
        return web.Response(
            status=404, text="Invalid URL path: not a recognized HTTP API endpoint\n"
        )
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVER].max_body
        return web.Response(status=413, text=f"Request body too large (limit: {limit} bytes)")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.Response(status=500, text="Internal error; see the server log")


@web.middleware
async def consul_headers(request: web.Request, handler) -> web.StreamResponse:
    response = await handler(request)
    ctx = request.app[SERVER]
    response.headers["X-Consul-Default-ACL-Policy"] = ctx.acl_default_policy
    # Which server produced the answer (kept from the leader on forwarded requests).
    response.headers.setdefault(SERVED_BY, ctx.node_name)
    return response


@web.middleware
async def journal_guard(request: web.Request, handler) -> web.StreamResponse:
    """A server whose journal cannot be written (disk full, I/O errors) takes no part in Raft,
    so its state falls behind and it cannot be leader: it answers 503 with the reason. A
    request forwarded to it is marked "not leader" so the sender keeps looking. Routes marked
    `without_journal` in the route table (api/pipeline.py) are still served, and so is what
    has no row (the dashboard's files, 404/405 answers): none of it reads replicated state."""
    why = request.app[SERVER].node.disk_failure()
    route = pipeline.route_of(request)
    if why is None or route is None or route.without_journal:
        return await handler(request)
    err = disk_unavailable(why)
    if request.headers.get(FORWARDED):
        err.headers[NOT_LEADER] = "1"
    raise err


def make_app(ctx: ServerContext) -> web.Application:
    app = web.Application(
        middlewares=[observe.observe, consul_headers, consul_errors, journal_guard,
                     limits.read_body_in_time, limits.cap_blocking_queries, pipeline.pipeline],
        client_max_size=ctx.max_body,
    )
    app[SERVER] = ctx
    limits.install(app, ctx.limits)
    # Every API endpoint is one row of a module's ROUTES (see api/pipeline.py).
    for module in (peering, acl, acl_tokens, catalog, config_entries, status, agent, observe,
                   openapi):
        pipeline.add_routes(app, module.ROUTES)
    agent.install(app)
    openapi.install(app)
    ui.add_routes(app)
    return app

"""The aiohttp application: the route table (api/pipeline.py) plus one middleware for what every
request passes through (request log and metrics, Consul's headers and error texts, the journal
guard, body and blocking-query limits), in a fixed order (`front`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

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
from .observe import Observed

log = logging.getLogger("peerplane.api")

SERVED_BY = "X-Peerplane-Served-By"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_METHOD_ORDER = ("GET", "HEAD", "PUT", "POST", "DELETE")


def _allow(methods: set[str]) -> str:
    ordered = [m for m in _METHOD_ORDER if m in methods and m != "HEAD"]
    return ",".join(["OPTIONS", *ordered])


@web.middleware
async def front(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware. Every request, in this order (outermost first):

    1. observe (api/observe.py): request ID, then its final status, metrics and log line;
    2. Consul's headers on whatever answer comes back (`consul_headers`);
    3. Consul's error texts for whatever fails inside (`consul_error`);
    4. the journal guard (`journal_guard`);
    5. the request body, read within the read timeout (api/limits.py);
    6. the cap on blocking queries (api/limits.py);
    7. the pipeline (api/pipeline.py), which runs the route's row.

    Plain calls in one coroutine instead of seven middlewares: the same effects, less cost
    per request."""
    ctx = request.app[SERVER]
    observed = Observed(request, ctx.metrics)
    try:
        try:
            response = await _guarded(request, handler, ctx)
        except Exception as e:  # noqa: BLE001 - every failure gets Consul's text
            response = consul_error(request, e, ctx)
        consul_headers(response, ctx)
        return observed.answered(response)
    except web.HTTPException as e:
        observed.raised(e)
        raise
    except asyncio.CancelledError:
        observed.cancelled()
        raise
    finally:
        observed.finish()


async def _guarded(request: web.Request, handler: Handler,
                   ctx: ServerContext) -> web.StreamResponse:
    journal_guard(request, ctx)
    refused = await limits.read_body_in_time(request)
    if refused is not None:
        return refused
    if limits.is_blocking(request):
        return await limits.capped(request, pipeline.pipeline(request, handler))
    return await pipeline.pipeline(request, handler)


def consul_error(request: web.Request, e: Exception, ctx: ServerContext) -> web.StreamResponse:
    """Every failure becomes a plain-text answer with Consul's text; no traceback leaves.
    Other aiohttp HTTP exceptions (redirects) are raised on."""
    if isinstance(e, APIError):
        return e.response()
    if isinstance(e, web.HTTPMethodNotAllowed):
        allow = _allow(set(e.allowed_methods))
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": allow})
        return web.Response(
            status=405, text=f"method {request.method} not allowed", headers={"Allow": allow}
        )
    if isinstance(e, web.HTTPNotFound):
        return web.Response(
            status=404, text="Invalid URL path: not a recognized HTTP API endpoint\n"
        )
    if isinstance(e, web.HTTPRequestEntityTooLarge):
        return web.Response(status=413,
                            text=f"Request body too large (limit: {ctx.max_body} bytes)")
    if isinstance(e, web.HTTPException):
        raise e
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=e)
    return web.Response(status=500, text="Internal error; see the server log")


def consul_headers(response: web.StreamResponse, ctx: ServerContext) -> None:
    response.headers["X-Consul-Default-ACL-Policy"] = ctx.acl_default_policy
    # Which server produced the answer (kept from the leader on forwarded requests).
    response.headers.setdefault(SERVED_BY, ctx.node_name)


def journal_guard(request: web.Request, ctx: ServerContext) -> None:
    """A server whose journal cannot be written (disk full, I/O errors) takes no part in Raft,
    so its state falls behind and it cannot be leader: it answers 503 with the reason. A
    request forwarded to it is marked "not leader" so the sender keeps looking. Routes marked
    `without_journal` in the route table (api/pipeline.py) are still served, and so is what
    has no row (the dashboard's files, 404/405 answers): none of it reads replicated state."""
    why = ctx.node.disk_failure()
    if why is None:
        return
    route = pipeline.route_of(request)
    if route is None or route.without_journal:
        return
    err = disk_unavailable(why)
    if request.headers.get(FORWARDED):
        err.headers[NOT_LEADER] = "1"
    raise err


def make_app(ctx: ServerContext) -> web.Application:
    app = web.Application(
        middlewares=[front],
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

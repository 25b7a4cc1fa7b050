"""The request pipeline: a route table and the one middleware that runs it.

Every API route is one `Route` row (each API module lists its rows in `ROUTES`): its ACL
permission, where it is served, and a handler in two halves - `parse` (read the body and query,
validate: 400s) and `serve` (act and answer). For each request, `pipeline` does, in this order
and nowhere else:

1. **where**: forward the raw request to the leader, before anything is decoded
   (api/forward.py `to_leader`; writes) or send a read where its mode says (api/reads.py
   `decide`; reads); LOCAL routes are answered by the server that got them. A follower that
   forwards stops here: it never parses, checks ACLs or serves the request.
2. **parse**, on the server that serves the request (counted: `peerplane.http.parsed`);
3. **ACL** (api/authz.py `decide`), once, on that server;
4. **blocking query** (`?index=`): wait until the route's index passes it;
5. **serve**.

Adding an endpoint is one row: `Route("GET", "/v1/thing/{id}", READ, PERM, serve=..., parse=...)`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import authz, forward, reads
from .context import SERVER, ServerContext


class Where(enum.Enum):
    WRITE = "write"  # the leader serves it
    READ = "read"  # a read: served where its read mode says (?stale, ?consistent, default)
    LOCAL = "local"  # this server's own view (status, agent, operator): served here


WRITE, READ, LOCAL = Where.WRITE, Where.READ, Where.LOCAL

Serve = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
Parse = Callable[[web.Request], Awaitable[Any]]


async def no_input(request: web.Request) -> None:
    return None


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    where: Where
    access: authz.Access  # a Permission, authz.OPEN or authz.ANY_TOKEN
    serve: Serve
    parse: Parse = no_input
    # Blocking queries (?index=N) wait until this index (of the parsed input) passes N.
    index: Callable[[ServerContext, Any], int] | None = None
    allow_head: bool = False
    # Served even while this server's journal cannot be written (api/app.py journal_guard):
    # what operators need to see why (status, agent, internal views, the API description).
    without_journal: bool = False


_TABLE = web.AppKey("route_table", dict)  # aiohttp route -> Route
_INPUT = "route_input"  # request key: what the route's parse returned


async def _handle(request: web.Request) -> web.StreamResponse:
    """What aiohttp calls for a table route; the pipeline middleware did everything else."""
    route: Route = request.app[_TABLE][request.match_info.route]
    return await route.serve(request, request[_INPUT])


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    table = app.setdefault(_TABLE, {})
    for route in routes:
        added = app.router.add_route(route.method, route.path, _handle)
        table[added] = route
        if route.allow_head:
            table[app.router.add_route("HEAD", route.path, _handle)] = route


def table(app: web.Application) -> dict[web.AbstractRoute, Route]:
    """aiohttp's route objects -> their rows."""
    return app[_TABLE]


def route_of(request: web.Request) -> Route | None:
    return request.app[_TABLE].get(request.match_info.route)


async def _where(request: web.Request, route: Route) -> web.StreamResponse | None:
    """The leader's (or another server's) answer, or None to serve the request here."""
    if route.where is WRITE:
        return await forward.to_leader(request)
    if route.where is READ:
        return await reads.decide(request)
    return None


@web.middleware
async def pipeline(request: web.Request, handler) -> web.StreamResponse:
    route = route_of(request)
    if route is None:
        # Not a table route: 404/405 answers, the dashboard, and anything under /v1 someone
        # added without a row (closed: it needs operator:read).
        if request.match_info.http_exception is None and request.path.startswith("/v1/"):
            await authz.decide(request, authz.UNLISTED)
        return await handler(request)
    answered = await _where(request, route)
    if answered is not None:
        return answered
    ctx = request.app[SERVER]
    if ctx.metrics is not None and route.parse is not no_input:
        ctx.metrics.observe_parsed(request.match_info.route.resource.canonical, request.method)
    request[_INPUT] = await route.parse(request)
    await authz.decide(request, route.access)
    opts = request.get(reads.READ)
    if opts is not None and opts.index is not None and route.index is not None:
        parsed = request[_INPUT]
        await ctx.watch.wait_past(lambda: route.index(ctx, parsed), opts.index, opts.wait)
    return await handler(request)

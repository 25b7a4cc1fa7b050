"""The request pipeline: a route table and the one middleware that runs it.

Every API route is one `Route` row (each API module lists its rows in `ROUTES`): its ACL
permission, where it is served, and a handler in two halves - `parse` (read the body and query,
validate: 400s) and `serve` (act and answer). For each request, `pipeline` does, in this order
and nowhere else:

1. **where**: WRITE and LOCAL routes are served by the server that got them; a read goes where
   its mode says (api/reads.py `decide`); the few LEADER routes, whose serve needs the leader's
   own memory or disk, are forwarded raw to the leader (api/forward.py `to_leader`) before
   anything is decoded, and the forwarding server stops there;
2. **parse**, on the server that serves the request (counted: `peerplane.http.parsed`);
3. **ACL** (api/authz.py `decide`), once, on that server, from its replicated ACL state;
4. **blocking query** (`?index=`): wait until the route's index passes it;
5. **serve**. A write's serve builds typed commands and commits them (api/commit.py): on a
   follower they reach the leader only as Raft commands over the Raft link, and the follower
   answers once the entry is committed and applied by its own FSM. A command carries the ACL
   revision its decision was made on; if the ACL table changed before it applied, the FSM
   refuses it and steps 3 and 5 run again. A follower that refuses a write (4xx) from its own
   state before anything applied first catches up with the leader and decides once more.

Adding an endpoint is one row: `Route("GET", "/v1/thing/{id}", READ, PERM, serve=..., parse=...)`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import authz, commit, forward, reads
from .context import SERVER, ServerContext
from .errors import APIError


class Where(enum.Enum):
    WRITE = "write"  # served here; its commands go through Raft (to the leader from a follower)
    LEADER = "leader"  # forwarded to the leader's HTTP API: serve needs the leader's own state
    READ = "read"  # a read: served where its read mode says (?stale, ?consistent, default)
    LOCAL = "local"  # this server's own view (status, agent, operator): served here


WRITE, LEADER, READ, LOCAL = Where.WRITE, Where.LEADER, Where.READ, Where.LOCAL
ACL_RETRIES = 5  # decisions per write whose commands met a changed ACL table

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
    if route.where is LEADER:
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
    if route.where is WRITE or route.where is LEADER:
        return await _write(request, route, handler)
    await authz.decide(request, route.access)
    opts = request.get(reads.READ)
    if opts is not None and opts.index is not None and route.index is not None:
        parsed = request[_INPUT]
        await ctx.watch.wait_past(lambda: route.index(ctx, parsed), opts.index, opts.wait)
    return await handler(request)


async def _write(request: web.Request, route: Route, handler) -> web.StreamResponse:
    """ACL decision and serve of a write, on whichever server got it (steps 3 and 5)."""
    ctx = request.app[SERVER]
    caught_up = False
    for _ in range(ACL_RETRIES):
        scope = commit.WriteScope()
        reset = commit.SCOPE.set(scope)
        try:
            scope.acl_index = await authz.decide(request, route.access)
            return await handler(request)
        except commit.ACLChanged:
            continue  # nothing was applied: decide again on the newer ACLs
        except APIError as e:
            # Refused from this follower's own state: it may lack a write another server
            # already acknowledged (a token, a policy), so catch up and decide once more.
            if (caught_up or scope.settled or not 400 <= e.status < 500
                    or ctx.node.is_leader()):
                raise
            caught_up = True
            if not await commit.catch_up(ctx):
                raise
        finally:
            commit.SCOPE.reset(reset)
    raise APIError(503, "ACLs kept changing while the request was being authorized; "
                        "retry the request")

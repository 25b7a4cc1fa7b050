"""Status and operator endpoints, answered from this node's own view of Raft."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from cluster.raft import NotApplied, UnknownOutcome

from .context import SERVER, ServerContext
from .errors import APIError, bad_request
from .forward import route_to_leader
from .render import json_response


async def leader(request: web.Request) -> web.StreamResponse:
    return json_response(request, request.app[SERVER].node.leader() or "")


async def peers(request: web.Request) -> web.StreamResponse:
    return json_response(request, request.app[SERVER].node.members())


def _servers(ctx: ServerContext) -> list[dict[str, Any]]:
    leader_addr = ctx.node.leader()
    names = {addr: s["Node"] for addr, s in ctx.fsm.servers_view().items()}
    return [
        {
            "ID": names.get(addr, addr),
            "Node": names.get(addr, ""),
            "Address": addr,
            "Leader": addr == leader_addr,
            "ProtocolVersion": "3",
            "Voter": True,
        }
        for addr in ctx.node.members()
    ]


async def raft_configuration(request: web.Request) -> web.StreamResponse:
    ctx = request.app[SERVER]
    return json_response(request, {"Servers": _servers(ctx), "Index": ctx.node.applied_index()})


async def remove_peer(request: web.Request) -> web.StreamResponse:
    """Consul's DELETE /v1/operator/raft/peer: remove one server (?address= or ?id=) from the
    Raft configuration, on the leader; an unknown server is an error and changes nothing."""
    query = request.query
    if "id" not in query and "address" not in query:
        raise bad_request("Must specify either ?id with the server's ID or ?address with "
                          "IP:port of peer to remove")
    if "id" in query and "address" in query:
        raise bad_request("Must specify only one of ?id or ?address")
    if (forwarded := await route_to_leader(request)) is not None:
        return forwarded
    ctx = request.app[SERVER]
    key, value = ("address", "Address") if "address" in query else ("id", "ID")
    wanted = query[key]
    found = [s for s in _servers(ctx) if s[value] == wanted]
    if not found:
        # Go's %q of an ASCII string is its JSON form.
        raise APIError(500, f"{key} {json.dumps(wanted)} was not found in the Raft configuration")
    if found[0]["Address"] == ctx.raft_addr:
        raise APIError(500, f"{key} {json.dumps(wanted)} is the leader; a leader cannot "
                            "remove itself (restart it or stop it to move leadership first)")
    try:
        await ctx.node.remove_server(found[0]["Address"], ctx.apply_timeout)
    except NotApplied as e:
        raise APIError(500, f"removing {found[0]['Address']} failed: {e}") from None
    except UnknownOutcome:
        raise APIError(503, "Raft configuration change timed out; check "
                            "/v1/operator/raft/configuration") from None
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status/leader", leader)
    app.router.add_get("/v1/status/peers", peers)
    app.router.add_get("/v1/operator/raft/configuration", raft_configuration)
    app.router.add_delete("/v1/operator/raft/peer", remove_peer)

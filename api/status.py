"""Status and operator endpoints, answered from this node's own view of Raft."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from cluster.acl import Permission
from cluster.raft import NotApplied, UnknownOutcome

from .authz import OPEN, OPERATOR_READ
from .context import SERVER, ServerContext
from .errors import APIError, bad_request
from .pipeline import LEADER, LOCAL, Route
from .render import json_response

OPERATOR_WRITE = Permission("operator", "write")


async def leader(request: web.Request, _: None) -> web.StreamResponse:
    return json_response(request, request.app[SERVER].node.leader() or "")


async def peers(request: web.Request, _: None) -> web.StreamResponse:
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


async def raft_configuration(request: web.Request, _: None) -> web.StreamResponse:
    ctx = request.app[SERVER]
    return json_response(request, {"Servers": _servers(ctx), "Index": ctx.node.applied_index()})


async def parse_peer(request: web.Request) -> tuple[str, str]:
    """(query key, value) of DELETE /v1/operator/raft/peer: ?address= or ?id=, not both."""
    query = request.query
    if "id" not in query and "address" not in query:
        raise bad_request("Must specify either ?id with the server's ID or ?address with "
                          "IP:port of peer to remove")
    if "id" in query and "address" in query:
        raise bad_request("Must specify only one of ?id or ?address")
    key = "address" if "address" in query else "id"
    return key, query[key]


async def remove_peer(request: web.Request, parsed: tuple[str, str]) -> web.StreamResponse:
    """Consul's DELETE /v1/operator/raft/peer, on the leader: remove one server from the Raft
    configuration (one change at a time); an unknown server is an error and changes nothing."""
    ctx = request.app[SERVER]
    key, wanted = parsed
    found = [s for s in _servers(ctx) if s["Address" if key == "address" else "ID"] == wanted]
    if not found:
        # Consul's text (Consul answers 500; a client's mistake is a 400 here, as DESIGN.md says).
        # Go's %q of an ASCII string is its JSON form.
        raise APIError(400, f"{key} {json.dumps(wanted)} was not found in the Raft configuration")
    addr = found[0]["Address"]
    if addr == ctx.raft_addr:
        raise APIError(400, f"{key} {json.dumps(wanted)} is the leader: a leader cannot remove "
                            "itself (stop or restart it so that another server leads first)")
    try:
        await ctx.node.remove_server(addr, ctx.apply_timeout)
    except NotApplied as e:
        raise APIError(503, f"removing {addr} failed: {e}") from None  # e.g. a change in flight
    except UnknownOutcome:
        raise APIError(503, "Raft configuration change timed out; check "
                            "/v1/operator/raft/configuration") from None
    return web.Response(status=200)


ROUTES = [
    Route("GET", "/v1/status/leader", LOCAL, OPEN, leader, allow_head=True,
          without_journal=True),
    Route("GET", "/v1/status/peers", LOCAL, OPEN, peers, allow_head=True, without_journal=True),
    Route("GET", "/v1/operator/raft/configuration", LOCAL, OPERATOR_READ, raft_configuration,
          allow_head=True),
    Route("DELETE", "/v1/operator/raft/peer", LEADER, OPERATOR_WRITE, remove_peer,
          parse_peer),  # a Raft configuration change is the leader's
]

"""Status and operator endpoints, answered from this node's own view of Raft."""

from __future__ import annotations

from aiohttp import web

from .context import SERVER
from .render import json_response


async def leader(request: web.Request) -> web.StreamResponse:
    return json_response(request, request.app[SERVER].node.leader() or "")


async def peers(request: web.Request) -> web.StreamResponse:
    return json_response(request, request.app[SERVER].node.members())


async def raft_configuration(request: web.Request) -> web.StreamResponse:
    ctx = request.app[SERVER]
    leader_addr = ctx.node.leader()
    names = {addr: s["Node"] for addr, s in ctx.fsm.servers_view().items()}
    servers = [
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
    return json_response(request, {"Servers": servers, "Index": ctx.node.applied_index()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status/leader", leader)
    app.router.add_get("/v1/status/peers", peers)
    app.router.add_get("/v1/operator/raft/configuration", raft_configuration)

"""Status and operator endpoints, answered from this node's own view of Raft."""

from __future__ import annotations

from aiohttp import web

from .authz import OPEN, OPERATOR_READ
from .context import SERVER
from .pipeline import LOCAL, Route
from .render import json_response


async def leader(request: web.Request, _: None) -> web.StreamResponse:
    return json_response(request, request.app[SERVER].node.leader() or "")


async def peers(request: web.Request, _: None) -> web.StreamResponse:
    return json_response(request, request.app[SERVER].node.members())


async def raft_configuration(request: web.Request, _: None) -> web.StreamResponse:
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


ROUTES = [
    Route("GET", "/v1/status/leader", LOCAL, OPEN, leader, allow_head=True),
    Route("GET", "/v1/status/peers", LOCAL, OPEN, peers, allow_head=True),
    Route("GET", "/v1/operator/raft/configuration", LOCAL, OPERATOR_READ, raft_configuration,
          allow_head=True),
]

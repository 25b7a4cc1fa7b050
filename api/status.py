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


async def agent_self(request: web.Request) -> web.StreamResponse:
    ctx = request.app[SERVER]
    status = ctx.node.status()
    return json_response(
        request,
        {
            "Config": {
                "Datacenter": ctx.datacenter,
                "NodeName": ctx.node_name,
                "Server": True,
                "Version": "peerplane",
            },
            "Member": {"Name": ctx.node_name, "Addr": ctx.raft_addr},
            "Stats": {
                "raft": {
                    "state": {0: "Follower", 1: "Candidate", 2: "Leader"}.get(status["state"], "?"),
                    "term": str(status["raft_term"]),
                    "commit_index": str(status["commit_idx"]),
                    "applied_index": str(status["last_applied"]),
                    "leader": str(status["leader"] or ""),
                }
            },
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/status/leader", leader)
    app.router.add_get("/v1/status/peers", peers)
    app.router.add_get("/v1/operator/raft/configuration", raft_configuration)
    app.router.add_get("/v1/agent/self", agent_self)

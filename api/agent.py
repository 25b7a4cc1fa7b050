"""Agent and operator views of the cluster in Consul's shapes, plus the dashboard's summary.

- `GET /v1/agent/self`: this server's Config, DebugConfig (no secrets), Member and Stats.
- `GET /v1/agent/members`: the servers as Serf-style members (`peerplane members`).
- `GET /v1/operator/autopilot/health`: per-server health (`operator raft list-peers`).
- `GET /v1/internal/ui/cluster`: what the dashboard shows about the servers.

The cluster-wide views ask every server for its own Raft stats (`GET /v1/internal/raft/stats`,
one short request each, concurrently), so whichever server answers reports the state each server
has of itself; a server that does not answer is shown as failed. Those stats (state, term,
indexes, last contact) say no more than the open `/v1/status/*` endpoints, so the internal
endpoint is open like them: the views work the same with ACLs on, whatever the caller's token.
"""

from __future__ import annotations

import asyncio
import time
from importlib import metadata
from typing import Any

import aiohttp
from aiohttp import web

from cluster import gotime, logs

from .authz import AGENT_READ, OPEN, OPERATOR_READ
from .context import SERVER, ServerContext
from .https import server_base
from .pipeline import LOCAL, Route
from .render import json_response

FAN_OUT_TIMEOUT = 1.0
# Consul's autopilot defaults: LastContactThreshold 200 ms, MaxTrailingLogs 250.
LAST_CONTACT_THRESHOLD_MS = 200
MAX_TRAILING_LOGS = 250
_STATE_NAMES = {0: "Follower", 1: "Candidate", 2: "Leader"}
_SERF_STATUS = {"alive": 1, "failed": 4}
_HEALTH_SINCE = web.AppKey("health_since", dict)

try:
    VERSION = metadata.version("peerplane")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0"


def go_duration(ms: float) -> str:
    """Go's time.Duration.String for a duration in milliseconds ("0s", "12.5ms", "1.2s")."""
    if ms <= 0:
        return "0s"
    if ms < 1:
        return f"{ms * 1000:.3f}".rstrip("0").rstrip(".") + "µs"
    if ms < 1000:
        return f"{ms:.3f}".rstrip("0").rstrip(".") + "ms"
    secs = ms / 1000
    hours, rest = divmod(secs, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def raft_stats(ctx: ServerContext) -> dict[str, str]:
    """Consul's `Stats.raft` (all values strings), from this server's own Raft view."""
    st = ctx.node.status()
    state = _STATE_NAMES.get(st["state"], "Unknown")
    contact_ms = 0 if state == "Leader" else ctx.node.last_contact_ms()
    return {
        "state": state,
        "term": str(st["raft_term"]),
        "commit_index": str(st["commit_idx"]),
        "applied_index": str(st["last_applied"]),
        "last_log_index": str(st["commit_idx"]),
        "last_contact": "0" if state == "Leader" else go_duration(contact_ms),
        "last_contact_ms": str(contact_ms),
        "leader": str(st["leader"] or ""),
        "num_peers": str(len(ctx.node.members()) - 1),
        "protocol_version": "3",
        # peerplane's own: why this server's Raft journal cannot be written ("" when it can)
        "journal_failure": ctx.node.disk_failure() or "",
        # peerplane's own: appends refused because this server's log diverged there
        "log_backtracks": str(ctx.node.backtracks()),
    }


def member(ctx: ServerContext, raft_addr: str, entry: dict[str, str], status: str) -> dict:
    host, _, port = raft_addr.rpartition(":")
    return {
        "Name": entry.get("Node", ""),
        "Addr": host,
        "Port": int(port) if port.isdigit() else 0,
        "Tags": {
            "build": VERSION,
            "dc": entry.get("Datacenter", ctx.datacenter),
            "port": port,
            "role": "consul",
            "vsn": "2",
            "raft_vsn": "3",
            "http_addr": entry.get("HTTPAddr", ""),
            "https_addr": entry.get("HTTPSAddr", ""),
            "peering_addr": entry.get("PeeringAddr", ""),
        },
        "Status": _SERF_STATUS[status],
        "ProtocolMin": 1,
        "ProtocolMax": 5,
        "ProtocolCur": 2,
        "DelegateMin": 2,
        "DelegateMax": 5,
        "DelegateCur": 4,
    }


def _self_entry(ctx: ServerContext) -> dict[str, str]:
    return {"Node": ctx.node_name, "HTTPAddr": ctx.http_addr, "HTTPSAddr": ctx.https_addr,
            "PeeringAddr": ctx.peering_addr, "Datacenter": ctx.datacenter}


async def agent_self(request: web.Request, _: None) -> web.StreamResponse:
    ctx = request.app[SERVER]
    return json_response(request, {
        "Config": {
            "Datacenter": ctx.datacenter,
            "PrimaryDatacenter": ctx.datacenter,
            "NodeName": ctx.node_name,
            "NodeID": ctx.node_id,
            "Server": True,
            "Revision": "",
            "Version": VERSION,
            "BuildDate": "",
        },
        "DebugConfig": dict(ctx.config),
        "Coord": None,
        "Member": member(ctx, ctx.raft_addr, _self_entry(ctx), "alive"),
        "Stats": {
            "agent": {"uptime": go_duration((time.time() - ctx.started) * 1000)},
            "raft": raft_stats(ctx),
        },
        "Meta": {},
        "xDS": None,
    })


async def _server_stats(ctx: ServerContext, request: web.Request) -> list[dict[str, Any]]:
    """Every server of the Raft configuration with its own Raft stats, or an error."""
    view = ctx.fsm.servers_view()
    rid = logs.REQUEST_ID.get()
    headers = {"X-Request-Id": rid} if rid else {}

    async def ask(addr: str) -> dict[str, Any]:
        entry = dict(view.get(addr) or {})
        if addr == ctx.raft_addr:
            return {"addr": addr, "entry": _self_entry(ctx), "stats": raft_stats(ctx)}
        base = server_base(ctx, entry)
        if base is None:
            return {"addr": addr, "entry": entry, "error": "HTTP address not known yet"}
        assert ctx.session is not None
        try:
            async with ctx.session.get(
                f"{base[0]}/v1/internal/raft/stats", headers=headers,
                timeout=aiohttp.ClientTimeout(total=FAN_OUT_TIMEOUT), **base[1],
            ) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:200]
                    return {"addr": addr, "entry": entry, "error": f"{resp.status}: {text}"}
                stats = await resp.json()
            return {"addr": addr, "entry": entry, "stats": dict(stats)}
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as e:
            return {"addr": addr, "entry": entry, "error": str(e) or type(e).__name__}

    return list(await asyncio.gather(*(ask(a) for a in ctx.node.members())))


def _stable_since(request: web.Request, addr: str, healthy: bool) -> str:
    """When this server's health (as this node sees it) last changed."""
    table = request.app[_HEALTH_SINCE]
    prev = table.get(addr)
    if prev is None or prev[0] != healthy:
        table[addr] = (healthy, gotime.now())  # Go's RFC3339Nano, as Consul writes it
    return table[addr][1]


async def cluster_view(ctx: ServerContext, request: web.Request) -> dict[str, Any]:
    rows = await _server_stats(ctx, request)
    leader_addr = ctx.node.leader()
    leader = next((r for r in rows if r["addr"] == leader_addr and "stats" in r), None)
    leader_term = int(leader["stats"]["term"]) if leader else None
    leader_index = int(leader["stats"]["commit_index"]) if leader else None
    servers = []
    for r in rows:
        entry, st = r["entry"], r.get("stats")
        s: dict[str, Any] = {
            "ID": entry.get("Node") or r["addr"],
            "Name": entry.get("Node", ""),
            "Address": r["addr"],
            "HTTPAddr": entry.get("HTTPAddr", ""),
            "Leader": r["addr"] == leader_addr,
            "Reachable": st is not None,
        }
        if st is None:
            s.update(State="unreachable", Term=None, CommitIndex=None, AppliedIndex=None,
                     LastContactMs=None, KnownLeader="", Healthy=False, Error=r["error"])
        else:
            contact = float(st.get("last_contact_ms") or 0)
            term, index = int(st["term"]), int(st["commit_index"])
            healthy = (
                leader is not None and contact is not None
                and contact < LAST_CONTACT_THRESHOLD_MS and term == leader_term
                and leader_index is not None and leader_index - index <= MAX_TRAILING_LOGS
            )
            s.update(State=st["state"].lower(), Term=term, CommitIndex=index,
                     AppliedIndex=int(st["applied_index"]), LastContactMs=contact,
                     KnownLeader=st.get("leader", ""), Healthy=healthy, Error="")
        s["StableSince"] = _stable_since(request, r["addr"], s["Healthy"])
        servers.append(s)
    servers.sort(key=lambda s: (s["Name"] or s["Address"]))
    return {"Leader": leader_addr or "", "Servers": servers}


async def agent_members(request: web.Request, _: None) -> web.StreamResponse:
    ctx = request.app[SERVER]
    view = await cluster_view(ctx, request)
    fsm_view = ctx.fsm.servers_view()
    out = []
    for s in view["Servers"]:
        entry = _self_entry(ctx) if s["Address"] == ctx.raft_addr else fsm_view.get(
            s["Address"], {})
        out.append(member(ctx, s["Address"], entry, "alive" if s["Reachable"] else "failed"))
    return json_response(request, out)


async def autopilot_health(request: web.Request, _: None) -> web.StreamResponse:
    ctx = request.app[SERVER]
    view = await cluster_view(ctx, request)
    servers = [
        {
            "ID": s["ID"],
            "Name": s["Name"],
            "Address": s["Address"],
            "SerfStatus": "alive" if s["Reachable"] else "failed",
            "Version": VERSION,
            "Leader": s["Leader"],
            "LastContact": go_duration(s["LastContactMs"] or 0),
            "LastTerm": s["Term"] or 0,
            "LastIndex": s["CommitIndex"] or 0,
            "Healthy": s["Healthy"],
            "Voter": True,
            "StableSince": s["StableSince"],
        }
        for s in view["Servers"]
    ]
    healthy = sum(1 for s in servers if s["Healthy"])
    quorum = len(servers) // 2 + 1
    body = {
        "Healthy": healthy == len(servers) and bool(servers),
        "FailureTolerance": max(0, healthy - quorum),
        "Servers": servers,
    }
    response = json_response(request, body)
    if not body["Healthy"]:
        response.set_status(429)  # as Consul: unhealthy is 429, with the same body
    return response


async def internal_raft_stats(request: web.Request, _: None) -> web.StreamResponse:
    return json_response(request, raft_stats(request.app[SERVER]))


async def ui_cluster(request: web.Request, _: None) -> web.StreamResponse:
    ctx = request.app[SERVER]
    view = await cluster_view(ctx, request)
    leader = next((s for s in view["Servers"] if s["Leader"]), None)
    return json_response(request, {
        "Datacenter": ctx.datacenter,
        "ServedBy": ctx.node_name,
        "Leader": {"Name": leader["Name"], "Address": leader["Address"]} if leader else None,
        "Servers": view["Servers"],
    })


ROUTES = [
    Route("GET", "/v1/agent/self", LOCAL, AGENT_READ, agent_self, allow_head=True,
          without_journal=True),
    # Consul filters members by node:read instead
    Route("GET", "/v1/agent/members", LOCAL, OPEN, agent_members, allow_head=True,
          without_journal=True),
    Route("GET", "/v1/operator/autopilot/health", LOCAL, OPERATOR_READ, autopilot_health,
          allow_head=True),
    Route("GET", "/v1/internal/ui/cluster", LOCAL, OPEN, ui_cluster, allow_head=True,
          without_journal=True),
    # what /v1/status/* tells, per server
    Route("GET", "/v1/internal/raft/stats", LOCAL, OPEN, internal_raft_stats,
          allow_head=True, without_journal=True),
]


def install(app: web.Application) -> None:
    app[_HEALTH_SINCE] = {}

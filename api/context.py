"""What every handler needs, held under one aiohttp app key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from cluster.fsm import FSM
from cluster.raft import RaftNode
from cluster.reconciler import PeeringService

from .watch import IndexWatch


@dataclass
class ServerContext:
    node: RaftNode
    fsm: FSM
    node_name: str
    datacenter: str
    raft_addr: str
    http_addr: str
    peering_addr: str
    hold_timeout: float = 7.0  # Consul's RPCHoldTimeout: how long to wait for a leader
    apply_timeout: float = 5.0  # one replicated command
    max_body: int = 1 << 20
    acl_default_policy: str = "allow"
    consistent_reads: str = "barrier"  # or "readindex"; see bench/read_modes.py
    watch: IndexWatch = field(default_factory=IndexWatch)
    # Live stream status per peering ID, kept by the leader's reconciler (never replicated).
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    session: aiohttp.ClientSession | None = None
    # Peer streams, secret exchange and the reconciler (cluster/reconciler.py); set by the agent.
    peering: PeeringService | None = None


SERVER = web.AppKey("server", ServerContext)

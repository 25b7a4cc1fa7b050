"""What every handler needs, held under one aiohttp app key."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from cluster.fsm import FSM
from cluster.metrics import Metrics
from cluster.peering.reconciler import PeeringService
from cluster.proposer import Proposer
from cluster.raft import RaftNode

from .limits import HTTPLimits
from .render import RenderedList
from .watch import IndexWatch

if TYPE_CHECKING:
    from .authz import ACLResolver


@dataclass(frozen=True)
class ServerContext:
    """Built complete by the composition root (peerplane_cli/agent.py); never changed afterwards."""

    node: RaftNode
    fsm: FSM
    node_name: str
    datacenter: str
    raft_addr: str
    http_addr: str  # "" when plain HTTP is off
    peering_addr: str  # what peer clusters dial: the WAN/external address when one is set
    https_addr: str = ""
    # Talking to another server's API (forwarding, fan-out) over HTTPS: api/https.py.
    server_tls: ssl.SSLContext | None = None
    hold_timeout: float = 7.0  # Consul's RPCHoldTimeout: how long to wait for a leader
    apply_timeout: float = 5.0  # one replicated command
    max_body: int = 1 << 20
    limits: HTTPLimits = field(default_factory=HTTPLimits)  # api/limits.py
    acl_default_policy: str = "allow"
    consistent_reads: str = "readindex"  # or "barrier"; see bench/read_modes.py
    watch: IndexWatch = field(default_factory=IndexWatch)
    proposer: Proposer | None = None  # cluster/proposer.py: the one way to propose
    # Live stream status per peering ID, kept by the leader's reconciler (never replicated);
    # a read-only view (PeeringService.streams).
    streams: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    peering_list: RenderedList = field(default_factory=RenderedList)  # GET /v1/peerings
    session: aiohttp.ClientSession | None = None
    # Peer streams, secret exchange and the reconciler (cluster/peering/reconciler.py).
    peering: PeeringService | None = None
    # Observability (api/observe.py, api/agent.py): this server's metrics registry, its node
    # ID and the agent's configuration with secrets left out (for /v1/agent/self).
    metrics: Metrics | None = None
    node_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    # ACLs (api/authz.py, api/acl.py): the token resolver when --acl-enabled, else None; the
    # data dir holds Consul's `acl-bootstrap-reset` file.
    acl: ACLResolver | None = None
    data_dir: str = ""


SERVER = web.AppKey("server", ServerContext)

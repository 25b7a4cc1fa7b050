"""One peerplane server: Raft node + FSM + HTTP front end + leader routines, wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from api import https
from api.app import make_app
from api.authz import ACLResolver
from api.context import ServerContext
from api.https import HTTPSFiles
from api.limits import HardenedAppRunner, HTTPLimits
from cluster import acl, logs, membership, metrics
from cluster.commands import RegisterServer
from cluster.fsm import FSM
from cluster.leader import LeaderRoutines
from cluster.peering.catalog_port import FSMCatalog
from cluster.peering.peerstream import make_listener_app
from cluster.peering.reconciler import (
    DEFAULT_HEARTBEAT,
    DEFAULT_HEARTBEAT_TIMEOUT,
    PeeringService,
)
from cluster.peering.replication import Replication
from cluster.peering.tls import LeafCerts
from cluster.proposer import Proposer
from cluster.raft import RaftNode, RaftTiming
from cluster.state.base import Touched

from . import agentinfo

log = logging.getLogger("peerplane.agent")


@dataclass
class AgentConfig:
    node: str
    datacenter: str
    bind: str
    advertise: str
    http_port: int
    raft_port: int
    peering_port: int
    data_dir: str
    join: list[str]
    cluster_secret: str
    bootstrap_expect: int | None = None
    acl_enabled: bool = False
    acl_default_policy: str = "allow"
    acl_initial_management_token: str | None = None
    hold_timeout: float = 7.0
    consistent_reads: str = "readindex"
    timing: RaftTiming = field(default_factory=RaftTiming)
    peering_heartbeat: float = DEFAULT_HEARTBEAT
    peering_heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    http_limits: HTTPLimits = field(default_factory=HTTPLimits)  # api/limits.py
    https_port: int = -1  # -1: no HTTPS listener; http_port -1: no plain HTTP listener
    https: HTTPSFiles | None = None
    peering_wan: str = ""  # HOST:PORT peer clusters dial (default: advertise:peering_port)

    @property
    def raft_addr(self) -> str:
        return f"{self.advertise}:{self.raft_port}"

    @property
    def peers(self) -> list[str]:
        return [p for p in self.join if p != self.raft_addr]


async def _register_self(ctx: ServerContext, proposer: Proposer, cfg: AgentConfig) -> None:
    """Keep this server's addresses in the replicated membership table, so followers can
    forward to whoever leads (the HTTP address is learned, never guessed)."""
    entry = {
        "Node": cfg.node,
        "HTTPAddr": ctx.http_addr,
        "HTTPSAddr": ctx.https_addr,
        "PeeringAddr": ctx.peering_addr,
        "Datacenter": cfg.datacenter,
    }
    while True:
        if ctx.node.leader() is not None and ctx.fsm.servers_view().get(cfg.raft_addr) != entry:
            await proposer.attempt(RegisterServer(RaftAddr=cfg.raft_addr, **entry))
            await asyncio.sleep(0.2)
        else:
            await asyncio.sleep(1.0)


async def run_agent(cfg: AgentConfig) -> None:
    loop = asyncio.get_running_loop()
    fsm = FSM()
    ctx_holder: list[ServerContext] = []

    def on_index(index: int) -> None:  # tick thread
        if ctx_holder and not loop.is_closed():
            loop.call_soon_threadsafe(ctx_holder[0].watch.notify, index)

    fsm.add_listener(on_index)
    if cfg.bootstrap_expect and cfg.bootstrap_expect != len(cfg.peers) + 1:
        log.warning(
            "bootstrap-expect %d but %d servers configured", cfg.bootstrap_expect,
            len(cfg.peers) + 1,
        )
    peers = cfg.peers
    if membership.joining(cfg.data_dir, cfg.join, cfg.bootstrap_expect):
        peers = [s for s in await membership.wait_for_view(cfg.join, cfg.cluster_secret)
                 if s != cfg.raft_addr]
    node = RaftNode(
        self_addr=cfg.raft_addr,
        peers=peers,
        bind_addr=f"{cfg.bind}:{cfg.raft_port}",
        data_dir=cfg.data_dir,
        password=cfg.cluster_secret,
        fsm=fsm,
        timing=cfg.timing,
    )
    node.attach(loop)
    proposer = Proposer(node, timeout=5.0)
    ctx = ServerContext(
        node=node,
        fsm=fsm,
        node_name=cfg.node,
        datacenter=cfg.datacenter,
        raft_addr=cfg.raft_addr,
        http_addr=f"{cfg.advertise}:{cfg.http_port}" if cfg.http_port != -1 else "",
        https_addr=f"{cfg.advertise}:{cfg.https_port}" if cfg.https_port != -1 else "",
        peering_addr=cfg.peering_wan or f"{cfg.advertise}:{cfg.peering_port}",
        hold_timeout=cfg.hold_timeout,
        acl_default_policy=cfg.acl_default_policy,
        consistent_reads=cfg.consistent_reads,
        limits=cfg.http_limits,
        proposer=proposer,
    )
    ctx_holder.append(ctx)
    ctx.data_dir = cfg.data_dir
    if cfg.acl_enabled:
        ctx.acl = ACLResolver(fsm, cfg.acl_default_policy, cfg.datacenter)
    ctx.node_id = agentinfo.node_id(cfg.data_dir)
    ctx.config = agentinfo.debug_config(cfg)
    ctx.metrics = metrics.Metrics().bind(node, fsm, ctx.streams)
    metrics.install(ctx.metrics)
    ctx.session = aiohttp.ClientSession(connector=cfg.http_limits.client_connector())
    runner = HardenedAppRunner(make_app(ctx), cfg.http_limits, access_log=None,
                               handle_signals=False)
    await runner.setup()
    if cfg.https:
        ctx.server_tls = https.forward_context(cfg.https)
    if cfg.http_port != -1:
        await web.TCPSite(runner, cfg.bind, cfg.http_port).start()
    if cfg.https and cfg.https_port != -1:
        await web.TCPSite(runner, cfg.bind, cfg.https_port,
                          ssl_context=https.listener_context(cfg.https)).start()
    # Peer streams: a TLS listener on every server; dialing and accepting happen on the leader.
    peering = PeeringService(
        node=node, proposer=proposer, fsm=fsm, datacenter=cfg.datacenter, streams=ctx.streams,
        leaf=LeafCerts(lambda: fsm.identity, cfg.datacenter),
        heartbeat=cfg.peering_heartbeat, heartbeat_timeout=cfg.peering_heartbeat_timeout,
    )
    ctx.peering = peering
    replication = Replication(fsm, FSMCatalog(fsm), proposer.submit,
                              peering.set_server_addresses)
    peering.replication = replication

    leader = LeaderRoutines(node, fsm, proposer)

    def changed(_index: int, touched: Touched | None) -> None:  # tick thread
        if not loop.is_closed():
            loop.call_soon_threadsafe(peering.on_change, touched)
            loop.call_soon_threadsafe(leader.on_change, touched)
            loop.call_soon_threadsafe(replication.on_change, touched)

    fsm.subscribe(changed)
    peer_runner = HardenedAppRunner(make_listener_app(peering), cfg.http_limits,
                                    access_log=None, handle_signals=False)
    await peer_runner.setup()
    await web.TCPSite(peer_runner, cfg.bind, cfg.peering_port,
                      ssl_context=peering.leaf.listener_context()).start()
    leader.add(peering.run_leader)
    leader.before_remove = peering.terminate
    leader.purge_imports = replication.purge
    leader.add(replication.run_cleanup)
    if cfg.acl_enabled:
        leader.enable_acls(cfg.acl_initial_management_token)
    tasks = [
        asyncio.create_task(_register_self(ctx, proposer, cfg)),
        # Without --bootstrap-expect, --join names a running cluster to become a member of.
        *([asyncio.create_task(membership.ensure_member(cfg.raft_addr, cfg.join,
                                                        cfg.cluster_secret))]
          if cfg.join and not cfg.bootstrap_expect else []),
        asyncio.create_task(leader.supervise()),
    ]
    if cfg.acl_enabled:
        # Load the HCL parser off the event loop now, not on the first policy write.
        tasks.append(asyncio.create_task(asyncio.to_thread(acl.parse_rules, 'acl = "read"')))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logs.announce(
        f"peerplane agent {cfg.node} ready: datacenter={cfg.datacenter} "
        f"http={'http://' + ctx.http_addr if ctx.http_addr else 'off'} "
        f"https={'https://' + ctx.https_addr if ctx.https_addr else 'off'} "
        f"raft={cfg.raft_addr} peering={ctx.peering_addr}",
    )
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await peering.close()
        await peer_runner.cleanup()
        await runner.cleanup()
        await ctx.session.close()
        node.destroy()

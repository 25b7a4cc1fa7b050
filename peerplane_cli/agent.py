"""One peerplane server: Raft node + FSM + HTTP front end + leader routines, wired together."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from api import https
from api.app import make_app
from api.authz import ACLResolver
from api.context import ServerContext
from api.https import HTTPSFiles
from api.limits import HardenedAppRunner, HTTPLimits
from cluster import acl, autopilot, catchup, logs, membership, metrics
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
from cluster.peering.status import SeenStreams
from cluster.peering.status import snapshot as stream_snapshot
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
    autopilot: tuple[float, int] | None = None  # CleanupDeadServers: (dead after s, min quorum)
    consistent_reads: str = "readindex"
    timing: RaftTiming = field(default_factory=RaftTiming)
    peering_heartbeat: float = DEFAULT_HEARTBEAT
    peering_heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    http_limits: HTTPLimits = field(default_factory=HTTPLimits)  # api/limits.py
    https_port: int = -1  # -1: no HTTPS listener; http_port -1: no plain HTTP listener
    https: HTTPSFiles | None = None
    peering_wan: str = ""  # HOST:PORT peer clusters dial (default: advertise:peering_port)
    log_format: str = "text"  # of the `ready` line (logs.setup configured the process's logging)

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


APPLY_TIMEOUT = 5.0  # one replicated command


def _changes_to_loop(
    node: RaftNode, *targets: Callable[[int, Touched | None], None],
) -> Callable[[int, Touched | None], None]:
    """An FSM subscriber (tick thread) that hands the changes to `targets` on the loop,
    through the Raft node's ordered hand-over. The changes of one batch of applies (a group
    commit applies several) reach the targets as one: the highest index and the union of
    what they touched (None, a restored snapshot, wins), in the one hand-over call queued for
    the first of them - so a change still reaches the loop before its command's result,
    which is queued after it."""
    pending: collections.deque[tuple[int, Touched | None]] = collections.deque()
    queued = [False]  # a deliver is in the hand-over queue and has not started yet

    def deliver() -> None:
        queued[0] = False  # before draining: a change appended later queues a new deliver
        if not pending:
            return
        index = 0
        union: set[tuple[str, Any]] | None = set()
        while pending:  # popleft is atomic: the tick thread may append meanwhile
            index, touched = pending.popleft()
            union = None if union is None or touched is None else union | touched
        for target in targets:
            target(index, None if union is None else frozenset(union))

    def changed(index: int, touched: Touched | None) -> None:
        pending.append((index, touched))
        if not queued[0]:  # read after the append: a deliver that cleared it finds this one
            queued[0] = True
            node.to_loop(deliver)

    return changed


def _tune_gc() -> None:
    """Fewer cyclic-GC passes. A request allocates hundreds of short-lived objects that
    reference counting frees; with the default threshold (700) a young-generation pass ran
    every few requests, and the FSM's records, reached by older-generation passes, made those
    costly. Startup's objects (modules, routes, classes) are frozen out of every pass."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def run_agent(cfg: AgentConfig) -> None:
    """The composition root: build every part complete, wire them, run until a signal."""
    loop = asyncio.get_running_loop()
    if cfg.bootstrap_expect and cfg.bootstrap_expect != len(cfg.peers) + 1:
        log.warning(
            "bootstrap-expect %d but %d servers configured", cfg.bootstrap_expect,
            len(cfg.peers) + 1,
        )
    peers = cfg.peers
    # Whom to ask when joining a running cluster: retry_join lists may name this server too
    # (one list for every server, as in Consul); asking itself, it would find itself a member.
    members = [a for a in cfg.join if a != cfg.raft_addr]
    if membership.joining(cfg.data_dir, cfg.join, cfg.bootstrap_expect):
        peers = [s for s in await membership.wait_for_view(members, cfg.cluster_secret)
                 if s != cfg.raft_addr]
        # Snapshot + log first, as a read-only replica: it votes only once caught up.
        await asyncio.to_thread(
            catchup.catch_up, peers=peers, data_dir=cfg.data_dir,
            password=cfg.cluster_secret, bind_addr=f"{cfg.bind}:{cfg.raft_port}",
            timing=cfg.timing)
    # This server's metrics, built first: each part that reports gets its `events`.
    registry = metrics.Metrics()
    # Replication core: FSM, Raft node, the one proposer.
    fsm = FSM()
    node = RaftNode(
        self_addr=cfg.raft_addr,
        peers=peers,
        bind_addr=f"{cfg.bind}:{cfg.raft_port}",
        data_dir=cfg.data_dir,
        password=cfg.cluster_secret,
        fsm=fsm,
        timing=cfg.timing,
        events=registry.events,
    )
    node.attach(loop)
    proposer = Proposer(node, timeout=APPLY_TIMEOUT)
    # Peer streams (dialing and accepting happen on the leader), replication over them, and
    # the leader routines.
    replication = Replication(
        fsm, FSMCatalog(fsm), proposer.submit,
        lambda pid, addrs: peering.set_server_addresses(pid, addrs), events=registry.events,
    )
    peering = PeeringService(
        node=node, proposer=proposer, fsm=fsm, datacenter=cfg.datacenter,
        leaf=LeafCerts(lambda: fsm.identity, cfg.datacenter),
        heartbeat=cfg.peering_heartbeat, heartbeat_timeout=cfg.peering_heartbeat_timeout,
        replication=replication, events=registry.events,
    )
    leader = LeaderRoutines(node, fsm, proposer)
    leader.add(peering.run_leader)
    if cfg.autopilot is not None:
        dead_after, min_quorum = cfg.autopilot
        leader.add(lambda: autopilot.cleanup_dead_servers(node, dead_after, min_quorum))
    leader.before_remove = peering.terminate
    leader.purge_imports = replication.purge
    leader.add(replication.run_cleanup)
    if cfg.acl_enabled:
        leader.enable_acls(cfg.acl_initial_management_token)
    node.leader_state = lambda: stream_snapshot(peering.streams)  # for follower reads
    registry.bind(node, fsm, peering.streams)  # the sources of its scrape-time gauges
    # The HTTP API's context, complete from the start.
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
        apply_timeout=APPLY_TIMEOUT,
        acl_default_policy=cfg.acl_default_policy,
        consistent_reads=cfg.consistent_reads,
        limits=cfg.http_limits,
        proposer=proposer,
        streams=SeenStreams(node, peering.streams),  # the leader's, at a follower too
        session=aiohttp.ClientSession(connector=cfg.http_limits.client_connector()),
        peering=peering,
        metrics=registry,
        node_id=agentinfo.node_id(cfg.data_dir),
        config=agentinfo.debug_config(cfg),
        acl=ACLResolver(fsm, cfg.acl_default_policy, cfg.datacenter) if cfg.acl_enabled
        else None,
        data_dir=cfg.data_dir,
        server_tls=https.forward_context(cfg.https) if cfg.https else None,
    )
    # Wiring: what the FSM applied reaches blocking queries, the reconciler and the deletion
    # routine; Raft state changes start and stop the leader routines (leader.supervise).
    fsm.subscribe(_changes_to_loop(
        node,
        lambda index, _touched: ctx.watch.notify(index),
        lambda _index, touched: peering.on_change(touched),
        lambda _index, touched: leader.on_change(touched),
        lambda _index, touched: replication.on_change(touched),
    ))
    runner = HardenedAppRunner(make_app(ctx), cfg.http_limits, access_log=None,
                               handle_signals=False)
    await runner.setup()
    if cfg.http_port != -1:
        await web.TCPSite(runner, cfg.bind, cfg.http_port).start()
    if cfg.https and cfg.https_port != -1:
        await web.TCPSite(runner, cfg.bind, cfg.https_port,
                          ssl_context=https.listener_context(cfg.https)).start()
    peer_runner = HardenedAppRunner(make_listener_app(peering), cfg.http_limits,
                                    access_log=None, handle_signals=False)
    await peer_runner.setup()
    await web.TCPSite(peer_runner, cfg.bind, cfg.peering_port,
                      ssl_context=peering.leaf.listener_context()).start()
    tasks = [
        asyncio.create_task(_register_self(ctx, proposer, cfg)),
        # Without --bootstrap-expect, --join names a running cluster to become a member of.
        *([asyncio.create_task(membership.ensure_member(cfg.raft_addr, members,
                                                        cfg.cluster_secret))]
          if cfg.join and not cfg.bootstrap_expect else []),
        asyncio.create_task(leader.supervise()),
    ]
    if cfg.acl_enabled:
        # Load the HCL parser off the event loop now, not on the first policy write.
        tasks.append(asyncio.create_task(asyncio.to_thread(acl.parse_rules, 'acl = "read"')))
    _tune_gc()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logs.announce(
        f"peerplane agent {cfg.node} ready: datacenter={cfg.datacenter} "
        f"http={'http://' + ctx.http_addr if ctx.http_addr else 'off'} "
        f"https={'https://' + ctx.https_addr if ctx.https_addr else 'off'} "
        f"raft={cfg.raft_addr} peering={ctx.peering_addr}", cfg.log_format,
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
        assert ctx.session is not None
        await ctx.session.close()
        node.destroy()

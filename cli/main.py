"""The `peerplane` command: agent, dev, and Consul-style HTTP client commands."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import client
from .client import COMMANDS, SUMMARIES


def _env(flag: str, default: Any = None) -> Any:
    """Flags may also come from PEERPLANE_<FLAG> (dashes as underscores)."""
    return os.environ.get("PEERPLANE_" + flag.upper().replace("-", "_"), default)


def _env_bool(flag: str) -> bool:
    return str(_env(flag, "")).lower() in ("1", "true", "yes", "on")


def _agent_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run one server")
    p.add_argument("--node", default=_env("node"), required=_env("node") is None)
    p.add_argument("--datacenter", default=_env("datacenter", "dc1"))
    p.add_argument("--bind", default=_env("bind", "127.0.0.1"))
    p.add_argument("--advertise", default=_env("advertise"))
    p.add_argument("--http-port", type=int, default=int(_env("http-port", 8500)))
    p.add_argument("--raft-port", type=int, default=int(_env("raft-port", 8300)))
    p.add_argument("--peering-port", type=int, default=int(_env("peering-port", 8503)))
    p.add_argument("--data-dir", default=_env("data-dir"), required=_env("data-dir") is None)
    p.add_argument("--join", default=_env("join", ""), help="HOST:RAFTPORT[,...] of all servers")
    p.add_argument("--bootstrap-expect", type=int, default=_env("bootstrap-expect"))
    p.add_argument("--cluster-secret-file", default=_env("cluster-secret-file"))
    p.add_argument("--acl-enabled", action="store_true", default=_env_bool("acl-enabled"))
    p.add_argument("--acl-default-policy", choices=["allow", "deny"],
                   default=_env("acl-default-policy", "allow"))
    p.add_argument("--acl-initial-management-token", default=_env("acl-initial-management-token"))
    p.add_argument("--hold-timeout", type=float, default=float(_env("hold-timeout", 7.0)),
                   help="seconds to wait for a leader before answering 503")
    p.add_argument("--consistent-reads", choices=["barrier", "readindex"],
                   default=_env("consistent-reads", "readindex"),
                   help="how ?consistent proves leadership: a no-op through the log, or ReadIndex")
    p.add_argument("--peering-heartbeat", type=float,
                   default=float(_env("peering-heartbeat", 15.0)),
                   help="seconds between peer-stream heartbeats (Consul: 15)")
    p.add_argument("--peering-heartbeat-timeout", type=float,
                   default=float(_env("peering-heartbeat-timeout", 120.0)),
                   help="seconds without a heartbeat before a peering is FAILING (Consul: 120)")
    p.add_argument("--durability", choices=["fsync", "page-cache"],
                   default=_env("durability", "fsync"),
                   help="fsync: the journal is on disk before an entry counts toward a quorum; "
                        "page-cache: PySyncObj's own behaviour (survives process kills only)")
    p.add_argument("--raft-heartbeat", type=float, default=float(_env("raft-heartbeat", 0.05)))
    p.add_argument("--raft-election-min", type=float,
                   default=float(_env("raft-election-min", 1.0)))
    p.add_argument("--raft-election-max", type=float,
                   default=float(_env("raft-election-max", 2.0)))
    p.add_argument("--raft-lease", type=float, default=float(_env("raft-lease", 0.5)))
    p.add_argument("--http-read-timeout", type=float,
                   default=float(_env("http-read-timeout", 30.0)),
                   help="seconds a client has to send a request head (or stay idle between "
                        "requests), and again its body, before the connection is closed")
    p.add_argument("--http-max-blocking-queries", type=int,
                   default=int(_env("http-max-blocking-queries", 256)),
                   help="blocking queries (?index=) one server holds at once; more get 429")
    p.add_argument("--log-level", default=_env("log-level", "INFO"))
    p.add_argument("--log-format", choices=["text", "json"], default=_env("log-format", "text"),
                   help="text: readable lines; json: one JSON object a line (Consul's keys)")


def _read_secret(path: str | None) -> str:
    if path:
        with open(path) as f:
            secret = f.read().strip()
    else:
        secret = os.environ.get("PEERPLANE_CLUSTER_SECRET", "")
    if not secret:
        raise SystemExit(
            "peerplane agent: a cluster secret is required (--cluster-secret-file or "
            "PEERPLANE_CLUSTER_SECRET); Raft traffic is pickled and must be authenticated"
        )
    return secret


def run_agent_cmd(args: argparse.Namespace) -> int:
    from api.limits import HTTPLimits
    from cluster import logs
    from cluster.raft import RaftTiming

    from .agent import AgentConfig, run_agent

    logs.setup(args.log_level, args.log_format, args.node)
    if not 0 < args.peering_heartbeat < args.peering_heartbeat_timeout:
        raise SystemExit("peerplane agent: --peering-heartbeat must be positive and below "
                         "--peering-heartbeat-timeout")
    if args.http_read_timeout <= 0 or args.http_max_blocking_queries < 1:
        raise SystemExit("peerplane agent: --http-read-timeout and --http-max-blocking-queries "
                         "must be positive")
    if args.raft_lease >= args.raft_election_min:
        raise SystemExit("peerplane agent: --raft-lease must be below --raft-election-min")
    advertise = args.advertise or args.bind
    if advertise in ("0.0.0.0", "::"):
        raise SystemExit("peerplane agent: --advertise is required when binding all interfaces")
    join = [j.strip() for j in args.join.split(",") if j.strip()]
    cfg = AgentConfig(
        node=args.node,
        datacenter=args.datacenter,
        bind=args.bind,
        advertise=advertise,
        http_port=args.http_port,
        raft_port=args.raft_port,
        peering_port=args.peering_port,
        data_dir=args.data_dir,
        join=join,
        cluster_secret=_read_secret(args.cluster_secret_file),
        bootstrap_expect=int(args.bootstrap_expect) if args.bootstrap_expect else None,
        acl_enabled=args.acl_enabled,
        acl_default_policy=args.acl_default_policy,
        acl_initial_management_token=args.acl_initial_management_token,
        hold_timeout=args.hold_timeout,
        consistent_reads=args.consistent_reads,
        peering_heartbeat=args.peering_heartbeat,
        peering_heartbeat_timeout=args.peering_heartbeat_timeout,
        http_limits=HTTPLimits(read_timeout=args.http_read_timeout,
                               max_blocking_queries=args.http_max_blocking_queries),
        timing=RaftTiming(
            heartbeat=args.raft_heartbeat,
            election_min=args.raft_election_min,
            election_max=args.raft_election_max,
            lease=args.raft_lease,
            durable=args.durability == "fsync",
        ),
    )
    import uvloop  # the agent's event loop: markedly less CPU per HTTP request

    uvloop.run(run_agent(cfg))
    return 0


def _lab_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="consistency lab: read modes under faults")
    p.add_argument("scenario", nargs="+",
                   help="leader-isolation, leader-pause, follower-lag, failover, or all")
    p.add_argument("--short", action="store_true", help="the short (CI) form: one fault round")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", default="lab-out", help="directory for timeline SVGs and histories")
    p.add_argument("--seed", type=int, default=1, help="seed for the clients' choices")


def run_lab_cmd(args: argparse.Namespace) -> int:
    from lab.scenarios import main as lab_main  # the lab ships in the wheel (lab/)

    return lab_main(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        # Consul's commands parse flags the Go way (-name x, -format=json): not argparse.
        return client.run(argv)
    parser = argparse.ArgumentParser(prog="peerplane")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _agent_parser(sub)
    d = sub.add_parser("dev", help="run a local cluster of real processes")
    d.add_argument("--nodes", type=int, default=3)
    d.add_argument("--datacenter", default="dc1")
    d.add_argument("--http-port", type=int, default=8500)
    d.add_argument("--data-dir", default=os.path.join(os.getcwd(), "data", "dev"))
    for name, summary in SUMMARIES.items():
        sub.add_parser(name, help=summary, add_help=False)
    _lab_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "agent":
            return run_agent_cmd(args)
        if args.cmd == "dev":
            from .dev import run_dev

            return run_dev(args.nodes, args.datacenter, args.http_port, args.data_dir)
        if args.cmd == "lab":
            return run_lab_cmd(args)
    except KeyboardInterrupt:
        return 130
    return 2

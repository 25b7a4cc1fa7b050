"""The `peerplane` command: agent, dev, and Consul-style HTTP client commands."""

from __future__ import annotations

import argparse
import os
import sys

from . import client, config
from .client import COMMANDS, SUMMARIES


def _agent_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agent", help="run one server",
        description="Run one peerplane server. Every setting comes, lowest precedence first, "
                    "from its default, configuration files (--config-file/--config-dir, JSON "
                    "or HCL with Consul's key names), its PEERPLANE_* variable, its flag.",
    )
    config.add_flags(p)


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
    from api.https import HTTPSFiles, TLSConfigError, listener_context
    from api.limits import HTTPLimits
    from cluster import logs
    from cluster.raft import RaftTiming

    from .agent import AgentConfig, run_agent

    try:
        resolved = config.load(args, os.environ)
        v = resolved.values
        advertise = config.advertise_addr(v)
    except config.ConfigError as e:
        raise SystemExit(f"peerplane agent: {e}") from None
    logs.setup(v["log_level"], v["log_format"], v["node"])
    https = None
    if v["https_port"] != -1 or v["tls_cert_file"]:
        https = HTTPSFiles(v["tls_cert_file"], v["tls_key_file"], v["tls_ca_file"],
                           v["tls_verify_incoming"])
        try:
            listener_context(https)  # unreadable or mismatched files: refuse before starting
        except TLSConfigError as e:
            raise SystemExit(f"peerplane agent: {e}") from None
    cfg = AgentConfig(
        node=v["node"],
        datacenter=v["datacenter"],
        bind=v["bind"],
        advertise=advertise,
        peering_wan=config.peering_wan(v, advertise),
        http_port=v["http_port"],
        https_port=v["https_port"],
        https=https,
        raft_port=v["raft_port"],
        peering_port=v["peering_port"],
        data_dir=v["data_dir"],
        join=config.join_addresses(v),
        cluster_secret=_read_secret(v["cluster_secret_file"]),
        bootstrap_expect=v["bootstrap_expect"],
        acl_enabled=v["acl_enabled"],
        acl_default_policy=v["acl_default_policy"],
        acl_initial_management_token=v["acl_initial_management_token"],
        hold_timeout=v["hold_timeout"],
        autopilot=(v["autopilot_dead_server_after"], v["autopilot_min_quorum"])
        if v["autopilot_cleanup_dead_servers"] else None,
        consistent_reads=v["consistent_reads"],
        log_format=v["log_format"],
        peering_heartbeat=v["peering_heartbeat"],
        peering_heartbeat_timeout=v["peering_heartbeat_timeout"],
        http_limits=HTTPLimits(read_timeout=v["http_read_timeout"],
                               max_blocking_queries=v["http_max_blocking_queries"]),
        timing=RaftTiming(
            heartbeat=v["raft_heartbeat"],
            election_min=v["raft_election_min"],
            election_max=v["raft_election_max"],
            lease=v["raft_lease"],
            durable=v["durability"] == "fsync",
        ),
    )
    import uvloop  # the agent's event loop: markedly less CPU per HTTP request

    uvloop.run(run_agent(cfg))
    return 0


_VALIDATE_HELP = """Usage: peerplane validate [options] FILE_OR_DIRECTORY...

  Performs a basic sanity test on peerplane agent configuration files: each is parsed (JSON
  when it ends in .json, else HCL), every key must be known and of the right type, and the
  settings must make sense together, exactly as `peerplane agent` checks them before it starts.
  Directories are read as --config-dir reads them. Files are merged in the order given.

Options:

  -quiet
     When given, a successful run will produce no output."""


def run_validate(argv: list[str]) -> int:
    """`peerplane validate`, as `consul validate`: 0 and "Configuration is valid!" or 1."""
    quiet = False
    paths = []
    for arg in argv:
        if arg in ("-quiet", "--quiet"):
            quiet = True
        elif arg in ("-h", "-help", "--help"):
            print(_VALIDATE_HELP)
            return 0
        else:
            paths.append(arg)
    if not paths:
        print("Must specify at least one config file or directory", file=sys.stderr)
        return 1
    try:
        config.validate(paths)
    except config.ConfigError as e:
        print(f"Config validation failed: {e}", file=sys.stderr)
        return 1
    if not quiet:
        print("Configuration is valid!")
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
    if argv and argv[0] == "validate":
        return run_validate(argv[1:])
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
    sub.add_parser("validate", help="check agent configuration files without starting",
                   add_help=False)
    _lab_parser(sub)
    if argv and argv[0] == "agent":
        argv = ["agent", *config.go_style_flags(argv[1:])]
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

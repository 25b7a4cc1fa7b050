"""The `peerplane` command: agent, dev, and Consul-style HTTP client commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from .raft import RaftTiming


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
                   default=_env("consistent-reads", "barrier"),
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
    p.add_argument("--log-level", default=_env("log-level", "INFO"))


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
    from .agent import AgentConfig, run_agent

    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s {args.node} %(name)s %(levelname)s %(message)s",
    )
    if not 0 < args.peering_heartbeat < args.peering_heartbeat_timeout:
        raise SystemExit("peerplane agent: --peering-heartbeat must be positive and below "
                         "--peering-heartbeat-timeout")
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


# ---- HTTP client commands (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN) ----


class _ClientError(Exception):
    pass


def _http(method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    addr = os.environ.get("CONSUL_HTTP_ADDR", "http://127.0.0.1:8500")
    if "://" not in addr:
        addr = "http://" + addr
    req = urllib.request.Request(addr.rstrip("/") + path, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
    token = os.environ.get("CONSUL_HTTP_TOKEN")
    if token:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        raise _ClientError(f"Error connecting to {addr}: {e}") from None


def _ok(status: int, payload: bytes) -> bytes:
    if status != 200:
        text = payload.decode(errors="replace")
        raise _ClientError(f"Unexpected response code: {status} ({text})")
    return payload


def _client_parsers(sub: argparse._SubParsersAction) -> None:
    peering = sub.add_parser("peering", help="manage cluster peerings").add_subparsers(
        dest="peering_cmd", required=True
    )
    g = peering.add_parser("generate-token")
    g.add_argument("-name", required=True)
    g.add_argument("-partition", default="")
    g.add_argument("-server-external-addresses", default="")
    g.add_argument("-meta", action="append", default=[])
    e = peering.add_parser("establish")
    e.add_argument("-name", required=True)
    e.add_argument("-peering-token", required=True)
    e.add_argument("-partition", default="")
    e.add_argument("-meta", action="append", default=[])
    for cmd in ("read", "delete"):
        c = peering.add_parser(cmd)
        c.add_argument("-name", required=True)
        c.add_argument("-partition", default="")
    lst = peering.add_parser("list")
    lst.add_argument("-partition", default="")
    op = sub.add_parser("operator").add_subparsers(dest="operator_cmd", required=True)
    raft = op.add_parser("raft").add_subparsers(dest="raft_cmd", required=True)
    raft.add_parser("list-peers")


def _meta(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep:
            raise _ClientError(f"Error parsing -meta {pair!r}: expected key=value")
        out[k] = v
    return out


def _query(partition: str) -> str:
    return f"?partition={partition}" if partition else ""


def run_peering_cmd(args: argparse.Namespace) -> int:
    cmd = args.peering_cmd
    if cmd == "generate-token":
        body: dict[str, Any] = {"PeerName": args.name, "Meta": _meta(args.meta)}
        if args.partition:
            body["Partition"] = args.partition
        if args.server_external_addresses:
            body["ServerExternalAddresses"] = args.server_external_addresses.split(",")
        print(json.loads(_ok(*_http("POST", "/v1/peering/token", body)))["PeeringToken"])
    elif cmd == "establish":
        body = {"PeerName": args.name, "PeeringToken": args.peering_token,
                "Meta": _meta(args.meta)}
        if args.partition:
            body["Partition"] = args.partition
        _ok(*_http("POST", "/v1/peering/establish", body))
        print(f"Successfully established peering connection with {args.name}")
    elif cmd == "read":
        status, payload = _http("GET", f"/v1/peering/{args.name}{_query(args.partition)}")
        if status == 404:
            raise _ClientError(f"No peering with name {args.name} found.")
        print(json.dumps(json.loads(_ok(status, payload)), indent=2))
    elif cmd == "list":
        rows = json.loads(_ok(*_http("GET", f"/v1/peerings{_query(args.partition)}")))
        if not rows:
            print("There are no peering connections.")
        for r in rows:
            print(f"{r['Name']}\t{r['State']}")
    elif cmd == "delete":
        _ok(*_http("DELETE", f"/v1/peering/{args.name}{_query(args.partition)}"))
        print(f"Successfully submitted peering connection, {args.name}, for deletion")
    return 0


def run_list_peers() -> int:
    cfg = json.loads(_ok(*_http("GET", "/v1/operator/raft/configuration")))
    print("Node\tID\tAddress\tState\tVoter")
    for s in cfg["Servers"]:
        state = "leader" if s["Leader"] else "follower"
        print(f"{s['Node']}\t{s['ID']}\t{s['Address']}\t{state}\t{str(s['Voter']).lower()}")
    return 0


def _lab_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="consistency lab: read modes under faults (source checkout)")
    p.add_argument("scenario", nargs="+",
                   help="leader-isolation, leader-pause, follower-lag, failover, or all")
    p.add_argument("--short", action="store_true", help="the short (CI) form: one fault round")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", default="lab-out", help="directory for timeline SVGs and histories")
    p.add_argument("--seed", type=int, default=1, help="seed for the clients' choices")


def run_lab_cmd(args: argparse.Namespace) -> int:
    """The lab drives real clusters with the test harness (tests/harness, not packaged)."""
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    if not os.path.isfile(os.path.join(tests, "harness", "lab.py")):
        raise SystemExit("peerplane lab: needs a source checkout (it uses tests/harness); run "
                         "it from a clone installed with `pip install -e .` (make dev/test)")
    sys.path.insert(0, tests)
    from harness.lab import main as lab_main

    return lab_main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="peerplane")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _agent_parser(sub)
    d = sub.add_parser("dev", help="run a local cluster of real processes")
    d.add_argument("--nodes", type=int, default=3)
    d.add_argument("--datacenter", default="dc1")
    d.add_argument("--http-port", type=int, default=8500)
    d.add_argument("--data-dir", default=os.path.join(os.getcwd(), "data", "dev"))
    _client_parsers(sub)
    _lab_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "agent":
            return run_agent_cmd(args)
        if args.cmd == "dev":
            from .dev import run_dev

            return run_dev(args.nodes, args.datacenter, args.http_port, args.data_dir)
        if args.cmd == "peering":
            return run_peering_cmd(args)
        if args.cmd == "operator":
            return run_list_peers()
        if args.cmd == "lab":
            return run_lab_cmd(args)
    except _ClientError as e:
        print(str(e), file=sys.stderr)
        return 1
    return 2

"""Consul-style client commands: `peering …`, `operator raft list-peers`, `members`, `tls …`.

Flags parse as Go's `flag` package does (`-name x`, `-name=x`, `--name x`; parsing stops at the
first argument that is not a flag), the HTTP flags are Consul's (`-http-addr`, `-token`,
`-token-file`, `-ca-file`, `-ca-path`, `-client-cert`, `-client-key`, `-tls-server-name`, with
`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_SSL`,
`CONSUL_HTTP_SSL_VERIFY`, `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`,
`CONSUL_CLIENT_KEY` and `CONSUL_TLS_SERVER_NAME` underneath), and the output and error texts are
those of Consul's commands.
Two small departures, both for operators: `-format=json` is accepted by every command that prints
data (Consul has it only on the peering commands), and `peering list`/`peering read` add the
server's error to their one-line failure message (Consul prints only "Error listing peerings").

Exit codes: 0 success, 1 any error (message on stderr), 2 `members` with no member matching.
Imports stay light (stdlib only): a client command must start fast.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from .flags import CommandError, FlagSet, Help, check_format, format_flag, http_flags
from .http import Client, StatusError, TransportError, columnize, out, print_json
from .peering_cmds import (
    PEERING_HELP,
    peering_delete,
    peering_establish,
    peering_exported_services,
    peering_generate_token,
    peering_list,
    peering_read,
)

COMMANDS = ("peering", "operator", "members", "tls")
SUMMARIES = {
    "peering": "create and manage peering connections (generate-token, establish, read, "
               "list, delete)",
    "operator": "cluster operator commands (raft list-peers, raft remove-peer)",
    "members": "list the servers of the cluster",
    "tls": "a CA and certificates for the HTTPS API (ca create, cert create)",
}
_SERF_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}




# ---- operator raft list-peers ----


def list_peers_rows(config: dict[str, Any], health: dict[str, Any]) -> list[dict[str, Any]]:
    by_id = {s["ID"]: s for s in health.get("Servers") or []}
    leader_index = next((by_id[s["ID"]]["LastIndex"] for s in config["Servers"]
                         if s.get("Leader") and s["ID"] in by_id), 0)
    rows = []
    for s in config["Servers"]:
        h = by_id.get(s["ID"])
        row = {
            "Node": s["Node"], "ID": s["ID"], "Address": s["Address"],
            "State": "leader" if s.get("Leader") else "follower", "Voter": bool(s.get("Voter")),
            "RaftProtocol": s.get("ProtocolVersion") or "<=1",
            "CommitIndex": h["LastIndex"] if h else None, "TrailsLeaderBy": None,
        }
        if h and not s.get("Leader"):
            row["TrailsLeaderBy"] = max(0, leader_index - h["LastIndex"])
        rows.append(row)
    return rows


def operator_raft_list_peers(args: list[str]) -> int:
    fs = FlagSet("peerplane operator raft list-peers [options]")
    http_flags(fs, partition=False, stale=True)
    format_flag(fs)
    fs.parse(args)
    check_format(fs)
    client = Client(fs)
    query = {"stale": ""} if fs["stale"] else {}
    try:
        try:
            config = client.request("GET", "/v1/operator/raft/configuration", query)
        except (StatusError, TransportError) as e:
            raise CommandError(f"Failed to retrieve raft configuration: {e}") from None
        try:
            health = client.request("GET", "/v1/operator/autopilot/health", query,
                                    ok=(200, 429))
        except (StatusError, TransportError) as e:
            raise CommandError(f"Failed to retrieve autopilot health: {e}") from None
    except CommandError as e:
        raise CommandError(f"Error getting peers: {e}") from None
    rows = list_peers_rows(config, health)
    if fs["format"] == "json":
        print_json(rows)
        return 0
    table: list[list[Any]] = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol",
                               "Commit Index", "Trails Leader By"]]
    for r in rows:
        if r["CommitIndex"] is None:
            trails = "_"
        elif r["State"] == "leader":
            trails = "_"
        else:
            n = r["TrailsLeaderBy"]
            trails = f"{n} Commit" if n <= 1 else f"{n} Commits"
        table.append([r["Node"], r["ID"], r["Address"], r["State"], str(r["Voter"]).lower(),
                      r["RaftProtocol"], "_" if r["CommitIndex"] is None else r["CommitIndex"],
                      trails])
    out(columnize(table))
    return 0


# ---- operator raft remove-peer ----


def operator_raft_remove_peer(args: list[str]) -> int:
    fs = FlagSet("peerplane operator raft remove-peer [options]")
    fs.string("address", "", "The address to remove from the Raft configuration.")
    fs.string("id", "", "The ID to remove from the Raft configuration.")
    http_flags(fs, partition=False)
    fs.parse(args)
    address, server_id = fs["address"], fs["id"]
    if not address and not server_id:
        raise CommandError("Error removing peer: an address or id is required for the peer "
                           "to remove")
    if address and server_id:
        raise CommandError("Error removing peer: cannot give both an address and id")
    query = {"address": address} if address else {"id": server_id}
    try:
        Client(fs).request("DELETE", "/v1/operator/raft/peer", query)
    except (StatusError, TransportError) as e:
        raise CommandError(f"Error removing peer: {e}") from None
    which = f'address "{address}"' if address else f'id "{server_id}"'
    out(f"Removed peer with {which}")
    return 0


# ---- members ----


def members(args: list[str]) -> int:
    fs = FlagSet("peerplane members [options]")
    fs.boolean("detailed", "Provides detailed information about nodes.")
    fs.string("status", ".*", "If provided, output is filtered to only nodes matching the "
              "regular expression for status.")
    format_flag(fs)
    http_flags(fs)
    fs.parse(args)
    check_format(fs)
    try:
        status_re = re.compile(fs["status"])
    except re.error as e:
        raise CommandError(f"Failed to compile status regexp: {e}") from None
    client = Client(fs)
    try:
        found = client.request("GET", "/v1/agent/members") or []
    except (StatusError, TransportError) as e:
        raise CommandError(f"Error retrieving members: {e}") from None
    found = [m for m in found if status_re.search(_SERF_STATUS.get(m.get("Status"), "unknown"))]
    if not found:
        return 2
    found.sort(key=lambda m: m.get("Name", ""))
    if fs["format"] == "json":
        print_json(found)
        return 0
    if fs["detailed"]:
        rows: list[list[Any]] = [["Node", "Address", "Status", "Tags"]]
        for m in found:
            tags = ",".join(f"{k}={v}" for k, v in sorted((m.get("Tags") or {}).items()))
            rows.append([m["Name"], f"{m['Addr']}:{m['Port']}",
                         _SERF_STATUS.get(m.get("Status"), "unknown"), tags])
    else:
        rows = [["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition",
                 "Segment"]]
        for m in found:
            tags = m.get("Tags") or {}
            role = "server" if tags.get("role") == "consul" else tags.get("role", "unknown")
            build = (tags.get("build") or "< 0.3").split(":")[0]
            rows.append([m["Name"], f"{m['Addr']}:{m['Port']}",
                         _SERF_STATUS.get(m.get("Status"), "unknown"), role, build,
                         tags.get("vsn", ""), tags.get("dc", ""), "default", "<all>"])
    out(columnize(rows))
    return 0


# ---- dispatch ----

_TREE: dict[str, Any] = {
    "peering": {
        "generate-token": peering_generate_token,
        "establish": peering_establish,
        "read": peering_read,
        "list": peering_list,
        "delete": peering_delete,
        "exported-services": peering_exported_services,
    },
    "operator": {"raft": {"list-peers": operator_raft_list_peers,
                          "remove-peer": operator_raft_remove_peer}},
    "members": members,
    "tls": {"ca": {"create": lambda args: _tls().ca_create(args)},
            "cert": {"create": lambda args: _tls().cert_create(args)}},
}


def _tls() -> Any:
    from . import tls  # cryptography: loaded only for the tls commands

    return tls


def _subcommand_help(path: list[str], node: dict[str, Any]) -> str:
    if path == ["peering"]:
        return PEERING_HELP
    cmds = "\n".join(f"    {name}" for name in sorted(node))
    return f"Usage: peerplane {' '.join(path)} <subcommand> [options]\n\nSubcommands:\n{cmds}\n"


def run(argv: list[str]) -> int:
    """Run one client command (argv[0] in COMMANDS); returns the exit code."""
    node: Any = _TREE
    path: list[str] = []
    rest = list(argv)
    while isinstance(node, dict):
        if not rest or rest[0] not in node:
            if path and (not rest or rest[0] in ("-h", "-help", "--help")):
                print(_subcommand_help(path, node), file=sys.stderr, end="")
                return 0 if rest else 1
            shown = " ".join(path)
            print(f"peerplane {shown}: unknown subcommand {rest[0]!r}\n", file=sys.stderr)
            print(_subcommand_help(path, node), file=sys.stderr, end="")
            return 1
        path.append(rest.pop(0))
        node = node[path[-1]]
    command: Callable[[list[str]], int] = node
    try:
        return command(rest)
    except Help as h:
        print(str(h), file=sys.stderr, end="")
        return 0
    except CommandError as e:
        print(str(e), file=sys.stderr)
        return e.code

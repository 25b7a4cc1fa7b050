"""The agent's options: one table (`OPTIONS`) naming each option's flag, PEERPLANE_* variable,
configuration-file keys, type, default and help; and the agent's flags built from it.
Reading files: peerplane_cli/config_files.py; precedence and checks: peerplane_cli/config.py."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Option:
    dest: str  # attribute of the resolved namespace (and the flag's name with underscores)
    kind: str  # str | int | float | bool | list
    default: Any
    help: str
    keys: tuple[str, ...] = ()  # configuration-file keys, the first one found wins
    choices: tuple[str, ...] = ()
    # A file key whose type differs from the option's: (key, its kind, to the option's value),
    # e.g. Consul's `log_json = true` for log_format "json".
    from_file: tuple[str, str, Callable[[Any], Any]] | None = None
    shown: str | None = None  # the default as help shows it, when it is derived (not a value)

    @property
    def flag(self) -> str:
        return "--" + self.dest.replace("_", "-")

    @property
    def env(self) -> str:
        return "PEERPLANE_" + self.dest.upper()



_o = Option
OPTIONS: tuple[Option, ...] = (
    _o("node", "str", None, "this server's node name", ("node_name",), shown="the host name"),
    _o("datacenter", "str", "dc1", "the datacenter (cluster) name", ("datacenter",)),
    _o("data_dir", "str", None, "where the Raft journal, snapshots and node-id live",
      ("data_dir",), shown="none, required"),
    _o("bind", "str", "127.0.0.1", "address every listener binds (0.0.0.0: all interfaces)",
      ("bind_addr",)),
    _o("advertise", "str", None, "address the other servers reach this one at, for Raft and "
      "HTTP forwarding", ("advertise_addr",),
      shown="--bind, or this host's address when binding all interfaces"),
    _o("advertise_wan", "str", None, "HOST[:PORT] peer clusters reach this server's peering port "
      "at (NAT, load balancer); put in peering tokens and server-address updates",
      ("advertise_addr_wan",), shown="--advertise with --peering-port"),
    _o("http_port", "int", 8500, "HTTP API port (-1: no plain-HTTP listener)", ("ports.http",)),
    _o("https_port", "int", -1, "HTTPS API port (-1: off); needs --tls-cert-file and "
      "--tls-key-file", ("ports.https",)),
    _o("raft_port", "int", 8300, "Raft port between the servers", ("ports.server",)),
    _o("peering_port", "int", 8503, "peer-stream (TLS) port other clusters dial",
      ("ports.grpc_tls",)),
    _o("join", "list", [], "HOST[:RAFTPORT][,...]: with --bootstrap-expect, every first server "
      "(this one included); without it, any live member of a running cluster to join "
      "(port default: --raft-port)", ("retry_join",)),
    _o("bootstrap_expect", "int", None, "number of servers that start the cluster together, "
      "all in --join (a warning when the join list disagrees); leave it out (or 0, as in "
      "Consul) to join a running cluster", ("bootstrap_expect",)),
    _o("cluster_secret_file", "str", None, "file holding the secret that authenticates Raft "
      "traffic (else PEERPLANE_CLUSTER_SECRET)", ("cluster_secret_file",)),
    _o("tls_cert_file", "str", None, "PEM certificate of the HTTPS listener (also presented to "
      "the leader when forwarding)",
      ("tls.https.cert_file", "tls.defaults.cert_file", "cert_file")),
    _o("tls_key_file", "str", None, "PEM private key of --tls-cert-file",
      ("tls.https.key_file", "tls.defaults.key_file", "key_file")),
    _o("tls_ca_file", "str", None, "PEM CA bundle: verifies client certificates and the "
      "leader's certificate when forwarding over HTTPS",
      ("tls.https.ca_file", "tls.defaults.ca_file", "ca_file")),
    _o("tls_verify_incoming", "bool", False, "HTTPS clients must present a certificate signed "
      "by --tls-ca-file",
      ("tls.https.verify_incoming", "tls.defaults.verify_incoming", "verify_incoming")),
    _o("acl_enabled", "bool", False, "enforce ACLs", ("acl.enabled",)),
    _o("acl_default_policy", "str", "allow", "what a request no rule decides gets",
      ("acl.default_policy",), ("allow", "deny")),
    _o("acl_initial_management_token", "str", None, "secret of the management token the first "
      "leader creates", ("acl.tokens.initial_management",)),
    _o("autopilot_cleanup_dead_servers", "bool", False, "the leader removes servers it has not "
      "heard from for --autopilot-dead-server-after from the Raft configuration, one at a "
      "time, while the live ones are a majority (Consul's autopilot CleanupDeadServers)",
      ("autopilot.cleanup_dead_servers",)),
    _o("autopilot_dead_server_after", "float", 30.0, "seconds without a word from a server "
      "before autopilot counts it dead", ("autopilot.dead_server_after",)),
    _o("autopilot_min_quorum", "int", 3, "autopilot never shrinks the configuration below this "
      "many servers (Consul's min_quorum)", ("autopilot.min_quorum",)),
    _o("hold_timeout", "float", 7.0, "seconds to wait for a leader before answering 503",
      ("hold_timeout",)),
    _o("consistent_reads", "str", "readindex", "how ?consistent proves leadership: a no-op "
      "through the log, or ReadIndex", ("consistent_reads",), ("barrier", "readindex")),
    _o("peering_heartbeat", "float", 15.0, "seconds between peer-stream heartbeats (Consul: 15)",
      ("peering_heartbeat",)),
    _o("peering_heartbeat_timeout", "float", 120.0, "seconds without a heartbeat before a "
      "peering is FAILING (Consul: 120)", ("peering_heartbeat_timeout",)),
    _o("durability", "str", "fsync", "fsync: the journal is on disk before an entry counts "
      "toward a quorum; page-cache: PySyncObj's own behaviour (survives process kills only)",
      ("durability",), ("fsync", "page-cache")),
    _o("raft_heartbeat", "float", 0.05, "seconds between the leader's Raft heartbeats",
      ("raft_heartbeat",)),
    _o("raft_election_min", "float", 1.0, "shortest election timeout, seconds",
      ("raft_election_min",)),
    _o("raft_election_max", "float", 2.0, "longest election timeout, seconds",
      ("raft_election_max",)),
    _o("raft_lease", "float", 0.5, "seconds a leader serves leader reads on its lease (below "
      "--raft-election-min)", ("raft_lease",)),
    _o("http_read_timeout", "float", 30.0, "seconds a client has to send a request head (or "
      "stay idle between requests), and again its body, before the connection is closed",
      ("http_read_timeout",)),
    _o("http_max_blocking_queries", "int", 256, "blocking queries (?index=) one server holds "
      "at once; more get 429", ("http_max_blocking_queries",)),
    _o("log_level", "str", "INFO", "DEBUG, INFO, WARNING or ERROR", ("log_level",)),
    _o("log_format", "str", "text", "text: readable lines; json: one JSON object a line "
      "(Consul's keys)", ("log_format", "log_json"), ("text", "json"),
      from_file=("log_json", "bool", lambda v: "json" if v else "text")),
)
BY_DEST = {o.dest: o for o in OPTIONS}
# Every key a file may hold (dotted), and the blocks above them.
FILE_KEYS = {k: o for o in OPTIONS for k in o.keys}
FILE_BLOCKS = {k.rsplit(".", i)[0] for k in FILE_KEYS for i in range(1, k.count(".") + 1)}
KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
               "list": "a list of strings"}


def add_flags(p: argparse.ArgumentParser) -> None:
    """Every option as a flag (default None: unset, so files and variables show through)."""
    p.add_argument("--config-file", action="append", default=[], metavar="FILE",
                   help="a JSON or HCL configuration file (repeatable; later files win)")
    p.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                   help="read every *.json and *.hcl file of DIR, in name order (repeatable)")
    for o in OPTIONS:
        where = f"env {o.env}" + (f"; config {o.keys[0]}" if o.keys else "")
        text = f"{o.help} (default: {o.shown or show_default(o.default)}; {where})"
        if o.kind == "bool":
            p.add_argument(o.flag, action="store_const", const=True, default=None, help=text)
        else:
            p.add_argument(o.flag, default=None, help=text, metavar=o.dest.upper(),
                           choices=o.choices or None)


def show_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ",".join(value) or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def go_style_flags(argv: list[str]) -> list[str]:
    """Consul's agent takes its flags with one dash (`-config-file=x`, `-data-dir x`): accept
    that spelling of every agent flag too."""
    known = {o.flag for o in OPTIONS} | {"--config-file", "--config-dir"}
    out = []
    for arg in argv:
        name = "-" + arg.partition("=")[0]
        out.append("-" + arg if arg.startswith("-") and not arg.startswith("--") and
                   name in known else arg)
    return out


def parse_agent_flags(argv: list[str]) -> argparse.Namespace:
    """The agent's flags alone (tests and tools; `peerplane agent` uses its subparser)."""
    p = argparse.ArgumentParser(prog="peerplane agent")
    add_flags(p)
    return p.parse_args(argv)

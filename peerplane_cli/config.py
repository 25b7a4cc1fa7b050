"""The agent's configuration: one table of options, read from files, PEERPLANE_* and flags.

Every agent option is one `Option`: its flag, its PEERPLANE_* variable, its key in a
configuration file (Consul's name where Consul has the setting: `datacenter`, `node_name`,
`ports { http https server grpc_tls }`, `acl { … }`, `tls { defaults { … } }`; the flag's name
with underscores otherwise), its type, default and help. Precedence, lowest first: defaults,
configuration files (in the order given; a directory's *.json and *.hcl files in name order;
later scalars win, lists such as `retry_join` add up, as in Consul), PEERPLANE_* variables,
flags. A bad file is refused naming the file, the key and the reason; `check()` holds the rules
between options (it names the key, or the flag when the value came from one).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Callable, Mapping
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


def _hostname() -> str:
    return socket.gethostname()


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
_KEYS = {k: o for o in OPTIONS for k in o.keys}
_BLOCKS = {k.rsplit(".", i)[0] for k in _KEYS for i in range(1, k.count(".") + 1)}
_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
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


# ---- files ----


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals ('"dc1"'); JSON never has them."""
    from hcl2.utils import process_escape_sequences

    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return process_escape_sequences(value[1:-1])
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _hcl_blocks(value: Any) -> Any:
    """HCL blocks come as [{..., "__is_block__": True}]; a map attribute as a dict."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        merged: dict[str, Any] = {}
        for block in value:
            merged.update({k: _hcl_blocks(v) for k, v in block.items() if k != "__is_block__"})
        return merged
    if isinstance(value, dict):
        return {k: _hcl_blocks(v) for k, v in value.items() if k != "__is_block__"}
    return _unquote(value)


def parse_text(text: str, path: str) -> dict[str, Any]:
    """A file's settings as a nested dict (JSON when it ends in .json, else HCL)."""
    if path.endswith(".json"):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"config file {path}: invalid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"config file {path}: invalid JSON: expected an object")
        return doc
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(with_comments=False, explicit_blocks=True,
                                   preserve_heredocs=False)
    try:
        doc = hcl2.api.serialize(hcl2.parses(text, discard_comments=True),
                                 serialization_options=options)
    except Exception as e:  # noqa: BLE001 - lark raises many types; all are parse errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file {path}: invalid HCL: {first}") from None
    return _hcl_blocks(doc)


def _flatten(doc: Mapping[str, Any], path: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        dotted = prefix + str(key)
        if dotted in _KEYS:
            out[dotted] = value
        elif dotted in _BLOCKS:
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: {dotted}: expected a block")
            out.update(_flatten(value, path, dotted + "."))
        else:
            raise ConfigError(f'config file {path}: unknown key "{dotted}"')
    return out


def _coerce(value: Any, kind: str) -> Any:
    """A file (JSON/HCL) value of the given kind, or ValueError with the reason."""
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]
    if not ok:
        raise ValueError(f"expected {_KIND_NAMES[kind]}, got {json.dumps(value)}")
    return float(value) if kind == "float" else value


def read_file(path: str) -> dict[str, Any]:
    """dest -> value for one file; ConfigError naming the file, the key and the reason."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from None
    out: dict[str, Any] = {}
    flat = _flatten(parse_text(text, path), path)
    for o in OPTIONS:
        for key in o.keys:  # the first key the file has wins (tls.https over tls.defaults)
            if key not in flat:
                continue
            _, kind, convert = (o.from_file if o.from_file and o.from_file[0] == key
                                else (key, o.kind, lambda v: v))
            try:
                value = convert(_coerce(flat[key], kind))
            except ValueError as e:
                raise ConfigError(f"config file {path}: {key}: {e}") from None
            if o.choices and value not in o.choices:
                raise ConfigError(f"config file {path}: {key}: must be one of "
                                  f"{', '.join(o.choices)}, got {json.dumps(value)}")
            out[o.dest] = value
            break
    return out


def config_paths(files: list[str], dirs: list[str]) -> list[str]:
    paths = list(files)
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            raise ConfigError(f"config dir {d}: {e}") from None
        paths += [os.path.join(d, n) for n in names if n.endswith((".json", ".hcl"))]
    return paths


def _merge(into: dict[str, Any], source: dict[str, str], layer: dict[str, Any],
           where: str) -> None:
    for dest, value in layer.items():
        if BY_DEST[dest].kind == "list" and isinstance(into.get(dest), list) and \
                source.get(dest, "").startswith("config file"):
            into[dest] = into[dest] + value
        else:
            into[dest] = value
        source[dest] = where


# ---- variables and flags (text) ----


def _from_text(o: Option, text: str, name: str) -> Any:
    try:
        if o.kind == "int":
            return int(text)
        if o.kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError(f"{name}: expected {_KIND_NAMES[o.kind]}, got {text!r}") from None
    if o.kind == "bool":
        if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise ConfigError(f"{name}: expected a boolean, got {text!r}")
        return text.lower() in ("1", "true", "yes", "on")
    if o.kind == "list":
        return [j.strip() for j in text.split(",") if j.strip()]
    if o.choices and text not in o.choices:
        raise ConfigError(f"{name}: must be one of {', '.join(o.choices)}, got {text!r}")
    return text


@dataclass
class Resolved:
    values: dict[str, Any]
    source: dict[str, str]  # dest -> "default" | "config file X" | "PEERPLANE_Y" | "--flag"

    def name(self, dest: str) -> str:
        """How to name an option in an error: its file key, variable or flag."""
        where = self.source.get(dest, "default")
        o = BY_DEST[dest]
        if where.startswith("config file"):
            return f"{o.keys[0]} ({where})"
        return where if where != "default" else o.flag

    def namespace(self) -> argparse.Namespace:
        return argparse.Namespace(**self.values)


def resolve(flags: argparse.Namespace | None, environ: Mapping[str, str],
            files: list[str] = (), dirs: list[str] = ()) -> Resolved:  # type: ignore[assignment]
    values = {o.dest: (list(o.default) if isinstance(o.default, list) else o.default)
              for o in OPTIONS}
    source: dict[str, str] = {}
    for path in config_paths(list(files), list(dirs)):
        _merge(values, source, read_file(path), f"config file {path}")
    for o in OPTIONS:
        if o.env in environ:
            _merge(values, source, {o.dest: _from_text(o, environ[o.env], o.env)}, o.env)
    for o in OPTIONS:
        given = getattr(flags, o.dest, None) if flags is not None else None
        if given is not None:
            value = given if o.kind == "bool" else _from_text(o, given, o.flag)
            _merge(values, source, {o.dest: value}, o.flag)
    if values["node"] is None:
        values["node"] = _hostname()
    if values["bootstrap_expect"] == 0:
        # Consul's "not set": PEERPLANE_BOOTSTRAP_EXPECT=0 overrides a config file's value when
        # one server is started fresh into a running cluster (deploy/compose-join.yml).
        values["bootstrap_expect"] = None
    return Resolved(values, source)


def check(r: Resolved) -> None:
    """The rules between options; ConfigError naming the option(s) at fault."""
    v, n = r.values, r.name
    if not v["data_dir"]:
        raise ConfigError(f"{n('data_dir')}: data_dir is required")
    for dest in ("http_port", "https_port", "raft_port", "peering_port"):
        if not (v[dest] == -1 and dest in ("http_port", "https_port")) and \
                not 0 < v[dest] < 65536:
            raise ConfigError(f"{n(dest)}: port {v[dest]} is not in 1..65535")
    if v["http_port"] == -1 and v["https_port"] == -1:
        raise ConfigError(f"{n('http_port')}: HTTP is off and HTTPS is not on: no API listener")
    if v["https_port"] != -1 and not (v["tls_cert_file"] and v["tls_key_file"]):
        raise ConfigError(f"{n('https_port')}: HTTPS needs a certificate and its key "
                          f"({BY_DEST['tls_cert_file'].keys[1]}, "
                          f"{BY_DEST['tls_key_file'].keys[1]})")
    if v["tls_verify_incoming"] and not v["tls_ca_file"]:
        raise ConfigError(f"{n('tls_verify_incoming')}: verifying client certificates needs "
                          f"a CA ({BY_DEST['tls_ca_file'].keys[1]})")
    if v["bootstrap_expect"] is not None and v["bootstrap_expect"] < 0:
        raise ConfigError(f"{n('bootstrap_expect')}: must not be negative")

    if not 0 < v["peering_heartbeat"] < v["peering_heartbeat_timeout"]:
        raise ConfigError(f"{n('peering_heartbeat')}: must be positive and below "
                          f"peering_heartbeat_timeout")
    if v["http_read_timeout"] <= 0:
        raise ConfigError(f"{n('http_read_timeout')}: must be positive")
    if v["http_max_blocking_queries"] < 1:
        raise ConfigError(f"{n('http_max_blocking_queries')}: must be positive")
    if not 0 < v["raft_lease"] < v["raft_election_min"] <= v["raft_election_max"]:
        raise ConfigError(f"{n('raft_lease')}: need 0 < raft_lease < raft_election_min <= "
                          f"raft_election_max")
    if v["advertise_wan"]:
        host, _, port = v["advertise_wan"].rpartition(":") if ":" in v["advertise_wan"] \
            else (v["advertise_wan"], "", "1")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{n('advertise_wan')}: expected HOST[:PORT], got "
                              f"{v['advertise_wan']!r}")


def join_addresses(values: Mapping[str, Any]) -> list[str]:
    """retry_join entries as HOST:RAFTPORT (the server port when an entry has none)."""
    out = []
    for entry in values["join"]:
        has_port = entry.rpartition(":")[2].isdigit() and not entry.endswith("]")
        out.append(entry if has_port else f"{entry}:{values['raft_port']}")
    return out


def advertise_addr(values: Mapping[str, Any]) -> str:
    """advertise_addr, else the bind address, else (binding all interfaces) this host's
    address, as Consul picks one."""
    if values["advertise"]:
        return values["advertise"]
    if values["bind"] not in ("0.0.0.0", "::"):
        return values["bind"]
    try:
        addr = socket.gethostbyname(_hostname())
    except OSError:
        addr = ""
    if not addr or addr.startswith("127."):
        raise ConfigError(f"{BY_DEST['advertise'].flag}: binding all interfaces and this "
                          f"host's name resolves to no usable address; set advertise_addr")
    return addr


def peering_wan(values: Mapping[str, Any], advertise: str) -> str:
    """The peering address other clusters dial: advertise_wan, with the port when it has none."""
    wan = values["advertise_wan"]
    if not wan:
        return f"{advertise}:{values['peering_port']}"
    return wan if ":" in wan else f"{wan}:{values['peering_port']}"


def load(flags: argparse.Namespace, environ: Mapping[str, str]) -> Resolved:
    """What `peerplane agent` runs with: everything resolved and checked."""
    r = resolve(flags, environ, flags.config_file, flags.config_dir)
    check(r)
    return r


def validate(paths: list[str]) -> Resolved:
    """`peerplane validate FILE-or-DIR…`: the files alone (no variables, no flags), merged in
    the order given (a directory's files in name order where it stands), and checked."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files += config_paths([], [p])
        elif not os.path.exists(p):
            raise ConfigError(f"config file {p}: no such file")
        else:
            files.append(p)
    r = resolve(None, {}, files)
    check(r)
    return r

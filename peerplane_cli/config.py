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
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config_files import config_paths, read_file
from .options import (
    BY_DEST,
    KIND_NAMES,
    OPTIONS,
    ConfigError,
    Option,
    add_flags,
    go_style_flags,
    parse_agent_flags,
    show_default,
)

# The option table and file reading live beside this module; callers use them through here.
__all__ = ["OPTIONS", "ConfigError", "Resolved", "add_flags", "advertise_addr", "check",
           "go_style_flags", "join_addresses", "load", "parse_agent_flags", "peering_wan",
           "read_file", "resolve", "show_default", "validate"]


def _hostname() -> str:
    return socket.gethostname()


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
        raise ConfigError(f"{name}: expected {KIND_NAMES[o.kind]}, got {text!r}") from None
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

    if v["autopilot_dead_server_after"] <= 0 or v["autopilot_min_quorum"] < 1:
        raise ConfigError(f"{n('autopilot_dead_server_after')} must be positive and "
                          f"{n('autopilot_min_quorum')} at least 1")
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

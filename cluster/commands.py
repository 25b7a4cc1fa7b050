"""Typed Raft commands: one dataclass per FSM operation, and the one msgpack boundary.

Callers build a command (`Establish(...)`), the proposer encodes it (`encode`), every replica
decodes it (`decode`) and the FSM dispatches on its class. The wire form is a msgpack map of
the op name and the fields that are set, so the journal stays readable and compact.

`decode` checks every field's type before any table sees the command: a wrongly typed value
that got stored would break later reads (names that do not sort, IDs msgpack cannot key a
restored map with), so such a command is refused as a whole.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from .state.errors import CommandError

Map = dict[str, Any]  # a record carried whole (ACL policy/token: the ACL table checks it)


@dataclass(frozen=True)
class Command:
    op: ClassVar[str] = ""
    # The ACL table's revision (cluster/state/acl.py `ACL.revision`) the request's ACL decision
    # was made on, when ACLs decided it: the FSM refuses the command (kind "acl_changed") if
    # the ACL table changed since, and the API decides again (etcd's auth revision).
    acl_index: int | None = dataclasses.field(default=None, kw_only=True)
    # True for tables that check every field themselves with their own messages (catalog,
    # config entries): `decode` then passes the fields through unchecked, so every field has
    # a default and the annotations say what the table accepts.
    table_checked: ClassVar[bool] = False


# ---- servers and the cluster identity (cluster/state/servers.py) ----


@dataclass(frozen=True)
class RegisterServer(Command):
    op: ClassVar[str] = "register_server"
    RaftAddr: str
    Node: str
    HTTPAddr: str  # "" when plain HTTP is off
    PeeringAddr: str  # what peer clusters dial (advertise_addr_wan when set)
    Datacenter: str
    HTTPSAddr: str = ""  # absent from entries written before HTTPS existed


@dataclass(frozen=True)
class InitIdentity(Command):
    op: ClassVar[str] = "init_identity"
    TrustDomain: str
    CACert: str
    CAKey: str


@dataclass(frozen=True)
class Barrier(Command):
    op: ClassVar[str] = "barrier"


@dataclass(frozen=True)
class Batch(Command):
    """Commands one server submitted in one pass of its event loop, in one log entry
    (cluster/raft.py): each is applied in order, as if it had its own entry, and its result is
    its caller's. What a log entry costs (queue, pickle, journal record, apply call, callback)
    is paid once for all of them on every server. A batch inside a batch is refused."""

    op: ClassVar[str] = "batch"
    commands: list[bytes]


# ---- peerings (cluster/state/peerings.py) ----


@dataclass(frozen=True)
class GenerateToken(Command):
    op: ClassVar[str] = "generate_token"
    Partition: str
    Name: str
    ID: str
    EstablishmentSecret: str
    Meta: dict[str, str] | None = None
    rid: str | None = None
    expect_index: int | None = None


@dataclass(frozen=True)
class Establish(Command):
    op: ClassVar[str] = "establish"
    Partition: str
    Name: str
    ID: str
    PeerID: str
    PeerServerName: str = ""
    PeerCAPems: list[str] | None = None
    PeerServerAddresses: list[str] | None = None
    ManualServerAddresses: list[str] | None = None
    Remote: dict[str, str] | None = None
    Meta: dict[str, str] | None = None
    StreamSecret: str | None = None
    rid: str | None = None
    expect_index: int | None = None


@dataclass(frozen=True)
class PeeringEvent(Command):
    """Something happened to a live peering; the transition table (cluster/state/transitions.py)
    decides its next state. Optional parts, all validated before anything changes:
    - `expect_secret`: the stream secret the caller authenticated with must still be the
      active (or pending) one, so a stream of a superseded establishment cannot write;
    - `ActiveStreamSecret`: the dialer stores the stream secret the acceptor handed out;
    - `PromoteStreamSecret`: the acceptor promotes its pending secret to active (the first
      Open with it), keeping the active one when it is already the active secret;
    - `Remote`: written with the promotion (or any other change);
    - `PeerServerAddresses`: the acceptor's servers, pushed over the stream (dialer only)."""

    op: ClassVar[str] = "peering_event"
    ID: str
    Event: str
    expect_secret: str | None = None
    ActiveStreamSecret: str | None = None
    PromoteStreamSecret: str | None = None
    Remote: dict[str, str] | None = None
    PeerServerAddresses: list[str] | None = None
    expect_index: int | None = None


@dataclass(frozen=True)
class ExchangeSecret(Command):
    op: ClassVar[str] = "exchange_secret"
    ID: str
    EstablishmentSecret: str
    PendingStreamSecret: str


@dataclass(frozen=True)
class Delete(Command):
    op: ClassVar[str] = "delete"
    Partition: str
    Name: str
    DeletedAt: str
    rid: str | None = None
    expect_index: int | None = None


@dataclass(frozen=True)
class Remove(Command):
    op: ClassVar[str] = "remove"
    ID: str


# ---- ACLs (cluster/state/acl.py; records built by api/acl.py, checked by the table) ----


@dataclass(frozen=True)
class AclInit(Command):
    op: ClassVar[str] = "acl_init"
    Policy: Map | None = None
    Anonymous: Map | None = None
    Management: Map | None = None


@dataclass(frozen=True)
class AclBootstrap(Command):
    op: ClassVar[str] = "acl_bootstrap"
    Token: Map | None = None
    Policy: Map | None = None
    ResetIndex: int = 0


@dataclass(frozen=True)
class AclPolicySet(Command):
    op: ClassVar[str] = "acl_policy_set"
    Policy: Map | None = None
    create: bool = False
    expect_index: int | None = None


@dataclass(frozen=True)
class AclPolicyDelete(Command):
    op: ClassVar[str] = "acl_policy_delete"
    ID: str


@dataclass(frozen=True)
class AclTokenSet(Command):
    op: ClassVar[str] = "acl_token_set"
    Token: Map | None = None
    create: bool = False
    expect_index: int | None = None


@dataclass(frozen=True)
class AclTokenDelete(Command):
    op: ClassVar[str] = "acl_token_delete"
    AccessorID: str


# ---- catalog (cluster/state/catalog.py; fields checked by the table, see its docstring) ----


@dataclass(frozen=True)
class CatalogCommand(Command):
    table_checked: ClassVar[bool] = True


@dataclass(frozen=True)
class CatalogRegister(CatalogCommand):
    op: ClassVar[str] = "catalog_register"
    Node: Map | None = None
    Service: Map | None = None
    Checks: list[Map] | None = None
    SkipNodeUpdate: bool = False


@dataclass(frozen=True)
class CatalogDeregister(CatalogCommand):
    op: ClassVar[str] = "catalog_deregister"
    Node: str | None = None
    ServiceID: str | None = None
    CheckID: str | None = None


@dataclass(frozen=True)
class CatalogImportService(CatalogCommand):
    op: ClassVar[str] = "catalog_import_service"
    Peer: str | None = None
    Service: str | None = None
    Nodes: list[Map] | None = None
    PeeringID: str | None = None  # set: refused unless that peering is live (cluster/fsm.py)


@dataclass(frozen=True)
class CatalogImportDeleteService(CatalogCommand):
    op: ClassVar[str] = "catalog_import_delete_service"
    Peer: str | None = None
    Service: str | None = None


@dataclass(frozen=True)
class CatalogImportPrune(CatalogCommand):
    op: ClassVar[str] = "catalog_import_prune"
    Peer: str | None = None
    Keep: list[str] | None = None
    PeeringID: str | None = None


@dataclass(frozen=True)
class CatalogImportDeletePeer(CatalogCommand):
    op: ClassVar[str] = "catalog_import_delete_peer"
    Peer: str | None = None
    Limit: int | None = None


# ---- config entries (cluster/state/config.py; fields checked by the table) ----


@dataclass(frozen=True)
class ConfigCommand(Command):
    table_checked: ClassVar[bool] = True


@dataclass(frozen=True)
class ConfigSet(ConfigCommand):
    op: ClassVar[str] = "config_set"
    Entry: Map | None = None
    CAS: int | None = None


@dataclass(frozen=True)
class ConfigDelete(ConfigCommand):
    op: ClassVar[str] = "config_delete"
    Kind: str | None = None
    Name: str | None = None
    CAS: int | None = None


# ---- the boundary ----

COMMANDS: dict[str, type[Command]] = {}


def register(cls: type[Command]) -> type[Command]:
    """Make a command class decodable (tables in cluster/state/ declare theirs here)."""
    COMMANDS[cls.op] = cls
    _FIELDS[cls] = [] if cls.table_checked else _field_checks(cls)
    _DEFAULTS[cls] = tuple((f.name, f.default) for f in dataclasses.fields(cls))
    return cls


# Field checks by type. msgpack decodes to exact built-in types, so a scalar is checked by
# identity of its type (an int field refuses a bool); containers are checked item by item.
def _is_str_list(v: Any) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _is_str_map(v: Any) -> bool:
    return type(v) is dict and all(type(k) is str and type(x) is str for k, x in v.items())


def _is_bytes_list(v: Any) -> bool:
    return type(v) is list and all(type(x) is bytes for x in v)


def _is_map(v: Any) -> bool:
    return type(v) is dict


# A plain type: `type(value) is it`; a function: `it(value)` must hold.
_CHECKS: dict[Any, Any] = {str: str, int: int, bool: bool, list[str]: _is_str_list,
                           dict[str, str]: _is_str_map, Map: _is_map,
                           list[bytes]: _is_bytes_list}
_FIELDS: dict[type[Command], list[tuple[str, Any, bool]]] = {}
# (name, default) per field: dataclasses.fields() per command was a visible cost per write.
_DEFAULTS: dict[type[Command], tuple[tuple[str, Any], ...]] = {}


def _field_checks(cls: type[Command]) -> list[tuple[str, Any, bool]]:
    """(name, type check, required) per field, from the class's annotations."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) is typing.Union or (
            args and type(None) in typing.get_args(hint)) else hint
        required = f.default is dataclasses.MISSING
        out.append((f.name, _CHECKS[base], required))
    return out


def encode(cmd: Command | Mapping[str, Any]) -> bytes:
    """A command's wire form: {"op": ..., every field that is set}. A plain map passes
    through as it is (tests and fuzzers send what a damaged or hostile peer might)."""
    if isinstance(cmd, Command):
        body: dict[str, Any] = {"op": cmd.op}
        fields = _DEFAULTS.get(type(cmd))
        if fields is None:  # not registered (tests): the same, from the class
            fields = tuple((f.name, f.default) for f in dataclasses.fields(cmd))
        for name, default in fields:
            value = getattr(cmd, name)
            if value is not None and value != default:
                body[name] = value
        return msgpack.packb(body, use_bin_type=True)
    return msgpack.packb(dict(cmd), use_bin_type=True)


# Journals written before the transition table carry `set_state` {ID, State, expect_states?}:
# read as the event each writer meant (addresses pushed kept the state it expected).
_LEGACY_EVENTS = {"ACTIVE": "stream_open", "FAILING": "stream_failed",
                  "TERMINATED": "terminated_by_peer", "ESTABLISHING": "secret_exchanged"}


def _legacy_set_state(body: dict[str, Any]) -> dict[str, Any]:
    state = body.get("State")
    if body.get("PeerServerAddresses") and body.get("expect_states") == [state]:
        event = "addresses_received"
    else:
        event = _LEGACY_EVENTS.get(state) if isinstance(state, str) else None
    rest = {k: v for k, v in body.items() if k not in ("op", "State", "expect_states")}
    return {**rest, "op": PeeringEvent.op, "Event": event if event else repr(state)}


def decode(raw: bytes) -> Command:
    """Bytes from the log to a typed command; CommandError (changes nothing) when the bytes
    are not a known command with well-typed fields."""
    body = msgpack.unpackb(raw, raw=False)
    if not isinstance(body, dict):
        raise CommandError("command is not a map")
    if body.get("op") == "set_state":
        body = _legacy_set_state(body)
    op = body.get("op")
    cls = COMMANDS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise CommandError(f"unknown command {op!r}")
    if cls.table_checked:  # values as they came (None too): the table checks them
        return _made(cls, {name: body[name] for name, _ in _DEFAULTS[cls] if name in body})
    kwargs = {}
    for name, check, required in _FIELDS[cls]:
        if name not in body:
            if required:
                raise CommandError(f"invalid command: missing {name}")
            continue
        value = body[name]
        if value is None and not required:
            continue
        if not (type(value) is check if type(check) is type else check(value)):
            raise CommandError(f"invalid command: {name} has the wrong type")
        kwargs[name] = value
    return _made(cls, kwargs)


def _made(cls: type[Command], fields: dict[str, Any]) -> Command:
    """`cls(**fields)` for fields already checked: a frozen dataclass's __init__ sets each
    field through object.__setattr__ (4x the cost); fields left out read the class's
    defaults, as after __init__. Commands have no __post_init__ and no slots."""
    cmd = object.__new__(cls)
    cmd.__dict__.update(fields)
    return cmd

for _cls in (RegisterServer, InitIdentity, Barrier, Batch, GenerateToken, Establish, PeeringEvent,
             ExchangeSecret, Delete, Remove, AclInit, AclBootstrap, AclPolicySet,
             AclPolicyDelete, AclTokenSet, AclTokenDelete, CatalogRegister, CatalogDeregister,
             CatalogImportService, CatalogImportDeleteService, CatalogImportPrune,
             CatalogImportDeletePeer, ConfigSet, ConfigDelete):
    register(_cls)

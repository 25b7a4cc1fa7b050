"""The replicated peering state machine.

Pure and deterministic: every replica applies the same msgpack commands in the same order and
ends with the same tables and indexes. Nothing here reads the clock, draws randomness, or does
I/O; IDs, secrets and timestamps are chosen before a command is submitted and travel inside it.

`apply` never raises (an exception inside a PySyncObj replicated method wedges every node):
a malformed or refused command becomes an error result and changes nothing.

Records are never mutated in place - an update replaces the dict - so a reader holding a
record keeps a consistent view while the tick thread applies newer commands.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from .state import catalog as catalog_table
from .state import config as config_table
from .state.catalog import Catalog
from .state.config import ConfigEntries
from .state.errors import CommandError

# Stored states. ACTIVE and FAILING are written by the leader's reconciler (peering issue).
PENDING = "PENDING"
ESTABLISHING = "ESTABLISHING"
ACTIVE = "ACTIVE"
FAILING = "FAILING"
DELETING = "DELETING"
TERMINATED = "TERMINATED"

Key = tuple[str, str]  # (partition, lowercased name)
Record = dict[str, Any]


__all__ = ["CommandError", "FSM", "Record", "encode", "should_dial"]

# Commands applied by a table module in cluster/state/ (they check their own field types).
_TABLE_OPS = catalog_table.OPS | config_table.OPS


def should_dial(rec: Record) -> bool:
    """Consul's Peering.ShouldDial: the dialer side holds the acceptor's addresses."""
    return bool(rec.get("PeerServerAddresses") or rec.get("ManualServerAddresses"))


def _name_order(rec: Record) -> tuple[str, str]:
    return rec["Name"], rec["Partition"]


def encode(cmd: dict[str, Any]) -> bytes:
    return msgpack.packb(cmd, use_bin_type=True)


# Field types, checked on every command before its handler runs: a wrongly typed value that got
# stored would break later reads (names that do not sort, IDs msgpack cannot key a restored
# map with), so it is refused as a whole instead.
_STR_FIELDS = frozenset({
    "Partition", "Name", "ID", "PeerID", "PeerServerName", "State", "DeletedAt",
    "EstablishmentSecret", "PendingStreamSecret", "expect_secret",
    "RaftAddr", "Node", "HTTPAddr", "PeeringAddr", "Datacenter", "TrustDomain", "CACert", "CAKey",
    "HTTPSAddr",
})
_OPT_STR_FIELDS = frozenset({
    "rid", "StreamSecret", "ActiveStreamSecret", "PromoteStreamSecret",
})  # or None
_STR_LIST_FIELDS = frozenset({
    "PeerCAPems", "PeerServerAddresses", "ManualServerAddresses", "expect_states",
})  # or None
_STR_MAP_FIELDS = frozenset({"Meta", "Remote"})  # or None


def _check_types(cmd: dict[str, Any]) -> None:
    for key, value in cmd.items():
        if key in _STR_FIELDS:
            ok = isinstance(value, str)
        elif key in _OPT_STR_FIELDS:
            ok = value is None or isinstance(value, str)
        elif key in _STR_LIST_FIELDS:
            ok = value is None or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)
            )
        elif key in _STR_MAP_FIELDS:
            ok = value is None or (
                isinstance(value, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
            )
        elif key == "expect_index":
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            continue
        if not ok:
            raise CommandError(f"invalid command: {key} has the wrong type")


# ACL records as commands carry them (api/acl.py builds them; cluster/acl.py has the rules).
GLOBAL_MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
ANONYMOUS_TOKEN_ID = "00000000-0000-0000-0000-000000000002"


def _acl_strings(value: Any, what: str, fields: tuple[str, ...]) -> Record:
    if not isinstance(value, dict):
        raise CommandError(f"invalid command: {what} is not a map")
    rec: Record = {}
    for key in fields:
        item = value.get(key, "")
        if not isinstance(item, str):
            raise CommandError(f"invalid command: {what}.{key} has the wrong type")
        rec[key] = item
    return rec


def _acl_policy(value: Any) -> Record:
    rec = _acl_strings(value, "Policy", ("ID", "Name", "Description", "Rules", "Hash"))
    dcs = value.get("Datacenters") or []
    if not isinstance(dcs, list) or not all(isinstance(d, str) for d in dcs):
        raise CommandError("invalid command: Policy.Datacenters has the wrong type")
    if not rec["ID"] or not rec["Name"]:
        raise CommandError("invalid command: a policy needs an ID and a Name")
    rec["Datacenters"] = list(dcs)
    return rec


def _acl_token(value: Any) -> Record:
    rec = _acl_strings(
        value, "Token", ("AccessorID", "SecretID", "Description", "CreateTime", "Hash")
    )
    local, links = value.get("Local", False), value.get("Policies") or []
    if not isinstance(local, bool):
        raise CommandError("invalid command: Token.Local has the wrong type")
    if not isinstance(links, list) or not all(
        isinstance(link, dict) and isinstance(link.get("ID"), str) for link in links
    ):
        raise CommandError("invalid command: Token.Policies has the wrong type")
    if not rec["AccessorID"] or not rec["SecretID"]:
        raise CommandError("invalid command: a token needs an AccessorID and a SecretID")
    ids = list(dict.fromkeys(link["ID"] for link in links))  # deduplicated, order kept
    rec.update(Local=local, Policies=[{"ID": i} for i in ids])
    return rec


class FSM:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []
        self.catalog = Catalog(self._lock)  # cluster/state/catalog.py
        self.config_entries = ConfigEntries(self._lock)  # cluster/state/config.py
        self._reset()

    def _reset(self) -> None:
        # partition (None = all) -> (index it was built at, records sorted by name)
        self._sorted: dict[str | None, tuple[int, list[Record]]] = {}
        self.index = 0  # raised by every state-changing command
        self.peerings_index = 0  # last index that touched the peerings table
        self.peerings: dict[Key, Record] = {}
        self.peering_ids: dict[str, Key] = {}
        # peering ID -> {"establishment": s, "pending": s, "active": s}
        self.secrets: dict[str, dict[str, str]] = {}
        # raft address "host:port" -> {"Node", "HTTPAddr", "HTTPSAddr", "PeeringAddr",
        # "Datacenter"}; PeeringAddr is the address peer clusters dial (advertise_addr_wan)
        self.servers: dict[str, dict[str, str]] = {}
        # {"TrustDomain", "CACert", "CAKey"} once the first leader initialised the cluster
        self.identity: dict[str, str] | None = None
        # ACLs (cluster/acl.py): policies by ID, tokens by AccessorID, and their indexes.
        self.acl_policies: dict[str, Record] = {}
        self.acl_policy_names: dict[str, str] = {}  # lowercased Name -> ID
        self.acl_tokens: dict[str, Record] = {}  # AccessorID -> token (SecretID included)
        self.acl_secrets: dict[str, str] = {}  # SecretID -> AccessorID
        self.acl_bootstrap_index = 0  # index of the (last) bootstrap; 0 = never bootstrapped
        self.acl_policies_index = 0
        self.acl_tokens_index = 0
        self.catalog.reset()
        self.config_entries.reset()

    # ---- listeners (called in the applying thread; must not block) ----

    def add_listener(self, fn: Callable[[int], None]) -> None:
        self._listeners.append(fn)

    # ---- the one replicated entry point ----

    def apply(self, raw: bytes) -> dict[str, Any]:
        try:
            cmd = msgpack.unpackb(raw, raw=False)
            if not isinstance(cmd, dict):
                raise CommandError("command is not a map")
            handler = self._HANDLERS.get(cmd.get("op"))
            if handler is None:
                raise CommandError(f"unknown command {cmd.get('op')!r}")
            if cmd["op"] not in _TABLE_OPS:
                _check_types(cmd)
            with self._lock:
                result = handler(self, cmd)
        except CommandError as e:
            return {"error": str(e), "kind": e.kind}
        except Exception as e:  # noqa: BLE001 - apply must be total
            return {"error": f"invalid command: {type(e).__name__}: {e}", "kind": "invalid"}
        if result.get("changed"):
            for fn in self._listeners:
                try:
                    fn(self.index)
                except Exception:  # noqa: BLE001 - a listener must never wedge apply
                    pass
        return result

    def _bump(self, peerings: bool = False) -> int:
        self.index += 1
        if peerings:
            self.peerings_index = self.index
        return self.index

    # ---- command handlers: validate everything first, then mutate ----

    def _cas(self, cmd: dict[str, Any], existing: Record | None) -> None:
        """Reject a command built against a different version of the record.

        A command that timed out may still be applied later; the precondition makes such a late
        apply fail instead of overwriting what happened since.
        """
        if "expect_index" not in cmd:
            return
        current = existing["ModifyIndex"] if existing else 0
        if cmd["expect_index"] != current:
            raise CommandError("peering changed since the request was prepared", "conflict")

    def _get(self, partition: str, name: str) -> Record | None:
        return self.peerings.get((partition, name.lower()))

    def _put(self, rec: Record) -> None:
        key = (rec["Partition"], rec["Name"].lower())
        self.peerings[key] = rec
        self.peering_ids[rec["ID"]] = key

    def _op_register_server(self, cmd: dict[str, Any]) -> dict[str, Any]:
        entry = {k: str(cmd[k]) for k in ("Node", "HTTPAddr", "PeeringAddr", "Datacenter")}
        entry["HTTPSAddr"] = str(cmd.get("HTTPSAddr", ""))  # absent before HTTPS existed
        addr = str(cmd["RaftAddr"])
        if self.servers.get(addr) == entry:
            return {"index": self.index}
        self.servers[addr] = entry
        return {"index": self._bump(), "changed": True}

    def _op_init_identity(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if self.identity is not None:
            return {"index": self.index}  # the first initialisation wins
        self.identity = {k: str(cmd[k]) for k in ("TrustDomain", "CACert", "CAKey")}
        return {"index": self._bump(), "changed": True}

    def _op_generate_token(self, cmd: dict[str, Any]) -> dict[str, Any]:
        partition, name = cmd["Partition"], cmd["Name"]
        establishment_secret = cmd["EstablishmentSecret"]
        existing = self._get(partition, name)
        self._cas(cmd, existing)
        if existing is not None:
            if should_dial(existing):
                raise CommandError(
                    f'cannot create peering with name: "{name}"; '
                    "there is already an established peering",
                    "conflict",
                )
            if existing["State"] == DELETING:
                raise CommandError(
                    "failed to write peering: cannot write to peering that is marked for deletion",
                    "conflict",
                )
            rec = dict(existing)
            if rec["State"] == TERMINATED:  # the dialer left; a new token invites it back
                rec["State"] = PENDING
        else:
            if cmd["ID"] in self.peering_ids:
                raise CommandError("peering ID already in use, retry the operation", "conflict")
            rec = {
                "ID": cmd["ID"],
                "Name": name,
                "Partition": partition,
                "Meta": dict(cmd.get("Meta") or {}),
                "State": PENDING,
                "Remote": {"Partition": "", "Datacenter": ""},
            }
        index = self._bump(peerings=True)
        rec.setdefault("CreateIndex", index)
        rec["ModifyIndex"] = index
        rec["_rid"] = cmd.get("rid", "")
        self._put(rec)
        # A new establishment secret supersedes any unused one; stream secrets are kept so an
        # active stream survives regeneration.
        secrets = dict(self.secrets.get(rec["ID"], {}))
        secrets["establishment"] = establishment_secret
        self.secrets[rec["ID"]] = secrets
        return {"index": index, "changed": True, "ID": rec["ID"]}

    def _op_establish(self, cmd: dict[str, Any]) -> dict[str, Any]:
        partition, name = cmd["Partition"], cmd["Name"]
        existing = self._get(partition, name)
        self._cas(cmd, existing)
        if existing is not None:
            if not should_dial(existing) and existing["State"] != TERMINATED:
                raise CommandError(
                    f'cannot create peering with name: "{name}"; '
                    "there is an existing peering expecting to be dialed",
                    "conflict",
                )
            if existing["State"] == DELETING:
                raise CommandError(
                    "failed to write peering: cannot write to peering that is marked for deletion",
                    "conflict",
                )
            rec = dict(existing)
            rec.pop("DeletedAt", None)
        else:
            if cmd["ID"] in self.peering_ids:
                raise CommandError("peering ID already in use, retry the operation", "conflict")
            rec = {"ID": cmd["ID"], "Name": name, "Partition": partition, "State": PENDING}
        rec.update(
            Meta=dict(cmd.get("Meta") or {}),
            PeerID=cmd["PeerID"],
            PeerCAPems=list(cmd.get("PeerCAPems") or []),
            PeerServerName=cmd.get("PeerServerName", ""),
            PeerServerAddresses=list(cmd.get("PeerServerAddresses") or []),
            ManualServerAddresses=list(cmd.get("ManualServerAddresses") or []),
            Remote=dict(cmd.get("Remote") or {"Partition": "", "Datacenter": ""}),
        )
        if rec["State"] == TERMINATED:
            rec["State"] = PENDING
        index = self._bump(peerings=True)
        rec.setdefault("CreateIndex", index)
        rec["ModifyIndex"] = index
        rec["_rid"] = cmd.get("rid", "")
        self._put(rec)
        if cmd.get("StreamSecret"):
            self.secrets[rec["ID"]] = {"active": cmd["StreamSecret"]}
        return {"index": index, "changed": True, "ID": rec["ID"]}

    def _op_set_state(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """The one place a live peering changes state (establish, reconciler, termination).

        Optional parts, all validated before anything changes:
        - `expect_states`: the current state must be one of these (a reconciler acting on an
          older view - e.g. a stream that ended before a TERMINATED arrived - is refused);
        - `expect_secret`: the stream secret the caller authenticated with must still be the
          active (or pending) one, so a stream of a superseded establishment cannot write;
        - `ActiveStreamSecret`: the dialer stores the stream secret the acceptor handed out;
        - `PromoteStreamSecret`: the acceptor promotes its pending secret to active (the
          first Open with it), keeping the active one when it is already the active secret;
        - `Remote`: written with the promotion (or any other change);
        - `PeerServerAddresses`: the acceptor's servers, pushed over the stream (dialer only;
          ManualServerAddresses are never touched).
        A command that would change nothing changes nothing (no index bump).
        """
        existing = self.peerings.get(self.peering_ids.get(cmd["ID"], ("", "")))
        if existing is None:
            raise CommandError(f"unknown peering ID {cmd['ID']}", "not_found")
        self._cas(cmd, existing)
        state = cmd["State"]
        if state not in (PENDING, ESTABLISHING, ACTIVE, FAILING, TERMINATED):
            raise CommandError(f"invalid state {state!r}")
        if existing["State"] == DELETING:
            raise CommandError("cannot write to peering that is marked for deletion", "conflict")
        expect = cmd.get("expect_states")
        if expect is not None and existing["State"] not in expect:
            raise CommandError(f"peering is {existing['State']}", "conflict")
        secrets = self.secrets.get(existing["ID"], {})
        if "expect_secret" in cmd and cmd["expect_secret"] not in (
            secrets.get("active"), secrets.get("pending")
        ):
            raise CommandError("invalid peering stream secret", "permission")
        new_secrets: dict[str, str] | None = None
        if cmd.get("ActiveStreamSecret"):
            if not should_dial(existing):
                raise CommandError("only a dialing peering stores an active stream secret")
            new_secrets = {"active": str(cmd["ActiveStreamSecret"])}
        if cmd.get("PromoteStreamSecret"):
            if should_dial(existing):
                raise CommandError("only an accepting peering promotes a stream secret")
            promote = cmd["PromoteStreamSecret"]
            if promote == secrets.get("pending"):
                new_secrets = {k: v for k, v in secrets.items() if k != "pending"}
                new_secrets["active"] = promote
            elif promote != secrets.get("active"):
                raise CommandError("invalid peering stream secret", "permission")
        rec = dict(existing, State=state)
        if cmd.get("Remote"):
            rec["Remote"] = {"Partition": str(cmd["Remote"].get("Partition") or ""),
                             "Datacenter": str(cmd["Remote"].get("Datacenter") or "")}
        if cmd.get("PeerServerAddresses") and should_dial(existing):
            rec["PeerServerAddresses"] = [str(a) for a in cmd["PeerServerAddresses"]]
        if state == TERMINATED:
            new_secrets = {}
        if rec == existing and (new_secrets is None or new_secrets == secrets):
            return {"index": self.index}
        index = self._bump(peerings=rec != existing)
        if rec != existing:
            rec["ModifyIndex"] = index
            self._put(rec)
        if new_secrets is not None:
            if new_secrets:
                self.secrets[rec["ID"]] = new_secrets
            else:
                self.secrets.pop(rec["ID"], None)
        return {"index": index, "changed": True}

    def _op_exchange_secret(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """The acceptor trades a token's establishment secret for a pending stream secret.

        Validated here, in log order, so of two concurrent exchanges of one token exactly one
        wins: the establishment secret is consumed (single use). An unused pending secret is
        replaced; the active one is kept, so an established stream survives a re-establish
        until the new secret is used.
        """
        existing = self.peerings.get(self.peering_ids.get(cmd["ID"], ("", "")))
        secrets = self.secrets.get(cmd["ID"], {}) if existing is not None else {}
        if existing is None or should_dial(existing) or existing["State"] in (
            DELETING, TERMINATED
        ):
            raise CommandError("invalid peering establishment secret", "permission")
        stored = secrets.get("establishment")
        if not stored:
            raise CommandError(
                "invalid establishment secret: peering was already established", "permission"
            )
        given = str(cmd["EstablishmentSecret"])
        if not hmac.compare_digest(stored.encode(), given.encode()):
            raise CommandError("invalid establishment secret", "permission")
        new_secrets = {k: v for k, v in secrets.items() if k == "active"}
        new_secrets["pending"] = str(cmd["PendingStreamSecret"])
        self.secrets[existing["ID"]] = new_secrets
        return {"index": self._bump(), "changed": True}

    def _op_delete(self, cmd: dict[str, Any]) -> dict[str, Any]:
        existing = self._get(cmd["Partition"], cmd["Name"])
        self._cas(cmd, existing)
        deleted_at = cmd["DeletedAt"]
        if existing is None or existing["State"] == DELETING:
            return {"index": self.index}  # deleting nothing, or twice, is a no-op
        index = self._bump(peerings=True)
        # Consul keeps only the identity and the addresses (so the dialing mode cannot flip).
        rec = {
            k: existing[k]
            for k in ("ID", "Name", "Partition", "PeerServerAddresses", "ManualServerAddresses",
                      "CreateIndex")
            if k in existing
        }
        rec.update(State=DELETING, DeletedAt=deleted_at, ModifyIndex=index,
                   Remote={"Partition": "", "Datacenter": ""}, _rid=cmd.get("rid", ""))
        self._put(rec)
        self.secrets.pop(rec["ID"], None)
        return {"index": index, "changed": True}

    def _op_remove(self, cmd: dict[str, Any]) -> dict[str, Any]:
        key = self.peering_ids.get(cmd["ID"])
        existing = self.peerings.get(key) if key else None
        if existing is None:
            return {"index": self.index}
        if existing["State"] != DELETING:
            raise CommandError("cannot delete a peering without first marking for deletion")
        index = self._bump(peerings=True)
        del self.peerings[key]
        del self.peering_ids[cmd["ID"]]
        self.secrets.pop(cmd["ID"], None)
        return {"index": index, "changed": True}

    def _op_barrier(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {"index": self.index}

    def _op_table(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Catalog and config-entry commands: the table gets the index it will have if it
        changes anything (cluster/state/)."""
        table = self.catalog if cmd["op"] in catalog_table.OPS else self.config_entries
        result = table.apply(cmd, self.index + 1)
        if result.pop("changed"):
            result.update(index=self._bump(), changed=True)
        else:
            result["index"] = self.index
        return result

    # ---- ACL commands (records built and validated by api/acl.py; rules are not parsed here) ----

    def _acl_cas(self, cmd: dict[str, Any], existing: Record | None) -> None:
        if "expect_index" in cmd and cmd["expect_index"] != (
            existing["ModifyIndex"] if existing else 0
        ):
            raise CommandError("ACL record changed since the request was prepared", "conflict")

    def _acl_ids_free(self, tok: Record) -> bool:
        return tok["AccessorID"] != tok["SecretID"] and not any(
            i in self.acl_tokens or i in self.acl_secrets
            for i in (tok["AccessorID"], tok["SecretID"])
        )

    def _acl_check_token_ids(self, tok: Record) -> None:
        """A new token's AccessorID and SecretID are used by no token, as either ID."""
        accessor, secret = tok["AccessorID"], tok["SecretID"]
        if accessor in self.acl_tokens or accessor in self.acl_secrets:
            raise CommandError("Invalid Token: AccessorID is already in use", "conflict")
        if secret in self.acl_secrets or secret in self.acl_tokens or secret == accessor:
            raise CommandError("Invalid Token: SecretID is already in use", "conflict")

    def _acl_check_links(self, tok: Record, extra: Record | None = None) -> None:
        for link in tok["Policies"]:
            if link["ID"] not in self.acl_policies and (extra is None or extra["ID"] != link["ID"]):
                raise CommandError(f'No such ACL policy with ID "{link["ID"]}"')

    def _acl_put_policy(self, rec: Record, index: int) -> None:
        existing = self.acl_policies.get(rec["ID"])
        rec = dict(rec, CreateIndex=existing["CreateIndex"] if existing else index,
                   ModifyIndex=index)
        if existing is not None:
            self.acl_policy_names.pop(existing["Name"].lower(), None)
        self.acl_policies[rec["ID"]] = rec
        self.acl_policy_names[rec["Name"].lower()] = rec["ID"]
        self.acl_policies_index = index

    def _acl_put_token(self, tok: Record, index: int) -> None:
        existing = self.acl_tokens.get(tok["AccessorID"])
        tok = dict(tok, ModifyIndex=index)
        tok["CreateIndex"] = existing["CreateIndex"] if existing else index
        if existing is not None:
            tok["CreateTime"] = existing["CreateTime"]
            self.acl_secrets.pop(existing["SecretID"], None)
        self.acl_tokens[tok["AccessorID"]] = tok
        self.acl_secrets[tok["SecretID"]] = tok["AccessorID"]
        self.acl_tokens_index = index

    def _op_acl_init(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """The leader's ACL initialisation: the built-in global-management policy, the anonymous
        token and the initial management token (from the agent's configuration), each only
        when missing. Creating the initial management token uses up the bootstrap, as in
        Consul."""
        policy = _acl_policy(cmd.get("Policy"))
        anonymous = _acl_token(cmd.get("Anonymous"))
        management = _acl_token(cmd["Management"]) if cmd.get("Management") else None
        add_policy = (policy["ID"] not in self.acl_policies
                      and policy["Name"].lower() not in self.acl_policy_names)
        add_anonymous = self._acl_ids_free(anonymous)
        add_management = management is not None and self._acl_ids_free(management)
        if add_anonymous and add_management:
            assert management is not None
            add_management = not {management["AccessorID"], management["SecretID"]} & {
                anonymous["AccessorID"], anonymous["SecretID"]}
        if not (add_policy or add_anonymous or add_management):
            return {"index": self.index}
        index = self._bump()
        if add_policy:
            self._acl_put_policy(policy, index)
        if add_anonymous:
            self._acl_put_token(anonymous, index)
        if add_management:
            assert management is not None
            self._acl_put_token(management, index)
            if not self.acl_bootstrap_index:
                self.acl_bootstrap_index = index
        return {"index": index, "changed": True}

    def _op_acl_bootstrap(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Consul's ACLBootstrap: allowed once (again only with the current reset index), so of
        any number of racing bootstrap calls exactly one is applied."""
        tok = _acl_token(cmd.get("Token"))
        policy = _acl_policy(cmd["Policy"]) if cmd.get("Policy") else None
        reset = cmd.get("ResetIndex", 0)
        if not isinstance(reset, int) or isinstance(reset, bool):
            raise CommandError("invalid command: ResetIndex has the wrong type")
        if self.acl_bootstrap_index:
            if not reset:
                raise CommandError(
                    f"ACL bootstrap no longer allowed (reset index: {self.acl_bootstrap_index})",
                    "bootstrap",
                )
            if reset != self.acl_bootstrap_index:
                raise CommandError(
                    f"Invalid bootstrap reset index (specified {reset}, "
                    f"reset index: {self.acl_bootstrap_index})",
                    "bootstrap",
                )
        self._acl_check_token_ids(tok)
        add_policy = policy is not None and policy["ID"] not in self.acl_policies
        self._acl_check_links(tok, policy if add_policy else None)
        index = self._bump()
        if add_policy:
            assert policy is not None
            self._acl_put_policy(policy, index)
        self._acl_put_token(tok, index)
        self.acl_bootstrap_index = index
        return {"index": index, "changed": True, "AccessorID": tok["AccessorID"]}

    def _op_acl_policy_set(self, cmd: dict[str, Any]) -> dict[str, Any]:
        rec = _acl_policy(cmd.get("Policy"))
        existing = self.acl_policies.get(rec["ID"])
        owner = self.acl_policy_names.get(rec["Name"].lower())
        if cmd.get("create"):
            if existing is not None:
                raise CommandError("Invalid Policy: ID is already in use", "conflict")
            if owner is not None:
                raise CommandError(
                    f'Invalid Policy: A Policy with Name "{rec["Name"]}" already exists',
                    "conflict",
                )
        else:
            if existing is None:
                raise CommandError(f"cannot find policy {rec['ID']}", "not_found")
            self._acl_cas(cmd, existing)
            if owner is not None and owner != rec["ID"]:
                raise CommandError(
                    f'Invalid Policy: A policy with name "{rec["Name"]}" already exists',
                    "conflict",
                )
            if rec["ID"] == GLOBAL_MANAGEMENT_POLICY_ID:
                if rec["Datacenters"]:
                    raise CommandError("Changing the Datacenters of the builtin "
                                       "global-management policy is not permitted")
                if rec["Rules"] != existing["Rules"]:
                    raise CommandError("Changing the Rules for the builtin global-management "
                                       "policy is not permitted")
        index = self._bump()
        self._acl_put_policy(rec, index)
        return {"index": index, "changed": True, "ID": rec["ID"]}

    def _op_acl_policy_delete(self, cmd: dict[str, Any]) -> dict[str, Any]:
        existing = self.acl_policies.get(cmd["ID"])
        if existing is None:
            return {"index": self.index}
        if existing["ID"] == GLOBAL_MANAGEMENT_POLICY_ID:
            raise CommandError(
                "Delete operation not permitted on the builtin global-management policy"
            )
        index = self._bump()
        del self.acl_policies[existing["ID"]]
        self.acl_policy_names.pop(existing["Name"].lower(), None)
        self.acl_policies_index = index
        return {"index": index, "changed": True}

    def _op_acl_token_set(self, cmd: dict[str, Any]) -> dict[str, Any]:
        tok = _acl_token(cmd.get("Token"))
        existing = self.acl_tokens.get(tok["AccessorID"])
        if cmd.get("create"):
            self._acl_check_token_ids(tok)
        else:
            if existing is None:
                raise CommandError(f'Cannot find token "{tok["AccessorID"]}"', "not_found")
            self._acl_cas(cmd, existing)
            if tok["SecretID"] != existing["SecretID"]:
                raise CommandError("Changing a tokens SecretID is not permitted")
            if tok["Local"] != existing["Local"]:
                raise CommandError(f"cannot toggle local mode of {tok['AccessorID']}")
        self._acl_check_links(tok)
        index = self._bump()
        self._acl_put_token(tok, index)
        return {"index": index, "changed": True, "AccessorID": tok["AccessorID"]}

    def _op_acl_token_delete(self, cmd: dict[str, Any]) -> dict[str, Any]:
        accessor = cmd.get("AccessorID")
        if not isinstance(accessor, str):
            raise CommandError("invalid command: AccessorID has the wrong type")
        if accessor == ANONYMOUS_TOKEN_ID:
            raise CommandError("Delete operation not permitted on the anonymous token")
        existing = self.acl_tokens.get(accessor)
        if existing is None:
            return {"index": self.index}
        index = self._bump()
        del self.acl_tokens[accessor]
        self.acl_secrets.pop(existing["SecretID"], None)
        self.acl_tokens_index = index
        return {"index": index, "changed": True}

    _HANDLERS: dict[str, Callable[[FSM, dict[str, Any]], dict[str, Any]]] = {
        "register_server": _op_register_server,
        "init_identity": _op_init_identity,
        "generate_token": _op_generate_token,
        "establish": _op_establish,
        "set_state": _op_set_state,
        "exchange_secret": _op_exchange_secret,
        "delete": _op_delete,
        "remove": _op_remove,
        "barrier": _op_barrier,
        "acl_init": _op_acl_init,
        "acl_bootstrap": _op_acl_bootstrap,
        "acl_policy_set": _op_acl_policy_set,
        "acl_policy_delete": _op_acl_policy_delete,
        "acl_token_set": _op_acl_token_set,
        "acl_token_delete": _op_acl_token_delete,
        **dict.fromkeys(_TABLE_OPS, _op_table),
    }

    # ---- reads (any thread) ----

    def get(self, partition: str, name: str) -> Record | None:
        with self._lock:
            return self._get(partition, name)

    def by_id(self, peering_id: str) -> Record | None:
        with self._lock:
            key = self.peering_ids.get(peering_id)
            return self.peerings.get(key) if key else None

    def list(self, partition: str | None) -> tuple[list[Record], int]:
        """Records of a partition (all partitions for None) sorted by name, and the table index.

        The sorted list is cached until the next state change: the list endpoint and the leader
        routines call this far more often than peerings change."""
        with self._lock:
            cached = self._sorted.get(partition)
            if cached is None or cached[0] != self.index:
                recs = [r for (p, _), r in self.peerings.items()
                        if partition is None or p == partition]
                recs.sort(key=_name_order)
                cached = self._sorted[partition] = (self.index, recs)
            return list(cached[1]), self.peerings_index

    def secrets_for(self, peering_id: str) -> dict[str, str]:
        with self._lock:
            return dict(self.secrets.get(peering_id, {}))

    def servers_view(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return dict(self.servers)

    def acl_policy(self, policy_id: str) -> Record | None:
        with self._lock:
            return self.acl_policies.get(policy_id)

    def acl_policy_by_name(self, name: str) -> Record | None:
        with self._lock:
            policy_id = self.acl_policy_names.get(name.lower())
            return self.acl_policies.get(policy_id) if policy_id else None

    def acl_policy_list(self) -> tuple[list[Record], int]:
        """Policies sorted by ID (Consul's memdb order) and the policies table index."""
        with self._lock:
            recs, index = list(self.acl_policies.values()), self.acl_policies_index
        return sorted(recs, key=lambda r: r["ID"]), index

    def acl_token(self, accessor: str) -> Record | None:
        with self._lock:
            return self.acl_tokens.get(accessor)

    def acl_token_by_secret(self, secret: str) -> Record | None:
        with self._lock:
            accessor = self.acl_secrets.get(secret)
            return self.acl_tokens.get(accessor) if accessor else None

    def acl_token_list(self) -> tuple[list[Record], int]:
        """Tokens sorted by AccessorID and the tokens table index."""
        with self._lock:
            recs, index = list(self.acl_tokens.values()), self.acl_tokens_index
        return sorted(recs, key=lambda r: r["AccessorID"]), index

    # ---- snapshots ----

    def snapshot(self) -> bytes:
        with self._lock:
            return msgpack.packb(
                {
                    "index": self.index,
                    "peerings_index": self.peerings_index,
                    "peerings": list(self.peerings.values()),
                    "secrets": self.secrets,
                    "servers": self.servers,
                    "identity": self.identity,
                    "acl_policies": list(self.acl_policies.values()),
                    "acl_tokens": list(self.acl_tokens.values()),
                    "acl_bootstrap_index": self.acl_bootstrap_index,
                    "acl_policies_index": self.acl_policies_index,
                    "acl_tokens_index": self.acl_tokens_index,
                    "catalog": self.catalog.dump(),
                    "config_entries": self.config_entries.dump(),
                },
                use_bin_type=True,
            )

    def restore(self, blob: bytes) -> None:
        data = msgpack.unpackb(blob, raw=False)
        with self._lock:
            self._reset()
            self.index = data["index"]
            self.peerings_index = data["peerings_index"]
            for rec in data["peerings"]:
                self._put(rec)
            self.secrets = data["secrets"]
            self.servers = data["servers"]
            self.identity = data["identity"]
            # Snapshots written before ACLs existed have none of these keys: empty tables.
            for policy in data.get("acl_policies") or []:
                self.acl_policies[policy["ID"]] = policy
                self.acl_policy_names[policy["Name"].lower()] = policy["ID"]
            for tok in data.get("acl_tokens") or []:
                self.acl_tokens[tok["AccessorID"]] = tok
                self.acl_secrets[tok["SecretID"]] = tok["AccessorID"]
            self.acl_bootstrap_index = data.get("acl_bootstrap_index", 0)
            self.acl_policies_index = data.get("acl_policies_index", 0)
            self.acl_tokens_index = data.get("acl_tokens_index", 0)
            self.catalog.load(data.get("catalog"))  # absent in older snapshots: empty
            self.config_entries.load(data.get("config_entries"))
        for fn in self._listeners:
            try:
                fn(self.index)
            except Exception:  # noqa: BLE001 - as in apply
                pass

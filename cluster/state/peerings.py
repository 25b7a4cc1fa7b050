"""The peerings table: peering records, their secrets, and indexes by state and by role.

Every change of a peering's State goes through `transitions.next_state`. Records are never
mutated in place - an update replaces the dict - so a reader holding a record keeps a
consistent view while the tick thread applies newer commands.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from ..commands import (
    CommandError,
    Delete,
    Establish,
    ExchangeSecret,
    GenerateToken,
    PeeringEvent,
    Remove,
)
from . import transitions as t
from .base import Record, Result, Table
from .ordered import Grouped

Key = tuple[str, str]  # (partition, lowercased name)
NO_REMOTE = {"Partition": "", "Datacenter": ""}
# Events a peering_event command may carry; the others belong to their own commands.
STREAM_EVENTS = frozenset({
    t.SECRET_EXCHANGED, t.STREAM_OPEN, t.STREAM_FAILED, t.HEARTBEAT_TIMEOUT,
    t.TERMINATED_BY_PEER, t.ADDRESSES_RECEIVED,
})


def should_dial(rec: Record) -> bool:
    """Consul's Peering.ShouldDial: the dialer side holds the acceptor's addresses."""
    return bool(rec.get("PeerServerAddresses") or rec.get("ManualServerAddresses"))


def _name_order(rec: Record) -> tuple[str, str]:
    return rec["Name"], rec["Partition"]


class Peerings(Table):
    name = "peerings"

    def reset(self) -> None:
        self.index = 0  # last index that touched the peerings table
        self.records: dict[Key, Record] = {}
        self.ids: dict[str, Key] = {}
        # peering ID -> {"establishment": s, "pending": s, "active": s}
        self.secrets: dict[str, dict[str, str]] = {}
        # Secondary indexes, kept with every write: IDs by State, IDs of dialing peerings.
        self.by_state: dict[str, set[str]] = {s: set() for s in t.STATES if s != t.ABSENT}
        self.dialers: set[str] = set()
        self.ordered = Grouped(lambda r: r["Partition"], _name_order)

    def handlers(self) -> dict[type, Callable[[Any], Result]]:
        return {
            GenerateToken: self._generate_token,
            Establish: self._establish,
            PeeringEvent: self._event,
            ExchangeSecret: self._exchange_secret,
            Delete: self._delete,
            Remove: self._remove,
        }

    # ---- storage ----

    def get(self, partition: str, name: str) -> Record | None:
        return self.records.get((partition, name.lower()))

    def by_id(self, peering_id: str) -> Record | None:
        key = self.ids.get(peering_id)
        return self.records.get(key) if key else None

    def _put(self, rec: Record) -> None:
        key = (rec["Partition"], rec["Name"].lower())
        old = self.records.get(key)
        if old is not None:
            self.by_state[old["State"]].discard(old["ID"])
        self.records[key] = rec
        self.ids[rec["ID"]] = key
        self.by_state[rec["State"]].add(rec["ID"])
        if should_dial(rec):
            self.dialers.add(rec["ID"])
        else:
            self.dialers.discard(rec["ID"])
        self.ordered.put(old, rec)
        self.touch(rec["ID"])

    def _drop(self, rec: Record) -> None:
        del self.records[(rec["Partition"], rec["Name"].lower())]
        del self.ids[rec["ID"]]
        self.by_state[rec["State"]].discard(rec["ID"])
        self.dialers.discard(rec["ID"])
        self.secrets.pop(rec["ID"], None)
        self.ordered.drop(rec)
        self.touch(rec["ID"])

    def _set_secrets(self, peering_id: str, secrets: dict[str, str]) -> None:
        if secrets:
            self.secrets[peering_id] = secrets
        else:
            self.secrets.pop(peering_id, None)
        self.touch(peering_id)

    def _bump_table(self) -> int:
        self.index = self.bump()
        return self.index

    # ---- command handlers: validate everything first, then mutate ----

    def _cas(self, expect_index: int | None, existing: Record | None) -> None:
        """Reject a command built against a different version of the record.

        A command that timed out may still be applied later; the precondition makes such a late
        apply fail instead of overwriting what happened since.
        """
        if expect_index is None:
            return
        if expect_index != (existing["ModifyIndex"] if existing else 0):
            raise CommandError("peering changed since the request was prepared", "conflict")

    def _new_id(self, peering_id: str) -> None:
        if peering_id in self.ids:
            raise CommandError("peering ID already in use, retry the operation", "conflict")

    def _stamp(self, rec: Record, rid: str | None) -> int:
        index = self._bump_table()
        rec.setdefault("CreateIndex", index)
        rec["ModifyIndex"] = index
        rec["_rid"] = rid or ""
        self._put(rec)
        return index

    def _generate_token(self, cmd: GenerateToken) -> Result:
        existing = self.get(cmd.Partition, cmd.Name)
        self._cas(cmd.expect_index, existing)
        if existing is not None and should_dial(existing):
            raise CommandError(
                f'cannot create peering with name: "{cmd.Name}"; '
                "there is already an established peering", "conflict",
            )
        state = t.next_state(existing["State"] if existing else t.ABSENT, t.TOKEN_GENERATED)
        if existing is not None:
            rec = dict(existing, State=state)
        else:
            self._new_id(cmd.ID)
            rec = {"ID": cmd.ID, "Name": cmd.Name, "Partition": cmd.Partition,
                   "Meta": dict(cmd.Meta or {}), "State": state, "Remote": dict(NO_REMOTE)}
        index = self._stamp(rec, cmd.rid)
        # A new establishment secret supersedes any unused one; stream secrets are kept so an
        # active stream survives regeneration.
        secrets = dict(self.secrets.get(rec["ID"], {}))
        secrets["establishment"] = cmd.EstablishmentSecret
        self._set_secrets(rec["ID"], secrets)
        return {"index": index, "changed": True, "ID": rec["ID"]}

    def _establish(self, cmd: Establish) -> Result:
        existing = self.get(cmd.Partition, cmd.Name)
        self._cas(cmd.expect_index, existing)
        if existing is not None and not should_dial(existing) and (
            existing["State"] != t.TERMINATED
        ):
            raise CommandError(
                f'cannot create peering with name: "{cmd.Name}"; '
                "there is an existing peering expecting to be dialed", "conflict",
            )
        state = t.next_state(existing["State"] if existing else t.ABSENT, t.ESTABLISH_REQUESTED)
        if existing is not None:
            rec = dict(existing)
            rec.pop("DeletedAt", None)
        else:
            self._new_id(cmd.ID)
            rec = {"ID": cmd.ID, "Name": cmd.Name, "Partition": cmd.Partition}
        rec.update(
            State=state,
            Meta=dict(cmd.Meta or {}),
            PeerID=cmd.PeerID,
            PeerCAPems=list(cmd.PeerCAPems or []),
            PeerServerName=cmd.PeerServerName,
            PeerServerAddresses=list(cmd.PeerServerAddresses or []),
            ManualServerAddresses=list(cmd.ManualServerAddresses or []),
            Remote=dict(cmd.Remote or NO_REMOTE),
        )
        index = self._stamp(rec, cmd.rid)
        if cmd.StreamSecret:
            self._set_secrets(rec["ID"], {"active": cmd.StreamSecret})
        return {"index": index, "changed": True, "ID": rec["ID"]}

    def _event(self, cmd: PeeringEvent) -> Result:
        """A live peering's stream-side events (see commands.PeeringEvent for the parts).
        A command that would change nothing changes nothing (no index bump)."""
        existing = self.by_id(cmd.ID)
        if existing is None:
            raise CommandError(f"unknown peering ID {cmd.ID}", "not_found")
        self._cas(cmd.expect_index, existing)
        if cmd.Event not in STREAM_EVENTS:
            raise CommandError(f"invalid peering event {cmd.Event!r}")
        state = t.next_state(existing["State"], cmd.Event)
        secrets = self.secrets.get(existing["ID"], {})
        if cmd.expect_secret is not None and cmd.expect_secret not in (
            secrets.get("active"), secrets.get("pending")
        ):
            raise CommandError("invalid peering stream secret", "permission")
        new_secrets: dict[str, str] | None = None
        if cmd.ActiveStreamSecret:
            if not should_dial(existing):
                raise CommandError("only a dialing peering stores an active stream secret")
            new_secrets = {"active": cmd.ActiveStreamSecret}
        if cmd.PromoteStreamSecret:
            if should_dial(existing):
                raise CommandError("only an accepting peering promotes a stream secret")
            promote = cmd.PromoteStreamSecret
            if promote == secrets.get("pending"):
                new_secrets = {k: v for k, v in secrets.items() if k != "pending"}
                new_secrets["active"] = promote
            elif promote != secrets.get("active"):
                raise CommandError("invalid peering stream secret", "permission")
        rec = dict(existing, State=state)
        if cmd.Remote:
            rec["Remote"] = {"Partition": cmd.Remote.get("Partition") or "",
                             "Datacenter": cmd.Remote.get("Datacenter") or ""}
        if cmd.PeerServerAddresses and should_dial(existing):
            rec["PeerServerAddresses"] = list(cmd.PeerServerAddresses)
        if state == t.TERMINATED:
            new_secrets = {}
        if rec == existing and (new_secrets is None or new_secrets == secrets):
            return self.unchanged()
        if rec != existing:
            index = self._bump_table()
            rec["ModifyIndex"] = index
            self._put(rec)
        else:
            index = self.bump()
        if new_secrets is not None:
            self._set_secrets(rec["ID"], new_secrets)
        return {"index": index, "changed": True}

    def _exchange_secret(self, cmd: ExchangeSecret) -> Result:
        """The acceptor trades a token's establishment secret for a pending stream secret.

        Validated here, in log order, so of two concurrent exchanges of one token exactly one
        wins: the establishment secret is consumed (single use). An unused pending secret is
        replaced; the active one is kept, so an established stream survives a re-establish
        until the new secret is used.
        """
        existing = self.by_id(cmd.ID)
        if existing is None or should_dial(existing) or (
            (existing["State"], t.ESTABLISHMENT_SECRET_USED) not in t.TRANSITIONS
        ):
            raise CommandError("invalid peering establishment secret", "permission")
        secrets = self.secrets.get(cmd.ID, {})
        stored = secrets.get("establishment")
        if not stored:
            raise CommandError(
                "invalid establishment secret: peering was already established", "permission"
            )
        if not hmac.compare_digest(stored.encode(), cmd.EstablishmentSecret.encode()):
            raise CommandError("invalid establishment secret", "permission")
        new_secrets = {k: v for k, v in secrets.items() if k == "active"}
        new_secrets["pending"] = cmd.PendingStreamSecret
        index = self.bump()
        self._set_secrets(existing["ID"], new_secrets)
        return {"index": index, "changed": True}

    def _delete(self, cmd: Delete) -> Result:
        existing = self.get(cmd.Partition, cmd.Name)
        self._cas(cmd.expect_index, existing)
        state = existing["State"] if existing else t.ABSENT
        if t.next_state(state, t.DELETE_REQUESTED) == state:
            return self.unchanged()  # deleting nothing, or twice, is a no-op
        assert existing is not None
        index = self._bump_table()
        # Consul keeps only the identity and the addresses (so the dialing mode cannot flip).
        rec = {
            k: existing[k]
            for k in ("ID", "Name", "Partition", "PeerServerAddresses", "ManualServerAddresses",
                      "CreateIndex")
            if k in existing
        }
        rec.update(State=t.DELETING, DeletedAt=cmd.DeletedAt, ModifyIndex=index,
                   Remote=dict(NO_REMOTE), _rid=cmd.rid or "")
        self._put(rec)
        self._set_secrets(rec["ID"], {})
        return {"index": index, "changed": True}

    def _remove(self, cmd: Remove) -> Result:
        existing = self.by_id(cmd.ID)
        state = existing["State"] if existing else t.ABSENT
        if t.next_state(state, t.REMOVED) == state:
            return self.unchanged()
        assert existing is not None
        index = self._bump_table()
        self._drop(existing)
        return {"index": index, "changed": True}

    # ---- snapshots ----

    def snapshot(self) -> dict[str, Any]:
        return {"peerings_index": self.index, "peerings": list(self.records.values()),
                "secrets": self.secrets}

    def restore(self, data: dict[str, Any]) -> None:
        self.index = data["peerings_index"]
        for rec in data["peerings"]:
            self._put(rec)
        self.secrets = data["secrets"]

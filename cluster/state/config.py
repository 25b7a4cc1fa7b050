"""The config-entry table (Consul's config entries; peerplane knows `exported-services`).

An entry is stored as the API shows it minus the indexes: {Kind, Name, Services[{Name,
Namespace?, Consumers[{Peer?, Partition?, SamenessGroup?}]}], Meta?}, plus CreateIndex and
ModifyIndex. The API validates entries with Consul's texts; this table re-checks only the
types, so that nothing wrongly typed is ever stored.

Commands:
- `config_set` {Entry, CAS?} - upsert. With `CAS` (Consul's ?cas=): applied only when the
  stored ModifyIndex equals it (0: only when there is no entry yet). The result says
  `applied`; a refused CAS is not an error (the API answers `false`). Writing an entry equal
  to the stored one is applied but changes nothing.
- `config_delete` {Kind, Name, CAS?} - delete; with CAS only when the ModifyIndex matches (a
  missing entry is then not deleted: `applied` false). Deleting what is not there is a no-op.

Reads (any thread; take the FSM lock): `get(kind, name)`, `list(kind)` (entries sorted by
name, plus the kind's index), `index(kind)`, `exported_to(peer)` (sorted names of the local
services the `exported-services` entry exports to that peer), `exports()` (peer -> names).
"""

from __future__ import annotations

import threading
from typing import Any

from ..commands import ConfigDelete, ConfigSet
from .catalog_records import record_list
from .errors import CommandError

Record = dict[str, Any]
EXPORTED_SERVICES = "exported-services"
KINDS = (EXPORTED_SERVICES,)
_CONSUMER_KEYS = ("Peer", "Partition", "SamenessGroup")


def _strings(obj: dict[str, Any], keys: tuple[str, ...], what: str) -> Record:
    out: Record = {}
    for key in keys:
        value = obj.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise CommandError(f"invalid command: {what}.{key} has the wrong type")
        out[key] = value
    return out


def entry_record(value: Any) -> Record:
    """The stored form of an entry, types checked."""
    if not isinstance(value, dict):
        raise CommandError("invalid command: Entry is not a map")
    kind, name = value.get("Kind"), value.get("Name")
    if kind not in KINDS:
        raise CommandError(f"invalid config entry kind: {kind}")
    if not isinstance(name, str) or not name:
        raise CommandError("invalid command: Entry.Name has the wrong type")
    services = []
    for svc in record_list(value.get("Services"), "Entry.Services"):
        if not isinstance(svc, dict):
            raise CommandError("invalid command: Entry.Services[] is not a map")
        rec = {"Name": svc.get("Name")}
        if not isinstance(rec["Name"], str):
            raise CommandError("invalid command: Services[].Name has the wrong type")
        rec.update(_strings(svc, ("Namespace",), "Services[]"))
        consumers = []
        for consumer in record_list(svc.get("Consumers"), "Services[].Consumers"):
            if not isinstance(consumer, dict):
                raise CommandError("invalid command: Consumers[] is not a map")
            consumers.append(_strings(consumer, _CONSUMER_KEYS, "Consumers[]"))
        rec["Consumers"] = consumers
        services.append(rec)
    entry: Record = {"Kind": kind, "Name": name, "Services": services}
    meta = value.get("Meta")
    if meta:
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            raise CommandError("invalid command: Entry.Meta has the wrong type")
        entry["Meta"] = dict(meta)
    return entry


def _cas(cmd: ConfigSet | ConfigDelete) -> int | None:
    cas = cmd.CAS
    if cas is not None and (not isinstance(cas, int) or isinstance(cas, bool) or cas < 0):
        raise CommandError("invalid command: CAS has the wrong type")
    return cas


class ConfigEntries:
    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.reset()

    def reset(self) -> None:
        self._entries: dict[tuple[str, str], Record] = {}
        self._kind_index: dict[str, int] = {}
        # peer -> {service name: None}, derived from the exported-services entry
        self._exports: dict[str, dict[str, None]] = {}

    def apply(self, cmd: ConfigSet | ConfigDelete, index: int) -> dict[str, Any]:
        if isinstance(cmd, ConfigSet):
            return self._set(cmd, index)
        return self._delete(cmd, index)

    def _set(self, cmd: ConfigSet, index: int) -> dict[str, Any]:
        entry, cas = entry_record(cmd.Entry), _cas(cmd)
        key = (entry["Kind"], entry["Name"])
        old = self._entries.get(key)
        if cas is not None and cas != (old["ModifyIndex"] if old else 0):
            return {"changed": False, "applied": False}
        if old is not None and {k: v for k, v in old.items() if not k.endswith("Index")} == entry:
            return {"changed": False, "applied": True}
        self._entries[key] = dict(entry, CreateIndex=old["CreateIndex"] if old else index,
                                  ModifyIndex=index)
        self._kind_index[entry["Kind"]] = index
        self._rebuild_exports()
        return {"changed": True, "applied": True}

    def _delete(self, cmd: ConfigDelete, index: int) -> dict[str, Any]:
        kind, name, cas = cmd.Kind, cmd.Name, _cas(cmd)
        if not isinstance(kind, str) or not isinstance(name, str):
            raise CommandError("invalid command: Kind/Name has the wrong type")
        old = self._entries.get((kind, name))
        if cas is not None and (old is None or old["ModifyIndex"] != cas):
            return {"changed": False, "applied": False}
        if old is None:
            return {"changed": False, "applied": True}
        del self._entries[(kind, name)]
        self._kind_index[kind] = index
        self._rebuild_exports()
        return {"changed": True, "applied": True}

    def _rebuild_exports(self) -> None:
        """One entry (`default`) of bounded size: rebuilt whole when it changes."""
        exports: dict[str, dict[str, None]] = {}
        entry = self._entries.get((EXPORTED_SERVICES, "default"))
        for svc in (entry or {}).get("Services", []):
            for consumer in svc["Consumers"]:
                if consumer.get("Peer"):
                    exports.setdefault(consumer["Peer"], {})[svc["Name"]] = None
        self._exports = exports

    # ---- reads ----

    def get(self, kind: str, name: str) -> Record | None:
        with self._lock:
            return self._entries.get((kind, name))

    def list(self, kind: str) -> tuple[list[Record], int]:
        with self._lock:
            recs = [r for (k, _), r in self._entries.items() if k == kind]
            index = self._kind_index.get(kind, 0)
        return sorted(recs, key=lambda r: r["Name"]), index

    def index(self, kind: str) -> int:
        with self._lock:
            return self._kind_index.get(kind, 0)

    def exported_to(self, peer: str) -> list[str]:
        with self._lock:
            return sorted(self._exports.get(peer, {}))

    def exports(self) -> dict[str, list[str]]:
        with self._lock:
            return {peer: sorted(names) for peer, names in sorted(self._exports.items())}

    # ---- snapshots (called with the FSM lock held) ----

    def dump(self) -> dict[str, Any]:
        return {"entries": list(self._entries.values()), "kind_index": self._kind_index}

    def load(self, data: dict[str, Any] | None) -> None:
        self.reset()
        if not data:
            return
        for rec in data["entries"]:
            self._entries[(rec["Kind"], rec["Name"])] = rec
        self._kind_index = dict(data["kind_index"])
        self._rebuild_exports()


COMMANDS = (ConfigSet, ConfigDelete)

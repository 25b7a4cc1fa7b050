"""The catalog table: nodes, services and health checks, local and imported.

Every record carries `PeerName`: "" for local records (registered through /v1/catalog/register)
and the local name of a peering for records imported over that peering's stream. Keys are
`(peer, lowercased node name)` for nodes and `(peer, lowercased node, ID)` for services and
checks, so a local node and an imported node of the same name never collide.

Commands (`op`, validated completely before anything changes; a command that would change
nothing changes nothing and does not move any index):

- `catalog_register` {Node{Node, ID, Address, Datacenter, TaggedAddresses, Meta},
  Service?{ID, Service, Tags, Address, Meta, Port, Weights, EnableTagOverride}, Checks[],
  SkipNodeUpdate} - Consul's EnsureRegistration for local records (the API fills defaults:
  Service.ID, check IDs, Datacenter).
- `catalog_deregister` {Node, ServiceID?, CheckID?} - a service (with its checks), else a check,
  else the node with everything on it. Deregistering what does not exist is a no-op.
- `catalog_import_service` {Peer, Service, Nodes[{Node{...}, Service{...}, Checks[...]}]} -
  replaces, atomically, every imported instance of `Service` from `Peer` with this snapshot:
  instances missing from it are removed, imported nodes left with nothing on them are removed.
  Each instance's checks are replaced by the given ones (ServiceID forced to the instance).
- `catalog_import_delete_service` {Peer, Service} - removes every imported instance of Service.
- `catalog_import_prune` {Peer, Keep[]} - removes every imported service of Peer whose name is
  not in Keep (what an ExportedServiceList does).
- `catalog_import_delete_peer` {Peer, Limit} - removes about Limit records (nodes, services,
  checks, counted together; a service goes with its checks, so one instance's checks and its
  emptied node may exceed it) imported from Peer; the result has `deleted` and `remaining`, so
  a leader routine can delete a large import in bounded Raft entries until `remaining` is 0.

Reads (cluster/state/catalog_reads.py; any thread, each takes the FSM lock):
`services(peer)`, `service_nodes(name, peer)`, `health(name, peer)`, `nodes(peer)` return
records plus the index a blocking query on them waits for; `node(name, peer)`,
`service(node, id, peer)`, `check(node, id, peer)` one record; `imported_names(peer)`,
`service_names(peer)`, `record_count(peer)`; `services_index(peer)`, `nodes_index(peer)`,
`service_index(name, peer)` for blocking waits. Service names are matched case-insensitively
(Consul's memdb indexes are lowercase). Record builders and field checks:
cluster/state/catalog_records.py.

Records are replaced, never mutated, so a record handed to a reader stays consistent.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import commands as cmds
from .catalog_reads import CatalogReads, ItemKey, NameKey, NodeKey
from .catalog_records import (
    STATUSES,
    Record,
    as_map,
    check_record,
    int_field,
    node_record,
    peer_of,
    record_list,
    same,
    service_record,
    str_list,
)
from .errors import CommandError

__all__ = ["COMMANDS", "STATUSES", "Catalog"]



class Catalog(CatalogReads):
    """The catalog table. Mutators run in the FSM's apply (under its lock) and get the index
    the command will have if it changes anything; they return whether it did."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.reset()

    def reset(self) -> None:
        self._nodes: dict[NodeKey, Record] = {}
        self._services: dict[ItemKey, Record] = {}
        self._checks: dict[ItemKey, Record] = {}
        # secondary indexes (dicts used as ordered sets: their order is the same on every
        # replica, so "the first N" of one is deterministic)
        self._node_services: dict[NodeKey, dict[str, None]] = {}
        self._node_checks: dict[NodeKey, dict[str, None]] = {}
        self._service_checks: dict[ItemKey, dict[str, None]] = {}
        self._by_name: dict[NameKey, dict[ItemKey, None]] = {}
        self._peer_nodes: dict[str, dict[NodeKey, None]] = {}
        self._peer_names: dict[str, dict[str, None]] = {}
        self._peer_records: dict[str, int] = {}
        # blocking-query indexes: per peer for the tables, per (peer, name) for a service
        self._nodes_index: dict[str, int] = {}
        self._services_index: dict[str, int] = {}
        self._name_index: dict[NameKey, int] = {}
        # (peer, lowercased name) of every service the current command changed; the FSM hands
        # them to its subscribers as touched keys (replication looks only at these)
        self.touched_names: set[NameKey] = set()

    def take_touched(self) -> set[NameKey]:
        touched, self.touched_names = self.touched_names, set()
        return touched

    # ---- primitive mutations (keep every secondary index in step) ----

    def _count(self, peer: str, delta: int) -> None:
        left = self._peer_records.get(peer, 0) + delta
        if left:
            self._peer_records[peer] = left
        else:
            self._peer_records.pop(peer, None)

    def _touch_name(self, peer: str, name: str, index: int) -> None:
        self._name_index[(peer, name.lower())] = index
        self.touched_names.add((peer, name.lower()))

    def _touch_node(self, key: NodeKey, index: int) -> None:
        """A node or node-level check changed: every service on it shows the node."""
        for sid in self._node_services.get(key, {}):
            self._touch_name(key[0], self._services[(*key, sid)]["Service"], index)

    def _put_node(self, rec: Record, index: int) -> bool:
        key = (rec["PeerName"], rec["Node"].lower())
        old = self._nodes.get(key)
        if old is not None and not rec["ID"]:
            rec = dict(rec, ID=old["ID"])  # a registration without an ID keeps the node's ID
        if same(old, rec):
            return False
        self._nodes[key] = dict(rec, CreateIndex=old["CreateIndex"] if old else index,
                               ModifyIndex=index)
        if old is None:
            self._peer_nodes.setdefault(key[0], {})[key] = None
            self._count(key[0], 1)
        self._nodes_index[key[0]] = index
        self._touch_node(key, index)
        return True

    def _put_service(self, rec: Record, index: int) -> bool:
        peer, node = rec["PeerName"], rec["Node"].lower()
        key = (peer, node, rec["ID"])
        old = self._services.get(key)
        if same(old, rec):
            return False
        self._services[key] = dict(rec, CreateIndex=old["CreateIndex"] if old else index,
                                   ModifyIndex=index)
        renamed = old is not None and old["Service"].lower() != rec["Service"].lower()
        if old is None:
            self._node_services.setdefault((peer, node), {})[rec["ID"]] = None
            self._count(peer, 1)
        elif renamed:
            self._unindex_name(key, old, index)
        if old is None or renamed:
            self._by_name.setdefault((peer, rec["Service"].lower()), {})[key] = None
            self._peer_names.setdefault(peer, {})[rec["Service"].lower()] = None
        self._services_index[peer] = index
        self._touch_name(peer, rec["Service"], index)
        # checks of this service carry its name and tags
        for cid in self._service_checks.get(key, {}):
            ckey = (peer, node, cid)
            self._checks[ckey] = dict(self._checks[ckey], ServiceName=rec["Service"],
                                      ServiceTags=rec["Tags"], ModifyIndex=index)
        return True

    def _unindex_name(self, key: ItemKey, old: Record, index: int) -> None:
        """Take a service out of its name's index (it is deleted or renamed)."""
        name_key = (key[0], old["Service"].lower())
        members = self._by_name.get(name_key, {})
        members.pop(key, None)
        if not members:
            self._by_name.pop(name_key, None)
            names = self._peer_names.get(key[0], {})
            names.pop(name_key[1], None)
            if not names:
                self._peer_names.pop(key[0], None)
        self._services_index[key[0]] = index
        self._name_index[name_key] = index
        self.touched_names.add(name_key)

    def _put_check(self, rec: Record, index: int) -> bool:
        peer, node = rec["PeerName"], rec["Node"].lower()
        key = (peer, node, rec["CheckID"])
        if rec["ServiceID"]:
            svc = self._services[(peer, node, rec["ServiceID"])]
            rec = dict(rec, ServiceName=svc["Service"], ServiceTags=svc["Tags"])
        old = self._checks.get(key)
        if same(old, rec):
            return False
        if old is not None:
            self._unlink_check(key, old, index)
        self._checks[key] = dict(rec, CreateIndex=old["CreateIndex"] if old else index,
                                ModifyIndex=index)
        if old is None:
            self._count(peer, 1)
        self._link_check(key, rec, index)
        return True

    def _link_check(self, key: ItemKey, rec: Record, index: int) -> None:
        if rec["ServiceID"]:
            self._service_checks.setdefault(key[:2] + (rec["ServiceID"],), {})[key[2]] = None
            self._touch_name(key[0], rec["ServiceName"], index)
        else:
            self._node_checks.setdefault(key[:2], {})[key[2]] = None
            self._touch_node(key[:2], index)

    def _unlink_check(self, key: ItemKey, old: Record, index: int) -> None:
        owner: dict[Any, dict[str, None]]
        if old["ServiceID"]:
            owner, okey = self._service_checks, key[:2] + (old["ServiceID"],)
            self._touch_name(key[0], old["ServiceName"], index)
        else:
            owner, okey = self._node_checks, key[:2]
            self._touch_node(key[:2], index)
        ids = owner.get(okey, {})
        ids.pop(key[2], None)
        if not ids:
            owner.pop(okey, None)

    def _del_check(self, key: ItemKey, index: int) -> bool:
        old = self._checks.pop(key, None)
        if old is None:
            return False
        self._unlink_check(key, old, index)
        self._count(key[0], -1)
        return True

    def _del_service(self, key: ItemKey, index: int) -> int:
        """Remove a service and its checks; how many records went."""
        old = self._services.get(key)
        if old is None:
            return 0
        gone = 0
        for cid in list(self._service_checks.get(key, {})):
            gone += self._del_check(key[:2] + (cid,), index)
        del self._services[key]
        ids = self._node_services.get(key[:2], {})
        ids.pop(key[2], None)
        if not ids:
            self._node_services.pop(key[:2], None)
        self._unindex_name(key, old, index)
        self._count(key[0], -1)
        return gone + 1

    def _del_node(self, key: NodeKey, index: int) -> int:
        if key not in self._nodes:
            return 0
        gone = 0
        for sid in list(self._node_services.get(key, {})):
            gone += self._del_service((*key, sid), index)
        for cid in list(self._node_checks.get(key, {})):
            gone += self._del_check((*key, cid), index)
        del self._nodes[key]
        peer_nodes = self._peer_nodes.get(key[0], {})
        peer_nodes.pop(key, None)
        if not peer_nodes:
            self._peer_nodes.pop(key[0], None)
        self._nodes_index[key[0]] = index
        self._count(key[0], -1)
        return gone + 1

    def _drop_if_empty(self, key: NodeKey, index: int) -> int:
        """An imported node exists only for what runs on it."""
        if key in self._node_services or key in self._node_checks:
            return 0
        return self._del_node(key, index)

    # ---- commands ----

    def apply(self, cmd: cmds.CatalogCommand, index: int) -> dict[str, Any]:
        """Run a catalog command with the index it gets if it changes anything."""
        handler = _COMMANDS[type(cmd)]
        return handler(self, cmd, index)

    def _register(self, cmd: cmds.CatalogRegister, index: int) -> dict[str, Any]:
        node = node_record(cmd.Node, "")
        key = ("", node["Node"].lower())
        skip = cmd.SkipNodeUpdate
        if not isinstance(skip, bool):
            raise CommandError("invalid command: SkipNodeUpdate has the wrong type")
        if skip and key not in self._nodes:
            raise CommandError("Missing node registration")
        name = self._nodes[key]["Node"] if skip else node["Node"]
        svc = None
        if cmd.Service is not None:
            svc = service_record(cmd.Service, name, "")
        checks = [check_record(c, name, "") for c in record_list(cmd.Checks, "Checks")]
        for chk in checks:
            sid = chk["ServiceID"]
            if sid and not (svc is not None and svc["ID"] == sid) and (*key, sid) not in (
                self._services
            ):
                raise CommandError("Missing service registration")
        changed = False
        if not skip:
            changed |= self._put_node(node, index)
        if svc is not None:
            changed |= self._put_service(svc, index)
        for chk in checks:
            changed |= self._put_check(chk, index)
        return {"changed": changed}

    def _deregister(self, cmd: cmds.CatalogDeregister, index: int) -> dict[str, Any]:
        node = cmd.Node
        sid, cid = cmd.ServiceID or "", cmd.CheckID or ""
        if not isinstance(node, str) or not node:
            raise CommandError("Must provide node")
        if not isinstance(sid, str) or not isinstance(cid, str):
            raise CommandError("invalid command: ServiceID/CheckID has the wrong type")
        key = ("", node.lower())
        if sid:
            gone = self._del_service((*key, sid), index)
        elif cid:
            gone = self._del_check((*key, cid), index)
        else:
            gone = self._del_node(key, index)
        return {"changed": bool(gone)}

    def _import_service(self, cmd: cmds.CatalogImportService, index: int) -> dict[str, Any]:
        peer, name = peer_of(cmd.Peer), cmd.Service
        if not isinstance(name, str) or not name:
            raise CommandError("invalid command: Service must be a service name")
        instances: list[tuple[Record, Record, list[Record]]] = []
        for item in record_list(cmd.Nodes, "Nodes"):
            item = as_map(item, "Nodes[]")
            node = node_record(item.get("Node"), peer)
            svc = service_record(item.get("Service"), node["Node"], peer)
            if svc["Service"].lower() != name.lower():
                raise CommandError("invalid command: an instance of another service")
            checks = [
                check_record(dict(as_map(c, "Check"), ServiceID=svc["ID"]), node["Node"], peer)
                for c in record_list(item.get("Checks"), "Checks")
            ]
            instances.append((node, svc, checks))
        keep = {(peer, n["Node"].lower(), s["ID"]) for n, s, _ in instances}
        if len(keep) != len(instances):
            raise CommandError("invalid command: an instance appears twice")
        changed = False
        touched: dict[NodeKey, None] = {}
        for skey in list(self._by_name.get((peer, name.lower()), {})):
            if skey not in keep:
                changed |= bool(self._del_service(skey, index))
                touched[skey[:2]] = None
        for node, svc, checks in instances:
            changed |= self._put_node(node, index)
            changed |= self._put_service(svc, index)
            skey = (peer, node["Node"].lower(), svc["ID"])
            wanted = {c["CheckID"] for c in checks}
            for cid in list(self._service_checks.get(skey, {})):
                if cid not in wanted:
                    changed |= self._del_check(skey[:2] + (cid,), index)
            for chk in checks:
                changed |= self._put_check(chk, index)
        for nkey in touched:
            changed |= bool(self._drop_if_empty(nkey, index))
        return {"changed": changed}

    def _remove_imported(self, peer: str, name: str, index: int) -> int:
        gone = 0
        for skey in list(self._by_name.get((peer, name.lower()), {})):
            gone += self._del_service(skey, index)
            gone += self._drop_if_empty(skey[:2], index)
        return gone

    def _import_delete_service(self, cmd: cmds.CatalogImportDeleteService,
                               index: int) -> dict[str, Any]:
        peer, name = peer_of(cmd.Peer), cmd.Service
        if not isinstance(name, str):
            raise CommandError("invalid command: Service must be a service name")
        return {"changed": bool(self._remove_imported(peer, name, index))}

    def _import_prune(self, cmd: cmds.CatalogImportPrune, index: int) -> dict[str, Any]:
        peer = peer_of(cmd.Peer)
        keep = str_list(vars(cmd), "Keep", "command") or []
        wanted = {n.lower() for n in keep}
        gone = 0
        for name in list(self._peer_names.get(peer, {})):
            if name not in wanted:
                gone += self._remove_imported(peer, name, index)
        return {"changed": bool(gone), "deleted": gone}

    def _import_delete_peer(self, cmd: cmds.CatalogImportDeletePeer, index: int) -> dict[str, Any]:
        peer, limit = peer_of(cmd.Peer), int_field(vars(cmd), "Limit", "command")
        if limit <= 0:
            raise CommandError("invalid command: Limit must be positive")
        gone = 0
        for nkey in list(self._peer_nodes.get(peer, {})):
            for sid in list(self._node_services.get(nkey, {})):
                if gone >= limit:
                    break
                gone += self._del_service((*nkey, sid), index)
            for cid in list(self._node_checks.get(nkey, {})):
                if gone >= limit:
                    break
                gone += self._del_check((*nkey, cid), index)
            gone += self._drop_if_empty(nkey, index)
            if gone >= limit:
                break
        return {"changed": bool(gone), "deleted": gone,
                "remaining": self._peer_records.get(peer, 0)}

    # ---- snapshots (called with the FSM lock held) ----

    def dump(self) -> dict[str, Any]:
        return {
            "nodes": list(self._nodes.values()),
            "services": list(self._services.values()),
            "checks": list(self._checks.values()),
            "nodes_index": self._nodes_index,
            "services_index": self._services_index,
            "name_index": [[p, n, i] for (p, n), i in self._name_index.items()],
        }

    def load(self, data: dict[str, Any] | None) -> None:
        """Rebuild from dump(); records go back in their order, so every secondary index has
        the same order as on the replica that wrote the snapshot."""
        self.reset()
        if not data:
            return
        for rec in data["nodes"]:
            key = (rec["PeerName"], rec["Node"].lower())
            self._nodes[key] = rec
            self._peer_nodes.setdefault(key[0], {})[key] = None
            self._count(key[0], 1)
        for rec in data["services"]:
            key = (rec["PeerName"], rec["Node"].lower(), rec["ID"])
            self._services[key] = rec
            self._node_services.setdefault(key[:2], {})[key[2]] = None
            self._by_name.setdefault((key[0], rec["Service"].lower()), {})[key] = None
            self._peer_names.setdefault(key[0], {})[rec["Service"].lower()] = None
            self._count(key[0], 1)
        for rec in data["checks"]:
            key = (rec["PeerName"], rec["Node"].lower(), rec["CheckID"])
            self._checks[key] = rec
            owner: dict[Any, dict[str, None]] = (
                self._service_checks if rec["ServiceID"] else self._node_checks)
            okey = (*key[:2], rec["ServiceID"]) if rec["ServiceID"] else key[:2]
            owner.setdefault(okey, {})[key[2]] = None
            self._count(key[0], 1)
        self._nodes_index = dict(data["nodes_index"])
        self._services_index = dict(data["services_index"])
        self._name_index = {(p, n): i for p, n, i in data["name_index"]}


_COMMANDS: dict[type, Any] = {
    cmds.CatalogRegister: Catalog._register,
    cmds.CatalogDeregister: Catalog._deregister,
    cmds.CatalogImportService: Catalog._import_service,
    cmds.CatalogImportDeleteService: Catalog._import_delete_service,
    cmds.CatalogImportPrune: Catalog._import_prune,
    cmds.CatalogImportDeletePeer: Catalog._import_delete_peer,
}
COMMANDS = tuple(_COMMANDS)

"""The catalog table's reads (any thread; each takes the FSM lock). A mixin of
cluster/state/catalog.py's `Catalog`, which owns the tables these read."""

from __future__ import annotations

import threading

from .catalog_records import Record

NodeKey = tuple[str, str]  # (peer, lowercased node name)
ItemKey = tuple[str, str, str]  # (peer, lowercased node name, service or check ID)
NameKey = tuple[str, str]  # (peer, lowercased service name)


class CatalogReads:
    _lock: threading.Lock
    _nodes: dict[NodeKey, Record]
    _services: dict[ItemKey, Record]
    _checks: dict[ItemKey, Record]
    _node_checks: dict[NodeKey, dict[str, None]]
    _service_checks: dict[ItemKey, dict[str, None]]
    _by_name: dict[NameKey, dict[ItemKey, None]]
    _peer_nodes: dict[str, dict[NodeKey, None]]
    _peer_names: dict[str, dict[str, None]]
    _peer_records: dict[str, int]
    _nodes_index: dict[str, int]
    _services_index: dict[str, int]
    _name_index: dict[NameKey, int]

    def services(self, peer: str = "") -> tuple[dict[str, list[str]], int]:
        """Consul's /v1/catalog/services: service name -> its instances' tags (deduplicated,
        sorted), names sorted."""
        with self._lock:
            out: dict[str, dict[str, None]] = {}
            for lname in self._peer_names.get(peer, {}):
                for skey in self._by_name[(peer, lname)]:
                    svc = self._services[skey]
                    tags = out.setdefault(svc["Service"], {})
                    for tag in svc["Tags"] or ():
                        tags[tag] = None
            index = self._services_index.get(peer, 0)
        return {name: sorted(out[name]) for name in sorted(out)}, index

    def _instances(self, name: str, peer: str) -> list[ItemKey]:
        keys = list(self._by_name.get((peer, name.lower()), {}))
        keys.sort(key=lambda k: (self._nodes[k[:2]]["Node"], k[2]))
        return keys

    def service_nodes(self, name: str, peer: str = "") -> tuple[list[tuple[Record, Record]], int]:
        """(node, service) of every instance of a service, by node name then service ID."""
        with self._lock:
            rows = [(self._nodes[k[:2]], self._services[k]) for k in self._instances(name, peer)]
            return rows, self._service_index(name, peer)

    def health(
        self, name: str, peer: str = ""
    ) -> tuple[list[tuple[Record, Record, list[Record]]], int]:
        """(node, service, checks) of every instance; checks are the node's own checks and the
        instance's, sorted by CheckID."""
        with self._lock:
            rows = []
            for key in self._instances(name, peer):
                nkey = key[:2]
                ids = [*self._node_checks.get(nkey, {}), *self._service_checks.get(key, {})]
                checks = sorted((self._checks[(*nkey, cid)] for cid in ids),
                                key=lambda c: c["CheckID"])
                rows.append((self._nodes[nkey], self._services[key], checks))
            return rows, self._service_index(name, peer)

    def nodes(self, peer: str = "") -> tuple[list[Record], int]:
        with self._lock:
            recs = [self._nodes[k] for k in self._peer_nodes.get(peer, {})]
            index = self._nodes_index.get(peer, 0)
        recs.sort(key=lambda r: r["Node"])
        return recs, index

    def node(self, name: str, peer: str = "") -> Record | None:
        with self._lock:
            return self._nodes.get((peer, name.lower()))

    def service(self, node: str, sid: str, peer: str = "") -> Record | None:
        with self._lock:
            return self._services.get((peer, node.lower(), sid))

    def check(self, node: str, cid: str, peer: str = "") -> Record | None:
        with self._lock:
            return self._checks.get((peer, node.lower(), cid))

    def imported_names(self, peer: str) -> list[str]:
        """Names of the services imported from a peer, sorted."""
        return self.service_names(peer) if peer else []

    def service_names(self, peer: str = "") -> list[str]:
        """Names of a peer's services ("" = local), sorted; no walk over instances."""
        with self._lock:
            names = [self._services[next(iter(self._by_name[(peer, n)]))]["Service"]
                     for n in self._peer_names.get(peer, {})]
        return sorted(names)

    def record_count(self, peer: str) -> int:
        with self._lock:
            return self._peer_records.get(peer, 0)

    def _service_index(self, name: str, peer: str) -> int:
        # Consul falls back to the services table index when the service has no index entry
        return self._name_index.get((peer, name.lower()), self._services_index.get(peer, 0))

    def service_index(self, name: str, peer: str = "") -> int:
        with self._lock:
            return self._service_index(name, peer)

    def services_index(self, peer: str = "") -> int:
        with self._lock:
            return self._services_index.get(peer, 0)

    def nodes_index(self, peer: str = "") -> int:
        with self._lock:
            return self._nodes_index.get(peer, 0)

"""The replicated state replication reads and the commands it proposes, in one place.

The catalog and config-entry tables live in `cluster/state/` (catalog.py, config.py); this
adapter names what the exporter, the importer and the purge routine use of them.
"""

from __future__ import annotations

from typing import Any

from ..commands import CatalogImportDeletePeer, CatalogImportPrune, CatalogImportService
from ..fsm import FSM

WILDCARD = "*"  # Consul: an exported-services entry may export every service by this name


class FSMCatalog:
    def __init__(self, fsm: FSM) -> None:
        self.fsm = fsm

    # ---- exporter ----

    def exported_to(self, peer_name: str) -> list[str]:
        names = self.fsm.config_entries.exported_to(peer_name)
        if WILDCARD in names:  # every local service: bounded by service names, not instances
            names = sorted(set(names) - {WILDCARD} | set(self.fsm.catalog.service_names("")))
        return names

    def service_instances(self, service: str) -> list[dict[str, Any]]:
        rows, _ = self.fsm.catalog.health(service, "")
        return [{"Node": n, "Service": s, "Checks": c} for n, s, c in rows]

    def service_index(self, service: str) -> int | None:
        return self.fsm.catalog.service_index(service, "")

    def server_addresses(self) -> list[str]:
        return sorted({s["PeeringAddr"] for s in self.fsm.servers_view().values()
                       if s.get("PeeringAddr")})

    # ---- importer ----

    def imported_services(self, peer_name: str) -> list[str]:
        return self.fsm.catalog.imported_names(peer_name)

    def imported_count(self, peer_name: str) -> int:
        return self.fsm.catalog.record_count(peer_name)

    # With the peering's ID the FSM refuses the import once the peering is no longer live.
    def import_command(self, peering_id: str, peer_name: str, service: str,
                       nodes: list[dict[str, Any]]) -> CatalogImportService:
        return CatalogImportService(PeeringID=peering_id, Peer=peer_name, Service=service,
                                    Nodes=nodes)

    def prune_command(self, peering_id: str, peer_name: str,
                      keep: list[str]) -> CatalogImportPrune:
        return CatalogImportPrune(PeeringID=peering_id, Peer=peer_name, Keep=keep)

    def purge_command(self, peer_name: str, limit: int) -> CatalogImportDeletePeer:
        return CatalogImportDeletePeer(Peer=peer_name, Limit=limit)

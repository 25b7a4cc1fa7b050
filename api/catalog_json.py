"""Catalog records as Consul 1.14+ writes them (CE: no Namespace/Partition fields).

Field order is the Go struct order (structs.Node, ServiceNode, NodeService, HealthCheck);
`PeerName` appears only on imported records (Go's omitempty). Go writes maps with sorted keys.
"""

from __future__ import annotations

from typing import Any

Record = dict[str, Any]


def _map(value: dict[str, str] | None) -> dict[str, str] | None:
    return dict(sorted(value.items())) if value is not None else None


def _peer(out: dict[str, Any], rec: Record) -> None:
    if rec.get("PeerName"):
        out["PeerName"] = rec["PeerName"]


def _indexes(out: dict[str, Any], rec: Record) -> dict[str, Any]:
    out["CreateIndex"] = rec["CreateIndex"]
    out["ModifyIndex"] = rec["ModifyIndex"]
    return out


def node_json(node: Record) -> dict[str, Any]:
    """structs.Node (GET /v1/catalog/nodes, the Node of a health entry)."""
    out: dict[str, Any] = {"ID": node["ID"], "Node": node["Node"], "Address": node["Address"],
                           "Datacenter": node["Datacenter"]}
    _peer(out, node)
    out["TaggedAddresses"] = _map(node["TaggedAddresses"])
    out["Meta"] = _map(node["Meta"])
    return _indexes(out, node)


def service_node_json(node: Record, svc: Record) -> dict[str, Any]:
    """structs.ServiceNode (GET /v1/catalog/service/:name); the indexes are the service's."""
    out = {
        "ID": node["ID"], "Node": node["Node"], "Address": node["Address"],
        "Datacenter": node["Datacenter"], "TaggedAddresses": _map(node["TaggedAddresses"]),
        "NodeMeta": _map(node["Meta"]), "ServiceKind": "", "ServiceID": svc["ID"],
        "ServiceName": svc["Service"], "ServiceTags": list(svc["Tags"] or []),
        "ServiceAddress": svc["Address"], "ServiceWeights": dict(svc["Weights"]),
        "ServiceMeta": _map(svc["Meta"]), "ServicePort": svc["Port"], "ServiceSocketPath": "",
        "ServiceEnableTagOverride": svc["EnableTagOverride"],
        "ServiceProxy": {"MeshGateway": {}, "Expose": {}}, "ServiceConnect": {},
    }
    _peer(out, svc)
    return _indexes(out, svc)


def node_service_json(svc: Record) -> dict[str, Any]:
    """structs.NodeService (the Service of a health entry); Port is omitted when 0."""
    out: dict[str, Any] = {"ID": svc["ID"], "Service": svc["Service"],
                           "Tags": list(svc["Tags"] or []), "Address": svc["Address"],
                           "Meta": _map(svc["Meta"])}
    if svc["Port"]:
        out["Port"] = svc["Port"]
    out.update(Weights=dict(svc["Weights"]), EnableTagOverride=svc["EnableTagOverride"],
               Proxy={"MeshGateway": {}, "Expose": {}}, Connect={})
    _peer(out, svc)
    return _indexes(out, svc)


def check_json(chk: Record) -> dict[str, Any]:
    """structs.HealthCheck; the health endpoint writes nil ServiceTags as []."""
    out: dict[str, Any] = {
        "Node": chk["Node"], "CheckID": chk["CheckID"], "Name": chk["Name"],
        "Status": chk["Status"], "Notes": chk["Notes"], "Output": chk["Output"],
        "ServiceID": chk["ServiceID"], "ServiceName": chk["ServiceName"],
        "ServiceTags": list(chk["ServiceTags"] or []), "Type": chk["Type"], "Interval": "",
        "Timeout": "", "ExposedPort": 0,
    }
    _peer(out, chk)
    out["Definition"] = {}
    return _indexes(out, chk)


def health_json(node: Record, svc: Record, checks: list[Record]) -> dict[str, Any]:
    """structs.CheckServiceNode (GET /v1/health/service/:name)."""
    return {"Node": node_json(node), "Service": node_service_json(svc),
            "Checks": [check_json(c) for c in checks]}

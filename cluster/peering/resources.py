"""Replication messages on the peer stream: what they look like and how incoming ones are vetted.

Modelled on Consul's `pbpeerstream.ReplicationMessage` (frames are msgpack maps with a `Type`,
see `cluster.peerstream`):

- `Request{ResourceURL, ResponseNonce?, Error?{Code, Message}}` - without a nonce it subscribes
  to a resource type; with one it ACKs (no Error) or NACKs (Error) that response.
- `Response{Nonce, ResourceURL, ResourceID, Operation, Resource}` - the exporter's push. Nonces
  count up per stream and per direction, formatted `%08x` as Consul does.

Resources (Consul's type URLs and resource IDs):
- ExportedService, ID = service name: a full snapshot `{"Nodes": [{Node, Service, Checks}]}` of
  every instance, healthy or not; each instance's checks collapsed into one
  `<serviceID>:overall-check` with the worst status (Consul's flattenChecks).
- ExportedServiceList, ID `exported-service-list`: `{"Services": [names]}`; the importer removes
  every service it imported from this peer that the list no longer names.
- PeeringServerAddresses, ID `server-addrs`: `{"Addresses": ["host:port"]}` (acceptor -> dialer).

Everything here is pure: building frames, and turning an incoming frame into typed values or a
`BadMessage` (which becomes a NACK - a malformed message never ends the stream).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

REQUEST = "Request"
RESPONSE = "Response"

_PREFIX = "type.googleapis.com/hashicorp.consul.internal."
URL_SERVICE = _PREFIX + "peerstream.ExportedService"
URL_SERVICE_LIST = _PREFIX + "peerstream.ExportedServiceList"
URL_SERVER_ADDRESSES = _PREFIX + "peering.PeeringServerAddresses"
URL_TRUST_BUNDLE = _PREFIX + "peering.PeeringTrustBundle"  # known; we carry no mesh CA yet
KNOWN_URLS = frozenset({URL_SERVICE, URL_SERVICE_LIST, URL_SERVER_ADDRESSES, URL_TRUST_BUNDLE})

LIST_ID = "exported-service-list"
ADDRESSES_ID = "server-addrs"
UPSERT = "UPSERT"
DELETE = "DELETE"

# NACK codes (gRPC names, as Consul's Error.Code)
INVALID_ARGUMENT = "InvalidArgument"
UNAVAILABLE = "Unavailable"  # could not apply now (no quorum, leadership moving): send again
INTERNAL = "Internal"

OVERALL_CHECK = "overall-check"
MAX_INSTANCES = 20_000  # one snapshot; the frame limit (8 MB) usually binds first
_STATUS_RANK = {"maintenance": 1, "critical": 2, "warning": 3, "passing": 4}
NODE_MAINT = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"


class BadMessage(ValueError):
    """An incoming replication message that cannot be used (answered with a NACK)."""


def nonce_str(n: int) -> str:
    return f"{n:08x}"


# ---- frames we send ----


def subscribe(url: str) -> dict[str, Any]:
    return {"Type": REQUEST, "ResourceURL": url}


def ack(url: str, nonce: str) -> dict[str, Any]:
    return {"Type": REQUEST, "ResourceURL": url, "ResponseNonce": nonce}


def nack(url: str, nonce: str, code: str, message: str) -> dict[str, Any]:
    return {"Type": REQUEST, "ResourceURL": url, "ResponseNonce": nonce,
            "Error": {"Code": code, "Message": message[:1000]}}


def response(nonce: str, url: str, resource_id: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"Type": RESPONSE, "Nonce": nonce, "ResourceURL": url, "ResourceID": resource_id,
            "Operation": UPSERT, "Resource": resource}


# ---- frames we receive ----


@dataclass(frozen=True)
class Request:
    url: str
    nonce: str  # "" = a subscription
    error: tuple[str, str] | None  # (code, message) of a NACK


@dataclass(frozen=True)
class Response:
    nonce: str
    url: str
    resource_id: str
    operation: str
    resource: Any


def parse_request(frame: dict[str, Any]) -> Request:
    url, nonce = frame.get("ResourceURL"), frame.get("ResponseNonce") or ""
    error = frame.get("Error")
    if not isinstance(url, str) or not isinstance(nonce, str):
        raise BadMessage("request without a string ResourceURL/ResponseNonce")
    if error is None:
        return Request(url, nonce, None)
    if not isinstance(error, dict) or not nonce:
        raise BadMessage("request error must be a map and come with a ResponseNonce")
    code, message = str(error.get("Code", ""))[:100], str(error.get("Message", ""))[:1000]
    return Request(url, nonce, (code, message))


def parse_response(frame: dict[str, Any]) -> Response:
    """The envelope of a Response. A nonce that is not a string cannot be answered at all."""
    nonce, url, rid = frame.get("Nonce"), frame.get("ResourceURL"), frame.get("ResourceID", "")
    if not isinstance(nonce, str) or not nonce:
        raise BadMessage("response without a nonce")
    if not isinstance(url, str) or not isinstance(rid, str):
        raise BadMessage("response without a string ResourceURL/ResourceID")
    return Response(nonce, url, rid, str(frame.get("Operation") or UPSERT), frame.get("Resource"))


# ---- resource payloads: checked field by field, unknown fields dropped ----

_NODE_STR = ("ID", "Node", "Address", "Datacenter")
_SERVICE_STR = ("ID", "Service", "Address")
_CHECK_STR = ("CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName", "Node")


def _strs(src: dict[str, Any], keys: tuple[str, ...], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        value = src.get(key, "")
        if not isinstance(value, str):
            raise BadMessage(f"{where}.{key} is not a string")
        out[key] = value
    return out


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadMessage(f"{where} is not a map of strings")
    return dict(value)


def _instance(item: Any, i: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise BadMessage(f"Nodes[{i}] is not a map")
    node_in, svc_in, checks_in = item.get("Node"), item.get("Service"), item.get("Checks") or []
    if not isinstance(node_in, dict) or not isinstance(svc_in, dict):
        raise BadMessage(f"Nodes[{i}] needs a Node and a Service")
    node = _strs(node_in, _NODE_STR, f"Nodes[{i}].Node")
    if not node["Node"]:
        raise BadMessage(f"Nodes[{i}].Node.Node is empty")
    where = f"Nodes[{i}].Node"
    node["TaggedAddresses"] = _str_map(node_in.get("TaggedAddresses"), f"{where}.TaggedAddresses")
    node["Meta"] = _str_map(node_in.get("Meta"), f"{where}.Meta")
    svc = _strs(svc_in, _SERVICE_STR, f"Nodes[{i}].Service")
    if not svc["Service"]:
        raise BadMessage(f"Nodes[{i}].Service.Service is empty")
    svc["ID"] = svc["ID"] or svc["Service"]
    tags, port = svc_in.get("Tags") or [], svc_in.get("Port", 0)
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadMessage(f"Nodes[{i}].Service.Tags is not a list of strings")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise BadMessage(f"Nodes[{i}].Service.Port is not a port number")
    svc.update(Tags=list(tags), Port=port,
               Meta=_str_map(svc_in.get("Meta"), f"Nodes[{i}].Service.Meta"))
    if not isinstance(checks_in, list):
        raise BadMessage(f"Nodes[{i}].Checks is not a list")
    checks = []
    for j, c in enumerate(checks_in):
        if not isinstance(c, dict):
            raise BadMessage(f"Nodes[{i}].Checks[{j}] is not a map")
        check = _strs(c, _CHECK_STR, f"Nodes[{i}].Checks[{j}]")
        if check["Status"] not in _STATUS_RANK:
            raise BadMessage(
                f"Nodes[{i}].Checks[{j}].Status {check['Status']!r} is not a check status")
        checks.append(check)
    return {"Node": node, "Service": svc, "Checks": checks}


def parse_service(resource: Any, name: str) -> list[dict[str, Any]]:
    """An ExportedService snapshot -> its instances (every one must be of service `name`)."""
    if not name:
        raise BadMessage("ExportedService without a ResourceID (service name)")
    if not isinstance(resource, dict) or not isinstance(resource.get("Nodes", []), list):
        raise BadMessage("ExportedService resource is not {Nodes: [...]}")
    nodes = resource.get("Nodes") or []
    if len(nodes) > MAX_INSTANCES:
        raise BadMessage(
            f"ExportedService {name!r} has {len(nodes)} instances (limit {MAX_INSTANCES})")
    out = [_instance(item, i) for i, item in enumerate(nodes)]
    for inst in out:
        if inst["Service"]["Service"] != name:
            raise BadMessage(
                f"instance of {inst['Service']['Service']!r} in the snapshot of {name!r}")
    return out


def parse_service_list(resource: Any) -> list[str]:
    names = resource.get("Services") if isinstance(resource, dict) else None
    if names is None:
        names = []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise BadMessage("ExportedServiceList resource is not {Services: [names]}")
    return sorted(set(names))


def parse_addresses(resource: Any) -> list[str]:
    addrs = resource.get("Addresses") if isinstance(resource, dict) else None
    if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
        raise BadMessage("PeeringServerAddresses resource is not {Addresses: [host:port]}")
    for a in addrs:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadMessage(f"{a!r} is not a host:port address")
    return sorted(set(addrs))


# ---- what the exporter sends ----


def flatten_checks(node: str, service_id: str, service_name: str,
                   checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consul's flattenChecks: one synthetic check with the most important status
    (maintenance > critical > warning > passing); no checks -> none."""
    if not checks:
        return []
    status = "passing"
    for c in checks:
        cid = str(c.get("CheckID", ""))
        if cid == NODE_MAINT or cid.startswith(SERVICE_MAINT_PREFIX):
            status = "maintenance"
            break
        s = str(c.get("Status", ""))
        if _STATUS_RANK.get(s, 0) < _STATUS_RANK[status]:
            status = s if s in _STATUS_RANK else "critical"
    service_id = service_id or service_name
    return [{"CheckID": f"{service_id}:{OVERALL_CHECK}", "Name": OVERALL_CHECK, "Status": status,
             "Notes": "", "Output": "", "ServiceID": service_id, "ServiceName": service_name,
             "Node": node}]


def export_instance(csn: dict[str, Any]) -> dict[str, Any]:
    """A local health entry {Node, Service, Checks} as it goes to the peer: only the fields the
    importer keeps (no local indexes), checks collapsed."""
    node_in, svc_in = csn.get("Node") or {}, csn.get("Service") or {}
    node = {k: node_in.get(k, "") for k in _NODE_STR}
    node["TaggedAddresses"] = dict(node_in.get("TaggedAddresses") or {})
    node["Meta"] = dict(node_in.get("Meta") or {})
    svc = {k: svc_in.get(k, "") for k in _SERVICE_STR}
    svc.update(Tags=list(svc_in.get("Tags") or []), Port=int(svc_in.get("Port") or 0),
               Meta=dict(svc_in.get("Meta") or {}))
    checks = flatten_checks(node["Node"], svc["ID"], svc["Service"], list(csn.get("Checks") or []))
    return {"Node": node, "Service": svc, "Checks": checks}


def service_snapshot(instances: list[dict[str, Any]]) -> dict[str, Any]:
    nodes = [export_instance(c) for c in instances]
    nodes.sort(key=lambda n: (n["Node"]["Node"], n["Service"]["ID"]))
    return {"Nodes": nodes}


def digest(resource: Any) -> bytes:
    """Identity of a resource's content: the exporter sends a snapshot only when it changed."""
    return hashlib.blake2b(msgpack.packb(resource, use_bin_type=True), digest_size=16).digest()

"""The catalog and health endpoints (Consul 1.14+ shapes and texts).

Rows of the route table (api/pipeline.py: forwarding, read modes, the token, blocking queries).
Writes: `PUT /v1/catalog/register`, `PUT /v1/catalog/deregister` - decoded and checked as
Consul's HTTP layer and Catalog RPC do, ACL-vetted at the leader against its state
(vetRegisterWithACL / vetDeregisterWithACL: service:write, node:write), then committed through
Raft (api/commit.py). Consul answers its RPC errors with 500; as everywhere in peerplane, they
are 400 with Consul's text.

Reads: `GET /v1/catalog/services`, `/v1/catalog/service/:name`, `/v1/catalog/nodes`,
`/v1/health/service/:name` - the three read modes and blocking queries.
`?peer=NAME` returns what was imported from that peering (with PeerName on every part); without
it only local records. With ACLs, results are filtered by service:read / node:read and
`X-Consul-Results-Filtered-By-ACLs: true` says so, as in Consul.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from cluster.acl import Authorizer, Permission, denied_text
from cluster.commands import CatalogDeregister, CatalogRegister
from cluster.gojson import GoJSONError, ListOf, Schema, go_decode_strict, go_quote
from cluster.state.catalog import STATUSES

from .authz import ANY_TOKEN, IDENTITY
from .catalog_json import health_json, node_json, service_node_json
from .commit import commit
from .context import SERVER, ServerContext
from .errors import APIError, bad_request
from .pipeline import READ, WRITE, Route
from .reads import read_headers
from .render import json_response
from .validate import default_partition_only

FILTERED = "X-Consul-Results-Filtered-By-ACLs"
CATALOG = "catalog"  # how the 503 texts name what changed

_CHECK: Schema = {
    "Node": "string", "CheckID": "string", "Name": "string", "Status": "string",
    "Notes": "string", "Output": "string", "ServiceID": "string", "ServiceName": "string",
    "ServiceTags": "[]string", "Type": "string", "Interval": "any", "Timeout": "any",
    "ExposedPort": "int", "Definition": "any", "PeerName": "string", "Namespace": "string",
    "Partition": "string", "CreateIndex": "any", "ModifyIndex": "any",
}
_SERVICE: Schema = {
    "Kind": "string", "ID": "string", "Service": "string", "Tags": "[]string",
    "Address": "string", "TaggedAddresses": "any", "Meta": "map[string]string", "Port": "int",
    "SocketPath": "string", "Weights": {"Passing": "int", "Warning": "int"},
    "EnableTagOverride": "bool", "Proxy": "any", "Connect": "any", "PeerName": "string",
    "Namespace": "string", "Partition": "string", "Locality": "any",
    "CreateIndex": "any", "ModifyIndex": "any",
}
REGISTER_REQUEST: Schema = {
    "ID": "string", "Node": "string", "Address": "string", "Datacenter": "string",
    "TaggedAddresses": "map[string]string", "NodeMeta": "map[string]string",
    "Service": _SERVICE, "Check": _CHECK, "Checks": ListOf(_CHECK, "structs.HealthChecks"),
    "SkipNodeUpdate": "bool", "PeerName": "string", "Partition": "string",
    "Namespace": "string", "Locality": "any", "Token": "string",
}
DEREGISTER_REQUEST: Schema = {
    "Node": "string", "ServiceID": "string", "CheckID": "string", "Datacenter": "string",
    "PeerName": "string", "Partition": "string", "Namespace": "string", "Token": "string",
}
_ANY_ADDRESS = ("0.0.0.0", "::", "[::]")
_GO_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


def _decode(raw: bytes, schema: Schema, type_name: str) -> dict[str, Any]:
    try:  # Consul's decodeBody: unknown fields are ignored here
        return go_decode_strict(raw, schema, type_name, strict=False)
    except GoJSONError as e:
        raise bad_request(f"Request decode failed: {e}") from None


def _node_id_problem(text: str) -> str | None:
    """go-uuid's ParseUUID errors."""
    if len(text) != 36:
        return "uuid string is wrong length"
    if any(text[i] != "-" for i in (8, 13, 18, 23)):
        return "uuid is improperly formatted"
    for ch in text.replace("-", ""):
        if ch not in "0123456789abcdefABCDEF":
            return f"encoding/hex: invalid byte: U+{ord(ch):04X} {ch!r}"
    return None


def _checks(body: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """Check and Checks[] as one list, IDs defaulted to names (Consul's checkPreApply)."""
    checks = list(body.get("Checks") or [])
    if body.get("Check"):
        checks.append(body["Check"])
    out = []
    for chk in checks:
        chk = dict(chk)
        chk["CheckID"] = chk.get("CheckID") or chk.get("Name", "")
        if not chk["CheckID"]:
            raise bad_request("Missing check name")
        if chk.get("Status", "") not in ("", *STATUSES):
            raise bad_request("Bad check status")
        if chk.get("Node") and chk["Node"].lower() != node.lower():
            raise bad_request(f"Node '{chk['Node']}' for check '{chk['CheckID']}' doesn't match "
                              f"register request node '{node}'")
        out.append({k: chk[k] for k in ("CheckID", "Name", "Status", "Notes", "Output",
                                        "ServiceID", "Type") if k in chk})
    return out


def _check_register(ctx: ServerContext, body: dict[str, Any]) -> dict[str, Any]:
    """What Consul's Catalog.Register checks before Raft; the command's fields."""
    if body.get("PeerName") or any(
        part.get("PeerName") for part in (body.get("Service") or {}, body.get("Check") or {},
                                          *(body.get("Checks") or []))
    ):
        raise bad_request("cannot register requests with PeerName in them")
    if body.get("Datacenter") not in (None, "", ctx.datacenter):
        raise bad_request("No path to datacenter")
    node = body.get("Node", "")
    if not node:
        raise bad_request("Must provide node")
    if body.get("ID") and (problem := _node_id_problem(body["ID"])):
        raise bad_request(f"Bad node ID: {problem}")
    skip = body.get("SkipNodeUpdate", False)
    if not body.get("Address") and not skip:
        raise bad_request("Must provide address if SkipNodeUpdate is not set")
    cmd: dict[str, Any] = {
        "SkipNodeUpdate": skip,
        "Node": {"Node": node, "ID": body.get("ID", ""), "Address": body.get("Address", ""),
                 "Datacenter": ctx.datacenter, "TaggedAddresses": body.get("TaggedAddresses"),
                 "Meta": body.get("NodeMeta")},
        "Checks": _checks(body, node),
    }
    if (svc := body.get("Service")) is not None:
        svc = dict(svc)
        if not svc.get("ID") and svc.get("Service"):
            svc["ID"] = svc["Service"]
        if svc.get("ID") and not svc.get("Service"):
            raise bad_request(
                "Must provide service name (Service.Service) when service ID is provided")
        if not svc.get("ID"):
            raise bad_request("Must provide service name")
        if svc.get("Address") in _ANY_ADDRESS:
            raise bad_request("Invalid service address")
        if svc.get("Kind"):
            raise bad_request(f"Service.Kind {go_quote(svc['Kind'])} is not supported by "
                              "peerplane (typical services only)")
        cmd["Service"] = {k: svc[k] for k in ("ID", "Service", "Tags", "Address", "Meta",
                                              "Port", "Weights", "EnableTagOverride") if k in svc}
    return cmd


# ---- ACLs (decided at the leader, against its state) ----


def _authorizer(request: web.Request) -> Authorizer | None:
    identity = request.get(IDENTITY)
    return identity.authorizer if identity is not None else None


def _require(request: web.Request, resource: str, segment: str) -> None:
    authz = _authorizer(request)
    perm = Permission(resource, "write", segment)
    if authz is not None and not authz.allows(perm):
        raise APIError(403, denied_text(request[IDENTITY].accessor, perm))


def _changes_node(cmd: dict[str, Any], existing: dict[str, Any] | None) -> bool:
    if cmd["SkipNodeUpdate"]:
        return False
    if existing is None:
        return True
    new = cmd["Node"]
    return any((new[k] or None) != (existing[k] or None) if k in ("TaggedAddresses", "Meta")
               else new[k] != existing[k] for k in ("ID", "Address", "TaggedAddresses", "Meta"))


def _vet_register(request: web.Request, ctx: ServerContext, cmd: dict[str, Any]) -> None:
    if _authorizer(request) is None:
        return
    node = cmd["Node"]["Node"]
    if _changes_node(cmd, ctx.fsm.catalog.node(node)):
        _require(request, "node", node)
    svc = cmd.get("Service")
    if svc is not None:
        _require(request, "service", svc["Service"])
        other = ctx.fsm.catalog.service(node, svc["ID"])
        if other is not None:
            _require(request, "service", other["Service"])
    for chk in cmd["Checks"]:
        sid = chk.get("ServiceID", "")
        if not sid:
            _require(request, "node", node)
        elif svc is None or svc["ID"] != sid:
            other = ctx.fsm.catalog.service(node, sid)
            if other is None:
                raise bad_request(f"Unknown service ID '{sid}' for check ID '{chk['CheckID']}'")
            _require(request, "service", other["Service"])


def _vet_deregister(request: web.Request, ctx: ServerContext, body: dict[str, Any]) -> None:
    authz = _authorizer(request)
    node = body["Node"]
    if authz is None or authz.allows(Permission("node", "write", node)):
        return
    if sid := body.get("ServiceID"):
        svc = ctx.fsm.catalog.service(node, sid)
        if svc is None:
            raise bad_request(f"Unknown service ID '{sid}'")
        _require(request, "service", svc["Service"])
    elif cid := body.get("CheckID"):
        chk = ctx.fsm.catalog.check(node, cid)
        if chk is None:
            raise bad_request(f"Unknown check ID '{cid}'")
        if chk["ServiceID"]:
            _require(request, "service", chk["ServiceName"])
        else:
            _require(request, "node", node)
    else:
        _require(request, "node", node)


# ---- writes ----


def _partition(request: web.Request) -> None:
    default_partition_only(request.query, request.headers.get("X-Consul-Partition"))


async def parse_register(request: web.Request) -> dict[str, Any]:
    _partition(request)
    body = _decode(await request.read(), REGISTER_REQUEST, "structs.RegisterRequest")
    return _check_register(request.app[SERVER], body)


async def register(request: web.Request, cmd: dict[str, Any]) -> web.StreamResponse:
    ctx = request.app[SERVER]
    _vet_register(request, ctx, cmd)
    await commit(ctx, lambda: CatalogRegister(**cmd), CATALOG)
    return json_response(request, True)


async def parse_deregister(request: web.Request) -> dict[str, Any]:
    _partition(request)
    body = _decode(await request.read(), DEREGISTER_REQUEST, "structs.DeregisterRequest")
    if body.get("Datacenter") not in (None, "", request.app[SERVER].datacenter):
        raise bad_request("No path to datacenter")
    if not body.get("Node"):
        raise bad_request("Must provide node")
    return {"Node": body["Node"], "ServiceID": body.get("ServiceID", ""),
            "CheckID": body.get("CheckID", "")}


async def deregister(request: web.Request, cmd: dict[str, Any]) -> web.StreamResponse:
    ctx = request.app[SERVER]
    _vet_deregister(request, ctx, cmd)
    await commit(ctx, lambda: CatalogDeregister(**cmd), CATALOG)
    return json_response(request, True)


# ---- reads ----


@dataclass(frozen=True)
class Query:
    peer: str = ""
    name: str = ""
    tags: tuple[str, ...] = ()
    passing: bool = False


def _answer(request: web.Request, body: Any, index: int, filtered: bool) -> web.Response:
    headers = read_headers(request, index)
    if filtered:
        headers[FILTERED] = "true"
    return json_response(request, body, headers)


def _may_read(authz: Authorizer | None, node: dict[str, Any], service: str) -> bool:
    """Consul's ACL filter for an instance: service:read, and node:read for local nodes."""
    if authz is None:
        return True
    if not authz.allows(Permission("service", "read", service)):
        return False
    return bool(node["PeerName"]) or authz.allows(Permission("node", "read", node["Node"]))


def _tags_match(svc: dict[str, Any], tags: tuple[str, ...]) -> bool:
    have = {t.lower() for t in svc["Tags"] or ()}
    return all(t.lower() in have for t in tags)


def _passing(request: web.Request) -> bool:
    """Consul's getBoolQueryParam: present and empty is true, else Go's ParseBool."""
    if "passing" not in request.query:
        return False
    value = request.query["passing"]
    if value != "" and value not in _GO_BOOL:
        raise bad_request("Invalid value for ?passing")
    return value == "" or _GO_BOOL[value]


async def parse_query(request: web.Request) -> Query:
    _partition(request)
    return Query(peer=request.query.get("peer", ""))


async def parse_service_query(request: web.Request) -> Query:
    _partition(request)
    name = request.match_info.get("name", "")
    if not name:
        raise bad_request("Missing service name")
    return Query(peer=request.query.get("peer", ""), name=name,
                 tags=tuple(request.query.getall("tag", [])), passing=_passing(request))


async def list_services(request: web.Request, q: Query) -> web.StreamResponse:
    authz = _authorizer(request)
    services, index = request.app[SERVER].fsm.catalog.services(q.peer)
    shown = {name: tags for name, tags in services.items()
             if authz is None or authz.allows(Permission("service", "read", name))}
    return _answer(request, shown, index, len(shown) != len(services))


async def list_nodes(request: web.Request, q: Query) -> web.StreamResponse:
    authz = _authorizer(request)
    nodes, index = request.app[SERVER].fsm.catalog.nodes(q.peer)
    shown = [node_json(n) for n in nodes if authz is None or n["PeerName"]
             or authz.allows(Permission("node", "read", n["Node"]))]
    return _answer(request, shown, index, len(shown) != len(nodes))


async def service_nodes(request: web.Request, q: Query) -> web.StreamResponse:
    authz = _authorizer(request)
    rows, index = request.app[SERVER].fsm.catalog.service_nodes(q.name, q.peer)
    rows = [r for r in rows if _tags_match(r[1], q.tags)]
    shown = [service_node_json(n, s) for n, s in rows if _may_read(authz, n, s["Service"])]
    return _answer(request, shown, index, len(shown) != len(rows))


async def health_service(request: web.Request, q: Query) -> web.StreamResponse:
    authz = _authorizer(request)
    rows, index = request.app[SERVER].fsm.catalog.health(q.name, q.peer)
    rows = [r for r in rows if _tags_match(r[1], q.tags)
            and not (q.passing and any(c["Status"] != "passing" for c in r[2]))]
    shown = [health_json(*r) for r in rows if _may_read(authz, r[0], r[1]["Service"])]
    return _answer(request, shown, index, len(shown) != len(rows))


def _services_index(ctx: ServerContext, q: Query) -> int:
    return ctx.fsm.catalog.services_index(q.peer)


def _nodes_index(ctx: ServerContext, q: Query) -> int:
    return ctx.fsm.catalog.nodes_index(q.peer)


def _service_index(ctx: ServerContext, q: Query) -> int:
    return ctx.fsm.catalog.service_index(q.name, q.peer)


def _service_routes(prefix: str, serve: Callable[..., Any]) -> list[Route]:
    # Everything below the prefix is the name, slashes included (Consul trims the prefix).
    return [Route("GET", path, READ, ANY_TOKEN, serve, parse_service_query, _service_index)
            for path in (prefix, prefix + r"{name:[\s\S]+}")]


# Catalog routes need a token that resolves; what it may see or write depends on the records
# (service:/node: rules): reads are filtered and writes vetted here, at the leader.
ROUTES = [
    Route("PUT", "/v1/catalog/register", WRITE, ANY_TOKEN, register, parse_register),
    Route("PUT", "/v1/catalog/deregister", WRITE, ANY_TOKEN, deregister, parse_deregister),
    Route("GET", "/v1/catalog/services", READ, ANY_TOKEN, list_services, parse_query,
          _services_index),
    Route("GET", "/v1/catalog/nodes", READ, ANY_TOKEN, list_nodes, parse_query, _nodes_index),
    *_service_routes("/v1/catalog/service/", service_nodes),
    *_service_routes("/v1/health/service/", health_service),
]

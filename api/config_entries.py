"""Config entries: `PUT /v1/config` (?cas=), `GET /v1/config/:kind[/:name]`,
`DELETE /v1/config/:kind/:name` (?cas=), for the one kind peerplane implements,
`exported-services` (Consul CE: its name must be `default`).

The body is decoded as Consul does it (JSON into a map, then mapstructure onto the entry:
keys case-insensitive, `peer_name`/`sameness_group` aliases, unknown keys refused with
`invalid config key`), then normalized and validated with Consul's texts
(agent/structs/config_entry_exports.go). ACLs (api/authz.py): mesh:write to write, mesh:read to
read. Consul answers its RPC errors with 500; peerplane with 400 and the same text.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from cluster.acl import Permission
from cluster.commands import ConfigDelete, ConfigSet
from cluster.gojson import GoJSONError, go_decode_object, go_quote
from cluster.state.config import EXPORTED_SERVICES

from .commit import commit
from .context import SERVER, ServerContext
from .errors import APIError, bad_request
from .pipeline import READ, WRITE, Route
from .reads import read_headers
from .render import json_response
from .validate import default_partition_only

WHAT = "config entry"  # how the 503 texts name what changed
# Kinds Consul knows; peerplane stores only exported-services.
CONSUL_KINDS = frozenset({
    "service-defaults", "proxy-defaults", "service-router", "service-splitter",
    "service-resolver", "ingress-gateway", "terminating-gateway", "service-intentions", "mesh",
    EXPORTED_SERVICES, "sameness-group", "api-gateway", "bound-api-gateway",
    "file-system-certificate", "inline-certificate", "http-route", "tcp-route", "jwt-provider",
})
META_MAX_PAIRS, META_KEY_MAX, META_VALUE_MAX = 64, 128, 512
_UINT = re.compile(r"[0-9]+")

# mapstructure targets: field -> (Go type, nested fields); keys match case-insensitively
_CONSUMER = {"Peer": "string", "Partition": "string", "SamenessGroup": "string"}
_SERVICE = {"Name": "string", "Namespace": "string", "Consumers": ("list", _CONSUMER)}
_ENTRY = {"Kind": "string", "Name": "string", "Services": ("list", _SERVICE),
          "Meta": "map[string]string", "CreateIndex": "uint64", "ModifyIndex": "uint64"}
_ALIASES = {"peer_name": "Peer", "sameness_group": "SamenessGroup"}


def multierror(errors: list[str]) -> str:
    """go-multierror's text."""
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "".join(f"\n\t* {e}" for e in errors) + "\n\n"


def _go_value(value: Any) -> str:
    """Roughly Go's %v of a decoded JSON value (for mapstructure's texts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_value(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "<nil>" if value is None else str(value)


_GO_TYPES = {bool: "bool", int: "float64", float: "float64", str: "string",
             list: "[]interface {}", dict: "map[string]interface {}"}


class _Decoder:
    """mapstructure.Decode with WeaklyTypedInput, collecting errors and unused keys."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.unused: list[str] = []

    def _unconvertible(self, path: str, want: str, value: Any) -> None:
        self.errors.append(f"'{path}' expected type '{want}', got unconvertible type "
                           f"'{_GO_TYPES.get(type(value), 'interface {}')}', value: "
                           f"'{_go_value(value)}'")

    def _string(self, value: Any, path: str) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _go_value(value)
        if value is None:
            return ""
        self._unconvertible(path, "string", value)
        return ""

    def struct(self, obj: Any, fields: dict[str, Any], path: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            self.errors.append(f"'{path}' expected a map, got '{_kind(obj)}'")
            return {}
        out: dict[str, Any] = {}
        folded = {name.lower(): name for name in fields}
        for key, value in obj.items():
            name = _ALIASES.get(key) if key in _ALIASES and "Peer" in fields else None
            name = name or (key if key in fields else folded.get(key.lower()))
            where = f"{path}.{key}" if path else key
            if name is None:
                self.unused.append(where)
                continue
            target = fields[name]
            where = f"{path}.{name}" if path else name
            if target == "string":
                out[name] = self._string(value, where)
            elif target == "map[string]string":
                if value is None:
                    continue
                if not isinstance(value, dict):
                    self.errors.append(f"'{where}' expected a map, got '{_kind(value)}'")
                    continue
                out[name] = {k: self._string(v, f"{where}[{k}]") for k, v in value.items()}
            elif isinstance(target, tuple):
                items = value if isinstance(value, list) else [] if value is None else [value]
                out[name] = [self.struct(item, target[1], f"{where}[{i}]")
                             for i, item in enumerate(items)]
        return out


def _kind(value: Any) -> str:
    return {bool: "bool", str: "string", list: "slice", dict: "map"}.get(
        type(value), "float64" if isinstance(value, int | float) else "invalid")


def decode_entry(raw: bytes) -> dict[str, Any]:
    """Consul's ConfigApply decoding: the entry's fields, or 400 `Request decoding failed`."""
    try:
        obj = go_decode_object(raw)
    except GoJSONError as e:
        raise bad_request(f"Request decoding failed: {e}") from None
    kind = obj.get("Kind", obj.get("kind")) if ("Kind" in obj or "kind" in obj) else None
    if "Kind" not in obj and "kind" not in obj:
        raise bad_request("Request decoding failed: Payload does not contain a kind/Kind key "
                          "at the top level")
    if not isinstance(kind, str):
        raise bad_request("Request decoding failed: Kind value in payload is not a string")
    check_kind(kind, "Request decoding failed: ")
    decoder = _Decoder()
    entry = decoder.struct(obj, _ENTRY, "")
    if decoder.errors:
        n = len(decoder.errors)
        raise bad_request(f"Request decoding failed: {n} error(s) decoding:\n\n"
                          + "\n".join(f"* {e}" for e in sorted(decoder.errors)))
    problems = []
    for key in decoder.unused:
        if key in ("CreateIndex", "ModifyIndex", "kind", "Kind"):
            continue
        if key.lower().endswith("namespace"):
            problems.append(f"invalid config key {go_quote(key)}, namespaces are a consul "
                            "enterprise feature")
        else:
            problems.append(f"invalid config key {go_quote(key)}")
    if problems:
        raise bad_request(f"Request decoding failed: {multierror(problems)}")
    return {"Kind": EXPORTED_SERVICES, "Name": entry.get("Name", ""),
            "Services": entry.get("Services", []), "Meta": entry.get("Meta") or {}}


def check_kind(kind: str, prefix: str = "") -> None:
    if kind not in CONSUL_KINDS:
        raise bad_request(f"{prefix}invalid config entry kind: {kind}")
    if kind != EXPORTED_SERVICES:
        raise bad_request(f"{prefix}config entry kind {go_quote(kind)} is not supported by "
                          f"peerplane (it stores only {EXPORTED_SERVICES})")


def validate(entry: dict[str, Any]) -> dict[str, Any]:
    """Normalize() and Validate() of ExportedServicesConfigEntry (CE); the stored form."""
    if entry["Name"] != "default":
        raise bad_request('exported-services Name must be "default"')
    meta, problems = entry["Meta"], []
    if len(meta) > META_MAX_PAIRS:
        problems.append(f"Meta exceeds maximum element count {META_MAX_PAIRS}")
    for key, value in meta.items():
        if len(key) > META_KEY_MAX:
            problems.append(f"Meta key {go_quote(key)} exceeds maximum length {META_KEY_MAX}")
        if len(value) > META_VALUE_MAX:
            problems.append(f"Meta value for key {go_quote(key)} exceeds maximum length "
                            f"{META_VALUE_MAX}")
    if problems:
        raise bad_request(multierror(problems))
    services = entry["Services"]
    for i, svc in enumerate(services):
        for j, consumer in enumerate(svc.get("Consumers", [])):
            if consumer.get("Partition", "") not in ("", "default"):
                raise bad_request(f"Services[{i}].Consumers[{j}]: partitions are an "
                                  "enterprise-only feature")
            if consumer.get("SamenessGroup"):
                raise bad_request(f"Services[{i}].Consumers[{j}]: sameness-groups are an "
                                  "enterprise-only feature")
    for i, svc in enumerate(services):
        if not svc.get("Name"):
            raise bad_request(f"Services[{i}]: service name cannot be empty")
        if not svc.get("Consumers"):
            raise bad_request(f"Services[{i}]: must have at least one consumer")
        for j, consumer in enumerate(svc["Consumers"]):
            if sum(1 for k in ("Peer", "Partition", "SamenessGroup") if consumer.get(k)) > 1:
                raise bad_request(f"Services[{i}].Consumers[{j}]: must define at most one of "
                                  "Peer, Partition, or SamenessGroup")
            if consumer.get("Peer") == "*":
                raise bad_request(f"Services[{i}].Consumers[{j}]: exporting to all peers "
                                  "(wildcard) is not supported")
    stored = {"Kind": EXPORTED_SERVICES, "Name": "default", "Services": [
        {"Name": s["Name"], "Consumers": [{k: c[k] for k in ("Peer", "Partition") if c.get(k)}
                                          for c in s["Consumers"]]}
        for s in services]}
    if meta:
        stored["Meta"] = meta
    return stored


def entry_json(rec: dict[str, Any]) -> dict[str, Any]:
    """ExportedServicesConfigEntry.MarshalJSON: Kind first; empty Services/Meta omitted."""
    out: dict[str, Any] = {"Kind": rec["Kind"], "Name": rec["Name"]}
    if rec.get("Services"):
        out["Services"] = [
            {"Name": s["Name"], **({"Consumers": s["Consumers"]} if s["Consumers"] else {})}
            for s in rec["Services"]]
    if rec.get("Meta"):
        out["Meta"] = dict(sorted(rec["Meta"].items()))
    out["CreateIndex"] = rec["CreateIndex"]
    out["ModifyIndex"] = rec["ModifyIndex"]
    return out


def _cas(request: web.Request) -> int | None:
    text = request.query.get("cas", "")
    if not text:
        return None
    if not _UINT.fullmatch(text):
        raise bad_request(f'strconv.ParseUint: parsing {go_quote(text)}: invalid syntax')
    if int(text) >= 1 << 64:
        raise bad_request(f'strconv.ParseUint: parsing {go_quote(text)}: value out of range')
    return int(text)


def _partition(request: web.Request) -> None:
    default_partition_only(request.query, request.headers.get("X-Consul-Partition"))


async def parse_apply(request: web.Request) -> dict[str, Any]:
    _partition(request)
    entry = validate(decode_entry(await request.read()))
    cas = _cas(request)
    return {"Entry": entry} if cas is None else {"Entry": entry, "CAS": cas}


async def apply(request: web.Request, cmd: dict[str, Any]) -> web.StreamResponse:
    res = await commit(request.app[SERVER], lambda: ConfigSet(**cmd), WHAT)
    return json_response(request, bool(res.get("applied")))


async def parse_path(request: web.Request) -> tuple[str, str | None]:
    """`/v1/config/<kind>` (name None) or `/v1/config/<kind>/<name, maybe empty>`."""
    _partition(request)
    kind = request.match_info["kind"]
    if kind not in CONSUL_KINDS:
        raise bad_request(f"invalid config entry kind: {kind}")
    return kind, request.match_info.get("name")


async def read(request: web.Request, parsed: tuple[str, str | None]) -> web.StreamResponse:
    kind, name = parsed
    table = request.app[SERVER].fsm.config_entries
    if name is None:
        recs, index = table.list(kind)
        return json_response(request, [entry_json(r) for r in recs],
                             read_headers(request, index))
    rec, index = table.get(kind, name), table.index(kind)
    headers = read_headers(request, index)
    if rec is None:
        raise APIError(404, f"Config entry not found for {go_quote(kind)} / {go_quote(name)}",
                       headers)
    return json_response(request, entry_json(rec), headers)


async def parse_delete(request: web.Request) -> dict[str, Any]:
    if request.match_info.get("name") is None:
        raise APIError(404, "Must provide both a kind and name to delete")
    kind, name = await parse_path(request)
    cas = _cas(request)
    cmd = {"Kind": kind, "Name": name}
    return cmd if cas is None else dict(cmd, CAS=cas)


async def delete(request: web.Request, cmd: dict[str, Any]) -> web.StreamResponse:
    res = await commit(request.app[SERVER], lambda: ConfigDelete(**cmd), WHAT)
    return json_response(request, bool(res.get("applied")) if "CAS" in cmd else {})


def _kind_index(ctx: ServerContext, parsed: tuple[str, str | None]) -> int:
    return ctx.fsm.config_entries.index(parsed[0])


MESH_READ, MESH_WRITE = Permission("mesh", "read"), Permission("mesh", "write")
_ENTRY_PATHS = ("/v1/config/{kind}", r"/v1/config/{kind}/{name:[\s\S]*}")
ROUTES = [
    Route("PUT", "/v1/config", WRITE, MESH_WRITE, apply, parse_apply),
    *(Route("GET", path, READ, MESH_READ, read, parse_path, _kind_index)
      for path in _ENTRY_PATHS),
    *(Route("DELETE", path, WRITE, MESH_WRITE, delete, parse_delete) for path in _ENTRY_PATHS),
]

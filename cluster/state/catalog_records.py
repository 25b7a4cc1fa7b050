"""Catalog records as the catalog table stores them, built from a command's maps: every field's
type is checked, so a wrongly typed value is refused (CommandError) before it could be stored."""

from __future__ import annotations

from typing import Any

from .errors import CommandError

Record = dict[str, Any]
STATUSES = ("passing", "warning", "critical", "maintenance")
_INDEXES = ("CreateIndex", "ModifyIndex")


def _str(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CommandError(f"invalid command: {what}.{key} has the wrong type")
    return value


def int_field(obj: dict[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise CommandError(f"invalid command: {what}.{key} has the wrong type")
    return value


def _str_map(obj: dict[str, Any], key: str, what: str) -> dict[str, str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise CommandError(f"invalid command: {what}.{key} has the wrong type")
    return dict(value)


def str_list(obj: dict[str, Any], key: str, what: str) -> list[str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CommandError(f"invalid command: {what}.{key} has the wrong type")
    return list(value)


def as_map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CommandError(f"invalid command: {what} is not a map")
    return value


def node_record(value: Any, peer: str) -> Record:
    obj = as_map(value, "Node")
    rec = {
        "ID": _str(obj, "ID", "Node"),
        "Node": _str(obj, "Node", "Node"),
        "Address": _str(obj, "Address", "Node"),
        "Datacenter": _str(obj, "Datacenter", "Node"),
        "TaggedAddresses": _str_map(obj, "TaggedAddresses", "Node"),
        "Meta": _str_map(obj, "Meta", "Node"),
        "PeerName": peer,
    }
    if not rec["Node"]:
        raise CommandError("Must provide node")
    return rec


def service_record(value: Any, node: str, peer: str) -> Record:
    obj = as_map(value, "Service")
    weights = obj.get("Weights")
    if weights is not None:
        weights = as_map(weights, "Service.Weights")
        weights = {"Passing": int_field(weights, "Passing", "Service.Weights"),
                   "Warning": int_field(weights, "Warning", "Service.Weights")}
    tagover = obj.get("EnableTagOverride", False)
    if not isinstance(tagover, bool):
        raise CommandError("invalid command: Service.EnableTagOverride has the wrong type")
    rec = {
        "Node": node,
        "ID": _str(obj, "ID", "Service"),
        "Service": _str(obj, "Service", "Service"),
        "Tags": str_list(obj, "Tags", "Service"),
        "Address": _str(obj, "Address", "Service"),
        "Meta": _str_map(obj, "Meta", "Service"),
        "Port": int_field(obj, "Port", "Service"),
        "Weights": weights or {"Passing": 1, "Warning": 1},
        "EnableTagOverride": tagover,
        "PeerName": peer,
    }
    if not rec["ID"] or not rec["Service"]:
        raise CommandError("invalid command: a service needs an ID and a name")
    return rec


def check_record(value: Any, node: str, peer: str) -> Record:
    obj = as_map(value, "Check")
    rec = {
        "Node": node,
        "CheckID": _str(obj, "CheckID", "Check"),
        "Name": _str(obj, "Name", "Check"),
        "Status": _str(obj, "Status", "Check") or "critical",  # Consul's default
        "Notes": _str(obj, "Notes", "Check"),
        "Output": _str(obj, "Output", "Check"),
        "ServiceID": _str(obj, "ServiceID", "Check"),
        "ServiceName": "",
        "ServiceTags": None,
        "Type": _str(obj, "Type", "Check"),
        "PeerName": peer,
    }
    if not rec["CheckID"]:
        raise CommandError("invalid command: a check needs a CheckID")
    if rec["Status"] not in STATUSES:
        raise CommandError(f"invalid command: unknown check status {rec['Status']!r}")
    return rec


def record_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CommandError(f"invalid command: {what} is not a list")
    return value


def peer_of(peer: Any) -> str:
    """A command's `Peer`, checked."""
    if not isinstance(peer, str) or not peer:
        raise CommandError("invalid command: Peer must be a peering name")
    return peer


def same(old: Record | None, new: Record) -> bool:
    return old is not None and all(old.get(k) == v for k, v in new.items() if k not in _INDEXES)

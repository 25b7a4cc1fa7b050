"""Input rules shared by the handlers: request bodies, peer names, partitions, metadata."""

from __future__ import annotations

import re
from typing import Any

from cluster.gojson import GoJSONError, Schema, go_decode_strict, go_quote

from .errors import APIError, bad_request

_NAME = re.compile(r"^[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?$")
_PARTITION = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?$")
_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512

TOKEN_REQUEST: Schema = {
    "PeerName": "string",
    "Partition": "string",
    "Meta": "map[string]string",
    "ServerExternalAddresses": "[]string",
}
ESTABLISH_REQUEST: Schema = {
    "PeerName": "string",
    "Partition": "string",
    "PeeringToken": "string",
    "Meta": "map[string]string",
}


def decode_body(raw: bytes, schema: Schema, type_name: str) -> dict[str, Any]:
    try:
        return go_decode_strict(raw, schema, type_name)
    except GoJSONError as e:
        raise bad_request(f"Body decoding failed: {e}") from None


def check_peer_name(name: str) -> None:
    # fullmatch: Go's `$` is end of text, Python's `$` also matches before a final newline.
    if not _NAME.fullmatch(name):
        raise bad_request(
            f"{name} is not a valid peer name: a valid peering name must consist of lower case "
            "alphanumeric characters or '-', and must start and end with an alphanumeric character"
        )


def partition_of(query_value: str | None, header_value: str | None, body_value: str = "") -> str:
    """Partition from body, query or header (the first given wins), lowercased; `default` when
    none. Every value given must follow the peer-name rules in any case (ASCII only: a Kelvin
    sign is not a `k`), or the request is refused, whichever of them would have won."""
    for given in (body_value, query_value, header_value):
        if given and not _PARTITION.fullmatch(given):
            raise APIError(400, f"Invalid partition name {go_quote(given)}")
    return (body_value or query_value or header_value or "default").lower()


def _meta_pair_problem(key: str, value: str) -> str | None:
    if key == "":
        return "Key cannot be blank"
    if not _META_KEY.fullmatch(key):
        return "Key contains invalid characters"
    if len(key) > META_KEY_MAX:
        return f"Key is too long (limit: {META_KEY_MAX} characters)"
    if key.startswith("consul-"):
        return "Key prefix 'consul-' is reserved for internal use"
    # Go's len(): UTF-8 bytes, not characters (surrogatepass: a lone surrogate must not crash)
    if len(value.encode("utf-8", "surrogatepass")) > META_VALUE_MAX:
        return f"Value is too long (limit: {META_VALUE_MAX} characters)"
    return None


def check_meta(meta: dict[str, str]) -> None:
    if len(meta) > META_MAX_PAIRS:
        raise bad_request(
            "meta tags failed validation: Node metadata cannot contain more than "
            f"{META_MAX_PAIRS} key/value pairs"
        )
    for key in sorted(meta):
        problem = _meta_pair_problem(key, meta[key])
        if problem:
            raise bad_request(
                f"meta tags failed validation: Couldn't load metadata pair "
                f"('{key}', '{meta[key]}'): {problem}"
            )


def default_partition_only(request_query: Any, header: str | None) -> None:
    """Catalog and config-entry routes exist in the default partition only (Consul CE): a
    malformed partition is 400 as on the peering routes, any other one is refused."""
    if partition_of(request_query.get("partition"), header) != "default":
        raise bad_request('Invalid query parameter: "partition" - Partitions are a Consul '
                          "Enterprise feature")

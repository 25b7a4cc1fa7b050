"""The ACL token endpoints in Consul's shapes (create, read, self, list, update, delete); see
api/acl.py for what the handlers check where. Secrets are never logged."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from cluster import acl, gotime
from cluster.commands import AclTokenDelete, AclTokenSet
from cluster.fsm import Record
from cluster.gojson import Schema

from .acl import (
    ACL_RECORD,
    acl_context,
    acls_enabled,
    decode,
    identity_of,
    may_write_acl,
    path_value,
    token_json,
    tokens_index,
)
from .authz import ACL_READ, ACL_WRITE, ANY_TOKEN
from .commit import commit
from .context import ServerContext
from .errors import APIError, bad_request
from .pipeline import READ, WRITE, Route
from .reads import read_headers
from .render import json_response

RESERVED_PREFIX = "00000000-0000-0000-0000-0000000000"
# Every field of Consul's structs.ACLToken is accepted (a read object can be sent back); the
# ones peerplane does not implement must be empty.
TOKEN_REQUEST: Schema = {
    "AccessorID": "string", "SecretID": "string", "Description": "string", "Policies": "any",
    "Roles": "any", "ServiceIdentities": "any", "NodeIdentities": "any",
    "TemplatedPolicies": "any", "Local": "any", "AuthMethod": "string",
    "ExpirationTime": "any", "ExpirationTTL": "any", "CreateTime": "any", "Hash": "any",
    "CreateIndex": "any", "ModifyIndex": "any", "Namespace": "string", "Partition": "string",
    "Type": "string", "Rules": "string",
}
_UNSUPPORTED = ("Roles", "ServiceIdentities", "NodeIdentities", "TemplatedPolicies",
                "ExpirationTime", "ExpirationTTL")


def _links(ctx: ServerContext, value: Any) -> list[str]:
    """Policy links from a request (by ID or by name) -> policy IDs, as Consul resolves them."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(v, dict) and isinstance(v.get("ID", ""), str)
        and isinstance(v.get("Name", ""), str) for v in value
    ):
        raise bad_request("Token decoding failed: json: cannot unmarshal into Go struct field "
                          "ACLToken.Policies of type []structs.ACLTokenPolicyLink")
    ids: list[str] = []
    for link in value:
        link_id, name = link.get("ID", ""), link.get("Name", "")
        if not link_id:
            policy = ctx.fsm.acl_policy_by_name(name)
            if policy is None:
                raise bad_request(f'No such ACL policy with name "{name}"')
            link_id = policy["ID"]
        elif ctx.fsm.acl_policy(link_id) is None:
            raise bad_request(f'No such ACL policy with ID "{link_id}"')
        if link_id not in ids:
            ids.append(link_id)
    return ids


def _check_token_body(body: dict[str, Any]) -> bool:
    """What peerplane does not implement, and what Consul refuses outright; returns Local."""
    for key in _UNSUPPORTED:
        if body.get(key):
            raise bad_request(f"{key} are not supported by this server")
    if body.get("AuthMethod"):
        raise bad_request("AuthMethod field is disallowed outside of Login")
    if body.get("Rules"):
        raise bad_request("Rules cannot be specified for this token")
    if body.get("Type"):
        raise bad_request("Type cannot be specified for this token")
    local = body.get("Local", False)
    if local is None:
        local = False
    if not isinstance(local, bool):
        raise bad_request("Token decoding failed: json: cannot unmarshal into Go struct field "
                          "ACLToken.Local of type bool")
    return local


def _new_token_id(ctx: ServerContext, value: str, field: str) -> str:
    """Consul's checks on a caller-chosen AccessorID / SecretID of a new token."""
    if not acl.is_uuid(value):
        raise bad_request(f"Invalid Token: {field} is not a valid UUID")
    if ctx.fsm.acl_token(value) is not None or ctx.fsm.acl_token_by_secret(value) is not None:
        raise bad_request(f"Invalid Token: {field} is already in use")
    if value.startswith(RESERVED_PREFIX):
        raise bad_request(
            f'Invalid Token: UUIDs with the prefix "{RESERVED_PREFIX}" are reserved'
        )
    return value


async def parse_token_create(request: web.Request) -> tuple[dict[str, Any], str]:
    acl_context(request)
    return decode(await request.read(), TOKEN_REQUEST, "structs.ACLToken", "Token"), ""


async def parse_token_update(request: web.Request) -> tuple[dict[str, Any], str]:
    body, _ = await parse_token_create(request)
    accessor = body.get("AccessorID") or request.match_info.get("id", "")
    if accessor != request.match_info.get("id", ""):
        raise bad_request("Token Accessor ID in URL and payload do not match")
    return body, accessor


async def _write_token(request: web.Request, body: dict[str, Any], accessor: str,
                       create: bool) -> web.StreamResponse:
    ctx = acl_context(request)
    if body.get("Partition", "default") not in ("", "default") or body.get(
        "Namespace", "default"
    ) not in ("", "default"):
        raise bad_request("Namespaces and admin partitions are a Consul Enterprise feature")
    existing: Record | None = None
    if create:
        accessor = body.get("AccessorID") or ""
        accessor = _new_token_id(ctx, accessor, "AccessorID") if accessor else str(uuid.uuid4())
        secret = body.get("SecretID") or ""
        secret = _new_token_id(ctx, secret, "SecretID") if secret else str(uuid.uuid4())
        create_time = gotime.now()
    else:
        if not acl.is_uuid(accessor):
            raise bad_request("AccessorID is not a valid UUID")
        existing = ctx.fsm.acl_token(accessor)
        if existing is None:
            raise bad_request(f'Cannot find token "{accessor}"')
        secret = body.get("SecretID") or existing["SecretID"]
        if secret != existing["SecretID"]:
            raise bad_request("Changing a tokens SecretID is not permitted")
        create_time = existing["CreateTime"]
    local = _check_token_body(body)
    if existing is not None and local != existing["Local"]:
        raise bad_request(f"cannot toggle local mode of {accessor}")
    policy_ids = _links(ctx, body.get("Policies"))
    record = acl.token_record(accessor, secret, body.get("Description", ""), policy_ids,
                              create_time, local)

    def build() -> AclTokenSet:  # an update is compare-and-set against the current token
        current = None if create else ctx.fsm.acl_token(accessor) or {"ModifyIndex": 0}
        expect = None if current is None else current["ModifyIndex"]
        return AclTokenSet(Token=record, create=create, expect_index=expect)

    await commit(ctx, build, ACL_RECORD)
    return json_response(request, token_json(ctx, _stored(ctx, accessor)))


def _stored(ctx: ServerContext, accessor: str) -> Record:
    stored = ctx.fsm.acl_token(accessor)
    assert stored is not None  # committed just now, applied here before commit returned
    return stored


async def token_create(request: web.Request, parsed: tuple[dict[str, Any], str]
                       ) -> web.StreamResponse:
    return await _write_token(request, *parsed, create=True)


async def token_update(request: web.Request, parsed: tuple[dict[str, Any], str]
                       ) -> web.StreamResponse:
    return await _write_token(request, *parsed, create=False)


async def token_read(request: web.Request, accessor: str) -> web.StreamResponse:
    ctx = acl_context(request)
    tok = ctx.fsm.acl_token(accessor)
    if tok is None:
        raise APIError(404, "Requested token does not exist: ACL not found")
    return json_response(request, token_json(ctx, tok, redact=not may_write_acl(request)),
                         read_headers(request, ctx.fsm.acl_tokens_index))


async def token_self(request: web.Request, _: None) -> web.StreamResponse:
    ctx = acl_context(request)
    tok = ctx.fsm.acl_token(identity_of(request).accessor)
    if tok is None:
        raise APIError(404, "Supplied token does not exist")
    return json_response(request, token_json(ctx, tok),
                         read_headers(request, ctx.fsm.acl_tokens_index))


async def token_list(request: web.Request, _: None) -> web.StreamResponse:
    ctx = acl_context(request)
    redact = not may_write_acl(request)
    recs, index = ctx.fsm.acl_token_list()
    return json_response(request, [token_json(ctx, t, redact=redact) for t in recs],
                         read_headers(request, index))


async def token_delete(request: web.Request, accessor: str) -> web.StreamResponse:
    ctx = acl_context(request)
    if not acl.is_uuid(accessor):
        raise bad_request("Accessor ID is missing or an invalid UUID")
    if accessor == acl.ANONYMOUS_ACCESSOR:
        raise bad_request("Delete operation not permitted on the anonymous token")
    existing = ctx.fsm.acl_token(accessor)
    if existing is not None and existing["SecretID"] == identity_of(request).secret:
        raise bad_request("Deletion of the request's authorization token is not permitted")
    await commit(ctx, lambda: AclTokenDelete(AccessorID=accessor), ACL_RECORD)
    return json_response(request, True)


_accessor = path_value("id", "Missing token AccessorID")
ROUTES = [
    Route("PUT", "/v1/acl/token", WRITE, ACL_WRITE, token_create, parse_token_create),
    Route("GET", "/v1/acl/tokens", READ, ACL_READ, token_list, acls_enabled, tokens_index),
    # any token may read itself
    Route("GET", "/v1/acl/token/self", READ, ANY_TOKEN, token_self, acls_enabled,
          tokens_index),
    Route("GET", "/v1/acl/token/{id}", READ, ACL_READ, token_read, _accessor, tokens_index),
    Route("PUT", "/v1/acl/token/{id}", WRITE, ACL_WRITE, token_update, parse_token_update),
    Route("DELETE", "/v1/acl/token/{id}", WRITE, ACL_WRITE, token_delete, _accessor),
]

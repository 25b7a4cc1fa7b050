"""The ACL endpoints in Consul's shapes: bootstrap, policies and tokens.

Thin handlers, run by the pipeline (api/pipeline.py) on the server that serves the request: parse
(decode and check what Consul's HTTP layer checks); then, after the pipeline's ACL decision,
serve (check what Consul's ACL RPC checks against the leader's state, then commit a command
whose IDs, secrets and times were chosen here). The FSM re-checks everything that could have
changed in between (names, IDs, bootstrap) in log order. Status codes: Consul's RPC errors are
500 with their text; as for peering, this server answers 400 with the same text (403 for ACL
denials, bootstrap). Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from cluster import acl, gotime
from cluster.commands import (
    AclBootstrap,
    AclPolicyDelete,
    AclPolicySet,
)
from cluster.fsm import Record
from cluster.gojson import GoJSONError, Schema, go_decode_strict

from .authz import ACL_READ, ACL_WRITE, IDENTITY, OPEN, Identity
from .commit import commit
from .context import SERVER, ServerContext
from .errors import APIError, bad_request
from .pipeline import LEADER, READ, WRITE, Route
from .reads import read_headers
from .render import json_response

log = logging.getLogger("peerplane.acl")
ACL_RECORD = "ACL record"  # how the 503 texts of ACL writes name what changed

BOOTSTRAP_RESET_FILE = "acl-bootstrap-reset"

BOOTSTRAP_REQUEST: Schema = {"BootstrapSecret": "string"}
# Every field of Consul's structs.ACLPolicy is accepted (a read object can be sent
# back); the ones peerplane does not implement must be empty.
POLICY_REQUEST: Schema = {
    "ID": "string", "Name": "string", "Description": "string", "Rules": "string",
    "Datacenters": "[]string", "Hash": "any", "CreateIndex": "any", "ModifyIndex": "any",
    "Namespace": "string", "Partition": "string",
}


def acl_context(request: web.Request) -> ServerContext:
    ctx = request.app[SERVER]
    if ctx.acl is None:
        raise APIError(401, "ACL support disabled")
    return ctx


async def acls_enabled(request: web.Request) -> None:
    """The parse of the routes without input: only that ACLs are on."""
    acl_context(request)


def decode(raw: bytes, schema: Schema, type_name: str, what: str) -> dict[str, Any]:
    try:
        return go_decode_strict(raw, schema, type_name)
    except GoJSONError as e:
        raise bad_request(f"{what} decoding failed: {e}") from None


def identity_of(request: web.Request) -> Identity:
    identity = request.get(IDENTITY)
    assert identity is not None, "ACL decision missing"
    return identity


def may_write_acl(request: web.Request) -> bool:
    return identity_of(request).authorizer.allows(acl.Permission("acl", "write"))


# ---- rendering (Consul's field order) ----


def policy_json(rec: Record, stub: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": rec["ID"], "Name": rec["Name"],
                           "Description": rec["Description"]}
    if not stub:
        out["Rules"] = rec["Rules"]
    if rec.get("Datacenters"):
        out["Datacenters"] = list(rec["Datacenters"])
    out.update(Hash=rec["Hash"], CreateIndex=rec["CreateIndex"], ModifyIndex=rec["ModifyIndex"])
    return out


def token_json(ctx: ServerContext, tok: Record, redact: bool = False) -> dict[str, Any]:
    """A token with its policy links resolved to current names (links to deleted policies
    dropped, as Consul's fixupTokenPolicyLinks does); the secret hidden when `redact`."""
    out: dict[str, Any] = {
        "AccessorID": tok["AccessorID"],
        "SecretID": acl.REDACTED if redact else tok["SecretID"],
        "Description": tok["Description"],
    }
    links = []
    for link in tok["Policies"]:
        policy = ctx.fsm.acl_policy(link["ID"])
        if policy is not None:
            links.append({"ID": policy["ID"], "Name": policy["Name"]})
    if links:
        out["Policies"] = links
    out.update(Local=tok["Local"], CreateTime=tok["CreateTime"], Hash=tok["Hash"],
               CreateIndex=tok["CreateIndex"], ModifyIndex=tok["ModifyIndex"])
    return out


# ---- bootstrap ----


def _reset_index(ctx: ServerContext) -> int:
    """Consul's bootstrap reset: the index an operator wrote into <data-dir>/acl-bootstrap-reset."""
    if not ctx.data_dir:
        return 0
    try:
        with open(os.path.join(ctx.data_dir, BOOTSTRAP_RESET_FILE)) as f:
            text = f.read().strip()
    except OSError:
        return 0
    digits = text.split()[0] if text else ""
    return int(digits) if digits.isdigit() else 0


async def parse_bootstrap(request: web.Request) -> str:
    acl_context(request)
    raw = await request.read()
    secret = ""
    if raw:
        try:
            body = go_decode_strict(raw, BOOTSTRAP_REQUEST, "api.BootstrapRequest")
        except GoJSONError as e:
            raise bad_request(f"Request decoding failed: {e}") from None
        secret = body.get("BootstrapSecret", "")
        if secret and not acl.is_uuid(secret):
            raise bad_request("Invalid Token: SecretID is not a valid UUID")
    return secret


async def bootstrap(request: web.Request, secret: str) -> web.StreamResponse:
    ctx = acl_context(request)
    reset = 0
    if ctx.fsm.acl_bootstrap_index:  # checked here too, so refused calls never reach Raft
        reset = _reset_index(ctx)
        if not reset:
            raise APIError(403, "Permission denied: ACL bootstrap no longer allowed "
                                f"(reset index: {ctx.fsm.acl_bootstrap_index})")
        with_file = os.path.join(ctx.data_dir, BOOTSTRAP_RESET_FILE)
        try:  # used once, valid or not (a restored snapshot must not re-open bootstrap)
            os.remove(with_file)
        except OSError:
            pass
    accessor, secret = str(uuid.uuid4()), secret or str(uuid.uuid4())
    token = acl.token_record(accessor, secret, acl.BOOTSTRAP_DESCRIPTION,
                             [acl.GLOBAL_MANAGEMENT_ID], gotime.now())
    await commit(ctx, lambda: AclBootstrap(
        Token=token, Policy=acl.management_policy_record(), ResetIndex=reset,
    ), ACL_RECORD)
    log.info("ACL bootstrap completed")
    stored = ctx.fsm.acl_token(accessor)
    assert stored is not None
    return json_response(request, {"ID": stored["SecretID"], **token_json(ctx, stored)})


# ---- policies ----


async def _check_policy(ctx: ServerContext, body: dict[str, Any]) -> str:
    """Consul's PolicySet checks: the name, then the rules (parsed off the event loop)."""
    name = body.get("Name", "")
    if not name:
        raise bad_request("Invalid Policy: no Name is set")
    if not acl.valid_policy_name(name):
        raise bad_request(
            "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
        )
    if body.get("Partition", "default") not in ("", "default") or body.get(
        "Namespace", "default"
    ) not in ("", "default"):
        raise bad_request("Namespaces and admin partitions are a Consul Enterprise feature")
    rules = body.get("Rules", "")
    try:
        await asyncio.to_thread(acl.parse_rules, rules)
    except acl.RulesError as e:
        raise bad_request(str(e)) from None
    return name


async def _parse_policy(
    request: web.Request, policy_id: str, create: bool
) -> tuple[dict[str, Any], str]:
    acl_context(request)
    body = decode(await request.read(), POLICY_REQUEST, "structs.ACLPolicy", "Policy")
    if create and body.get("ID"):
        raise bad_request("Cannot specify the ID when creating a new policy")
    if not create:
        if body.get("ID") and body["ID"] != policy_id:
            raise bad_request("Policy ID in URL and payload do not match")
        policy_id = body.get("ID") or policy_id
    return body, policy_id


async def _write_policy(
    request: web.Request, parsed: tuple[dict[str, Any], str], create: bool
) -> web.StreamResponse:
    ctx = acl_context(request)
    body, policy_id = parsed
    name = await _check_policy(ctx, body)
    if create:
        policy_id = str(uuid.uuid4())
        taken = ctx.fsm.acl_policy_by_name(name)
        if taken is not None:
            raise bad_request(f'Invalid Policy: A Policy with Name "{name}" already exists')
    else:
        if not acl.is_uuid(policy_id):
            raise bad_request("Policy ID invalid UUID")
        if ctx.fsm.acl_policy(policy_id) is None:
            raise bad_request(f"cannot find policy {policy_id}")
    description, rules = body.get("Description", ""), body.get("Rules", "")
    datacenters = body.get("Datacenters") or []
    record = {
        "ID": policy_id, "Name": name, "Description": description, "Rules": rules,
        "Datacenters": datacenters,
        "Hash": acl.policy_hash(name, description, rules, datacenters),
    }

    def build() -> AclPolicySet:
        if create:
            return AclPolicySet(Policy=record, create=True)
        existing = ctx.fsm.acl_policy(policy_id)
        return AclPolicySet(Policy=record, expect_index=existing["ModifyIndex"] if existing else 0)

    await commit(ctx, build, ACL_RECORD)
    stored = ctx.fsm.acl_policy(policy_id)
    assert stored is not None
    return json_response(request, policy_json(stored))


async def parse_policy_create(request: web.Request) -> tuple[dict[str, Any], str]:
    return await _parse_policy(request, "", create=True)


async def parse_policy_update(request: web.Request) -> tuple[dict[str, Any], str]:
    return await _parse_policy(request, request.match_info.get("id", ""), create=False)


async def policy_create(request: web.Request, parsed: tuple[dict[str, Any], str]
                        ) -> web.StreamResponse:
    return await _write_policy(request, parsed, create=True)


async def policy_update(request: web.Request, parsed: tuple[dict[str, Any], str]
                        ) -> web.StreamResponse:
    return await _write_policy(request, parsed, create=False)


def path_value(key: str, missing: str) -> Callable[[web.Request], Awaitable[str]]:
    """A parse: the path parameter `key` (400 `missing` when empty), once ACLs are on."""

    async def parse(request: web.Request) -> str:
        acl_context(request)
        value = request.match_info.get(key, "")
        if not value:
            raise bad_request(missing)
        return value

    return parse


def policies_index(ctx: ServerContext, _: Any) -> int:
    return ctx.fsm.acl_policies_index


def tokens_index(ctx: ServerContext, _: Any) -> int:
    return ctx.fsm.acl_tokens_index


def _one_policy(request: web.Request, rec: Record | None) -> web.StreamResponse:
    if rec is None:
        raise APIError(404, "Requested policy does not exist: ACL not found")
    index = acl_context(request).fsm.acl_policies_index
    return json_response(request, policy_json(rec), read_headers(request, index))


async def policy_read(request: web.Request, policy_id: str) -> web.StreamResponse:
    return _one_policy(request, acl_context(request).fsm.acl_policy(policy_id))


async def policy_read_by_name(request: web.Request, name: str) -> web.StreamResponse:
    return _one_policy(request, acl_context(request).fsm.acl_policy_by_name(name))


async def policy_list(request: web.Request, _: None) -> web.StreamResponse:
    ctx = acl_context(request)
    recs, index = ctx.fsm.acl_policy_list()
    return json_response(request, [policy_json(r, stub=True) for r in recs],
                         read_headers(request, index))


async def policy_delete(request: web.Request, policy_id: str) -> web.StreamResponse:
    ctx = acl_context(request)
    if policy_id == acl.GLOBAL_MANAGEMENT_ID:
        raise bad_request(
            "Delete operation not permitted on the builtin global-management policy"
        )
    await commit(ctx, lambda: AclPolicyDelete(ID=policy_id), ACL_RECORD)
    return json_response(request, True)


_policy_id = path_value("id", "Missing policy ID")
ROUTES = [
    # Allowed once; LEADER: Consul reads the reset file from the leader's data dir.
    Route("PUT", "/v1/acl/bootstrap", LEADER, OPEN, bootstrap, parse_bootstrap),
    Route("PUT", "/v1/acl/policy", WRITE, ACL_WRITE, policy_create, parse_policy_create),
    Route("GET", "/v1/acl/policies", READ, ACL_READ, policy_list, acls_enabled,
          policies_index),
    Route("GET", "/v1/acl/policy/name/{name}", READ, ACL_READ, policy_read_by_name,
          path_value("name", "Missing policy Name"), policies_index),
    Route("GET", "/v1/acl/policy/{id}", READ, ACL_READ, policy_read, _policy_id,
          policies_index),
    Route("PUT", "/v1/acl/policy/{id}", WRITE, ACL_WRITE, policy_update, parse_policy_update),
    Route("DELETE", "/v1/acl/policy/{id}", WRITE, ACL_WRITE, policy_delete, _policy_id),
]

"""ACL enforcement for every route: one permission table and one middleware.

Which permission a route needs is written down once, in `ROUTES`. The middleware looks it up;
*where* the decision is taken depends on the route:

- routes whose handlers send the request to the leader or serve it by read mode (peering and
  ACL endpoints) are decided on the server that applies the request: the middleware leaves the
  check pending, and `authorize` - called by `route_to_leader` / `route_read` at the moment a
  server decides to serve the request itself - resolves the caller's token there. A forwarded
  request carries the caller's token (query string and headers) to the leader, whose own
  middleware does the same. Bodies are validated before that (400 comes before 403, as in
  Consul, whose HTTP layer validates before the RPC that checks the token);
- the others (status, operator, agent) are answered from this server's own view and are
  decided right away.

A request whose check is still pending when its handler returns a success that was not
forwarded is a programming error: it is logged and answered 500, never served unchecked.
With ACLs disabled nothing here runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

from cluster.acl import (
    ANONYMOUS_ACCESSOR,
    ANONYMOUS_SECRET,
    GLOBAL_MANAGEMENT,
    GLOBAL_MANAGEMENT_ID,
    Authorizer,
    Permission,
    Rules,
    RulesError,
    denied_text,
    merge,
    parse_rules,
)
from cluster.fsm import FSM, Record

from .context import SERVER
from .errors import APIError

log = logging.getLogger("peerplane.acl")

ACL_NOT_FOUND = "ACL not found"


@dataclass(frozen=True)
class Need:
    """What a route requires: a permission (None: only a token that resolves), and whether the
    decision waits for the server that applies the request."""

    perm: Permission | None
    at_leader: bool = True


def _p(resource: str, access: str) -> Permission:
    return Permission(resource, access)


_PEERING_READ = Need(_p("peering", "read"))
_PEERING_WRITE = Need(_p("peering", "write"))
_ACL_READ = Need(_p("acl", "read"))
_ACL_WRITE = Need(_p("acl", "write"))
_MESH_READ = Need(_p("mesh", "read"))
_MESH_WRITE = Need(_p("mesh", "write"))
# Catalog routes need a token that resolves; what it may see or write depends on the records
# (service:/node: rules), so api/catalog.py filters reads and vets writes at the leader.
_CATALOG = Need(None)
_OPERATOR_READ = Need(_p("operator", "read"), at_leader=False)
_AGENT_READ = Need(_p("agent", "read"), at_leader=False)  # segment: this node's name
OPEN = None  # no token needed; a bad token is not even looked at (Consul's status endpoints)

# (method, canonical route path) -> Need, or OPEN.
ROUTES: dict[tuple[str, str], Need | None] = {
    ("POST", "/v1/peering/token"): _PEERING_WRITE,
    ("POST", "/v1/peering/establish"): _PEERING_WRITE,
    ("GET", "/v1/peering/"): _PEERING_READ,
    ("GET", "/v1/peering/{name}"): _PEERING_READ,
    ("DELETE", "/v1/peering/"): _PEERING_WRITE,
    ("DELETE", "/v1/peering/{name}"): _PEERING_WRITE,
    ("GET", "/v1/peerings"): _PEERING_READ,
    ("GET", "/v1/status/leader"): OPEN,
    ("GET", "/v1/status/peers"): OPEN,
    ("GET", "/v1/operator/raft/configuration"): _OPERATOR_READ,
    ("GET", "/v1/operator/autopilot/health"): _OPERATOR_READ,
    ("GET", "/v1/agent/self"): _AGENT_READ,
    ("GET", "/v1/agent/metrics"): _AGENT_READ,
    ("GET", "/v1/agent/members"): OPEN,  # Consul filters members by node:read instead
    ("GET", "/v1/internal/ui/cluster"): OPEN,
    ("GET", "/v1/internal/raft/stats"): OPEN,  # what /v1/status/* tells, per server
    ("GET", "/v1/openapi.json"): OPEN,
    ("PUT", "/v1/acl/bootstrap"): OPEN,  # guarded by being allowed once
    ("PUT", "/v1/acl/policy"): _ACL_WRITE,
    ("GET", "/v1/acl/policy/{id}"): _ACL_READ,
    ("PUT", "/v1/acl/policy/{id}"): _ACL_WRITE,
    ("DELETE", "/v1/acl/policy/{id}"): _ACL_WRITE,
    ("GET", "/v1/acl/policy/name/{name}"): _ACL_READ,
    ("GET", "/v1/acl/policies"): _ACL_READ,
    ("PUT", "/v1/acl/token"): _ACL_WRITE,
    ("GET", "/v1/acl/token/self"): Need(None),  # any token may read itself
    ("GET", "/v1/acl/token/{id}"): _ACL_READ,
    ("PUT", "/v1/acl/token/{id}"): _ACL_WRITE,
    ("DELETE", "/v1/acl/token/{id}"): _ACL_WRITE,
    ("GET", "/v1/acl/tokens"): _ACL_READ,
    ("PUT", "/v1/catalog/register"): _CATALOG,
    ("PUT", "/v1/catalog/deregister"): _CATALOG,
    ("GET", "/v1/catalog/services"): _CATALOG,
    ("GET", "/v1/catalog/nodes"): _CATALOG,
    ("GET", "/v1/catalog/service/"): _CATALOG,
    ("GET", "/v1/catalog/service/{name}"): _CATALOG,
    ("GET", "/v1/health/service/"): _CATALOG,
    ("GET", "/v1/health/service/{name}"): _CATALOG,
    ("PUT", "/v1/config"): _MESH_WRITE,
    ("GET", "/v1/config/{kind}"): _MESH_READ,
    ("GET", "/v1/config/{kind}/{name}"): _MESH_READ,
    ("DELETE", "/v1/config/{kind}"): _MESH_WRITE,
    ("DELETE", "/v1/config/{kind}/{name}"): _MESH_WRITE,
}
# A /v1 route nobody listed above is closed rather than open.
_UNLISTED = Need(_p("operator", "read"), at_leader=False)

_PENDING = "acl_pending"  # request key: the Need still to be decided
IDENTITY = "acl_identity"  # request key: the resolved Identity, once decided
FORWARDED_KEY = "acl_forwarded"  # request key: set when the leader answered instead


@dataclass(frozen=True)
class Identity:
    accessor: str
    secret: str
    authorizer: Authorizer
    token: Record | None  # None for the anonymous token before the leader created it


def token_of(request: web.Request) -> str:
    """Consul's parseTokenInternal: ?token=, then X-Consul-Token, then Authorization: Bearer."""
    if token := request.query.get("token", ""):
        return token
    if token := request.headers.get("X-Consul-Token", ""):
        return token
    parts = request.headers.get("Authorization", "").split(" ")
    if len(parts) > 1 and parts[0].lower() == "bearer":
        value = " ".join(parts[1:]).strip()
        return value.split(" ")[0].strip()
    return ""


class ACLResolver:
    """Secret -> Identity from this server's FSM; compiled rules cached per policy version."""

    def __init__(self, fsm: FSM, default_policy: str, datacenter: str) -> None:
        self.fsm = fsm
        self.default_policy = default_policy
        self.datacenter = datacenter
        self._compiled: dict[str, tuple[int, Rules]] = {}

    async def _rules(self, policy: Record) -> Rules:
        if policy["ID"] == GLOBAL_MANAGEMENT_ID:
            return GLOBAL_MANAGEMENT
        cached = self._compiled.get(policy["ID"])
        if cached is not None and cached[0] == policy["ModifyIndex"]:
            return cached[1]
        try:
            rules = await asyncio.to_thread(parse_rules, policy["Rules"])
        except RulesError as e:  # validated on write; only a policy from elsewhere gets here
            log.warning("ACL policy %s has invalid rules, ignoring them: %s", policy["ID"], e)
            rules = Rules()
        self._compiled[policy["ID"]] = (policy["ModifyIndex"], rules)
        return rules

    async def resolve(self, secret: str) -> Identity:
        if secret in ("", ANONYMOUS_SECRET):
            token = self.fsm.acl_token(ANONYMOUS_ACCESSOR)
        else:
            token = self.fsm.acl_token_by_secret(secret)
            if token is None:
                raise APIError(403, ACL_NOT_FOUND)
        rules = []
        for link in (token or {}).get("Policies", []):
            policy = self.fsm.acl_policy(link["ID"])
            if policy is None:
                continue  # deleted since: the link no longer grants anything
            if policy.get("Datacenters") and self.datacenter not in policy["Datacenters"]:
                continue
            rules.append(await self._rules(policy))
        accessor = token["AccessorID"] if token else ANONYMOUS_ACCESSOR
        return Identity(accessor, secret or ANONYMOUS_SECRET,
                        Authorizer(merge(rules), self.default_policy), token)


def _need(request: web.Request) -> Need | None:
    info = request.match_info
    if info.http_exception is not None:
        return OPEN  # 404 / 405: nothing is served
    canonical = info.route.resource.canonical if info.route.resource else ""
    key = (request.method, canonical)
    if key in ROUTES:
        return ROUTES[key]
    if request.method == "HEAD" and ("GET", canonical) in ROUTES:
        return ROUTES[("GET", canonical)]
    return _UNLISTED if request.path.startswith("/v1/") else OPEN


async def _decide(request: web.Request, need: Need) -> Identity:
    ctx = request.app[SERVER]
    assert ctx.acl is not None
    identity = await ctx.acl.resolve(token_of(request))
    request[IDENTITY] = identity
    perm = need.perm
    if perm is not None:
        if perm.resource == "agent":
            perm = Permission("agent", perm.access, ctx.node_name)
        if not identity.authorizer.allows(perm):
            raise APIError(403, denied_text(identity.accessor, perm))
    return identity


async def authorize(request: web.Request) -> None:
    """Decide a pending check here: this server is about to serve the request itself."""
    need = request.pop(_PENDING, None)
    if need is not None:
        await _decide(request, need)


def mark_forwarded(request: web.Request) -> None:
    """The leader answered; it decided with the caller's token."""
    request[FORWARDED_KEY] = True
    request.pop(_PENDING, None)


@web.middleware
async def enforce(request: web.Request, handler) -> web.StreamResponse:
    ctx = request.app[SERVER]
    if ctx.acl is None:
        return await handler(request)
    need = _need(request)
    if need is None:
        return await handler(request)
    if not need.at_leader:
        await _decide(request, need)
        return await handler(request)
    request[_PENDING] = need
    response = await handler(request)
    if request.get(_PENDING) is not None and response.status < 400:
        log.error("%s %s was served without an ACL decision", request.method, request.path)
        raise APIError(500, "Internal error: request served without an ACL decision")
    return response

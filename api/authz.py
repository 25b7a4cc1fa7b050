"""ACL decisions: token resolution and the check of one route's permission.

Which permission a route needs is written in its row of the route table (`ROUTES` of each API
module); the pipeline (api/pipeline.py) calls `decide` once, on the server that serves the
request, after the handler parsed its input (400 comes before 403, as in Consul, whose HTTP
layer validates before the RPC that checks the token), and never on a follower that forwards it
(the request carries the caller's token - query string and headers - to the leader). A write is
decided by the server that got it, follower or not, from its replicated ACL tables; its command
carries the ACL revision of that decision, so the FSM refuses it if the ACLs changed before it
applied (api/commit.py, api/pipeline.py). With ACLs disabled nothing here runs.
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


OPEN = "open"  # no token needed; a bad token is not even looked at (Consul's status endpoints)
ANY_TOKEN = "token"  # any token that resolves (e.g. a token reading itself)
Access = Permission | str  # a permission, OPEN or ANY_TOKEN

PEERING_READ = Permission("peering", "read")
PEERING_WRITE = Permission("peering", "write")
ACL_READ = Permission("acl", "read")
ACL_WRITE = Permission("acl", "write")
OPERATOR_READ = Permission("operator", "read")
AGENT_READ = Permission("agent", "read")  # segment: this node's name, filled in by `decide`
UNLISTED = OPERATOR_READ  # a /v1 route without a row in the route table is closed, not open

IDENTITY = "acl_identity"  # request key: the resolved Identity, once decided


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


async def decide(request: web.Request, access: Access) -> int | None:
    """The one ACL decision of a request, on the server that serves it; the ACL revision it
    was made on (None when no ACLs were looked at), which a write's command carries."""
    ctx = request.app[SERVER]
    if ctx.acl is None or access == OPEN:
        return None
    revision = ctx.fsm.acl_revision  # before resolving: a change meanwhile makes it older
    identity = await ctx.acl.resolve(token_of(request))
    request[IDENTITY] = identity
    if isinstance(access, Permission):
        perm = access
        if perm.resource == "agent":
            perm = Permission("agent", perm.access, ctx.node_name)
        if not identity.authorizer.allows(perm):
            raise APIError(403, denied_text(identity.accessor, perm))
    return revision

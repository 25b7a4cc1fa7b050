"""ACL rules and authorization, as Consul's `acl` package has them (the subset peerplane needs).

Pure: no I/O, no clock, no asyncio. Rules are parsed from Consul's HCL (python-hcl2) or JSON
form into `Rules`; the rules of a token's policies are merged (deny > write > list > read) and
chained with the agent's default policy into an `Authorizer`, which answers questions like
"may this token `peering:write`?" the way Consul's policyAuthorizer + static authorizer do:

- `peering = ...` decides peering reads and writes; with no peering rule, `operator = ...` does;
- `acl = ...` decides the ACL endpoints; with no acl rule the answer is *deny* even under a
  default-allow policy (Consul's allow-all authorizer does not grant ACL management);
- `agent "<node>"` / `agent_prefix "<prefix>"` decide the agent endpoints (exact rule first, then
  the longest matching prefix);
- anything without a matching rule falls back to the default policy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_SECRET = "anonymous"
ANONYMOUS_DESCRIPTION = "Anonymous Token"
GLOBAL_MANAGEMENT_ID = "00000000-0000-0000-0000-000000000001"
GLOBAL_MANAGEMENT_NAME = "global-management"
GLOBAL_MANAGEMENT_DESCRIPTION = "Builtin Policy that grants unlimited access"
# Consul's structs.ACLPolicyGlobalManagement (CE), one attribute per line so HCL2 reads it too.
GLOBAL_MANAGEMENT_RULES = """
acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}
"""
BOOTSTRAP_DESCRIPTION = "Bootstrap Token (Global Management)"
INITIAL_MANAGEMENT_DESCRIPTION = "Initial Management Token"
REDACTED = "<hidden>"

DENY, READ, LIST, WRITE = "deny", "read", "list", "write"
_LEVELS = (DENY, READ, LIST, WRITE)
# Resources with one rule (`peering = "read"`) and with named rules (`agent "n1" { ... }`).
SCALAR_RESOURCES = ("acl", "operator", "peering", "keyring", "mesh")
NAMED_RESOURCES = (
    "agent", "agent_prefix", "key", "key_prefix", "node", "node_prefix", "service",
    "service_prefix", "session", "session_prefix", "event", "event_prefix", "query",
    "query_prefix",
)
_LIST_ALLOWED = frozenset({"key", "key_prefix"})
# Go type names in Consul's "Invalid <kind> policy: %#v" messages.
_GO_RULE = {
    "agent": ("AgentRule", "Node"), "key": ("KeyRule", "Prefix"), "node": ("NodeRule", "Name"),
    "service": ("ServiceRule", "Name"), "session": ("SessionRule", "Node"),
    "event": ("EventRule", "Event"), "query": ("PreparedQueryRule", "Prefix"),
}

_POLICY_NAME = re.compile(r"[A-Za-z0-9\-_]{1,128}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class RulesError(ValueError):
    """Rules that do not parse or validate; the text is Consul's."""


# ---- rules ----


@dataclass(frozen=True)
class Rules:
    """One policy's rules. `named[kind][name]` holds {"policy": level, "intentions": level}."""

    scalars: dict[str, str] = field(default_factory=dict)
    named: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)


def _go_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _valid_level(level: str, allow_list: bool = False) -> bool:
    level = level.lower()
    return level in _LEVELS and (allow_list or level != LIST)


def _go_rule(kind: str, name: str, body: dict[str, str]) -> str:
    """Consul prints a bad rule with Go's %#v; this is that shape for the CE rule types."""
    type_name, key = _GO_RULE[kind.removesuffix("_prefix")]
    parts = [f"{key}:{_go_string(name)}", f"Policy:{_go_string(body.get('policy', ''))}"]
    if kind.startswith("service"):
        parts.append(f"Intentions:{_go_string(body.get('intentions', ''))}")
    if kind.split("_")[0] in ("key", "node", "service"):
        parts.append("EnterpriseRule:acl.EnterpriseRule{}")
    return f"&acl.{type_name}{{{', '.join(parts)}}}"


def _validate(rules: Rules) -> Rules:
    """Consul's PolicyRules.Validate, in its order and with its texts."""
    acl = rules.scalars.get("acl", "")
    if acl and not _valid_level(acl):
        raise RulesError(f"Invalid acl policy: {_go_string(acl)}")
    for kind in NAMED_RESOURCES:
        base = kind.removesuffix("_prefix")
        for name, body in rules.named.get(kind, {}).items():
            if not _valid_level(body.get("policy", ""), kind in _LIST_ALLOWED):
                raise RulesError(f"Invalid {kind} policy: {_go_rule(kind, name, body)}")
            if base == "service" and body.get("intentions") and not _valid_level(
                body["intentions"]
            ):
                raise RulesError(
                    f"Invalid {kind} intentions policy: {_go_rule(kind, name, body)}"
                )
    for kind in ("keyring", "operator", "mesh", "peering"):
        level = rules.scalars.get(kind, "")
        if level and not _valid_level(level):
            raise RulesError(f"Invalid {kind} policy: {_go_string(level)}")
    return rules


def _unquote(value: Any, where: str) -> str:
    """An HCL string literal as python-hcl2 gives it (quotes kept) -> its value."""
    from hcl2.utils import process_escape_sequences

    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return process_escape_sequences(value[1:-1])
    raise RulesError(f"Failed to parse ACL rules: {where}: expected a string")


def _hcl_duplicates(body: Any, where: str = "") -> None:
    """HCL1's DecodeErrorOnDuplicates: an argument set twice in one body is an error."""
    from hcl2.rules.base import AttributeRule, BlockRule

    seen: set[str] = set()
    for child in getattr(body, "children", []):
        if isinstance(child, AttributeRule):
            name = str(child.identifier.serialize())
            if name in seen:
                raise RulesError(
                    f'Failed to parse ACL rules: The argument "{name}"{where} was already set. '
                    "Each argument can only be defined once"
                )
            seen.add(name)
        elif isinstance(child, BlockRule):
            _hcl_duplicates(child.body, where)


def _from_hcl(text: str) -> dict[str, Any]:
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(
        with_comments=False, explicit_blocks=True, preserve_heredocs=False
    )
    try:
        tree = hcl2.parses(text, discard_comments=True)
    except Exception as e:  # noqa: BLE001 - lark raises many types; all are parse errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RulesError(f"Failed to parse ACL rules: {first}") from None
    for start_child in tree.children:
        _hcl_duplicates(start_child)
    try:
        doc = hcl2.api.serialize(tree, serialization_options=options)
    except Exception as e:  # noqa: BLE001
        raise RulesError(f"Failed to parse ACL rules: {e}") from None
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in SCALAR_RESOURCES:
            out[key] = _unquote(value, key)
        elif key in NAMED_RESOURCES:
            out[key] = _hcl_blocks(key, value)
    return out


def _hcl_blocks(kind: str, value: Any) -> dict[str, dict[str, str]]:
    problem = (
        f'Failed to parse ACL rules: {kind}: expected blocks like {kind} "<name>" '
        '{ policy = "read" }'
    )
    if not isinstance(value, list):
        raise RulesError(problem)
    out: dict[str, dict[str, str]] = {}
    for block in value:
        if not isinstance(block, dict):
            raise RulesError(problem)
        labels = [k for k in block if k != "__is_block__"]
        if len(labels) != 1 or not labels[0].startswith('"'):
            raise RulesError(problem)
        body = block[labels[0]]
        if not isinstance(body, dict) or not body.get("__is_block__"):
            raise RulesError(problem)  # a second label, or not a block
        name = _unquote(labels[0], kind)
        rule: dict[str, str] = {}
        for attr in ("policy", "intentions"):
            if attr in body:
                rule[attr] = _unquote(body[attr], f"{kind}.{attr}")
        out[name] = rule  # a later block for the same name replaces the earlier one
    return out


def _from_json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RulesError(f"Failed to parse ACL rules: {e}") from None
    if not isinstance(doc, dict):
        raise RulesError("Failed to parse ACL rules: expected a JSON object")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in SCALAR_RESOURCES:
            if not isinstance(value, str):
                raise RulesError(f"Failed to parse ACL rules: {key}: expected a string")
            out[key] = value
        elif key in NAMED_RESOURCES:
            items = value if isinstance(value, list) else [value]
            named: dict[str, dict[str, str]] = {}
            for item in items:
                if not isinstance(item, dict):
                    raise RulesError(f"Failed to parse ACL rules: {key}: expected an object")
                for name, body in item.items():
                    if not isinstance(body, dict) or not all(
                        isinstance(body.get(a, ""), str) for a in ("policy", "intentions")
                    ):
                        raise RulesError(
                            f"Failed to parse ACL rules: {key}.{name}: expected an object "
                            "of strings"
                        )
                    named[name] = {a: body[a] for a in ("policy", "intentions") if a in body}
            out[key] = named
    return out


def parse_rules(text: str) -> Rules:
    """Consul's acl.NewPolicyFromSource: HCL or JSON rules, validated. Raises RulesError."""
    if not text.strip():
        return Rules()
    doc = _from_json(text) if text.lstrip().startswith("{") else _from_hcl(text)
    scalars = {k: v for k, v in doc.items() if k in SCALAR_RESOURCES}
    named = {k: v for k, v in doc.items() if k in NAMED_RESOURCES}
    return _validate(Rules(scalars=scalars, named=named))


# The built-in policy is compiled here, not parsed: the management token must work on a node
# whose HCL parser has not warmed up yet.
GLOBAL_MANAGEMENT = Rules(
    scalars={k: WRITE for k in SCALAR_RESOURCES},
    named={
        **{k: {"": {"policy": WRITE}} for k in NAMED_RESOURCES if k.endswith("_prefix")},
        "service_prefix": {"": {"policy": WRITE, "intentions": WRITE}},
    },
)


def _stronger(a: str, b: str | None) -> bool:
    """Consul's takesPrecedenceOver: deny > write > list > read."""
    order = {DENY: 4, WRITE: 3, LIST: 2, READ: 1}
    return b is None or order.get(a, 0) > order.get(b, 0)


def merge(all_rules: list[Rules]) -> Rules:
    scalars: dict[str, str] = {}
    named: dict[str, dict[str, dict[str, str]]] = {}
    for rules in all_rules:
        for kind, level in rules.scalars.items():
            level = level.lower()
            if level and _stronger(level, scalars.get(kind)):
                scalars[kind] = level
        for kind, entries in rules.named.items():
            table = named.setdefault(kind, {})
            for name, body in entries.items():
                current = table.setdefault(name, {})
                for attr, level in body.items():
                    level = level.lower()
                    if level and _stronger(level, current.get(attr)):
                        current[attr] = level
    return Rules(scalars=scalars, named=named)


# ---- authorization ----


ALLOW, DENIED, DEFAULT = "allow", "deny", "default"


def _enforce(rule: str | None, required: str) -> str:
    """Consul's enforce(): what a rule level says about a required access level."""
    if rule == WRITE:
        return ALLOW
    if rule == LIST:
        return ALLOW if required in (LIST, READ) else DENIED
    if rule == READ:
        return ALLOW if required == READ else DENIED
    if rule == DENY:
        return DENIED
    return DEFAULT


@dataclass(frozen=True)
class Permission:
    resource: str  # "peering" | "operator" | "acl" | "agent" | ...
    access: str  # "read" | "write"
    segment: str | None = None  # the named resource (agent: the node name)

    def __str__(self) -> str:
        return f"{self.resource}:{self.access}"


class Authorizer:
    def __init__(self, rules: Rules, default_policy: str) -> None:
        self.rules = rules
        self.default_allow = default_policy == "allow"

    def _named(self, kind: str, segment: str) -> str | None:
        exact = self.rules.named.get(kind, {}).get(segment)
        if exact and exact.get("policy"):
            return exact["policy"]
        best: tuple[int, str] | None = None
        for prefix, body in self.rules.named.get(f"{kind}_prefix", {}).items():
            if segment.startswith(prefix) and body.get("policy"):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), body["policy"])
        return best[1] if best else None

    def decide(self, perm: Permission) -> str:
        """ALLOW or DENIED for a permission, default policy applied."""
        scalars = self.rules.scalars
        if perm.resource == "peering":
            rule = scalars.get("peering") or scalars.get("operator")
        elif perm.resource == "mesh":
            rule = scalars.get("mesh") or scalars.get("operator")
        elif perm.resource in SCALAR_RESOURCES:
            rule = scalars.get(perm.resource)
        else:
            rule = self._named(perm.resource, perm.segment or "")
        decision = _enforce(rule, perm.access)
        if decision != DEFAULT:
            return decision
        if perm.resource == "acl":
            return DENIED  # the static allow-all authorizer does not manage ACLs
        return ALLOW if self.default_allow else DENIED

    def allows(self, perm: Permission) -> bool:
        return self.decide(perm) == ALLOW


def denied_text(accessor: str, perm: Permission) -> str:
    """Consul's PermissionDeniedError text."""
    text = f"Permission denied: token with AccessorID '{accessor}' lacks permission '{perm}'"
    if perm.segment:
        text += f" on {_go_string(perm.segment)}"
    return text


# ---- names, IDs and hashes ----


def valid_policy_name(name: str) -> bool:
    return bool(_POLICY_NAME.fullmatch(name))


def is_uuid(text: str) -> bool:
    return bool(_UUID.fullmatch(text))


def _hash(doc: Any) -> str:
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(hashlib.blake2b(raw, digest_size=32).digest()).decode()


def policy_hash(name: str, description: str, rules: str, datacenters: list[str]) -> str:
    return _hash(["policy", name, description, rules, sorted(datacenters)])


def token_hash(description: str, local: bool, policy_ids: list[str]) -> str:
    """Like Consul's ACLToken.SetHash: the token's meaning, never its secret."""
    return _hash(["token", description, local, sorted(policy_ids)])


# ---- records as the FSM stores them (IDs, secrets and times chosen by the caller) ----


def management_policy_record() -> dict[str, Any]:
    rules = GLOBAL_MANAGEMENT_RULES
    return {
        "ID": GLOBAL_MANAGEMENT_ID, "Name": GLOBAL_MANAGEMENT_NAME,
        "Description": GLOBAL_MANAGEMENT_DESCRIPTION, "Rules": rules, "Datacenters": [],
        "Hash": policy_hash(GLOBAL_MANAGEMENT_NAME, GLOBAL_MANAGEMENT_DESCRIPTION, rules, []),
    }


def token_record(
    accessor: str, secret: str, description: str, policy_ids: list[str], create_time: str,
    local: bool = False,
) -> dict[str, Any]:
    return {
        "AccessorID": accessor, "SecretID": secret, "Description": description,
        "Policies": [{"ID": i} for i in policy_ids], "Local": local, "CreateTime": create_time,
        "Hash": token_hash(description, local, policy_ids),
    }


def anonymous_token_record(create_time: str) -> dict[str, Any]:
    return token_record(
        ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, ANONYMOUS_DESCRIPTION, [], create_time
    )

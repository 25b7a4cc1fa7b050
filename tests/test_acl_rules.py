"""ACL rules and authorization (cluster/acl.py), after Consul's acl/policy_test.go and
acl/policy_authorizer_test.go: HCL and JSON forms, validation texts, merging, the peering ->
operator fallback, default policies, and the permission-denied text."""

from __future__ import annotations

import pytest

from cluster.acl import (
    ANONYMOUS_ACCESSOR,
    GLOBAL_MANAGEMENT,
    GLOBAL_MANAGEMENT_RULES,
    Authorizer,
    Permission,
    Rules,
    RulesError,
    denied_text,
    merge,
    parse_rules,
    valid_policy_name,
)

PEERING_READ = Permission("peering", "read")
PEERING_WRITE = Permission("peering", "write")
OPERATOR_READ = Permission("operator", "read")
ACL_READ = Permission("acl", "read")
ACL_WRITE = Permission("acl", "write")


def authz(*rules: str, default: str = "deny") -> Authorizer:
    return Authorizer(merge([parse_rules(r) for r in rules]), default)


@pytest.mark.parametrize("hcl, json_form, expected", [
    ('peering = "read"', '{"peering": "read"}', Rules(scalars={"peering": "read"})),
    ('acl = "write"\noperator = "read"', '{"acl": "write", "operator": "read"}',
     Rules(scalars={"acl": "write", "operator": "read"})),
    ('agent "n1" {\n  policy = "read"\n}\nagent_prefix "" {\n  policy = "write"\n}',
     '{"agent": {"n1": {"policy": "read"}}, "agent_prefix": {"": {"policy": "write"}}}',
     Rules(named={"agent": {"n1": {"policy": "read"}},
                  "agent_prefix": {"": {"policy": "write"}}})),
    ('service "web" {\n  policy = "read"\n  intentions = "write"\n}',
     '{"service": [{"web": {"policy": "read", "intentions": "write"}}]}',
     Rules(named={"service": {"web": {"policy": "read", "intentions": "write"}}})),
    ('# comment\npeering = "write" // trailing\n/* block */', '{"peering": "write"}',
     Rules(scalars={"peering": "write"})),
    ('peering = ""', '{"peering": ""}', Rules(scalars={"peering": ""})),
    ('unknown_thing = "x"\npeering = "deny"', '{"unknown_thing": 1, "peering": "deny"}',
     Rules(scalars={"peering": "deny"})),  # unknown keys are ignored, as HCL1 decoding does
])
def test_hcl_and_json_forms(hcl: str, json_form: str, expected: Rules) -> None:
    assert parse_rules(hcl) == expected
    assert parse_rules(json_form) == expected


def test_empty_rules() -> None:
    assert parse_rules("") == Rules()
    assert parse_rules("  \n") == Rules()


@pytest.mark.parametrize("rules, error", [
    # Consul's acl/policy_test.go "Bad Policy - ..." cases
    ('peering = "nope"', 'Invalid peering policy: "nope"'),
    ('operator = "nope"', 'Invalid operator policy: "nope"'),
    ('acl = "list"', 'Invalid acl policy: "list"'),
    ('keyring = "nope"', 'Invalid keyring policy: "nope"'),
    ('mesh = "nope"', 'Invalid mesh policy: "nope"'),
    ('{"peering": "nope"}', 'Invalid peering policy: "nope"'),
    ('node "foo" {\n  policy = "list"\n}',
     'Invalid node policy: &acl.NodeRule{Name:"foo", Policy:"list", '
     'EnterpriseRule:acl.EnterpriseRule{}}'),
    ('agent_prefix "" {\n  policy = "nope"\n}',
     'Invalid agent_prefix policy: &acl.AgentRule{Node:"", Policy:"nope"}'),
    ('service "web" {\n  policy = "read"\n  intentions = "nope"\n}',
     'Invalid service intentions policy: &acl.ServiceRule{Name:"web", Policy:"read", '
     'Intentions:"nope", EnterpriseRule:acl.EnterpriseRule{}}'),
    ('peering = "read"\npeering = "write"',
     'Failed to parse ACL rules: The argument "peering" was already set. '
     "Each argument can only be defined once"),
])
def test_validation_texts(rules: str, error: str) -> None:
    with pytest.raises(RulesError) as e:
        parse_rules(rules)
    assert str(e.value) == error


@pytest.mark.parametrize("rules", [
    "peering = ", "peering = read", "peering = 3", "{bad json", '["peering"]',
    'node {\n  policy = "read"\n}', 'node "a" "b" {\n  policy = "read"\n}', "node = 3",
    '{"peering": 1}', '{"node": {"a": "read"}}',
])
def test_unparseable_rules(rules: str) -> None:
    with pytest.raises(RulesError) as e:
        parse_rules(rules)
    assert str(e.value).startswith("Failed to parse ACL rules: ")


def test_list_allowed_for_keys_only() -> None:
    assert parse_rules('key_prefix "" {\n  policy = "list"\n}').named["key_prefix"][""] == {
        "policy": "list"
    }


def test_global_management_rules_compile_to_the_builtin() -> None:
    assert parse_rules(GLOBAL_MANAGEMENT_RULES) == GLOBAL_MANAGEMENT
    a = Authorizer(GLOBAL_MANAGEMENT, "deny")
    for perm in (PEERING_WRITE, ACL_WRITE, OPERATOR_READ, Permission("agent", "read", "n1")):
        assert a.allows(perm)


def test_peering_rules() -> None:
    read = authz('peering = "read"')
    assert read.allows(PEERING_READ) and not read.allows(PEERING_WRITE)
    write = authz('peering = "write"')
    assert write.allows(PEERING_READ) and write.allows(PEERING_WRITE)
    deny = authz('peering = "deny"', default="allow")
    assert not deny.allows(PEERING_READ)


def test_peering_falls_back_to_operator() -> None:
    """Consul's policyAuthorizer.PeeringRead/Write: no peering rule -> the operator rule."""
    assert authz('operator = "read"').allows(PEERING_READ)
    assert not authz('operator = "read"').allows(PEERING_WRITE)
    assert authz('operator = "write"').allows(PEERING_WRITE)
    # A peering rule wins over the operator rule, either way.
    assert not authz('operator = "write"\npeering = "read"').allows(PEERING_WRITE)
    assert authz('operator = "deny"\npeering = "write"').allows(PEERING_WRITE)


def test_default_policy() -> None:
    assert not authz(default="deny").allows(PEERING_READ)
    assert authz(default="allow").allows(PEERING_WRITE)
    assert authz(default="allow").allows(OPERATOR_READ)
    # Allow-all does not manage ACLs: without an acl rule, ACL endpoints are denied.
    assert not authz(default="allow").allows(ACL_READ)
    assert authz('acl = "read"').allows(ACL_READ)
    assert not authz('acl = "read"', default="allow").allows(ACL_WRITE)


def test_merge_precedence() -> None:
    """deny > write > list > read, across the policies of one token."""
    assert authz('peering = "read"', 'peering = "write"').allows(PEERING_WRITE)
    assert not authz('peering = "write"', 'peering = "deny"').allows(PEERING_READ)
    assert authz('peering = "read"', 'operator = "write"').allows(PEERING_READ)
    assert not authz('peering = "read"', 'operator = "write"').allows(PEERING_WRITE)


def test_agent_exact_then_longest_prefix() -> None:
    a = authz('agent_prefix "" {\n  policy = "read"\n}\nagent_prefix "dc1-" {\n'
              '  policy = "deny"\n}\nagent "dc1-server-1" {\n  policy = "write"\n}')
    assert a.allows(Permission("agent", "read", "dc2-server-1"))
    assert not a.allows(Permission("agent", "read", "dc1-server-2"))
    assert a.allows(Permission("agent", "write", "dc1-server-1"))


def test_denied_text() -> None:
    assert denied_text(ANONYMOUS_ACCESSOR, PEERING_WRITE) == (
        "Permission denied: token with AccessorID '00000000-0000-0000-0000-000000000002' "
        "lacks permission 'peering:write'"
    )
    assert denied_text("a", Permission("agent", "read", "n1")) == (
        "Permission denied: token with AccessorID 'a' lacks permission 'agent:read' on \"n1\""
    )


@pytest.mark.parametrize("name, ok", [
    ("peering-read", True), ("a_b-C9", True), ("x" * 128, True), ("x" * 129, False),
    ("", False), ("has space", False), ("dots.no", False),
])
def test_policy_names(name: str, ok: bool) -> None:
    assert valid_policy_name(name) is ok


# ---- the route table (api/pipeline.py) ----


def _app():
    from unittest import mock

    from api.app import make_app
    from api.context import ServerContext

    ctx = ServerContext(node=mock.Mock(), fsm=mock.Mock(), node_name="n", datacenter="dc1",
                        raft_addr="a", http_addr="b", peering_addr="c")
    return make_app(ctx)


def test_every_v1_route_has_a_row_in_the_route_table() -> None:
    """Every /v1 route is a row of the route table (its ACL access, where it is served); a
    route added to the router some other way would need operator:read."""
    from api.pipeline import table

    app = _app()
    missing = sorted(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/v1/")
        and route not in table(app)
    )
    assert not missing, f"add these routes to a ROUTES table (api/pipeline.py): {missing}"


@pytest.mark.parametrize("query, headers, expected", [
    ("?token=q", {"X-Consul-Token": "h", "Authorization": "Bearer b"}, "q"),
    ("", {"X-Consul-Token": "h", "Authorization": "Bearer b"}, "h"),
    ("", {"Authorization": "Bearer b"}, "b"),
    ("", {"Authorization": "BEARER   b  c"}, "b"),
    ("", {"Authorization": "Basic b"}, ""),
    ("", {"Authorization": "Bearer"}, ""),
    ("?token=", {"X-Consul-Token": "h"}, "h"),
    ("", {}, ""),
])
def test_token_sources(query: str, headers: dict[str, str], expected: str) -> None:
    from aiohttp.test_utils import make_mocked_request

    from api.authz import token_of

    assert token_of(make_mocked_request("GET", f"/v1/peerings{query}", headers=headers)) == (
        expected
    )

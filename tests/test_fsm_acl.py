"""Unit and property tests of the FSM's ACL tables and commands (cluster/fsm.py).

Commands go in the way Raft sends them: msgpack bytes into `apply`. Records are built with the
helpers the API uses (cluster/acl.py), IDs and secrets chosen by the test.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster import acl
from cluster.fsm import FSM, encode

AT = "2026-01-02T03:04:05.123Z"
ACC1, SEC1 = "11111111-aaaa-4aaa-8aaa-000000000001", "22222222-bbbb-4bbb-8bbb-000000000001"
ACC2, SEC2 = "11111111-aaaa-4aaa-8aaa-000000000002", "22222222-bbbb-4bbb-8bbb-000000000002"
POL1 = "33333333-cccc-4ccc-8ccc-000000000001"
POL2 = "33333333-cccc-4ccc-8ccc-000000000002"
GM = acl.GLOBAL_MANAGEMENT_ID
ANON = acl.ANONYMOUS_ACCESSOR


def run(f: FSM, **cmd: Any) -> dict[str, Any]:
    return f.apply(encode(cmd))


def tok(accessor: str = ACC1, secret: str = SEC1, policies: list[str] | None = None,
        description: str = "t", local: bool = False) -> dict[str, Any]:
    return acl.token_record(accessor, secret, description, policies or [], AT, local)


def pol(policy_id: str = POL1, name: str = "p1", rules: str = 'peering = "read"',
        description: str = "") -> dict[str, Any]:
    return {"ID": policy_id, "Name": name, "Description": description, "Rules": rules,
            "Datacenters": [], "Hash": acl.policy_hash(name, description, rules, [])}


def init(f: FSM, management: dict[str, Any] | None = None) -> dict[str, Any]:
    cmd: dict[str, Any] = {"op": "acl_init", "Policy": acl.management_policy_record(),
                           "Anonymous": acl.anonymous_token_record(AT)}
    if management is not None:
        cmd["Management"] = management
    return run(f, **cmd)


def bootstrap(f: FSM, accessor: str = ACC1, secret: str = SEC1, reset: int = 0) -> dict[str, Any]:
    return run(f, op="acl_bootstrap", Token=tok(accessor, secret, [GM]),
               Policy=acl.management_policy_record(), ResetIndex=reset)


def snapshot_roundtrip(f: FSM) -> FSM:
    g = FSM()
    g.restore(f.snapshot())
    return g


def state(f: FSM) -> tuple:
    return (f.index, f.acl.policies, f.acl.policy_names, f.acl.tokens, f.acl.secret_ids,
            f.acl_bootstrap_index, f.acl_policies_index, f.acl_tokens_index)


# ---- init ----


def test_init_creates_builtins_once() -> None:
    f = FSM()
    res = init(f)
    assert res == {"index": 1, "changed": True}
    assert f.acl_policy(GM)["Name"] == "global-management"
    anon = f.acl_token_by_secret("anonymous")
    assert anon["AccessorID"] == ANON and anon["Policies"] == []
    assert (anon["CreateIndex"], anon["ModifyIndex"]) == (1, 1)
    assert f.acl_bootstrap_index == 0  # the builtins alone do not use up the bootstrap
    assert init(f) == {"index": 1}  # nothing missing: no change, no index bump


def test_init_with_initial_management_token_uses_up_bootstrap() -> None:
    f = FSM()
    init(f, tok(ACC1, "root-secret", [GM], "Initial Management Token"))
    assert f.acl_token_by_secret("root-secret")["AccessorID"] == ACC1
    assert f.acl_bootstrap_index == 1
    res = bootstrap(f, ACC2, SEC2)
    assert res == {"error": "ACL bootstrap no longer allowed (reset index: 1)", "kind": "bootstrap"}
    # A later leader retrying with another accessor for the same secret changes nothing.
    assert init(f, tok(ACC2, "root-secret", [GM])) == {"index": 1}
    assert f.acl_token(ACC2) is None


# ---- bootstrap ----


def test_bootstrap_exactly_once() -> None:
    f = FSM()
    init(f)
    res = bootstrap(f)
    assert res == {"index": 2, "changed": True, "AccessorID": ACC1}
    assert f.acl_bootstrap_index == 2
    assert f.acl_token_by_secret(SEC1)["Policies"] == [{"ID": GM}]
    before = state(f)
    again = bootstrap(f, ACC2, SEC2)
    assert again == {"error": "ACL bootstrap no longer allowed (reset index: 2)",
                     "kind": "bootstrap"}
    assert state(f) == before


def test_bootstrap_before_init_brings_the_policy() -> None:
    f = FSM()
    assert bootstrap(f)["changed"]
    assert f.acl_policy(GM) is not None
    assert init(f)["changed"]  # only the anonymous token was missing
    assert f.acl_policy(GM)["CreateIndex"] == 1


def test_bootstrap_reset_index() -> None:
    f = FSM()
    bootstrap(f)
    assert bootstrap(f, ACC2, SEC2, reset=7) == {
        "error": "Invalid bootstrap reset index (specified 7, reset index: 1)",
        "kind": "bootstrap",
    }
    res = bootstrap(f, ACC2, SEC2, reset=1)
    assert res["changed"] and f.acl_bootstrap_index == res["index"] == 2
    assert bootstrap(f, "44444444-0000-4000-8000-000000000000", "x", reset=1)["kind"] == (
        "bootstrap"
    )


def test_bootstrap_refuses_taken_ids() -> None:
    f = FSM()
    init(f)
    assert bootstrap(f, ANON, SEC1)["error"] == "Invalid Token: AccessorID is already in use"
    assert bootstrap(f, ACC1, "anonymous")["error"] == "Invalid Token: SecretID is already in use"
    assert f.acl_bootstrap_index == 0


# ---- policies ----


def test_policy_create_update_delete() -> None:
    f = FSM()
    init(f)
    res = run(f, op="acl_policy_set", Policy=pol(), create=True)
    assert res == {"index": 2, "changed": True, "ID": POL1}
    assert f.acl_policy_by_name("P1")["ID"] == POL1  # names are case-insensitive
    assert f.acl_policies_index == 2
    renamed = pol(name="p1-renamed", rules='peering = "write"')
    res = run(f, op="acl_policy_set", Policy=renamed, create=False, expect_index=2)
    assert res["changed"]
    got = f.acl_policy(POL1)
    assert (got["Name"], got["CreateIndex"], got["ModifyIndex"]) == ("p1-renamed", 2, 3)
    assert f.acl_policy_by_name("p1") is None
    assert run(f, op="acl_policy_delete", ID=POL1) == {"index": 4, "changed": True}
    assert f.acl_policy(POL1) is None and f.acl_policy_by_name("p1-renamed") is None
    assert run(f, op="acl_policy_delete", ID=POL1) == {"index": 4}  # gone: a no-op


def test_policy_name_unique_in_log_order() -> None:
    f = FSM()
    run(f, op="acl_policy_set", Policy=pol(), create=True)
    res = run(f, op="acl_policy_set", Policy=pol(POL2, "P1"), create=True)
    assert res == {"error": 'Invalid Policy: A Policy with Name "P1" already exists',
                   "kind": "conflict"}
    run(f, op="acl_policy_set", Policy=pol(POL2, "p2"), create=True)
    res = run(f, op="acl_policy_set", Policy=pol(POL2, "p1"), create=False)
    assert res["error"] == 'Invalid Policy: A policy with name "p1" already exists'


def test_policy_update_cas_and_missing() -> None:
    f = FSM()
    run(f, op="acl_policy_set", Policy=pol(), create=True)
    res = run(f, op="acl_policy_set", Policy=pol(), create=False, expect_index=99)
    assert res["kind"] == "conflict" and "changed since" in res["error"]
    res = run(f, op="acl_policy_set", Policy=pol(POL2), create=False)
    assert res == {"error": f"cannot find policy {POL2}", "kind": "not_found"}


def test_global_management_is_protected() -> None:
    f = FSM()
    init(f)
    gm = acl.management_policy_record()
    res = run(f, op="acl_policy_set", Policy=dict(gm, Rules='acl = "read"'), create=False)
    assert res["error"] == (
        "Changing the Rules for the builtin global-management policy is not permitted"
    )
    res = run(f, op="acl_policy_set", Policy=dict(gm, Datacenters=["dc1"]), create=False)
    assert "Datacenters" in res["error"]
    res = run(f, op="acl_policy_set", Policy=dict(gm, Description="mine"), create=False)
    assert res["changed"]  # the description may change
    assert run(f, op="acl_policy_delete", ID=GM)["error"] == (
        "Delete operation not permitted on the builtin global-management policy"
    )


# ---- tokens ----


def test_token_create_update_delete() -> None:
    f = FSM()
    init(f)
    run(f, op="acl_policy_set", Policy=pol(), create=True)
    res = run(f, op="acl_token_set", Token=tok(policies=[POL1, POL1]), create=True)
    assert res == {"index": 3, "changed": True, "AccessorID": ACC1}
    got = f.acl_token(ACC1)
    assert got["Policies"] == [{"ID": POL1}]  # links deduplicated
    assert f.acl_token_by_secret(SEC1) == got
    update = dict(tok(policies=[]), Description="new", CreateTime="ignored")
    res = run(f, op="acl_token_set", Token=update, create=False, expect_index=3)
    assert res["changed"]
    got = f.acl_token(ACC1)
    assert (got["Description"], got["CreateIndex"], got["ModifyIndex"]) == ("new", 3, 4)
    assert got["CreateTime"] == AT  # kept from creation
    assert run(f, op="acl_token_delete", AccessorID=ACC1) == {"index": 5, "changed": True}
    assert f.acl_token(ACC1) is None and f.acl_token_by_secret(SEC1) is None
    assert run(f, op="acl_token_delete", AccessorID=ACC1) == {"index": 5}
    assert f.acl_tokens_index == 5


def test_token_refusals() -> None:
    f = FSM()
    init(f)
    run(f, op="acl_token_set", Token=tok(), create=True)
    cases = [
        (dict(op="acl_token_set", Token=tok(ACC1, SEC2), create=True),
         "Invalid Token: AccessorID is already in use"),
        (dict(op="acl_token_set", Token=tok(ACC2, SEC1), create=True),
         "Invalid Token: SecretID is already in use"),
        (dict(op="acl_token_set", Token=tok(ACC2, ACC1), create=True),
         "Invalid Token: SecretID is already in use"),  # a secret equal to an accessor
        (dict(op="acl_token_set", Token=tok(ACC2, SEC2, [POL2]), create=True),
         f'No such ACL policy with ID "{POL2}"'),
        (dict(op="acl_token_set", Token=tok(ACC1, SEC2), create=False),
         "Changing a tokens SecretID is not permitted"),
        (dict(op="acl_token_set", Token=tok(local=True), create=False),
         f"cannot toggle local mode of {ACC1}"),
        (dict(op="acl_token_set", Token=tok(ACC2, SEC2), create=False),
         f'Cannot find token "{ACC2}"'),
        (dict(op="acl_token_delete", AccessorID=ANON),
         "Delete operation not permitted on the anonymous token"),
    ]
    before = state(f)
    for cmd, error in cases:
        assert f.apply(encode(cmd))["error"] == error, cmd
    assert state(f) == before


def test_anonymous_token_may_get_policies() -> None:
    f = FSM()
    init(f)
    run(f, op="acl_policy_set", Policy=pol(), create=True)
    anon = acl.token_record(ANON, "anonymous", "Anonymous Token", [POL1], "later")
    assert run(f, op="acl_token_set", Token=anon, create=False)["changed"]
    assert f.acl_token_by_secret("anonymous")["Policies"] == [{"ID": POL1}]


def test_malformed_acl_commands_change_nothing() -> None:
    f = FSM()
    init(f)
    before = state(f)
    bad = [
        {"op": "acl_token_set", "Token": "x", "create": True},
        {"op": "acl_token_set", "Token": dict(tok(), Local="yes"), "create": True},
        {"op": "acl_token_set", "Token": dict(tok(), Policies=[{"Name": "x"}]), "create": True},
        {"op": "acl_token_set", "Token": dict(tok(), SecretID=""), "create": True},
        {"op": "acl_policy_set", "Policy": dict(pol(), Datacenters="dc1"), "create": True},
        {"op": "acl_policy_set", "Policy": dict(pol(), Name=""), "create": True},
        {"op": "acl_policy_set", "Policy": dict(pol(), Rules=3), "create": True},
        {"op": "acl_bootstrap", "Token": tok(), "ResetIndex": "1"},
        {"op": "acl_token_delete", "AccessorID": 5},
        {"op": "acl_policy_delete", "ID": ["x"]},
        {"op": "acl_init"},
    ]
    for cmd in bad:
        res = f.apply(encode(cmd))
        assert "error" in res, cmd
    assert state(f) == before


# ---- snapshots ----


def test_snapshot_roundtrip_keeps_acl_state() -> None:
    f = FSM()
    init(f, tok(ACC2, SEC2, [GM]))
    run(f, op="acl_policy_set", Policy=pol(), create=True)
    run(f, op="acl_token_set", Token=tok(policies=[POL1]), create=True)
    g = snapshot_roundtrip(f)
    assert state(g) == state(f)
    assert g.acl_token_by_secret(SEC1)["AccessorID"] == ACC1
    assert g.acl_policy_by_name("p1")["ID"] == POL1
    assert bootstrap(g, "44444444-0000-4000-8000-000000000000", "s")["kind"] == "bootstrap"


def test_old_snapshot_without_acl_keys_restores_empty_tables() -> None:
    f = FSM()
    old = msgpack.unpackb(f.snapshot(), raw=False)
    for key in [k for k in old if k.startswith("acl_")]:
        del old[key]
    g = FSM()
    g.restore(msgpack.packb(old, use_bin_type=True))
    assert (g.acl.policies, g.acl.tokens, g.acl_bootstrap_index) == ({}, {}, 0)
    assert bootstrap(g)["changed"]


# ---- property: replicas agree, bootstrap happens once, indexes stay consistent ----

_ids = st.sampled_from([ACC1, ACC2, SEC1, SEC2, ANON, "anonymous", POL1, POL2])
_command = st.one_of(
    st.builds(lambda a, s: {"op": "acl_bootstrap", "Token": tok(a, s, [GM]),
                            "Policy": acl.management_policy_record()}, _ids, _ids),
    st.builds(lambda: {"op": "acl_init", "Policy": acl.management_policy_record(),
                       "Anonymous": acl.anonymous_token_record(AT)}),
    st.builds(lambda i, n, c: {"op": "acl_policy_set", "Policy": pol(i, n), "create": c},
              st.sampled_from([POL1, POL2, GM]), st.sampled_from(["a", "b", "A"]),
              st.booleans()),
    st.builds(lambda i: {"op": "acl_policy_delete", "ID": i}, st.sampled_from([POL1, POL2, GM])),
    st.builds(lambda a, s, p, c: {"op": "acl_token_set", "Token": tok(a, s, p), "create": c},
              _ids, _ids, st.lists(st.sampled_from([POL1, POL2, GM]), max_size=2),
              st.booleans()),
    st.builds(lambda a: {"op": "acl_token_delete", "AccessorID": a}, _ids),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_command, max_size=25))
def test_replicas_agree_and_invariants_hold(commands: list[dict[str, Any]]) -> None:
    a, b = FSM(), FSM()
    bootstraps = 0
    for cmd in commands:
        raw = encode(cmd)
        ra, rb = a.apply(raw), b.apply(raw)
        assert ra == rb
        if cmd["op"] == "acl_bootstrap" and ra.get("changed"):
            bootstraps += 1
        # Secondary indexes always match the primary tables.
        assert a.acl.secret_ids == {t["SecretID"]: k for k, t in a.acl.tokens.items()}
        assert a.acl.policy_names == {p["Name"].lower(): k for k, p in a.acl.policies.items()}
        assert not set(a.acl.secret_ids) & set(a.acl.tokens)  # no ID is both accessor and secret
    assert bootstraps <= 1
    assert state(a) == state(b) == state(snapshot_roundtrip(a))


# ---- a command carries the ACL revision its decision was made on (cluster/commands.py) ----


def test_a_command_decided_on_older_acls_is_refused_and_changes_nothing() -> None:
    f = FSM()
    init(f)
    decided_on = f.acl_revision
    assert run(f, op="acl_policy_set", Policy=pol(), create=True)["changed"]
    before = f.snapshot()
    res = run(f, op="generate_token", Partition="default", Name="p", ID="id",
              EstablishmentSecret="s", acl_index=decided_on)
    assert res == {"error": "ACLs changed after the request was authorized",
                   "kind": "acl_changed"}
    assert f.snapshot() == before


def test_a_command_decided_on_the_current_acls_applies() -> None:
    f = FSM()
    init(f)
    run(f, op="acl_policy_set", Policy=pol(), create=True)
    res = run(f, op="catalog_register", Node={"Node": "n", "Address": "10.0.0.1"},
              acl_index=f.acl_revision)
    assert res["changed"] and "error" not in res
    assert f.catalog.node("n") is not None


def test_every_acl_change_moves_the_revision_and_nothing_else_does() -> None:
    f = FSM()
    revisions = [f.acl_revision]
    init(f)
    revisions.append(f.acl_revision)
    run(f, op="acl_policy_set", Policy=pol(), create=True)
    revisions.append(f.acl_revision)
    run(f, op="acl_token_set", Token=tok(policies=[POL1]), create=True)
    revisions.append(f.acl_revision)
    run(f, op="acl_token_delete", AccessorID=ACC1)
    revisions.append(f.acl_revision)
    run(f, op="acl_policy_delete", ID=POL1)
    revisions.append(f.acl_revision)
    assert revisions == sorted(set(revisions))  # strictly increasing
    run(f, op="generate_token", Partition="default", Name="p", ID="id", EstablishmentSecret="s")
    assert f.acl_revision == revisions[-1]
    assert snapshot_roundtrip(f).acl_revision == revisions[-1]

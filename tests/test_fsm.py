"""Unit and property tests of the replicated peering state machine (cluster/fsm.py).

Every test talks to the FSM the way Raft does: msgpack command bytes into `apply`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster import fsm as fsm_module
from cluster.fsm import (
    DELETING,
    ESTABLISHING,
    FSM,
    PENDING,
    TERMINATED,
    encode,
)
from cluster.state import transitions

P = "default"
AT = "2026-01-02T03:04:05.000000006Z"
DELETED_TEXT = "cannot write to peering that is marked for deletion"

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SEQUENCE_SETTINGS = settings(SETTINGS, max_examples=30)  # each example is a whole history


def run(f: FSM, **cmd: Any) -> dict[str, Any]:
    return f.apply(encode(cmd))


def token(f: FSM, name: str, id_: str = "acc-1", secret: str = "est-1", partition: str = P,
          **extra: Any) -> dict[str, Any]:
    return run(f, op="generate_token", Partition=partition, Name=name, ID=id_,
               EstablishmentSecret=secret, **extra)


def establish(f: FSM, name: str, id_: str = "dial-1", partition: str = P,
              **extra: Any) -> dict[str, Any]:
    cmd: dict[str, Any] = {
        "op": "establish", "Partition": partition, "Name": name, "ID": id_,
        "PeerID": "acceptor-id", "PeerCAPems": ["-----BEGIN CERTIFICATE-----\n"],
        "PeerServerName": "server.dc2.peering.11111111-2222-3333-4444-555555555555.consul",
        "PeerServerAddresses": ["10.0.0.1:8503"], "ManualServerAddresses": [],
        "Remote": {"Partition": "default", "Datacenter": "dc2"}, "Meta": {"env": "prod"},
    }
    cmd.update(extra)
    return run(f, **cmd)


def delete(f: FSM, name: str, partition: str = P, **extra: Any) -> dict[str, Any]:
    return run(f, op="delete", Partition=partition, Name=name, DeletedAt=AT, **extra)


def everything(f: FSM) -> tuple[Any, ...]:
    """All that readers can see, for comparing two FSMs beyond the snapshot bytes."""
    recs, index = f.list(None)
    return (
        f.index, index, recs,
        {p: f.list(p) for p in ("default", "p2", "other")},
        {(p, n): f.get(p, n) for p in ("default", "p2") for n in NAMES + ["zzz"]},
        {i: (f.by_id(i), f.secrets_for(i)) for i in IDS + [r["ID"] for r in recs]},
        f.servers_view(), f.identity,
    )


# ---- CreateIndex / ModifyIndex and the token lifecycle ----


def test_new_token_creates_pending_record_with_create_index_equal_to_modify_index():
    f = FSM()
    res = token(f, "foo", Meta={"env": "prod"})
    assert res == {"index": 1, "changed": True, "ID": "acc-1"}
    rec = f.get(P, "foo")
    assert rec["ID"] == "acc-1"
    assert rec["Name"] == "foo"
    assert rec["Partition"] == P
    assert rec["State"] == PENDING
    assert rec["Meta"] == {"env": "prod"}
    assert rec["Remote"] == {"Partition": "", "Datacenter": ""}
    assert rec["CreateIndex"] == rec["ModifyIndex"] == 1
    assert f.secrets_for("acc-1") == {"establishment": "est-1"}


def test_regenerating_keeps_id_state_meta_create_index_and_only_raises_modify_index():
    f = FSM()
    token(f, "foo", Meta={"env": "prod"})
    token(f, "other", id_="acc-2")
    before = f.get(P, "foo")
    res = token(f, "foo", id_="ignored-new-id", secret="est-2", Meta={"env": "dev"})
    after = f.get(P, "foo")
    assert res == {"index": 3, "changed": True, "ID": "acc-1"}
    assert after["ModifyIndex"] == 3
    assert before["ModifyIndex"] == 1
    strip = ("ModifyIndex", "_rid")
    assert {k: v for k, v in after.items() if k not in strip} == {
        k: v for k, v in before.items() if k not in strip
    }
    assert f.by_id("ignored-new-id") is None


def test_regenerating_replaces_the_establishment_secret_and_keeps_stream_secrets():
    f = FSM()
    token(f, "foo")
    assert run(f, op="exchange_secret", ID="acc-1", EstablishmentSecret="est-1",
               PendingStreamSecret="stream-1")["changed"]
    assert run(f, op="peering_event", ID="acc-1", Event="stream_open",
               PromoteStreamSecret="stream-1")["changed"]
    assert f.secrets_for("acc-1") == {"active": "stream-1"}
    token(f, "foo", secret="est-2")
    assert f.secrets_for("acc-1") == {"active": "stream-1", "establishment": "est-2"}
    token(f, "foo", secret="est-3")
    assert f.secrets_for("acc-1") == {"active": "stream-1", "establishment": "est-3"}


def test_regenerating_keeps_an_unpromoted_pending_stream_secret():
    f = FSM()
    token(f, "foo")
    run(f, op="exchange_secret", ID="acc-1", EstablishmentSecret="est-1",
        PendingStreamSecret="stream-1")
    token(f, "foo", secret="est-2")
    assert f.secrets_for("acc-1") == {"pending": "stream-1", "establishment": "est-2"}


def test_regenerating_a_terminated_acceptor_makes_it_pending_again():
    f = FSM()
    token(f, "foo")
    run(f, op="peering_event", ID="acc-1", Event="terminated_by_peer")
    assert f.get(P, "foo")["State"] == TERMINATED
    token(f, "foo", secret="est-2")
    assert f.get(P, "foo")["State"] == PENDING
    assert f.secrets_for("acc-1") == {"establishment": "est-2"}


def test_a_new_token_with_an_id_already_in_use_is_a_conflict_and_changes_nothing():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    res = token(f, "bar", id_="acc-1")
    assert res == {"error": "peering ID already in use, retry the operation", "kind": "conflict"}
    assert f.snapshot() == before


def test_expect_index_zero_for_a_new_name_is_accepted():
    f = FSM()
    assert token(f, "foo", expect_index=0)["changed"]


@pytest.mark.parametrize("op", ["generate_token", "establish", "delete"])
def test_expect_index_mismatch_is_a_conflict_saying_changed_since_and_changes_nothing(op):
    f = FSM()
    if op == "establish":
        establish(f, "foo")
    else:
        token(f, "foo")
    token(f, "bar", id_="acc-2")  # the index moved on past foo's ModifyIndex (1)
    before = f.snapshot()
    stale = {"expect_index": 2}
    if op == "generate_token":
        res = token(f, "foo", secret="est-2", **stale)
    elif op == "establish":
        res = establish(f, "foo", **stale)
    else:
        res = delete(f, "foo", **stale)
    assert res["kind"] == "conflict"
    assert "changed since" in res["error"]
    assert res == {"error": "peering changed since the request was prepared", "kind": "conflict"}
    assert f.snapshot() == before


def test_expect_index_for_a_name_that_does_not_exist_must_be_zero():
    f = FSM()
    res = token(f, "foo", expect_index=7)
    assert res == {"error": "peering changed since the request was prepared", "kind": "conflict"}
    assert f.get(P, "foo") is None
    assert f.index == 0


def test_expect_index_matching_the_modify_index_is_applied():
    f = FSM()
    token(f, "foo")
    token(f, "bar", id_="acc-2")
    assert token(f, "foo", secret="est-2", expect_index=1)["index"] == 3


def test_an_event_with_a_stale_expect_index_is_a_conflict_and_changes_nothing():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    res = run(f, op="peering_event", ID="acc-1", Event="stream_open", expect_index=5)
    assert res == {"error": "peering changed since the request was prepared", "kind": "conflict"}
    assert f.snapshot() == before


# ---- roles are sticky per name ----


def test_generate_token_for_a_dialer_name_gives_consuls_already_established_text():
    f = FSM()
    establish(f, "foo")
    before = f.snapshot()
    res = token(f, "foo")
    assert res == {
        "error": 'cannot create peering with name: "foo"; there is already an established '
                 "peering",
        "kind": "conflict",
    }
    assert f.snapshot() == before


def test_establish_on_an_acceptor_name_gives_consuls_expecting_to_be_dialed_text():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    res = establish(f, "foo")
    assert res == {
        "error": 'cannot create peering with name: "foo"; there is an existing peering '
                 "expecting to be dialed",
        "kind": "conflict",
    }
    assert f.snapshot() == before


def test_manual_server_addresses_alone_make_a_dialer():
    f = FSM()
    establish(f, "foo", PeerServerAddresses=[], ManualServerAddresses=["lb.example:8503"])
    res = token(f, "foo")
    assert res["error"].endswith("there is already an established peering")


# ---- establish ----


def test_establish_creates_a_pending_dialer_record_with_the_token_fields():
    f = FSM()
    res = establish(f, "foo", StreamSecret="stream-9")
    assert res == {"index": 1, "changed": True, "ID": "dial-1"}
    rec = f.get(P, "foo")
    assert rec["State"] == PENDING
    assert rec["PeerID"] == "acceptor-id"
    assert rec["PeerCAPems"] == ["-----BEGIN CERTIFICATE-----\n"]
    assert rec["PeerServerAddresses"] == ["10.0.0.1:8503"]
    assert rec["Remote"] == {"Partition": "default", "Datacenter": "dc2"}
    assert rec["Meta"] == {"env": "prod"}
    assert rec["CreateIndex"] == rec["ModifyIndex"] == 1
    assert f.secrets_for("dial-1") == {"active": "stream-9"}


def test_re_establishing_keeps_id_state_and_create_index_and_takes_new_token_fields():
    f = FSM()
    establish(f, "foo")
    run(f, op="peering_event", ID="dial-1", Event="secret_exchanged")
    res = establish(f, "foo", id_="dial-new", PeerID="acceptor-2", Meta={"a": "b"})
    rec = f.get(P, "foo")
    assert res == {"index": 3, "changed": True, "ID": "dial-1"}
    assert (rec["ID"], rec["State"], rec["CreateIndex"], rec["ModifyIndex"]) == (
        "dial-1", ESTABLISHING, 1, 3
    )
    assert rec["PeerID"] == "acceptor-2"
    assert rec["Meta"] == {"a": "b"}


def test_re_establishing_a_terminated_dialer_makes_it_pending():
    f = FSM()
    establish(f, "foo")
    run(f, op="peering_event", ID="dial-1", Event="terminated_by_peer")
    establish(f, "foo")
    assert f.get(P, "foo")["State"] == PENDING


# ---- delete and remove ----


def test_delete_of_an_unknown_name_is_a_no_op_without_an_index_bump():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    assert delete(f, "nope") == {"index": 1}
    assert delete(f, "nope", expect_index=0) == {"index": 1}
    assert f.snapshot() == before


def test_delete_marks_deleting_with_deleted_at_drops_meta_and_secrets_keeps_addresses():
    f = FSM()
    establish(f, "foo", ManualServerAddresses=["lb:8503"], StreamSecret="stream-1")
    res = delete(f, "foo")
    rec = f.get(P, "foo")
    assert res == {"index": 2, "changed": True}
    assert rec["State"] == DELETING
    assert rec["DeletedAt"] == AT
    assert rec["ID"] == "dial-1"
    assert rec["CreateIndex"] == 1
    assert rec["ModifyIndex"] == 2
    assert "Meta" not in rec
    assert "PeerID" not in rec
    assert "PeerCAPems" not in rec
    assert rec["PeerServerAddresses"] == ["10.0.0.1:8503"]
    assert rec["ManualServerAddresses"] == ["lb:8503"]
    assert rec["Remote"] == {"Partition": "", "Datacenter": ""}
    assert f.secrets_for("dial-1") == {}


def test_delete_of_an_acceptor_drops_its_establishment_secret():
    f = FSM()
    token(f, "foo", Meta={"k": "v"})
    delete(f, "foo")
    assert f.secrets_for("acc-1") == {}
    assert "Meta" not in f.get(P, "foo")


def test_deleting_twice_is_a_no_op():
    f = FSM()
    token(f, "foo")
    delete(f, "foo")
    before = f.snapshot()
    assert delete(f, "foo") == {"index": 2}
    assert delete(f, "foo", expect_index=2) == {"index": 2}
    assert f.snapshot() == before


def test_delete_looks_the_name_up_case_insensitively():
    f = FSM()
    token(f, "foo")
    delete(f, "FOO")
    assert f.get(P, "foo")["State"] == DELETING


def test_a_terminated_peering_can_be_deleted():
    f = FSM()
    token(f, "foo")
    run(f, op="peering_event", ID="acc-1", Event="terminated_by_peer")
    assert delete(f, "foo")["changed"]
    assert f.get(P, "foo")["State"] == DELETING


def test_generate_token_on_a_deleting_peering_is_refused_and_changes_nothing():
    f = FSM()
    token(f, "foo")
    delete(f, "foo")
    before = f.snapshot()
    res = token(f, "foo", secret="est-2")
    assert res == {"error": f"failed to write peering: {DELETED_TEXT}", "kind": "conflict"}
    assert f.snapshot() == before


def test_establish_on_a_deleting_peering_is_refused_and_changes_nothing():
    f = FSM()
    establish(f, "foo")
    delete(f, "foo")
    before = f.snapshot()
    res = establish(f, "foo")
    assert res == {"error": f"failed to write peering: {DELETED_TEXT}", "kind": "conflict"}
    assert f.snapshot() == before


def test_an_event_on_a_deleting_peering_is_refused_and_changes_nothing():
    f = FSM()
    token(f, "foo")
    delete(f, "foo")
    before = f.snapshot()
    res = run(f, op="peering_event", ID="acc-1", Event="stream_open")
    assert res == {"error": DELETED_TEXT, "kind": "conflict"}
    assert f.snapshot() == before


def test_remove_refuses_a_peering_not_marked_for_deletion():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    res = run(f, op="remove", ID="acc-1")
    assert res == {
        "error": "cannot delete a peering without first marking for deletion", "kind": "invalid"
    }
    assert f.snapshot() == before


def test_remove_drops_a_deleting_peering_and_bumps_the_index():
    f = FSM()
    token(f, "foo")
    delete(f, "foo")
    assert run(f, op="remove", ID="acc-1") == {"index": 3, "changed": True}
    assert f.get(P, "foo") is None
    assert f.by_id("acc-1") is None
    assert f.list(None) == ([], 3)


def test_remove_of_an_unknown_id_is_a_no_op():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    assert run(f, op="remove", ID="nope") == {"index": 1}
    assert f.snapshot() == before


def test_a_removed_name_can_be_created_again_with_a_fresh_create_index():
    f = FSM()
    token(f, "foo")
    delete(f, "foo")
    run(f, op="remove", ID="acc-1")
    token(f, "foo", id_="acc-2")
    rec = f.get(P, "foo")
    assert (rec["ID"], rec["CreateIndex"], rec["ModifyIndex"], rec["State"]) == (
        "acc-2", 4, 4, PENDING
    )


# ---- peering events ----


def test_an_event_writes_the_next_state_and_raises_modify_index_only():
    f = FSM()
    establish(f, "foo")
    res = run(f, op="peering_event", ID="dial-1", Event="secret_exchanged")
    rec = f.get(P, "foo")
    assert res == {"index": 2, "changed": True}
    assert (rec["State"], rec["CreateIndex"], rec["ModifyIndex"]) == (ESTABLISHING, 1, 2)


def test_peering_event_refuses_an_event_of_another_command_or_unknown_and_changes_nothing():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    for event in ("delete_requested", "removed", "token_generated", "UNDEFINED", ""):
        res = run(f, op="peering_event", ID="acc-1", Event=event)
        assert res == {"error": f"invalid peering event {event!r}", "kind": "invalid"}
    assert f.snapshot() == before


def test_an_event_of_an_unknown_id_is_not_found():
    f = FSM()
    assert run(f, op="peering_event", ID="nope", Event="stream_open") == {
        "error": "unknown peering ID nope", "kind": "not_found"
    }


def test_terminated_drops_the_secrets():
    f = FSM()
    establish(f, "foo", StreamSecret="stream-1")
    run(f, op="peering_event", ID="dial-1", Event="terminated_by_peer")
    assert f.secrets_for("dial-1") == {}


# ---- partitions, names, listing, indexes ----


def test_partitions_are_independent():
    f = FSM()
    token(f, "foo", id_="acc-1", partition="default")
    establish(f, "foo", id_="dial-1", partition="p2")  # no role conflict across partitions
    assert f.get("default", "foo")["ID"] == "acc-1"
    assert f.get("p2", "foo")["ID"] == "dial-1"
    delete(f, "foo", partition="p2")
    assert f.get("default", "foo")["State"] == PENDING
    assert f.get("p2", "foo")["State"] == DELETING
    assert [r["ID"] for r in f.list("default")[0]] == ["acc-1"]
    assert [r["ID"] for r in f.list("p2")[0]] == ["dial-1"]
    assert f.list("other") == ([], 3)


def test_list_is_sorted_by_name_whatever_the_write_order():
    f = FSM()
    for i, name in enumerate(["foo", "bar", "baz", "a-1", "zed"]):
        token(f, name, id_=f"acc-{i}")
    token(f, "aaa", id_="acc-x", partition="p2")
    assert [r["Name"] for r in f.list("default")[0]] == ["a-1", "bar", "baz", "foo", "zed"]
    assert [(r["Name"], r["Partition"]) for r in f.list(None)[0]] == [
        ("a-1", P), ("aaa", "p2"), ("bar", P), ("baz", P), ("foo", P), ("zed", P)
    ]


def test_names_are_keyed_case_insensitively():
    f = FSM()
    token(f, "Foo")
    assert f.get(P, "foo")["ID"] == "acc-1"
    assert f.get(P, "FOO")["ID"] == "acc-1"
    token(f, "foo", id_="acc-2", secret="est-2")  # the same peering, regenerated
    assert [r["ID"] for r in f.list(P)[0]] == ["acc-1"]
    assert f.by_id("acc-2") is None


def test_peerings_index_moves_on_every_peering_table_change_and_only_then():
    f = FSM()
    seen = []

    def step(res: dict[str, Any], table_changed: bool) -> None:
        assert "error" not in res, res
        seen.append((f.index, f.peerings_index))
        if table_changed:
            assert f.peerings_index == f.index == res["index"]

    step(token(f, "foo"), True)
    step(establish(f, "bar"), True)
    step(run(f, op="peering_event", ID="dial-1", Event="stream_open"), True)
    step(token(f, "foo", secret="est-2"), True)
    step(run(f, op="register_server", RaftAddr="10.0.0.1:8300", Node="n1",
             HTTPAddr="10.0.0.1:8500", PeeringAddr="10.0.0.1:8503", Datacenter="dc1"), False)
    assert f.peerings_index == 4 and f.index == 5
    step(run(f, op="init_identity", TrustDomain="t.consul", CACert="c", CAKey="k"), False)
    assert f.peerings_index == 4 and f.index == 6
    step(delete(f, "foo"), True)
    step(run(f, op="remove", ID="acc-1"), True)
    step(run(f, op="barrier"), False)
    assert seen[-1] == (8, 8)
    assert f.list(None)[1] == 8


def test_barrier_changes_nothing_and_reports_the_current_index():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    assert run(f, op="barrier") == {"index": 1}
    assert f.snapshot() == before


def test_registering_the_same_server_twice_bumps_the_index_once():
    f = FSM()
    cmd = {"op": "register_server", "RaftAddr": "h:8300", "Node": "n1", "HTTPAddr": "h:8500",
           "PeeringAddr": "h:8503", "Datacenter": "dc1"}
    assert run(f, **cmd) == {"index": 1, "changed": True}
    assert run(f, **cmd) == {"index": 1}
    assert f.servers_view() == {
        "h:8300": {"Node": "n1", "HTTPAddr": "h:8500", "PeeringAddr": "h:8503",
                   "Datacenter": "dc1", "HTTPSAddr": ""}  # an entry from before HTTPS existed
    }


def test_a_server_registers_its_https_address():
    f = FSM()
    run(f, op="register_server", RaftAddr="h:8300", Node="n1", HTTPAddr="", HTTPSAddr="h:8501",
        PeeringAddr="wan.example:443", Datacenter="dc1")
    assert f.servers_view()["h:8300"] == {"Node": "n1", "HTTPAddr": "", "HTTPSAddr": "h:8501",
                                          "PeeringAddr": "wan.example:443", "Datacenter": "dc1"}


def test_the_first_identity_wins():
    f = FSM()
    assert run(f, op="init_identity", TrustDomain="a", CACert="ca", CAKey="k")["changed"]
    assert run(f, op="init_identity", TrustDomain="b", CACert="cb", CAKey="k2") == {"index": 1}
    assert f.identity == {"TrustDomain": "a", "CACert": "ca", "CAKey": "k"}


# ---- listeners ----


def test_listeners_hear_every_change_and_nothing_else():
    f = FSM()
    heard: list[int] = []
    f.add_listener(heard.append)
    token(f, "foo")
    run(f, op="barrier")
    token(f, "foo", expect_index=99)
    delete(f, "nope")
    token(f, "foo", secret="est-2")
    assert heard == [1, 2]


def test_a_failing_listener_breaks_neither_apply_nor_restore():
    f = FSM()

    def boom(index: int) -> None:
        raise RuntimeError("listener bug")

    f.add_listener(boom)
    assert token(f, "foo")["changed"]
    g = FSM()
    g.add_listener(boom)
    g.restore(f.snapshot())
    assert g.snapshot() == f.snapshot()


def test_restore_tells_listeners_the_restored_index():
    f = FSM()
    token(f, "foo")
    token(f, "bar", id_="acc-2")
    g = FSM()
    heard: list[int] = []
    g.add_listener(heard.append)
    g.restore(f.snapshot())
    assert heard == [2]


# ---- no half-applied command (regressions) ----


def test_generate_token_without_an_establishment_secret_changes_nothing():
    f = FSM()
    res = run(f, op="generate_token", Partition=P, Name="foo", ID="acc-1")
    assert res["kind"] == "invalid"
    assert "EstablishmentSecret" in res["error"]
    assert f.index == 0
    assert f.snapshot() == FSM().snapshot()


def test_delete_without_deleted_at_changes_nothing():
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    res = run(f, op="delete", Partition=P, Name="foo")
    assert res["kind"] == "invalid"
    assert "DeletedAt" in res["error"]
    assert f.snapshot() == before


@pytest.mark.parametrize(
    "field,value",
    [
        ("ID", 5),  # msgpack refuses int map keys on restore: the snapshot would be unloadable
        ("ID", b"acc-1"),
        ("Name", b"foo"),  # bytes names do not sort against str names
        ("Partition", None),
        ("EstablishmentSecret", 1),
        ("Meta", {"k": 1}),
        ("Meta", ["k", "v"]),
        ("expect_index", True),
        ("expect_index", "0"),
        ("rid", 3),
    ],
)
def test_a_wrongly_typed_field_is_refused_and_changes_nothing(field, value):
    f = FSM()
    token(f, "bar", id_="acc-0")
    before = f.snapshot()
    cmd = {"op": "generate_token", "Partition": P, "Name": "foo", "ID": "acc-1",
           "EstablishmentSecret": "s", field: value}
    res = f.apply(encode(cmd))
    assert res == {"error": f"invalid command: {field} has the wrong type", "kind": "invalid"}
    assert f.snapshot() == before


@pytest.mark.parametrize(
    "cmd",
    [
        {"op": "establish", "Partition": P, "Name": "foo", "ID": "d", "PeerID": 7},
        {"op": "establish", "Partition": P, "Name": "foo", "ID": "d", "PeerID": "p",
         "PeerServerAddresses": ["a:1", 2]},
        {"op": "establish", "Partition": P, "Name": "foo", "ID": "d", "PeerID": "p",
         "Remote": {"Datacenter": None}},
        {"op": "peering_event", "ID": "acc-1", "Event": 3},
        {"op": "delete", "Partition": P, "Name": "bar", "DeletedAt": 1700000000},
        {"op": "remove", "ID": ["acc-1"]},
    ],
)
def test_wrongly_typed_fields_are_refused_by_every_command(cmd):
    f = FSM()
    token(f, "bar", id_="acc-1")
    before = f.snapshot()
    res = f.apply(encode(cmd))
    assert res["kind"] == "invalid"
    assert res["error"].endswith("has the wrong type")
    assert f.snapshot() == before


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb({1: 2}), msgpack.packb({"op": [1]}),
     msgpack.packb({"op": "nope"}), msgpack.packb({"op": None}), msgpack.packb("barrier"),
     b"\x81\xa2op\xa7barrier\xff"],
)
def test_malformed_commands_are_refused_without_raising(raw):
    f = FSM()
    token(f, "foo")
    before = f.snapshot()
    res = f.apply(raw)
    assert set(res) == {"error", "kind"}
    assert res["kind"] == "invalid"
    assert f.snapshot() == before


# ---- purity ----

BANNED_MODULES = {"time", "random", "uuid", "datetime", "asyncio", "aiohttp", "os", "socket",
                  "secrets", "io", "pathlib", "subprocess"}


PURE_SOURCES = [Path(fsm_module.__file__), Path(fsm_module.__file__).parent / "commands.py",
                *sorted((Path(fsm_module.__file__).parent / "state").glob("*.py"))]


@pytest.mark.parametrize("path", PURE_SOURCES, ids=lambda p: p.name)
def test_fsm_source_uses_no_clock_randomness_uuid_or_io(path):
    source = path.read_text()
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & BANNED_MODULES == set()
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    banned_names = {"time", "random", "uuid", "datetime", "asyncio", "aiohttp", "open", "print",
                    "input", "exec", "eval"}
    assert names & banned_names == set()
    code_lines = [line.split("#")[0] for line in source.splitlines()]
    for needle in ("import time", "import random", "import uuid", "import datetime",
                   "open(", "asyncio", "aiohttp"):
        assert not any(needle in line for line in code_lines), needle


def test_importing_the_fsm_loads_neither_asyncio_nor_aiohttp():
    code = ("import sys, cluster.fsm; "
            "print(sorted(m for m in ('asyncio', 'aiohttp', 'uuid', 'random') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(fsm_module.__file__).parent.parent)
    assert out.stdout.strip() == "[]"


# ---- property tests ----

NAMES = ["a", "b", "c"]
PARTITIONS = ["default", "p2"]
IDS = ["id-1", "id-2", "id-3", "id-4"]
SECRETS = ["s-1", "s-2", "s-3"]
EVENTS = [*transitions.EVENTS, "BOGUS"]
OPS = ["generate_token", "establish", "delete", "remove", "peering_event", "register_server",
       "barrier", "exchange_secret", "init_identity"]

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)
bad_values = st.sampled_from(
    [None, 0, 5, -1, 2**64 - 1, True, 1.5, b"x", "", "id-1", [], ["x"], [1], {}, {"k": 1},
     {"k": "v"}, {1: "v"}]
) | msgpack_values


def draw_expect_index(data: st.DataObject, current: int | None) -> dict[str, Any]:
    choice = data.draw(st.sampled_from(["absent", "right", "right", "wrong"]))
    if choice == "absent":
        return {}
    if choice == "right":
        return {"expect_index": current or 0}
    return {"expect_index": data.draw(st.integers(0, 40))}


def draw_command(data: st.DataObject, f: FSM) -> dict[str, Any]:
    op = data.draw(st.sampled_from(OPS))
    partition = data.draw(st.sampled_from(PARTITIONS))
    name = data.draw(st.sampled_from(NAMES))
    rec = f.get(partition, name)
    current = rec["ModifyIndex"] if rec else 0
    known_ids = IDS + [r["ID"] for r in f.list(None)[0]]
    cmd: dict[str, Any] = {"op": op}
    if op == "generate_token":
        cmd.update(Partition=partition, Name=name, ID=data.draw(st.sampled_from(IDS)),
                   EstablishmentSecret=data.draw(st.sampled_from(SECRETS)),
                   Meta=data.draw(st.sampled_from([None, {}, {"k": "v"}])))
        cmd.update(draw_expect_index(data, current))
    elif op == "establish":
        cmd.update(Partition=partition, Name=name, ID=data.draw(st.sampled_from(IDS)),
                   PeerID=data.draw(st.sampled_from(IDS)), PeerServerName="srv",
                   PeerServerAddresses=data.draw(st.sampled_from([["h:1"], [], None])),
                   ManualServerAddresses=data.draw(st.sampled_from([["m:2"], []])),
                   Remote={"Partition": "default", "Datacenter": "dc2"})
        if data.draw(st.booleans()):
            cmd["StreamSecret"] = data.draw(st.sampled_from(SECRETS))
        cmd.update(draw_expect_index(data, current))
    elif op == "delete":
        cmd.update(Partition=partition, Name=name, DeletedAt=AT)
        cmd.update(draw_expect_index(data, current))
    elif op == "remove":
        cmd.update(ID=data.draw(st.sampled_from(known_ids)))
    elif op == "peering_event":
        peering_id = data.draw(st.sampled_from(known_ids))
        target = f.by_id(peering_id)
        cmd.update(ID=peering_id, Event=data.draw(st.sampled_from(EVENTS)))
        cmd.update(draw_expect_index(data, target["ModifyIndex"] if target else None))
    elif op == "register_server":
        node = data.draw(st.sampled_from(["n1", "n2"]))
        cmd.update(RaftAddr=f"{node}:8300", Node=node, HTTPAddr=f"{node}:8500",
                   PeeringAddr=f"{node}:850{data.draw(st.integers(0, 1))}", Datacenter="dc1")
    elif op == "exchange_secret":
        cmd.update(ID=data.draw(st.sampled_from(known_ids)),
                   EstablishmentSecret=data.draw(st.sampled_from(SECRETS)),
                   PendingStreamSecret=data.draw(st.sampled_from(SECRETS)))
    elif op == "init_identity":
        cmd.update(TrustDomain=data.draw(st.sampled_from(["t1", "t2"])), CACert="c", CAKey="k")
    # Sometimes break the command: drop a field or give one a random value.
    if data.draw(st.integers(0, 3)) == 0:
        damage(data, cmd)
    return cmd


def damage(data: st.DataObject, cmd: dict[str, Any]) -> None:
    """Drop a field, or give one a value of another type (or another value)."""
    fields = sorted(k for k in cmd if k != "op")
    if not fields:
        return
    field = data.draw(st.sampled_from(fields))
    if data.draw(st.booleans()):
        del cmd[field]
    else:
        cmd[field] = data.draw(bad_values)


def assert_healthy(f: FSM) -> None:
    """Whatever was accepted leaves an FSM that can be read, listed and restored."""
    blob = f.snapshot()
    g = FSM()
    g.restore(blob)
    assert g.snapshot() == blob
    for p in PARTITIONS + [None]:
        f.list(p)
    for rec in f.list(None)[0]:
        assert f.get(rec["Partition"], rec["Name"]) is rec
        assert f.by_id(rec["ID"]) is rec
        assert isinstance(rec["Name"], str) and isinstance(rec["ID"], str)
        assert rec["CreateIndex"] <= rec["ModifyIndex"] <= f.peerings_index <= f.index


@SEQUENCE_SETTINGS
@given(st.data())
def test_the_same_commands_on_two_fsms_give_identical_state_and_indexes(data):
    f1, f2 = FSM(), FSM()
    for _ in range(data.draw(st.integers(1, 20))):
        raw = encode(draw_command(data, f1))
        assert f1.apply(raw) == f2.apply(raw)
        assert f1.snapshot() == f2.snapshot()
    assert everything(f1) == everything(f2)


@SEQUENCE_SETTINGS
@given(st.data())
def test_a_refused_or_no_op_command_changes_nothing_and_an_accepted_one_leaves_a_sound_fsm(
    data,
):
    f = FSM()
    for _ in range(data.draw(st.integers(1, 20))):
        cmd = draw_command(data, f)
        before, index = f.snapshot(), f.index
        res = f.apply(encode(cmd))
        assert isinstance(res, dict)
        if "error" in res:
            assert set(res) == {"error", "kind"}
            assert f.snapshot() == before, (cmd, res)
        elif not res.get("changed"):
            assert res == {"index": index}
            assert f.snapshot() == before, (cmd, res)
        else:
            assert res["index"] == f.index == index + 1
            assert_healthy(f)


@SEQUENCE_SETTINGS
@given(st.data())
def test_snapshot_restore_round_trip_gives_identical_bytes_reads_and_future(data):
    f = FSM()
    for _ in range(data.draw(st.integers(0, 20))):
        f.apply(encode(draw_command(data, f)))
    g = FSM()
    g.restore(f.snapshot())
    assert g.snapshot() == f.snapshot()
    assert everything(g) == everything(f)
    # A restored replica goes on in lockstep with the one that never restarted.
    for _ in range(data.draw(st.integers(0, 10))):
        raw = encode(draw_command(data, f))
        assert g.apply(raw) == f.apply(raw)
    assert g.snapshot() == f.snapshot()


@SETTINGS
@given(st.binary(max_size=64))
def test_apply_never_raises_on_random_bytes(raw):
    f = FSM()
    token(f, "a", id_="id-1")
    before = f.snapshot()
    res = f.apply(raw)
    assert isinstance(res, dict)
    if "error" in res:
        assert f.snapshot() == before


@SETTINGS
@given(
    st.sampled_from(OPS + ["nope"]),
    st.dictionaries(
        st.sampled_from(
            ["Partition", "Name", "ID", "EstablishmentSecret", "PeerID", "Meta", "State",
             "DeletedAt", "Remote", "PeerServerAddresses", "ManualServerAddresses",
             "PeerCAPems", "expect_index", "StreamSecret", "PendingStreamSecret", "RaftAddr",
             "Node", "HTTPAddr", "PeeringAddr", "Datacenter", "TrustDomain", "CACert", "CAKey",
             "PromoteStreamSecret", "ActiveStreamSecret", "expect_secret", "Event",
             "rid"]
        ) | st.text(max_size=4),
        msgpack_values | st.sampled_from(["a", "id-1", "default", "s-1", "PENDING"]),
        max_size=8,
    ),
)
def test_apply_never_raises_on_random_maps_and_a_refused_one_changes_nothing(op, fields):
    f = FSM()
    token(f, "a", id_="id-1", Meta={"k": "v"})
    establish(f, "b", id_="id-2", StreamSecret="s-1")
    before, index = f.snapshot(), f.index
    res = f.apply(encode({"op": op, **fields}))
    assert isinstance(res, dict)
    if "error" in res or not res.get("changed"):
        assert f.snapshot() == before
        assert f.index == index
    else:
        assert_healthy(f)


def seeded() -> FSM:
    """An acceptor `a` (id-1), a dialer `b` (id-2) and a DELETING acceptor `e` (id-5)."""
    f = FSM()
    token(f, "a", id_="id-1", secret="est-1", Meta={"k": "v"})
    establish(f, "b", id_="id-2", StreamSecret="s-1")
    token(f, "e", id_="id-5")
    delete(f, "e")
    run(f, op="register_server", RaftAddr="n1:8300", Node="n1", HTTPAddr="n1:8500",
        PeeringAddr="n1:8503", Datacenter="dc1")
    return f


def valid_commands() -> list[dict[str, Any]]:
    """One accepted command of every kind, against `seeded()`."""
    remote = {"Partition": "default", "Datacenter": "dc9"}
    dial = {"PeerID": "x", "PeerCAPems": ["pem"], "PeerServerName": "srv",
            "PeerServerAddresses": ["h:1"], "ManualServerAddresses": ["m:2"], "Remote": remote,
            "Meta": {"k": "v"}, "StreamSecret": "s-2", "rid": "r"}
    return [
        {"op": "generate_token", "Partition": P, "Name": "c", "ID": "id-3",
         "EstablishmentSecret": "s-9", "Meta": {"k": "v"}, "rid": "r", "expect_index": 0},
        {"op": "generate_token", "Partition": P, "Name": "a", "ID": "id-3",
         "EstablishmentSecret": "s-9", "Meta": {}, "rid": "r", "expect_index": 1},
        {"op": "establish", "Partition": P, "Name": "d", "ID": "id-4", "expect_index": 0,
         **dial},
        {"op": "establish", "Partition": P, "Name": "b", "ID": "id-4", "expect_index": 2,
         **dial},
        {"op": "delete", "Partition": P, "Name": "a", "DeletedAt": AT, "rid": "r",
         "expect_index": 1},
        {"op": "remove", "ID": "id-5"},
        {"op": "peering_event", "ID": "id-2", "Event": "stream_open", "expect_index": 2,
         "expect_secret": "s-1", "Remote": remote,
         "PeerServerAddresses": ["h:9"], "ActiveStreamSecret": "s-3"},
        {"op": "peering_event", "ID": "id-1", "Event": "stream_failed", "Remote": remote},
        {"op": "exchange_secret", "ID": "id-1", "EstablishmentSecret": "est-1",
         "PendingStreamSecret": "p-1"},
        {"op": "register_server", "RaftAddr": "n2:8300", "Node": "n2", "HTTPAddr": "n2:8500",
         "PeeringAddr": "n2:8503", "Datacenter": "dc1"},
        {"op": "init_identity", "TrustDomain": "t", "CACert": "c", "CAKey": "k"},
    ]


@pytest.mark.parametrize("cmd", valid_commands(), ids=lambda c: c["op"])
def test_every_template_command_is_accepted_on_the_seeded_fsm(cmd):
    f = seeded()
    res = f.apply(encode(cmd))
    assert res.get("changed") is True, res
    assert_healthy(f)


@settings(SETTINGS, max_examples=250)
@given(st.sampled_from(valid_commands()), st.data())
def test_a_damaged_command_is_refused_whole_or_leaves_a_sound_fsm(template, data):
    f = seeded()
    cmd = dict(template)
    for _ in range(data.draw(st.integers(1, 3))):
        damage(data, cmd)
    before, index = f.snapshot(), f.index
    res = f.apply(encode(cmd))
    if "error" in res or not res.get("changed"):
        assert f.snapshot() == before, (cmd, res)
        assert f.index == index
    else:
        assert res["index"] == f.index == index + 1
        assert_healthy(f)

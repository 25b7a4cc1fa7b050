"""Unit and property tests of the catalog and config-entry tables (cluster/state/), driven the
way Raft drives them: msgpack commands into FSM.apply."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.fsm import FSM, encode

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(f: FSM, **cmd: Any) -> dict[str, Any]:
    return f.apply(encode(cmd))


def register(f: FSM, node: str = "n1", sid: str = "web1", name: str = "web",
             checks: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    cmd: dict[str, Any] = {"op": "catalog_register", "Node": {"Node": node, "Address": "10.0.0.1"}}
    if sid:
        cmd["Service"] = {"ID": sid, "Service": name, "Tags": ["v1"], "Port": 80}
    if checks is not None:
        cmd["Checks"] = checks
    cmd.update(extra)
    return f.apply(encode(cmd))


def instance(node: str, sid: str, name: str = "api", status: str = "passing") -> dict[str, Any]:
    return {"Node": {"Node": node, "Address": "192.0.2.1"},
            "Service": {"ID": sid, "Service": name, "Port": 8080},
            "Checks": [{"CheckID": f"{sid}:overall-check", "Status": status}]}


def import_service(f: FSM, peer: str, name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return run(f, op="catalog_import_service", Peer=peer, Service=name, Nodes=nodes)


# ---- local registration ----


def test_register_creates_node_service_and_check_at_one_index():
    f = FSM()
    res = register(f, checks=[{"CheckID": "c1", "Status": "passing", "ServiceID": "web1"}])
    rows, index = f.catalog.health("web")
    assert res == {"index": 1, "changed": True} and index == 1
    node, svc, checks = rows[0]
    assert (node["Node"], svc["ID"], [c["CheckID"] for c in checks]) == ("n1", "web1", ["c1"])
    assert checks[0]["ServiceName"] == "web" and checks[0]["ServiceTags"] == ["v1"]


def test_registering_the_same_thing_again_changes_nothing():
    f = FSM()
    register(f)
    assert register(f) == {"index": 1}


def test_check_without_status_is_critical():
    f = FSM()
    register(f, checks=[{"CheckID": "c1", "ServiceID": "web1"}])
    assert f.catalog.health("web")[0][0][2][0]["Status"] == "critical"


def test_check_for_unknown_service_is_refused_and_nothing_is_stored():
    f = FSM()
    res = register(f, sid="", checks=[{"CheckID": "c1", "ServiceID": "nope"}])
    assert res == {"error": "Missing service registration", "kind": "invalid"}
    assert f.catalog.nodes() == ([], 0)


def test_bad_check_status_is_refused():
    f = FSM()
    res = register(f, checks=[{"CheckID": "c1", "Status": "sunny"}])
    assert "unknown check status" in res["error"] and f.index == 0


def test_skip_node_update_needs_an_existing_node():
    f = FSM()
    assert register(f, SkipNodeUpdate=True)["error"] == "Missing node registration"


def test_node_check_shows_on_every_service_of_the_node():
    f = FSM()
    register(f, sid="web1", name="web")
    register(f, sid="db1", name="db", checks=[{"CheckID": "serfHealth", "Status": "warning"}])
    for name in ("web", "db"):
        assert [c["CheckID"] for c in f.catalog.health(name)[0][0][2]] == ["serfHealth"]


def test_deregister_service_removes_its_checks_only():
    f = FSM()
    register(f, checks=[{"CheckID": "c1", "ServiceID": "web1"},
                        {"CheckID": "n", "Status": "passing"}])
    run(f, op="catalog_deregister", Node="n1", ServiceID="web1")
    assert f.catalog.health("web")[0] == [] and len(f.catalog.nodes()[0]) == 1
    assert f.catalog.record_count("") == 2  # node + node check


def test_deregister_node_removes_everything_on_it():
    f = FSM()
    register(f, checks=[{"CheckID": "c1", "ServiceID": "web1"}])
    run(f, op="catalog_deregister", Node="N1")  # node names are case-insensitive
    assert f.catalog.record_count("") == 0 and f.catalog.services() == ({}, 2)


def test_deregister_of_nothing_is_a_no_op():
    f = FSM()
    assert run(f, op="catalog_deregister", Node="ghost") == {"index": 0}


def test_services_lists_names_with_deduplicated_sorted_tags():
    f = FSM()
    register(f, node="a", sid="w1")
    f.apply(encode({"op": "catalog_register", "Node": {"Node": "b", "Address": "x"},
                    "Service": {"ID": "w2", "Service": "web", "Tags": ["v2", "v1"]}}))
    assert f.catalog.services()[0] == {"web": ["v1", "v2"]}


def test_wrongly_typed_fields_are_refused():
    f = FSM()
    res = f.apply(encode({"op": "catalog_register", "Node": {"Node": "n", "Meta": {"a": 1}}}))
    assert res["kind"] == "invalid" and f.index == 0


# ---- imports ----


def test_imported_records_are_invisible_to_local_reads():
    f = FSM()
    import_service(f, "peer1", "api", [instance("r1", "api1")])
    assert f.catalog.health("api")[0] == []
    rows, _ = f.catalog.health("api", "peer1")
    assert [r[1]["PeerName"] for r in rows] == ["peer1"]


def test_import_snapshot_replaces_instances_and_drops_emptied_nodes():
    f = FSM()
    import_service(f, "p", "api", [instance("r1", "api1"), instance("r2", "api2")])
    import_service(f, "p", "api", [instance("r2", "api2", status="critical")])
    rows, _ = f.catalog.health("api", "p")
    assert [(n["Node"], c[0]["Status"]) for n, _, c in rows] == [("r2", "critical")]
    assert [n["Node"] for n in f.catalog.nodes("p")[0]] == ["r2"]


def test_same_import_snapshot_twice_changes_nothing():
    f = FSM()
    import_service(f, "p", "api", [instance("r1", "api1")])
    assert import_service(f, "p", "api", [instance("r1", "api1")]) == {"index": 1}


def test_import_keeps_nodes_shared_with_another_service():
    f = FSM()
    import_service(f, "p", "api", [instance("r1", "api1")])
    import_service(f, "p", "db", [instance("r1", "db1", name="db")])
    import_service(f, "p", "api", [])
    assert f.catalog.imported_names("p") == ["db"] and len(f.catalog.nodes("p")[0]) == 1


def test_prune_removes_services_missing_from_the_list():
    f = FSM()
    import_service(f, "p", "api", [instance("r1", "api1")])
    import_service(f, "p", "db", [instance("r2", "db1", name="db")])
    res = run(f, op="catalog_import_prune", Peer="p", Keep=["db"])
    assert res["deleted"] == 3 and f.catalog.imported_names("p") == ["db"]


def test_delete_peer_in_batches_leaves_other_peers_alone():
    f = FSM()
    import_service(f, "p", "api", [instance(f"r{i}", f"api{i}") for i in range(10)])
    import_service(f, "q", "api", [instance("r1", "api1")])
    batches = 0
    while True:
        res = run(f, op="catalog_import_delete_peer", Peer="p", Limit=7)
        batches += 1
        assert res.get("deleted", 0) <= 7 + 2
        if res["remaining"] == 0:
            break
    assert batches >= 4 and f.catalog.record_count("p") == 0
    assert f.catalog.record_count("q") == 3


def test_import_with_an_instance_of_another_service_is_refused():
    f = FSM()
    res = import_service(f, "p", "api", [instance("r1", "db1", name="db")])
    assert res["kind"] == "invalid" and f.catalog.record_count("p") == 0


def test_blocking_index_of_a_service_moves_only_with_that_service():
    f = FSM()
    register(f, node="a", sid="w1", name="web")
    before = f.catalog.service_index("web")
    register(f, node="b", sid="d1", name="db")
    assert f.catalog.service_index("web") == before
    import_service(f, "p", "web", [instance("r1", "w1", name="web")])
    assert f.catalog.service_index("web") == before  # imports do not wake local watchers


# ---- config entries ----

ENTRY = {"Kind": "exported-services", "Name": "default",
         "Services": [{"Name": "web", "Consumers": [{"Peer": "p1"}, {"Peer": "p2"}]}]}


def test_config_set_and_exported_to():
    f = FSM()
    assert run(f, op="config_set", Entry=ENTRY) == {"applied": True, "index": 1, "changed": True}
    assert f.config_entries.exported_to("p2") == ["web"] and f.config_entries.exported_to("x") == []
    rec = f.config_entries.get("exported-services", "default")
    assert (rec["CreateIndex"], rec["ModifyIndex"]) == (1, 1)


def test_config_cas_zero_only_creates():
    f = FSM()
    assert run(f, op="config_set", Entry=ENTRY, CAS=0)["applied"] is True
    assert run(f, op="config_set", Entry=dict(ENTRY, Services=[]), CAS=0) == {
        "applied": False, "index": 1}


def test_config_cas_with_current_index_updates():
    f = FSM()
    run(f, op="config_set", Entry=ENTRY)
    res = run(f, op="config_set", Entry=dict(ENTRY, Services=[]), CAS=1)
    assert res["applied"] is True and f.config_entries.exported_to("p1") == []


def test_config_delete_cas_mismatch_keeps_the_entry():
    f = FSM()
    run(f, op="config_set", Entry=ENTRY)
    assert run(f, op="config_delete", Kind="exported-services", Name="default", CAS=7) == {
        "applied": False, "index": 1}
    assert run(f, op="config_delete", Kind="exported-services", Name="default", CAS=1)[
        "applied"] is True
    assert f.config_entries.get("exported-services", "default") is None


def test_unknown_config_kind_is_refused():
    f = FSM()
    res = run(f, op="config_set", Entry=dict(ENTRY, Kind="service-defaults"))
    assert res == {"error": "invalid config entry kind: service-defaults", "kind": "invalid"}


# ---- properties ----

names = st.sampled_from(["web", "api", "db"])
nodes = st.sampled_from(["n1", "n2", "N1", "n3"])
peers = st.sampled_from(["", "p", "q"])
statuses = st.sampled_from(["passing", "warning", "critical", "bogus", None])


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    peer = draw(peers)
    name = draw(names)
    if peer == "":
        kind = draw(st.sampled_from(["register", "deregister"]))
        node = draw(nodes)
        if kind == "register":
            sid = f"{name}-{draw(st.integers(0, 2))}"
            checks = [{"CheckID": f"c{draw(st.integers(0, 2))}", "Status": draw(statuses),
                       "ServiceID": draw(st.sampled_from(["", sid]))}
                      for _ in range(draw(st.integers(0, 2)))]
            return {"op": "catalog_register", "Node": {"Node": node, "Address": "a"},
                    "Service": {"ID": sid, "Service": name, "Tags": [draw(names)]},
                    "Checks": checks}
        return {"op": "catalog_deregister", "Node": node,
                "ServiceID": draw(st.sampled_from(["", f"{name}-0"])),
                "CheckID": draw(st.sampled_from(["", "c0"]))}
    kind = draw(st.sampled_from(["import", "import", "delete", "prune", "peer"]))
    if kind == "import":
        count = draw(st.integers(0, 3))
        picked = draw(st.lists(nodes, min_size=count, max_size=count, unique_by=str.lower))
        return {"op": "catalog_import_service", "Peer": peer, "Service": name,
                "Nodes": [instance(n, f"{name}-{i}", name, draw(statuses) or "passing")
                          for i, n in enumerate(picked)]}
    if kind == "delete":
        return {"op": "catalog_import_delete_service", "Peer": peer, "Service": name}
    if kind == "prune":
        return {"op": "catalog_import_prune", "Peer": peer, "Keep": [name]}
    return {"op": "catalog_import_delete_peer", "Peer": peer, "Limit": draw(st.integers(1, 4))}


def _scan_view(f: FSM, peer: str) -> dict[str, Any]:
    """What the reads show, recomputed from the primary tables by scanning them."""
    cat = f.catalog
    return {
        "names": sorted({s["Service"] for k, s in cat._services.items() if k[0] == peer}),
        "records": sum(1 for t in (cat._nodes, cat._services, cat._checks)
                       for k in t if k[0] == peer),
    }


@SETTINGS
@given(st.lists(commands(), max_size=25))
def test_replicas_agree_and_indexes_match_a_full_scan(cmds):
    a, b = FSM(), FSM()
    for cmd in cmds:
        assert a.apply(encode(cmd)) == b.apply(encode(cmd))
    assert a.snapshot() == b.snapshot()
    restored = FSM()
    restored.restore(a.snapshot())
    assert restored.snapshot() == a.snapshot()
    for peer in ("", "p", "q"):
        scan = _scan_view(a, peer)
        assert sorted({n for n in a.catalog.services(peer)[0]}) == scan["names"]
        assert a.catalog.record_count(peer) == scan["records"]
        for name in ("web", "api", "db"):
            assert a.catalog.health(name, peer) == restored.catalog.health(name, peer)
            for node, svc, checks in a.catalog.health(name, peer)[0]:
                assert node["PeerName"] == svc["PeerName"] == peer
                assert all(c["PeerName"] == peer for c in checks)
    # imported nodes never outlive what runs on them
    for key in a.catalog._nodes:
        if key[0]:
            assert key in a.catalog._node_services or key in a.catalog._node_checks


@SETTINGS
@given(st.lists(commands(), max_size=25), st.integers(1, 5))
def test_deleting_a_peer_in_batches_ends_with_nothing_of_it(cmds, limit):
    f = FSM()
    for cmd in cmds:
        f.apply(encode(cmd))
    others = {p: f.catalog.record_count(p) for p in ("", "q")}
    for _ in range(200):
        res = run(f, op="catalog_import_delete_peer", Peer="p", Limit=limit)
        if res["remaining"] == 0:
            break
    assert f.catalog.record_count("p") == 0 and f.catalog.imported_names("p") == []
    assert {p: f.catalog.record_count(p) for p in ("", "q")} == others


@SETTINGS
@given(st.dictionaries(st.sampled_from(["op", "Node", "Service", "Checks", "Peer", "Nodes",
                                        "Limit", "Keep", "Entry", "CAS", "Kind", "Name"]),
                       st.one_of(st.none(), st.integers(-9, 9), st.text(max_size=3),
                                 st.lists(st.integers(-9, 9), max_size=2),
                                 st.dictionaries(st.text(max_size=3), st.integers(-9, 9),
                                                 max_size=2)),
                       max_size=6),
       st.sampled_from(["catalog_register", "catalog_deregister", "catalog_import_service",
                        "catalog_import_delete_service", "catalog_import_prune",
                        "catalog_import_delete_peer", "config_set", "config_delete"]))
def test_garbage_commands_never_raise_and_change_nothing_when_refused(cmd, op):
    f = FSM()
    before = f.snapshot()
    res = f.apply(msgpack.packb(dict(cmd, op=op), use_bin_type=True))
    assert isinstance(res, dict)
    if "error" in res:
        assert f.snapshot() == before

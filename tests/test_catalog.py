"""The catalog and health endpoints on a real three-server cluster (Consul 1.14+ shapes).

Writes go through any server (followers forward to the leader) and Raft; reads are answered in
every read mode by every server. Each test uses its own node and service names (the cluster is
shared by the module)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from lab.cluster import LocalCluster, eventually
from lab.http import Reply

pytestmark = pytest.mark.integration

_seq = itertools.count(1)
MODES = ("", "?consistent", "?stale")
READ_HEADERS = ("X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-LastContact",
                "X-Consul-Effective-Consistency", "X-Consul-Query-Backend")
PROXY = {"MeshGateway": {}, "Expose": {}}


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}"


def join(path: str, mode: str, extra: str = "") -> str:
    query = "&".join(q for q in (mode.lstrip("?"), extra) if q)
    return f"{path}?{query}" if query else path


def register(agent, node: str, service: str | None = None, sid: str | None = None,
             checks: list[dict] | None = None, **extra) -> Reply:
    body: dict = {"Node": node, "Address": "10.1.2.3", **extra}
    if service:
        body["Service"] = {"ID": sid or service, "Service": service, "Tags": ["v1"],
                           "Port": 8080, "Address": "10.1.2.4", "Meta": {"team": "a"}}
    if checks is not None:
        body["Checks"] = checks
    return agent.call("PUT", "/v1/catalog/register", body)


def assert_error(reply: Reply, status: int, text: str) -> None:
    assert (reply.status, reply.text) == (status, text)
    assert reply.headers["Content-Type"].startswith("text/plain")


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(str(tmp_path_factory.mktemp("catalog"))) as c:
        yield c


# ---- writes ----


def test_register_through_a_follower_answers_true(dc: LocalCluster):
    reply = register(dc.followers()[0], fresh("node"), fresh("web"))
    assert (reply.status, reply.text) == (200, "true")
    assert reply.headers["Content-Type"] == "application/json"


def test_registered_service_is_read_by_every_server_in_every_mode(dc: LocalCluster):
    node, web = fresh("node"), fresh("web")
    assert register(dc.followers()[1], node, web).status == 200
    for agent in dc.agents:
        for mode in MODES:
            reply = eventually(lambda a=agent, m=mode: r if (
                r := a.call("GET", join(f"/v1/catalog/service/{web}", m))).json() else None)
            assert reply.status == 200
            assert [e["ServiceID"] for e in reply.json()] == [web]
            for header in READ_HEADERS:
                assert header in reply.headers
            expected = {"": "leader", "?consistent": "consistent", "?stale": "stale"}[mode]
            assert reply.headers["X-Consul-Effective-Consistency"] == expected


def test_catalog_service_shape(dc: LocalCluster):
    node, web = fresh("node"), fresh("web")
    register(dc.agents[0], node, web, NodeMeta={"rack": "r1"}, TaggedAddresses={"lan": "10.1.2.3"})
    reply = dc.agents[1].call("GET", f"/v1/catalog/service/{web}")
    [entry] = reply.json()
    index = entry["CreateIndex"]
    assert entry == {
        "ID": "", "Node": node, "Address": "10.1.2.3", "Datacenter": "dc1",
        "TaggedAddresses": {"lan": "10.1.2.3"}, "NodeMeta": {"rack": "r1"}, "ServiceKind": "",
        "ServiceID": web, "ServiceName": web, "ServiceTags": ["v1"],
        "ServiceAddress": "10.1.2.4", "ServiceWeights": {"Passing": 1, "Warning": 1},
        "ServiceMeta": {"team": "a"}, "ServicePort": 8080, "ServiceSocketPath": "",
        "ServiceEnableTagOverride": False, "ServiceProxy": PROXY, "ServiceConnect": {},
        "CreateIndex": index, "ModifyIndex": index,
    }
    assert int(reply.headers["X-Consul-Index"]) >= index


def test_health_service_shape_with_node_and_service_checks(dc: LocalCluster):
    node, web = fresh("node"), fresh("web")
    register(dc.agents[0], node, web, checks=[
        {"Name": "serf", "Status": "passing"},
        {"CheckID": "web-http", "Name": "http", "Status": "warning", "ServiceID": web,
         "Output": "slow"},
    ])
    [entry] = dc.agents[2].call("GET", f"/v1/health/service/{web}").json()
    i = entry["Node"]["CreateIndex"]
    assert entry["Node"] == {"ID": "", "Node": node, "Address": "10.1.2.3", "Datacenter": "dc1",
                             "TaggedAddresses": None, "Meta": None,
                             "CreateIndex": i, "ModifyIndex": i}
    assert entry["Service"] == {
        "ID": web, "Service": web, "Tags": ["v1"], "Address": "10.1.2.4", "Meta": {"team": "a"},
        "Port": 8080, "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
        "Proxy": PROXY, "Connect": {}, "CreateIndex": i, "ModifyIndex": i,
    }
    base = {"Node": node, "Notes": "", "Type": "", "Interval": "", "Timeout": "",
            "ExposedPort": 0, "Definition": {}, "CreateIndex": i, "ModifyIndex": i}
    assert entry["Checks"] == [
        {**base, "CheckID": "serf", "Name": "serf", "Status": "passing", "Output": "",
         "ServiceID": "", "ServiceName": "", "ServiceTags": []},
        {**base, "CheckID": "web-http", "Name": "http", "Status": "warning", "Output": "slow",
         "ServiceID": web, "ServiceName": web, "ServiceTags": ["v1"]},
    ]
    # Go's field order
    assert list(entry["Checks"][0]) == [
        "Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName",
        "ServiceTags", "Type", "Interval", "Timeout", "ExposedPort", "Definition",
        "CreateIndex", "ModifyIndex"]


def test_passing_drops_instances_with_a_failing_check(dc: LocalCluster):
    web = fresh("web")
    good, bad = fresh("node"), fresh("node")
    register(dc.agents[0], good, web, checks=[{"Name": "c", "Status": "passing", "ServiceID": web}])
    register(dc.agents[0], bad, web, checks=[{"Name": "c", "Status": "critical", "ServiceID": web}])
    for query in ("?passing", "?passing=true", "?passing=1"):
        reply = dc.agents[1].call("GET", f"/v1/health/service/{web}{query}")
        assert [e["Node"]["Node"] for e in reply.json()] == [good]
    everything = dc.agents[1].call("GET", f"/v1/health/service/{web}?passing=false").json()
    assert sorted(e["Node"]["Node"] for e in everything) == sorted([good, bad])


def test_a_check_going_critical_drops_the_instance_from_passing(dc: LocalCluster):
    node, web = fresh("node"), fresh("web")
    check = {"CheckID": "c", "Name": "c", "Status": "passing", "ServiceID": web}
    register(dc.agents[0], node, web, checks=[check])
    assert len(dc.agents[0].call("GET", f"/v1/health/service/{web}?passing").json()) == 1
    register(dc.agents[2], node, web, checks=[dict(check, Status="critical")])
    assert dc.agents[0].call("GET", f"/v1/health/service/{web}?passing").json() == []


def test_bad_passing_value_is_400(dc: LocalCluster):
    assert_error(dc.agents[0].call("GET", "/v1/health/service/web?passing=maybe"), 400,
                 "Invalid value for ?passing")


def test_tag_filter_needs_every_tag(dc: LocalCluster):
    web = fresh("web")
    a, b = fresh("node"), fresh("node")
    register(dc.agents[0], a, web)
    dc.agents[0].call("PUT", "/v1/catalog/register", {
        "Node": b, "Address": "10.0.0.9",
        "Service": {"Service": web, "Tags": ["v1", "canary"]}})
    for path in (f"/v1/catalog/service/{web}", f"/v1/health/service/{web}"):
        one = dc.agents[1].call("GET", f"{path}?tag=canary&tag=V1").json()
        assert len(one) == 1 and len(dc.agents[1].call("GET", f"{path}?tag=v1").json()) == 2


def test_catalog_services_lists_names_with_their_tags(dc: LocalCluster):
    web = fresh("web")
    register(dc.agents[0], fresh("node"), web)
    services = dc.agents[1].call("GET", "/v1/catalog/services").json()
    assert services[web] == ["v1"]


def test_catalog_nodes_shape(dc: LocalCluster):
    node = fresh("node")
    register(dc.agents[0], node, NodeMeta={"os": "linux"})
    nodes = {n["Node"]: n for n in dc.agents[2].call("GET", "/v1/catalog/nodes").json()}
    n = nodes[node]
    assert n == {"ID": "", "Node": node, "Address": "10.1.2.3", "Datacenter": "dc1",
                 "TaggedAddresses": None, "Meta": {"os": "linux"},
                 "CreateIndex": n["CreateIndex"], "ModifyIndex": n["ModifyIndex"]}


def test_deregister_service_then_node(dc: LocalCluster):
    node, web = fresh("node"), fresh("web")
    register(dc.agents[0], node, web)
    reply = dc.followers()[0].call("PUT", "/v1/catalog/deregister",
                                   {"Node": node, "ServiceID": web})
    assert (reply.status, reply.text) == (200, "true")
    assert dc.agents[0].call("GET", f"/v1/catalog/service/{web}").json() == []
    assert web not in dc.agents[0].call("GET", "/v1/catalog/services").json()
    assert node in {n["Node"] for n in dc.agents[0].call("GET", "/v1/catalog/nodes").json()}
    dc.agents[1].call("PUT", "/v1/catalog/deregister", {"Node": node})
    assert node not in {n["Node"] for n in dc.agents[0].call("GET", "/v1/catalog/nodes").json()}


def test_without_peer_no_imported_entries_and_unknown_peer_is_empty(dc: LocalCluster):
    web = fresh("web")
    register(dc.agents[0], fresh("node"), web)
    for path in (f"/v1/health/service/{web}?peer=nobody", f"/v1/catalog/service/{web}?peer=x"):
        reply = dc.agents[0].call("GET", path)
        assert (reply.status, reply.json()) == (200, [])


def test_unknown_service_is_an_empty_list(dc: LocalCluster):
    for path in ("/v1/catalog/service/nothing-here", "/v1/health/service/nothing-here"):
        reply = dc.agents[1].call("GET", path)
        assert (reply.status, reply.text) == (200, "[]")
        assert int(reply.headers["X-Consul-Index"]) >= 1


@pytest.mark.parametrize("path", ["/v1/catalog/service/", "/v1/health/service/"])
def test_missing_service_name_is_400(dc: LocalCluster, path: str):
    assert_error(dc.agents[0].call("GET", path), 400, "Missing service name")


# ---- bad input: Consul's texts ----


@pytest.mark.parametrize(("body", "text"), [
    ({"Address": "1.2.3.4"}, "Must provide node"),
    ({"Node": "n"}, "Must provide address if SkipNodeUpdate is not set"),
    ({"Node": "n", "Address": "a", "ID": "nope"}, "Bad node ID: uuid string is wrong length"),
    ({"Node": "n", "Address": "a", "Service": {"ID": "x"}},
     "Must provide service name (Service.Service) when service ID is provided"),
    ({"Node": "n", "Address": "a", "Service": {"Service": "s", "Address": "0.0.0.0"}},
     "Invalid service address"),
    ({"Node": "n", "Address": "a", "Check": {"Name": "c", "Status": "sunny"}},
     "Bad check status"),
    ({"Node": "n", "Address": "a", "Checks": [{"Name": "c", "Status": "ok"}]},
     "Bad check status"),
    ({"Node": "n", "Address": "a", "Check": {"Name": "c", "ServiceID": "nope"}},
     "Missing service registration"),
    ({"Node": "n", "Address": "a", "Check": {"Name": "c", "Node": "other"}},
     "Node 'other' for check 'c' doesn't match register request node 'n'"),
    ({"Node": "n", "Address": "a", "Service": {"Service": "s", "Kind": "connect-proxy"}},
     'Service.Kind "connect-proxy" is not supported by peerplane (typical services only)'),
    ({"Node": "n", "Address": "a", "PeerName": "p"},
     "cannot register requests with PeerName in them"),
    ({"Node": "n", "Address": "a", "Service": {"Service": "s", "Port": "80"}},
     "Request decode failed: json: cannot unmarshal string into Go struct field "
     "RegisterRequest.Service.Port of type int"),
    ({"Node": "n", "Address": "a", "Checks": {"Name": "c"}},
     "Request decode failed: json: cannot unmarshal object into Go struct field "
     "RegisterRequest.Checks of type structs.HealthChecks"),
])
def test_bad_register_is_400_with_consuls_text(dc: LocalCluster, body, text):
    assert_error(dc.followers()[0].call("PUT", "/v1/catalog/register", body), 400, text)


def test_bad_register_stores_nothing(dc: LocalCluster):
    node = fresh("node")
    dc.agents[0].call("PUT", "/v1/catalog/register", {
        "Node": node, "Address": "a", "Service": {"Service": "s"},
        "Checks": [{"Name": "ok"}, {"Name": "bad", "Status": "nope"}]})
    assert node not in {n["Node"] for n in dc.agents[0].call("GET", "/v1/catalog/nodes").json()}


def test_malformed_json_is_400(dc: LocalCluster):
    reply = dc.agents[0].call("PUT", "/v1/catalog/register", raw=b'{"Node": ')
    assert_error(reply, 400, "Request decode failed: unexpected EOF")


def test_deregister_without_node_is_400(dc: LocalCluster):
    assert_error(dc.agents[0].call("PUT", "/v1/catalog/deregister", {"ServiceID": "x"}), 400,
                 "Must provide node")


def test_oversized_register_is_413(dc: LocalCluster):
    body = b'{"Node":"big","Address":"a","NodeMeta":{"k":"' + b"v" * (1 << 20) + b'"}}'
    reply = dc.agents[1].call("PUT", "/v1/catalog/register", raw=body)
    assert_error(reply, 413, "Request body too large (limit: 1048576 bytes)")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/catalog/register"), ("POST", "/v1/catalog/register"),
    ("GET", "/v1/catalog/deregister"), ("PUT", "/v1/catalog/services"),
])
def test_wrong_method_is_405(dc: LocalCluster, method: str, path: str):
    assert dc.agents[0].call(method, path).status == 405


# ---- blocking queries ----


def test_blocking_health_query_returns_when_the_service_changes(dc: LocalCluster):
    node, web = fresh("node"), fresh("web")
    register(dc.agents[0], node, web)
    index = dc.agents[1].call("GET", f"/v1/health/service/{web}").headers["X-Consul-Index"]
    result: dict = {}

    def watch() -> None:
        result["reply"] = dc.agents[1].call(
            "GET", f"/v1/health/service/{web}?index={index}&wait=20s")

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # blocked: nothing changed yet
    register(dc.agents[2], fresh("node"), web)
    t.join(15)
    reply = result["reply"]
    assert len(reply.json()) == 2 and int(reply.headers["X-Consul-Index"]) > int(index)


def test_blocking_query_on_one_service_ignores_another(dc: LocalCluster):
    web, other = fresh("web"), fresh("web")
    register(dc.agents[0], fresh("node"), web)
    index = dc.agents[0].call("GET", f"/v1/catalog/service/{web}").headers["X-Consul-Index"]
    register(dc.agents[0], fresh("node"), other)
    started = time.monotonic()
    reply = dc.agents[0].call("GET", f"/v1/catalog/service/{web}?index={index}&wait=1s")
    assert time.monotonic() - started >= 1.0 and reply.headers["X-Consul-Index"] == index


@pytest.mark.parametrize("path", ["/v1/peerings", "/v1/catalog/services", "/v1/catalog/nodes",
                                  "/v1/health/service/web", "/v1/catalog/service/web",
                                  "/v1/config/exported-services"])
def test_index_zero_never_blocks(dc: LocalCluster, path: str):
    started = time.monotonic()
    reply = dc.agents[1].call("GET", f"{path}?index=0&wait=5s")
    assert reply.status == 200 and time.monotonic() - started < 3

"""The exported-services config entry over HTTP on a real three-server cluster: Consul's
shapes, CAS, validation texts, read modes."""

from __future__ import annotations

import threading
import time

import pytest

from lab.cluster import LocalCluster
from lab.http import Reply

pytestmark = pytest.mark.integration

PATH = "/v1/config/exported-services/default"


def entry(*services: dict, **extra) -> dict:
    return {"Kind": "exported-services", "Name": "default", "Services": list(services), **extra}


def export(name: str, *peers: str) -> dict:
    return {"Name": name, "Consumers": [{"Peer": p} for p in peers]}


def assert_error(reply: Reply, status: int, text: str) -> None:
    assert (reply.status, reply.text) == (status, text)


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(str(tmp_path_factory.mktemp("config"))) as c:
        yield c


@pytest.fixture
def clean(dc: LocalCluster):
    dc.agents[0].call("DELETE", PATH)
    yield dc
    dc.agents[0].call("DELETE", PATH)


def test_put_through_a_follower_then_get_on_every_server_in_every_mode(clean: LocalCluster):
    reply = clean.followers()[0].call("PUT", "/v1/config", entry(export("web", "dc2")))
    assert (reply.status, reply.text) == (200, "true")
    for agent in clean.agents:
        for mode in ("", "?consistent", "?stale"):
            got = agent.call("GET", PATH + mode)
            if mode == "?stale" and got.status == 404:
                continue  # a follower may not have applied it yet
            body = got.json()
            assert body == {"Kind": "exported-services", "Name": "default",
                            "Services": [{"Name": "web", "Consumers": [{"Peer": "dc2"}]}],
                            "CreateIndex": body["CreateIndex"],
                            "ModifyIndex": body["ModifyIndex"]}
            assert int(got.headers["X-Consul-Index"]) == body["ModifyIndex"]


def test_lowercase_keys_and_peer_name_alias_are_accepted(clean: LocalCluster):
    body = {"kind": "exported-services", "name": "default",
            "services": [{"name": "api", "consumers": [{"peer_name": "dc3"}]}]}
    assert clean.agents[0].call("PUT", "/v1/config", body).text == "true"
    assert clean.agents[1].call("GET", PATH).json()["Services"] == [
        {"Name": "api", "Consumers": [{"Peer": "dc3"}]}]


def test_cas_zero_creates_only_once(clean: LocalCluster):
    a = clean.agents[0]
    assert a.call("PUT", "/v1/config?cas=0", entry(export("web", "p"))).text == "true"
    assert a.call("PUT", "/v1/config?cas=0", entry(export("db", "p"))).text == "false"
    assert a.call("GET", PATH).json()["Services"][0]["Name"] == "web"


def test_cas_with_the_current_index_updates_and_a_stale_one_does_not(clean: LocalCluster):
    a = clean.agents[1]
    a.call("PUT", "/v1/config", entry(export("web", "p")))
    index = a.call("GET", PATH).json()["ModifyIndex"]
    assert a.call("PUT", f"/v1/config?cas={index}", entry(export("db", "p"))).text == "true"
    assert a.call("PUT", f"/v1/config?cas={index}", entry(export("x", "p"))).text == "false"
    assert a.call("GET", PATH).json()["Services"][0]["Name"] == "db"


def test_delete_answers_an_empty_object_and_get_is_404(clean: LocalCluster):
    a = clean.agents[2]
    a.call("PUT", "/v1/config", entry(export("web", "p")))
    reply = a.call("DELETE", PATH)
    assert (reply.status, reply.text) == (200, "{}")
    got = a.call("GET", PATH)
    assert_error(got, 404, 'Config entry not found for "exported-services" / "default"')
    assert "X-Consul-Index" in got.headers


def test_delete_with_cas_answers_a_bool(clean: LocalCluster):
    a = clean.agents[0]
    a.call("PUT", "/v1/config", entry(export("web", "p")))
    index = a.call("GET", PATH).json()["ModifyIndex"]
    assert a.call("DELETE", f"{PATH}?cas={index + 100}").text == "false"
    assert a.call("DELETE", f"{PATH}?cas={index}").text == "true"


def test_list_of_a_kind(clean: LocalCluster):
    a = clean.agents[0]
    assert a.call("GET", "/v1/config/exported-services").json() == []
    a.call("PUT", "/v1/config", entry(export("web", "p")))
    assert [e["Name"] for e in a.call("GET", "/v1/config/exported-services").json()] == [
        "default"]


def test_meta_is_kept_and_empty_services_omitted(clean: LocalCluster):
    a = clean.agents[0]
    a.call("PUT", "/v1/config", {"Kind": "exported-services", "Name": "default",
                                 "Meta": {"owner": "ops"}})
    body = a.call("GET", PATH).json()
    assert list(body) == ["Kind", "Name", "Meta", "CreateIndex", "ModifyIndex"]
    assert body["Meta"] == {"owner": "ops"}


@pytest.mark.parametrize(("body", "text"), [
    (entry(Name="other"), 'exported-services Name must be "default"'),
    (entry({"Name": "", "Consumers": [{"Peer": "p"}]}),
     "Services[0]: service name cannot be empty"),
    (entry(export("web")), "Services[0]: must have at least one consumer"),
    (entry(export("web", "p"), export("api", "ok", "*")),
     "Services[1].Consumers[1]: exporting to all peers (wildcard) is not supported"),
    (entry({"Name": "web", "Consumers": [{"Peer": "p", "Partition": "default"}]}),
     "Services[0].Consumers[0]: must define at most one of Peer, Partition, or SamenessGroup"),
    (entry({"Name": "web", "Consumers": [{"Partition": "other"}]}),
     "Services[0].Consumers[0]: partitions are an enterprise-only feature"),
    (entry({"Name": "web", "Consumers": [{"SamenessGroup": "g"}]}),
     "Services[0].Consumers[0]: sameness-groups are an enterprise-only feature"),
    ({"Name": "default"}, "Request decoding failed: Payload does not contain a kind/Kind key "
                          "at the top level"),
    ({"Kind": 5}, "Request decoding failed: Kind value in payload is not a string"),
    ({"Kind": "nonsense", "Name": "x"}, "Request decoding failed: invalid config entry kind: "
                                        "nonsense"),
    (entry(Bogus=1), 'Request decoding failed: 1 error occurred:\n\t* invalid config key '
                     '"Bogus"\n\n'),
    (entry(Namespace="ns"), 'Request decoding failed: 1 error occurred:\n\t* invalid config '
                            'key "Namespace", namespaces are a consul enterprise feature\n\n'),
])
def test_bad_entries_get_consuls_text(clean: LocalCluster, body, text):
    assert_error(clean.followers()[0].call("PUT", "/v1/config", body), 400, text)
    assert clean.agents[0].call("GET", PATH).status == 404


def test_an_unknown_peer_is_allowed(clean: LocalCluster):
    reply = clean.agents[0].call("PUT", "/v1/config", entry(export("web", "not-yet-peered")))
    assert reply.text == "true"


def test_malformed_json_is_400(dc: LocalCluster):
    assert_error(dc.agents[0].call("PUT", "/v1/config", raw=b"{"), 400,
                 "Request decoding failed: unexpected EOF")


def test_bad_cas_is_400(dc: LocalCluster):
    assert_error(dc.agents[0].call("PUT", "/v1/config?cas=x", entry(export("w", "p"))), 400,
                 'strconv.ParseUint: parsing "x": invalid syntax')


def test_unknown_kind_on_get_and_delete_is_400(dc: LocalCluster):
    for method in ("GET", "DELETE"):
        assert_error(dc.agents[0].call(method, "/v1/config/nonsense/x"), 400,
                     "invalid config entry kind: nonsense")


def test_delete_without_a_name_is_404(dc: LocalCluster):
    assert_error(dc.agents[0].call("DELETE", "/v1/config/exported-services"), 404,
                 "Must provide both a kind and name to delete")


def test_blocking_get_returns_when_the_entry_changes(clean: LocalCluster):
    a = clean.agents[1]
    a.call("PUT", "/v1/config", entry(export("web", "p")))
    index = a.call("GET", PATH).headers["X-Consul-Index"]
    result: dict = {}

    def watch() -> None:
        result["reply"] = a.call("GET", f"{PATH}?index={index}&wait=20s")

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()
    clean.agents[2].call("PUT", "/v1/config", entry(export("api", "p")))
    t.join(15)
    reply = result["reply"]
    assert reply.json()["Services"][0]["Name"] == "api"
    assert int(reply.headers["X-Consul-Index"]) > int(index)

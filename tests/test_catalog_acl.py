"""ACLs on the catalog, health and config-entry endpoints, as Consul applies them: register
needs service:write (and node:write when the node changes), reads are filtered by service:read /
node:read with `X-Consul-Results-Filtered-By-ACLs`, config entries need mesh:read / mesh:write
(operator rules stand in when there is no mesh rule). Default-deny cluster; every call through
a follower too (the leader decides)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.cluster import Agent, LocalCluster, eventually
from lab.http import Reply

pytestmark = pytest.mark.integration

ROOT = "0b7f3e52-1d54-4c0a-8f5a-6a2d4c9e7b13"
ANONYMOUS = "00000000-0000-0000-0000-000000000002"
FILTERED = "X-Consul-Results-Filtered-By-ACLs"
ENTRY = {"Kind": "exported-services", "Name": "default",
         "Services": [{"Name": "web", "Consumers": [{"Peer": "dc2"}]}]}


def h(secret: str) -> dict[str, str]:
    return {"X-Consul-Token": secret}


def denied(reply: Reply, accessor: str, perm: str, segment: str | None = None) -> None:
    text = f"Permission denied: token with AccessorID '{accessor}' lacks permission '{perm}'"
    if segment is not None:
        text += f' on "{segment}"'
    assert (reply.status, reply.text) == (403, text)


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    args = ["--acl-enabled", "--acl-default-policy", "deny",
            "--acl-initial-management-token", ROOT]
    with LocalCluster(str(tmp_path_factory.mktemp("catalog-acl")), extra_args=args) as c:
        eventually(lambda: c.agents[0].call("GET", "/v1/acl/token/self",
                                            headers=h(ROOT)).status == 200)
        yield c


def token(agent: Agent, name: str, rules: str) -> dict:
    reply = agent.call("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules}, headers=h(ROOT))
    assert reply.status == 200, reply.text
    reply = agent.call("PUT", "/v1/acl/token", {"Policies": [{"Name": name}]}, headers=h(ROOT))
    assert reply.status == 200, reply.text
    return reply.json()


@pytest.fixture(scope="module")
def web_writer(dc: LocalCluster) -> dict:
    return token(dc.agents[0], "web-writer",
                 'service "web" { policy = "write" }\nnode_prefix "web-" { policy = "write" }')


@pytest.fixture(scope="module")
def web_reader(dc: LocalCluster) -> dict:
    return token(dc.agents[0], "web-reader",
                 'service "web" { policy = "read" }\nnode_prefix "" { policy = "read" }')


@pytest.fixture(scope="module")
def seeded(dc: LocalCluster) -> LocalCluster:
    for node, svc in (("web-1", "web"), ("db-1", "db")):
        reply = dc.agents[0].call("PUT", "/v1/catalog/register", {
            "Node": node, "Address": "10.0.0.1", "Service": {"Service": svc}}, headers=h(ROOT))
        assert reply.text == "true"
    return dc


def test_service_and_node_write_allow_a_register_through_every_server(dc, web_writer):
    for i, agent in enumerate(dc.agents):
        reply = agent.call("PUT", "/v1/catalog/register", {
            "Node": f"web-{10 + i}", "Address": "10.0.0.2", "Service": {"Service": "web"}},
            headers=h(web_writer["SecretID"]))
        assert (reply.status, reply.text) == (200, "true")


def test_register_of_another_service_needs_its_service_write(dc, web_writer):
    reply = dc.followers()[0].call("PUT", "/v1/catalog/register", {
        "Node": "web-20", "Address": "10.0.0.3", "Service": {"Service": "db"}},
        headers=h(web_writer["SecretID"]))
    denied(reply, web_writer["AccessorID"], "service:write", "db")


def test_register_of_a_new_node_needs_node_write(dc, web_writer):
    reply = dc.agents[1].call("PUT", "/v1/catalog/register", {
        "Node": "other-1", "Address": "10.0.0.4", "Service": {"Service": "web"}},
        headers=h(web_writer["SecretID"]))
    denied(reply, web_writer["AccessorID"], "node:write", "other-1")


def test_anonymous_register_is_denied(dc):
    reply = dc.agents[2].call("PUT", "/v1/catalog/register",
                              {"Node": "web-30", "Address": "a", "Service": {"Service": "web"}})
    denied(reply, ANONYMOUS, "node:write", "web-30")


def test_deregister_with_service_write_only(dc, web_writer, seeded):
    reply = dc.agents[0].call("PUT", "/v1/catalog/deregister", {"Node": "db-1", "ServiceID": "db"},
                              headers=h(web_writer["SecretID"]))
    denied(reply, web_writer["AccessorID"], "service:write", "db")


def test_reads_are_filtered_by_service_read(dc, web_reader, seeded):
    for agent in dc.agents:
        reply = agent.call("GET", "/v1/catalog/services", headers=h(web_reader["SecretID"]))
        assert reply.status == 200 and list(reply.json()) == ["web"]
        assert reply.headers[FILTERED] == "true"
        db = agent.call("GET", "/v1/health/service/db", headers=h(web_reader["SecretID"]))
        assert (db.status, db.json(), db.headers[FILTERED]) == (200, [], "true")
        web = agent.call("GET", "/v1/catalog/service/web", headers=h(web_reader["SecretID"]))
        assert web.json() and FILTERED not in web.headers


def test_anonymous_reads_see_nothing_and_say_so(dc, seeded):
    reply = dc.agents[1].call("GET", "/v1/catalog/nodes")
    assert (reply.status, reply.json(), reply.headers[FILTERED]) == (200, [], "true")


def test_unknown_token_is_403_acl_not_found(dc):
    reply = dc.agents[0].call("GET", "/v1/catalog/services", headers=h("no-such-token"))
    assert (reply.status, reply.text) == (403, "ACL not found")


def test_config_entries_need_mesh_write(dc, web_writer):
    reply = dc.followers()[0].call("PUT", "/v1/config", ENTRY, headers=h(web_writer["SecretID"]))
    denied(reply, web_writer["AccessorID"], "mesh:write")
    denied(dc.agents[0].call("GET", "/v1/config/exported-services/default",
                             headers=h(web_writer["SecretID"])),
           web_writer["AccessorID"], "mesh:read")


def test_mesh_read_reads_but_does_not_write(dc):
    reader = token(dc.agents[0], "mesh-reader", 'mesh = "read"')
    assert dc.agents[0].call("PUT", "/v1/config", ENTRY, headers=h(ROOT)).text == "true"
    reply = dc.agents[1].call("GET", "/v1/config/exported-services/default",
                              headers=h(reader["SecretID"]))
    assert reply.status == 200 and reply.json()["Name"] == "default"
    denied(dc.agents[2].call("DELETE", "/v1/config/exported-services/default",
                             headers=h(reader["SecretID"])), reader["AccessorID"], "mesh:write")


def test_operator_write_stands_in_for_mesh_write(dc):
    operator = token(dc.agents[0], "operator-writer", 'operator = "write"')
    reply = dc.agents[2].call("PUT", "/v1/config", ENTRY, headers=h(operator["SecretID"]))
    assert (reply.status, reply.text) == (200, "true")

"""ACLs on real three-server clusters: Consul's TestAPI_Peering_ACLDeny, the peering service's
ACL enforcement tests (TestPeeringService_*_ACLEnforcement), bootstrap, token and policy
management across nodes, and a check that no secret ever reaches a log line.

dc1 runs with `--acl-default-policy deny` and an initial management token (ROOT, Consul's
`root` of the Go tests); dc2 runs default-deny without one and is bootstrapped by a race of two
nodes. Every peering call is made through every node. A write is decided by the server that
gets it, from its replicated ACLs: its command carries the ACL revision of the decision (the FSM
refuses it if the ACLs changed since, and the server decides again), and a follower that would
refuse it first catches up with the leader. A read is decided by the server that serves it (every
server does, once it has applied the leader's read index).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from lab.cluster import Agent, LocalCluster, eventually
from lab.http import Reply

pytestmark = pytest.mark.integration

ROOT = "5f9a3c6e-0d1b-4e2a-9c47-3b8d1e6f2a90"
ANONYMOUS = "00000000-0000-0000-0000-000000000002"
GLOBAL_MANAGEMENT = "00000000-0000-0000-0000-000000000001"
ACL_ARGS = ["--acl-enabled", "--acl-default-policy", "deny"]
# Every secret the suite sees; none may appear in any agent's log.
SECRETS: set[str] = {ROOT}


def denied(accessor: str, perm: str) -> str:
    return f"Permission denied: token with AccessorID '{accessor}' lacks permission '{perm}'"


def h(secret: str) -> dict[str, str]:
    return {"X-Consul-Token": secret}


@pytest.fixture(scope="module")
def dc1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    args = [*ACL_ARGS, "--acl-initial-management-token", ROOT, "--log-level", "DEBUG"]
    with LocalCluster(str(tmp_path_factory.mktemp("acl-dc1")), extra_args=args) as c:
        eventually(lambda: c.agents[0].call("GET", "/v1/acl/token/self",
                                            headers=h(ROOT)).status == 200)
        yield c


@pytest.fixture(scope="module")
def dc2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(str(tmp_path_factory.mktemp("acl-dc2")), datacenter="dc2",
                      extra_args=ACL_ARGS) as c:
        yield c


@pytest.fixture(scope="module")
def dc2_race(dc2: LocalCluster) -> list[Reply]:
    """Two nodes bootstrap at the same moment; the replies, in node order."""
    nodes = dc2.agents[:2]
    replies: list[Reply | None] = [None, None]
    start = threading.Barrier(len(nodes))

    def call(i: int) -> None:
        start.wait()
        replies[i] = nodes[i].call("PUT", "/v1/acl/bootstrap")

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for reply in replies:
        if reply is not None and reply.status == 200:
            SECRETS.add(reply.json()["SecretID"])
    return [r for r in replies if r is not None]


@pytest.fixture(scope="module")
def dc2_root(dc2_race: list[Reply]) -> str:
    return next(r.json()["SecretID"] for r in dc2_race if r.status == 200)


def make_policy(agent: Agent, name: str, rules: str, secret: str = ROOT) -> dict:
    reply = agent.call("PUT", "/v1/acl/policy", {"Name": name, "Rules": rules},
                       headers=h(secret))
    assert reply.status == 200, reply.text
    return reply.json()


def make_token(agent: Agent, policies: list[str], secret: str = ROOT, **body: object) -> dict:
    reply = agent.call("PUT", "/v1/acl/token",
                       {"Policies": [{"Name": p} for p in policies], **body}, headers=h(secret))
    assert reply.status == 200, reply.text
    token = reply.json()
    SECRETS.add(token["SecretID"])
    return token


def assert_denied(reply: Reply, accessor: str, perm: str) -> None:
    assert (reply.status, reply.text) == (403, denied(accessor, perm))
    assert reply.headers["X-Consul-Default-ACL-Policy"] == "deny"
    assert "X-Consul-Index" not in reply.headers


def generate(agent: Agent, name: str, secret: str = ROOT, query: str = "") -> Reply:
    return agent.call("POST", f"/v1/peering/token{query}", {"PeerName": name}, headers=h(secret))


# ---- TestAPI_Peering_ACLDeny ----


def test_peering_acl_deny(dc1: LocalCluster, dc2: LocalCluster, dc2_root: str) -> None:
    """api/peering_test.go TestAPI_Peering_ACLDeny, through every node of both clusters."""
    for agent in dc1.agents:
        for anon in ({}, h("anonymous")):
            reply = agent.call("POST", "/v1/peering/token", {"PeerName": "peer1"}, headers=anon)
            assert_denied(reply, ANONYMOUS, "peering:write")
    reply = generate(dc1.agents[1], "peer1")
    assert reply.status == 200, reply.text
    token = reply.json()["PeeringToken"]

    body = {"PeerName": "peer1", "PeeringToken": token}
    for agent in dc2.agents:
        assert_denied(agent.call("POST", "/v1/peering/establish", body,
                                 headers=h("anonymous")), ANONYMOUS, "peering:write")
    reply = dc2.agents[2].call("POST", "/v1/peering/establish", body, headers=h(dc2_root))
    assert (reply.status, reply.text) == (200, "{}")

    for agent in dc1.agents:
        assert_denied(agent.call("GET", "/v1/peering/peer1"), ANONYMOUS, "peering:read")
        assert_denied(agent.call("GET", "/v1/peerings", headers=h("anonymous")),
                      ANONYMOUS, "peering:read")
        reply = agent.call("GET", "/v1/peering/peer1", headers=h(ROOT))
        assert reply.status == 200 and reply.json()["Name"] == "peer1"
        reply = agent.call("GET", "/v1/peerings", headers=h(ROOT))
        assert reply.status == 200 and [p["Name"] for p in reply.json()] == ["peer1"]
        assert_denied(agent.call("DELETE", "/v1/peering/peer1"), ANONYMOUS, "peering:write")
    assert dc1.agents[0].call("DELETE", "/v1/peering/peer1", headers=h(ROOT)).status == 200
    assert dc2.agents[0].call("DELETE", "/v1/peering/peer1", headers=h(dc2_root)).status == 200


def test_stale_reads_are_decided_by_the_serving_node(dc1: LocalCluster) -> None:
    for agent in dc1.agents:
        assert_denied(agent.call("GET", "/v1/peerings?stale"), ANONYMOUS, "peering:read")
        assert agent.call("GET", "/v1/peerings?stale", headers=h(ROOT)).status == 200


# ---- TestPeeringService_*_ACLEnforcement: read-only and write tokens ----


def test_read_only_token_reads_but_cannot_write(dc1: LocalCluster) -> None:
    a, b, c = dc1.agents
    reply = generate(a, "ro-target")
    assert reply.status == 200
    peering_token = reply.json()["PeeringToken"]
    make_policy(a, "peering-read", 'peering = "read"')
    ro = make_token(b, ["peering-read"], Description="read only")
    for agent in dc1.agents:
        secret = ro["SecretID"]
        assert agent.call("GET", "/v1/peering/ro-target", headers=h(secret)).status == 200
        reply = agent.call("GET", "/v1/peerings", headers=h(secret))
        assert reply.status == 200 and "ro-target" in [p["Name"] for p in reply.json()]
        assert_denied(generate(agent, "ro-new", secret), ro["AccessorID"], "peering:write")
        assert_denied(agent.call("POST", "/v1/peering/establish",
                                 {"PeerName": "x", "PeeringToken": peering_token},
                                 headers=h(secret)),
                      ro["AccessorID"], "peering:write")
        assert_denied(agent.call("DELETE", "/v1/peering/ro-target", headers=h(secret)),
                      ro["AccessorID"], "peering:write")
        # Not an ACL manager either.
        assert_denied(agent.call("GET", "/v1/acl/tokens", headers=h(secret)),
                      ro["AccessorID"], "acl:read")
    assert c.call("DELETE", "/v1/peering/ro-target", headers=h(ROOT)).status == 200


def test_write_token_and_operator_fallback(dc1: LocalCluster) -> None:
    a, b, _ = dc1.agents
    make_policy(a, "peering-write", 'peering = "write"')
    make_policy(a, "operator-read", '{"operator": "read"}')  # JSON rules
    writer = make_token(b, ["peering-write"])
    operator = make_token(b, ["operator-read"])
    for agent in dc1.agents:
        reply = generate(agent, f"w-{agent.name}", writer["SecretID"])
        assert reply.status == 200, reply.text
        # No peering rule: the operator rule decides (read yes, write no).
        reply = agent.call("GET", "/v1/peerings", headers=h(operator["SecretID"]))
        assert reply.status == 200
        assert_denied(generate(agent, "op-new", operator["SecretID"]),
                      operator["AccessorID"], "peering:write")
        assert agent.call("GET", "/v1/operator/raft/configuration",
                          headers=h(operator["SecretID"])).status == 200
        assert agent.call("DELETE", f"/v1/peering/w-{agent.name}",
                          headers=h(writer["SecretID"])).status == 200


def test_policy_changes_apply_on_every_node(dc1: LocalCluster) -> None:
    a, b, c = dc1.agents
    policy = make_policy(a, "grows", 'peering = "read"')
    tok = make_token(b, ["grows"])
    assert_denied(generate(c, "grows-1", tok["SecretID"]), tok["AccessorID"], "peering:write")
    reply = c.call("PUT", f"/v1/acl/policy/{policy['ID']}",
                   {"Name": "grows", "Rules": 'peering = "write"'}, headers=h(ROOT))
    assert reply.status == 200 and reply.json()["ModifyIndex"] > policy["ModifyIndex"]
    for agent in dc1.agents:
        assert generate(agent, "grows-1", tok["SecretID"]).status == 200
    # Deleting the policy takes the grant away (the token keeps no dangling link).
    assert a.call("DELETE", f"/v1/acl/policy/{policy['ID']}", headers=h(ROOT)).text == "true"
    for agent in dc1.agents:
        assert_denied(generate(agent, "grows-1", tok["SecretID"]),
                      tok["AccessorID"], "peering:write")
    reply = b.call("GET", "/v1/acl/token/self", headers=h(tok["SecretID"]))
    assert reply.status == 200 and "Policies" not in reply.json()
    assert a.call("DELETE", "/v1/peering/grows-1", headers=h(ROOT)).status == 200


def test_a_write_a_lagging_follower_would_allow_on_older_acls_is_denied(
        dc1: LocalCluster) -> None:
    leader = dc1.leader()
    follower, other = [a for a in dc1.agents if a is not leader]
    policy = make_policy(leader, "revoked-meanwhile", 'peering = "write"')
    tok = make_token(leader, ["revoked-meanwhile"])
    eventually(lambda: follower.call("GET", "/v1/acl/token/self?stale",
                                     headers=h(tok["SecretID"])).status == 200)
    follower.pause()  # it keeps the grant until it hears of the change
    try:
        reply = leader.call("PUT", f"/v1/acl/policy/{policy['ID']}",
                            {"Name": "revoked-meanwhile", "Rules": 'peering = "read"'},
                            headers=h(ROOT))
        assert reply.status == 200, reply.text
    finally:
        follower.resume()
    assert_denied(generate(follower, "revoked-1", tok["SecretID"]), tok["AccessorID"],
                  "peering:write")
    assert other.call("GET", "/v1/peering/revoked-1", headers=h(ROOT)).status == 404


def test_a_token_created_elsewhere_works_at_once_on_a_lagging_follower(
        dc1: LocalCluster) -> None:
    leader = dc1.leader()
    follower = next(a for a in dc1.agents if a is not leader)
    make_policy(leader, "granted-meanwhile", 'peering = "write"')
    follower.pause()  # it has not heard of the token when the write arrives
    try:
        tok = make_token(leader, ["granted-meanwhile"])
    finally:
        follower.resume()
    reply = generate(follower, "granted-1", tok["SecretID"])
    assert reply.status == 200, reply.text
    assert reply.headers["X-Peerplane-Served-By"] == follower.name
    assert leader.call("DELETE", "/v1/peering/granted-1", headers=h(ROOT)).status == 200


# ---- token sources ----


def test_token_sources_in_consul_precedence(dc1: LocalCluster) -> None:
    agent = dc1.agents[1]
    ok = [
        ({"Authorization": f"Bearer {ROOT}"}, ""),
        ({"Authorization": f"bearer   {ROOT} trailing"}, ""),  # first item only, any case
        ({"X-Consul-Token": ROOT, "Authorization": "Bearer nope"}, ""),
        ({"X-Consul-Token": "nope"}, f"?token={ROOT}"),
        ({}, f"?token={ROOT}"),
    ]
    for headers, query in ok:
        reply = agent.call("GET", f"/v1/peerings{query}", headers=headers)
        assert reply.status == 200, (headers, query, reply.text)
    not_found = [({"X-Consul-Token": ROOT}, "?token=nope"), ({"Authorization": "Bearer nope"}, "")]
    for headers, query in not_found:
        reply = agent.call("GET", f"/v1/peerings{query}", headers=headers)
        assert (reply.status, reply.text) == (403, "ACL not found")
    # Not a Bearer token: no token at all, i.e. anonymous.
    for auth in (f"Basic {ROOT}", ROOT, "Bearer"):
        assert_denied(agent.call("GET", "/v1/peerings", headers={"Authorization": auth}),
                      ANONYMOUS, "peering:read")


# ---- status, operator and agent endpoints ----


def test_status_is_open_operator_and_agent_are_not(dc1: LocalCluster) -> None:
    for agent in dc1.agents:
        for headers in ({}, h("nope")):
            assert agent.call("GET", "/v1/status/leader", headers=headers).status == 200
            assert agent.call("GET", "/v1/status/peers", headers=headers).status == 200
        assert_denied(agent.call("GET", "/v1/operator/raft/configuration"),
                      ANONYMOUS, "operator:read")
        reply = agent.call("GET", "/v1/agent/self")
        assert (reply.status, reply.text) == (
            403, denied(ANONYMOUS, "agent:read") + f' on "{agent.name}"'
        )
        assert agent.call("GET", "/v1/agent/self", headers=h(ROOT)).status == 200
        reply = agent.call("GET", "/v1/operator/raft/configuration", headers=h("nope"))
        assert (reply.status, reply.text) == (403, "ACL not found")


def test_remove_peer_needs_operator_write(dc1: LocalCluster) -> None:
    a = dc1.agents[0]
    if not _has_policy(a, "operator-read"):  # made by an earlier test, unless run alone
        make_policy(a, "operator-read", '{"operator": "read"}')
    reader = make_token(a, ["operator-read"])
    make_policy(a, "operator-write", 'operator = "write"')
    writer = make_token(a, ["operator-write"])
    for agent in dc1.agents:
        reply = agent.call("DELETE", "/v1/operator/raft/peer?address=127.0.0.1:1",
                           headers=h(reader["SecretID"]))
        assert_denied(reply, reader["AccessorID"], "operator:write")
        reply = agent.call("DELETE", "/v1/operator/raft/peer?address=127.0.0.1:1",
                           headers=h(writer["SecretID"]))
        assert (reply.status, reply.text) == (
            400, 'address "127.0.0.1:1" was not found in the Raft configuration')


def _has_policy(agent: Agent, name: str) -> bool:
    return agent.call("GET", f"/v1/acl/policy/name/{name}", headers=h(ROOT)).status == 200


# ---- bootstrap ----


def test_bootstrap_once_across_the_cluster(dc2: LocalCluster, dc2_race: list[Reply]) -> None:
    statuses = sorted(r.status for r in dc2_race)
    assert statuses == [200, 403], [r.text for r in dc2_race]
    won = next(r for r in dc2_race if r.status == 200).json()
    lost = next(r for r in dc2_race if r.status == 403)
    assert lost.text.startswith("Permission denied: ACL bootstrap no longer allowed (reset index: ")
    assert list(won)[:4] == ["ID", "AccessorID", "SecretID", "Description"]
    assert won["ID"] == won["SecretID"]
    assert won["Description"] == "Bootstrap Token (Global Management)"
    assert won["Policies"] == [{"ID": GLOBAL_MANAGEMENT, "Name": "global-management"}]
    assert won["Local"] is False
    for agent in dc2.agents:  # later calls, on any node, are refused with the same text
        reply = agent.call("PUT", "/v1/acl/bootstrap")
        assert (reply.status, reply.text) == (403, lost.text)
        reply = agent.call("GET", "/v1/acl/token/self", headers=h(won["SecretID"]))
        assert reply.status == 200 and reply.json()["AccessorID"] == won["AccessorID"]


def test_initial_management_token_uses_up_bootstrap(dc1: LocalCluster) -> None:
    reply = dc1.agents[2].call("PUT", "/v1/acl/bootstrap")
    assert reply.status == 403
    assert reply.text.startswith("Permission denied: ACL bootstrap no longer allowed")
    reply = dc1.agents[0].call("GET", "/v1/acl/token/self", headers=h(ROOT))
    assert reply.status == 200
    assert reply.json()["Description"] == "Initial Management Token"
    assert reply.json()["Policies"] == [{"ID": GLOBAL_MANAGEMENT, "Name": "global-management"}]


# ---- tokens across nodes ----


def test_tokens_created_through_one_node_work_on_every_node(dc1: LocalCluster) -> None:
    make_policy(dc1.agents[2], "everywhere", 'peering = "read"\nacl = "read"')
    for creator in dc1.agents:
        tok = make_token(creator, ["everywhere"])
        for agent in dc1.agents:  # immediately: the leader decides, with its own state
            reply = agent.call("GET", "/v1/peerings", headers=h(tok["SecretID"]))
            assert reply.status == 200, (creator.name, agent.name, reply.text)
            reply = agent.call("GET", "/v1/acl/token/self", headers=h(tok["SecretID"]))
            assert reply.json()["AccessorID"] == tok["AccessorID"]
            reply = agent.call("GET", f"/v1/acl/token/{tok['AccessorID']}",
                               headers=h(tok["SecretID"]))
            assert reply.status == 200 and reply.json()["SecretID"] == "<hidden>"


def test_deleted_token_stops_working_everywhere(dc1: LocalCluster) -> None:
    make_policy(dc1.agents[0], "short-lived", 'peering = "write"')
    tok = make_token(dc1.agents[0], ["short-lived"])
    for agent in dc1.agents:
        assert agent.call("GET", "/v1/peerings", headers=h(tok["SecretID"])).status == 200
    reply = dc1.agents[2].call("DELETE", f"/v1/acl/token/{tok['AccessorID']}", headers=h(ROOT))
    assert (reply.status, reply.text) == (200, "true")
    for agent in dc1.agents:
        for query in ("", "?consistent"):
            reply = agent.call("GET", f"/v1/peerings{query}", headers=h(tok["SecretID"]))
            assert (reply.status, reply.text) == (403, "ACL not found")
        reply = generate(agent, "after-delete", tok["SecretID"])
        assert (reply.status, reply.text) == (403, "ACL not found")
        # A stale read is decided by the local replica: it catches up promptly.
        eventually(lambda a=agent: a.call("GET", "/v1/peerings?stale",
                                          headers=h(tok["SecretID"])).status == 403, 10)
    reply = dc1.agents[1].call("GET", f"/v1/acl/token/{tok['AccessorID']}", headers=h(ROOT))
    assert (reply.status, reply.text) == (404, "Requested token does not exist: ACL not found")


# ---- the ACL endpoints themselves ----


def test_acl_endpoints_need_acl_permissions(dc1: LocalCluster) -> None:
    make_policy(dc1.agents[0], "acl-reader", 'acl = "read"')
    reader = make_token(dc1.agents[0], ["acl-reader"])
    for agent in dc1.agents:
        assert_denied(agent.call("GET", "/v1/acl/policies"), ANONYMOUS, "acl:read")
        assert_denied(agent.call("GET", "/v1/acl/tokens"), ANONYMOUS, "acl:read")
        assert_denied(agent.call("PUT", "/v1/acl/policy", {"Name": "x"}), ANONYMOUS, "acl:write")
        assert_denied(agent.call("PUT", "/v1/acl/token", {}), ANONYMOUS, "acl:write")
        assert_denied(agent.call("DELETE", f"/v1/acl/token/{uuid.uuid4()}"),
                      ANONYMOUS, "acl:write")
        # acl:read lists, with secrets hidden; acl:write sees them.
        reply = agent.call("GET", "/v1/acl/tokens", headers=h(reader["SecretID"]))
        assert reply.status == 200
        assert {t["SecretID"] for t in reply.json()} == {"<hidden>"}
        assert_denied(agent.call("PUT", "/v1/acl/policy", {"Name": "x"},
                                 headers=h(reader["SecretID"])),
                      reader["AccessorID"], "acl:write")
        reply = agent.call("GET", "/v1/acl/tokens", headers=h(ROOT))
        by_accessor = {t["AccessorID"]: t for t in reply.json()}
        assert by_accessor[ANONYMOUS]["SecretID"] == "anonymous"
        assert by_accessor[reader["AccessorID"]]["SecretID"] == reader["SecretID"]
        assert list(by_accessor) == sorted(by_accessor)
        names = [p["Name"] for p in agent.call("GET", "/v1/acl/policies",
                                                headers=h(ROOT)).json()]
        assert "global-management" in names and "acl-reader" in names
        assert int(reply.headers["X-Consul-Index"]) >= 1


def test_policy_and_token_validation(dc1: LocalCluster) -> None:
    agent = dc1.agents[1]
    cases = [
        ("PUT", "/v1/acl/policy", {"Name": ""}, "Invalid Policy: no Name is set"),
        ("PUT", "/v1/acl/policy", {"Name": "bad name"},
         "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"),
        ("PUT", "/v1/acl/policy", {"Name": "x", "Rules": 'peering = "nope"'},
         'Invalid peering policy: "nope"'),
        ("PUT", "/v1/acl/policy", {"Name": "x", "ID": str(uuid.uuid4())},
         "Cannot specify the ID when creating a new policy"),
        ("PUT", "/v1/acl/policy", {"Name": "x", "Bogus": 1},
         'Policy decoding failed: json: unknown field "Bogus"'),
        ("PUT", f"/v1/acl/policy/{uuid.uuid4()}", {"Name": "x", "ID": str(uuid.uuid4())},
         "Policy ID in URL and payload do not match"),
        ("PUT", "/v1/acl/policy", {"Name": "global-management"},
         'Invalid Policy: A Policy with Name "global-management" already exists'),
        ("DELETE", f"/v1/acl/policy/{GLOBAL_MANAGEMENT}", None,
         "Delete operation not permitted on the builtin global-management policy"),
        ("PUT", "/v1/acl/token", {"Policies": [{"Name": "no-such"}]},
         'No such ACL policy with name "no-such"'),
        ("PUT", "/v1/acl/token", {"AccessorID": "not-a-uuid"},
         "Invalid Token: AccessorID is not a valid UUID"),
        ("PUT", "/v1/acl/token", {"SecretID": ANONYMOUS},
         "Invalid Token: SecretID is already in use"),
        ("PUT", "/v1/acl/token", {"Rules": 'peering = "write"'},
         "Rules cannot be specified for this token"),
        ("PUT", f"/v1/acl/token/{uuid.uuid4()}", {"AccessorID": str(uuid.uuid4())},
         "Token Accessor ID in URL and payload do not match"),
        ("DELETE", f"/v1/acl/token/{ANONYMOUS}", None,
         "Delete operation not permitted on the anonymous token"),
    ]
    for method, path, body, text in cases:
        reply = agent.call(method, path, body, headers=h(ROOT))
        assert (reply.status, reply.text) == (400, text), (method, path, body)
    reply = agent.call("PUT", "/v1/acl/policy", raw=b"", headers=h(ROOT))
    assert (reply.status, reply.text) == (400, "Policy decoding failed: EOF")
    reply = agent.call("GET", f"/v1/acl/policy/{uuid.uuid4()}", headers=h(ROOT))
    assert (reply.status, reply.text) == (404, "Requested policy does not exist: ACL not found")
    # The management token cannot delete itself.
    me = agent.call("GET", "/v1/acl/token/self", headers=h(ROOT)).json()["AccessorID"]
    reply = agent.call("DELETE", f"/v1/acl/token/{me}", headers=h(ROOT))
    assert (reply.status, reply.text) == (
        400, "Deletion of the request's authorization token is not permitted"
    )


def test_token_update_keeps_secret_and_create_index(dc1: LocalCluster) -> None:
    a, b, _ = dc1.agents
    make_policy(a, "upd-1", 'peering = "read"')
    tok = make_token(a, [], Description="before")
    reply = b.call("PUT", f"/v1/acl/token/{tok['AccessorID']}",
                   {"Description": "after", "Policies": [{"Name": "upd-1"}]}, headers=h(ROOT))
    assert reply.status == 200, reply.text
    got = reply.json()
    assert got["SecretID"] == tok["SecretID"] and got["CreateTime"] == tok["CreateTime"]
    assert got["CreateIndex"] == tok["CreateIndex"] < got["ModifyIndex"]
    assert [p["Name"] for p in got["Policies"]] == ["upd-1"]
    assert got["Hash"] != tok["Hash"]
    reply = b.call("PUT", f"/v1/acl/token/{tok['AccessorID']}", {"SecretID": ROOT},
                   headers=h(ROOT))
    assert (reply.status, reply.text) == (400, "Changing a tokens SecretID is not permitted")


def test_anonymous_token_can_be_granted_rights(dc2: LocalCluster, dc2_root: str) -> None:
    """Consul's way to open reads to everyone: give the anonymous token a policy."""
    a, b, c = dc2.agents
    assert_denied(c.call("GET", "/v1/peerings"), ANONYMOUS, "peering:read")
    make_policy(a, "anon-read", 'peering = "read"', secret=dc2_root)
    reply = b.call("PUT", f"/v1/acl/token/{ANONYMOUS}",
                   {"Policies": [{"Name": "anon-read"}]}, headers=h(dc2_root))
    assert reply.status == 200, reply.text
    for agent in dc2.agents:
        assert agent.call("GET", "/v1/peerings").status == 200
        assert_denied(generate(agent, "anon-w", "anonymous"), ANONYMOUS, "peering:write")


def test_acls_disabled(tmp_path) -> None:
    with LocalCluster(str(tmp_path), nodes=1) as c:
        agent = c.agents[0]
        for path in ("/v1/acl/policies", "/v1/acl/tokens", "/v1/acl/token/self"):
            reply = agent.call("GET", path)
            assert (reply.status, reply.text) == (401, "ACL support disabled")
        assert agent.call("PUT", "/v1/acl/bootstrap").status == 401
        reply = generate(agent, "open", "whatever-token")
        assert reply.status == 200 and reply.headers["X-Consul-Default-ACL-Policy"] == "allow"
        assert agent.call("GET", "/v1/operator/raft/configuration").status == 200


# ---- secrets never logged (last: it reads what every test above made the agents log) ----


def test_no_secret_in_any_log_line(dc1: LocalCluster, dc2: LocalCluster, dc2_root: str) -> None:
    # One more round of token traffic through every node and every token source.
    for agent in dc1.agents:
        agent.call("GET", f"/v1/peerings?token={ROOT}")
        agent.call("GET", "/v1/acl/tokens", headers={"Authorization": f"Bearer {ROOT}"})
        agent.call("GET", "/v1/peerings?token=00000000-dead-4bad-8bad-000000000000")
    SECRETS.add(dc2_root)
    secrets = {s for s in SECRETS if s}
    assert len(secrets) >= 5
    lines = [line for c in (dc1, dc2) for a in c.agents for line in a.log_lines]
    assert len(lines) > 50  # DEBUG logging on dc1: request lines are there to leak from
    leaks = [line for line in lines for s in secrets if s in line]
    assert not leaks, leaks[:5]

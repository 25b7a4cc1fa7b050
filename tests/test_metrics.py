"""Observability of a real three-server cluster: `/v1/agent/metrics` as Prometheus text (parsed
with prometheus_client's own parser), OpenMetrics and Consul's JSON; `/v1/agent/self`,
`/v1/agent/members`, `/v1/operator/autopilot/health`; and the agent's JSON log lines (request
IDs, one object a line, no secrets)."""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from lab.cluster import Agent, LocalCluster, eventually

pytestmark = pytest.mark.integration

PROM_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FAMILIES = {
    "peerplane_raft_state": "gauge",
    "peerplane_raft_term": "gauge",
    "peerplane_raft_commit_index": "gauge",
    "peerplane_raft_applied_index": "gauge",
    "peerplane_raft_has_leader": "gauge",
    "peerplane_raft_leader_last_contact_seconds": "gauge",
    "peerplane_raft_apply_duration_seconds": "histogram",
    "peerplane_http_requests": "counter",
    "peerplane_http_request_duration_seconds": "histogram",
    "peerplane_http_forwarded": "counter",
    "peerplane_http_parsed": "counter",
    "peerplane_peerings": "gauge",
    "peerplane_peering_streams": "gauge",
    "peerplane_peering_stream_heartbeats": "counter",
    "peerplane_peering_reconciler_retries": "counter",
}
SECRET = "test-secret-dc1"  # the harness's cluster secret for dc1


@pytest.fixture(scope="module")
def obs(tmp_path_factory: pytest.TempPathFactory):
    with LocalCluster(str(tmp_path_factory.mktemp("obs")),
                      extra_args=["--log-level", "DEBUG", "--log-format", "json",
                                  "--peering-heartbeat", "1"]) as c:
        yield c


def scrape(agent: Agent) -> dict[str, object]:
    reply = agent.call("GET", "/v1/agent/metrics?format=prometheus")
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"] == PROM_CONTENT_TYPE
    return {f.name: f for f in text_string_to_metric_families(reply.text)}


def value(families: dict, sample_name: str, **labels: str) -> float:
    """The one sample of that name whose labels include `labels` (0 when there is none)."""
    name = sample_name
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        if name.endswith(suffix) and name[: -len(suffix)] in families:
            name = name[: -len(suffix)]
    found = [s.value for s in families[name].samples
             if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (sample_name, labels, found)
    return found[0] if found else 0.0


def test_prometheus_text_parses_with_every_family(obs):
    views = {a.name: scrape(a) for a in obs.agents}
    for fams in views.values():
        for name, kind in FAMILIES.items():
            assert name in fams, f"{name} missing"
            assert fams[name].type == kind, (name, fams[name].type)
    leader = obs.leader()
    for name, fams in views.items():
        is_leader = name == leader.name
        assert value(fams, "peerplane_raft_state", state="leader") == float(is_leader)
        assert value(fams, "peerplane_raft_state", state="candidate") == 0.0
        assert value(fams, "peerplane_raft_has_leader") == 1.0
        assert value(fams, "peerplane_raft_term") >= 1
        assert value(fams, "peerplane_raft_applied_index") <= \
            value(fams, "peerplane_raft_commit_index")
        if is_leader:
            assert value(fams, "peerplane_raft_leader_last_contact_seconds") == 0.0
        # Every state is present, at 0 when no peering is in it.
        states = {s.labels["state"] for s in fams["peerplane_peerings"].samples}
        assert states == {"PENDING", "ESTABLISHING", "ACTIVE", "FAILING", "DELETING",
                          "TERMINATED"}
        directions = {s.labels["direction"]
                      for s in fams["peerplane_peering_stream_heartbeats"].samples}
        assert directions == {"sent", "received"}
    assert len({value(f, "peerplane_raft_term") for f in views.values()}) == 1


def test_http_requests_counted_by_route_method_and_status(obs):
    agent = obs.agents[0]
    before = scrape(agent)
    for _ in range(3):
        assert agent.call("GET", "/v1/peering/no-such-peering?stale").status == 404
    assert agent.call("GET", "/v1/no/such/route").status == 404
    assert agent.call("PUT", "/v1/peerings").status == 405
    after = scrape(agent)

    def delta(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    route = {"route": "/v1/peering/{name}", "method": "GET"}
    assert delta("peerplane_http_requests_total", code="404", **route) == 3
    assert delta("peerplane_http_request_duration_seconds_count", **route) == 3
    assert delta("peerplane_http_request_duration_seconds_sum", **route) > 0
    assert delta("peerplane_http_requests_total", route="unmatched", method="GET",
                 code="404") == 1
    # aiohttp matches no route for a wrong method: counted as unmatched, with its 405.
    assert delta("peerplane_http_requests_total", route="unmatched", method="PUT",
                 code="405") == 1
    # Labels are route patterns, never raw paths: no peering name leaks into a label.
    for s in after["peerplane_http_requests"].samples:
        assert "no-such-peering" not in s.labels["route"]


def test_writes_through_a_follower_are_applied_there_and_counted_by_state(obs):
    """The follower commits the write itself through Raft: it counts the apply, forwards
    nothing over HTTP, and the leader proposes nothing."""
    leader = obs.leader()
    follower = next(a for a in obs.agents if a is not leader)
    f_before, l_before = scrape(follower), scrape(leader)
    reply = follower.call("POST", "/v1/peering/token", {"PeerName": "metrics-pending"})
    assert reply.status == 200, reply.text
    f_after, l_after = scrape(follower), scrape(leader)
    fwd = {"method": "POST", "code": "200"}
    assert value(f_after, "peerplane_http_forwarded_total", **fwd) - \
        value(f_before, "peerplane_http_forwarded_total", **fwd) == 0
    applied = {"op": "generate_token", "result": "ok"}
    assert value(f_after, "peerplane_raft_apply_duration_seconds_count", **applied) - \
        value(f_before, "peerplane_raft_apply_duration_seconds_count", **applied) == 1
    assert value(f_after, "peerplane_raft_apply_duration_seconds_bucket", le="+Inf",
                 **applied) >= 1
    assert value(l_after, "peerplane_raft_apply_duration_seconds_count", **applied) - \
        value(l_before, "peerplane_raft_apply_duration_seconds_count", **applied) == 0
    # The state gauge comes from the replicated table: every server counts the new peering.
    for a in obs.agents:
        eventually(lambda a=a: value(scrape(a), "peerplane_peerings", state="PENDING") >= 1)


def test_a_write_to_a_follower_is_parsed_once_there_and_reaches_the_leader_only_through_raft(
        obs):
    """A follower parses, validates (and ACL-checks) a write itself (api/pipeline.py) and
    commits it through Raft: the leader parses nothing, serves no HTTP request for it, and no
    server forwards anything over HTTP - valid request or not."""
    leader = obs.leader()
    followers = [a for a in obs.agents if a is not leader]
    before = {a.name: scrape(a) for a in obs.agents}
    good = followers[0].call("POST", "/v1/peering/token", {"PeerName": "parsed-once"})
    assert good.status == 200, good.text
    bad = followers[1].call("POST", "/v1/peering/token", {"PeerName": "Not_Valid"})
    assert bad.status == 400, bad.text
    after = {a.name: scrape(a) for a in obs.agents}
    route = {"route": "/v1/peering/token", "method": "POST"}

    def delta(agent: Agent, name: str, **labels: str) -> float:
        return value(after[agent.name], name, **labels) - value(before[agent.name], name,
                                                                **labels)

    assert delta(leader, "peerplane_http_parsed_total", **route) == 0
    assert [delta(f, "peerplane_http_parsed_total", **route) for f in followers] == [1, 1]
    assert delta(leader, "peerplane_http_requests_total", code="200", **route) == 0
    assert delta(leader, "peerplane_http_requests_total", code="400", **route) == 0
    for agent in obs.agents:
        for code in ("200", "400", "error"):
            assert delta(agent, "peerplane_http_forwarded_total", method="POST",
                         code=code) == 0
    # The write reached the leader as a Raft command: it applied it like every server.
    assert eventually(lambda: leader.call(
        "GET", "/v1/peering/parsed-once?stale").status == 200)


def test_peer_stream_heartbeats_and_retries_are_counted(obs, tmp_path):
    """Against a second (one-server) cluster: a token whose only address is dead makes the
    dialer's secret exchange retry until its window closes; a good one makes an ACTIVE
    stream whose heartbeats both leaders count."""
    with LocalCluster(str(tmp_path), nodes=1, datacenter="dc2",
                      extra_args=["--peering-heartbeat", "1"]) as dc2:
        peer = dc2.agents[0]
        dead = obs.agents[0].call("POST", "/v1/peering/token", {
            "PeerName": "metrics-nowhere", "ServerExternalAddresses": ["127.0.0.1:1"],
        }).json()["PeeringToken"]
        retries = {"kind": "exchange"}
        before = value(scrape(peer), "peerplane_peering_reconciler_retries_total", **retries)
        reply = peer.call("POST", "/v1/peering/establish",
                          {"PeerName": "nowhere", "PeeringToken": dead})
        assert reply.status == 502, reply.text
        assert value(scrape(peer), "peerplane_peering_reconciler_retries_total",
                     **retries) > before

        good = obs.agents[1].call("POST", "/v1/peering/token",
                                  {"PeerName": "metrics-dc2"}).json()["PeeringToken"]
        reply = peer.call("POST", "/v1/peering/establish",
                          {"PeerName": "metrics-dc1", "PeeringToken": good})
        assert reply.status == 200, reply.text
        leader = obs.leader()

        def counted(agent: Agent) -> bool:
            fams = scrape(agent)
            return (value(fams, "peerplane_peering_stream_heartbeats_total",
                          direction="sent") >= 1
                    and value(fams, "peerplane_peering_stream_heartbeats_total",
                              direction="received") >= 1
                    and value(fams, "peerplane_peering_streams") >= 1
                    and value(fams, "peerplane_peerings", state="ACTIVE") >= 1)

        eventually(lambda: counted(leader) and counted(peer), timeout=30)
        # Followers have the replicated state but hold no stream.
        for a in obs.agents:
            if a is not leader:
                eventually(lambda a=a: value(scrape(a), "peerplane_peerings",
                                             state="ACTIVE") >= 1)
                assert value(scrape(a), "peerplane_peering_streams") == 0


def test_json_metrics_have_consuls_shape(obs):
    agent = obs.agents[1]
    agent.call("GET", "/v1/status/leader")
    reply = agent.call("GET", "/v1/agent/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert list(body) == ["Timestamp", "Gauges", "Points", "Counters", "Samples"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC", body["Timestamp"])
    assert body["Points"] == []
    for g in body["Gauges"]:
        assert list(g) == ["Name", "Value", "Labels"]
    for c in body["Counters"]:
        assert list(c) == ["Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev",
                           "Labels"]
        assert c["Count"] >= 1
    for s in body["Samples"]:
        assert list(s) == ["Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev",
                           "Labels"]
        assert 0 <= s["Min"] <= s["Mean"] <= s["Max"]
    gauges = {(g["Name"], tuple(sorted(g["Labels"].items()))): g["Value"]
              for g in body["Gauges"]}
    assert gauges[("peerplane.raft.term", ())] >= 1
    assert sum(gauges[("peerplane.raft.state", (("state", s),))]
               for s in ("leader", "candidate", "follower")) == 1
    names = {c["Name"] for c in body["Counters"]}
    assert "peerplane.http.requests" in names
    leader_reads = [c for c in body["Counters"] if c["Name"] == "peerplane.http.requests"
                    and c["Labels"] == {"route": "/v1/status/leader", "method": "GET",
                                        "code": "200"}]
    assert leader_reads and leader_reads[0]["Count"] >= 1
    assert "peerplane.http.request.duration_seconds" in {s["Name"] for s in body["Samples"]}
    # Same values in both forms: dots in JSON, underscores in Prometheus.
    term = value(scrape(agent), "peerplane_raft_term")
    assert term == gauges[("peerplane.raft.term", ())]


def test_openmetrics_by_content_negotiation(obs):
    reply = obs.agents[2].call("GET", "/v1/agent/metrics",
                               headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/openmetrics-text")
    assert reply.text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(reply.text)}
    assert {"peerplane_raft_term", "peerplane_http_requests"} <= names


def test_agent_self(obs):
    agent = obs.agents[0]
    body = agent.call("GET", "/v1/agent/self").json()
    cfg = body["Config"]
    assert cfg["Datacenter"] == "dc1" and cfg["NodeName"] == agent.name
    assert cfg["Server"] is True and cfg["Version"]
    with open(os.path.join(agent.data_dir, "node-id")) as f:
        assert cfg["NodeID"] == f.read().strip() == str(uuid.UUID(cfg["NodeID"]))
    member = body["Member"]
    host, port = agent.raft_addr.rsplit(":", 1)
    assert (member["Name"], member["Addr"], member["Port"], member["Status"]) == \
        (agent.name, host, int(port), 1)
    assert member["Tags"]["role"] == "consul" and member["Tags"]["dc"] == "dc1"
    debug = body["DebugConfig"]
    assert debug["http_port"] == agent.http_port
    assert debug["cluster_secret"] == "hidden"
    assert SECRET not in json.dumps(body)
    raft = body["Stats"]["raft"]
    assert raft["state"] in ("Leader", "Follower", "Candidate")
    assert int(raft["applied_index"]) <= int(raft["commit_index"])


def test_members_and_autopilot_health(obs):
    members = obs.agents[2].call("GET", "/v1/agent/members").json()
    assert sorted(m["Name"] for m in members) == sorted(a.name for a in obs.agents)
    assert all(m["Status"] == 1 for m in members)

    def healthy() -> dict:
        reply = obs.agents[0].call("GET", "/v1/operator/autopilot/health")
        return reply.json() if reply.status == 200 else {}

    health = eventually(healthy)
    assert health["Healthy"] is True and health["FailureTolerance"] == 1
    assert sorted(s["Name"] for s in health["Servers"]) == sorted(a.name for a in obs.agents)
    assert [s["Name"] for s in health["Servers"] if s["Leader"]] == [obs.leader().name]
    for s in health["Servers"]:
        assert s["SerfStatus"] == "alive" and s["Voter"] is True and s["LastTerm"] >= 1


# ---- logs ----


def json_lines(agent: Agent) -> list[dict]:
    out = []
    for line in list(agent.log_lines):
        obj = json.loads(line)  # every line the agent writes is one JSON object
        assert isinstance(obj, dict) and {"@timestamp", "@level", "@module", "@message"} <= \
            set(obj), line
        out.append(obj)
    return out


def test_request_ids_are_echoed_generated_and_follow_forwarding(obs):
    leader = obs.leader()
    follower = next(a for a in obs.agents if a is not leader)
    rid = f"test-{uuid.uuid4()}"
    # An establish on a follower is forwarded to the leader (a LEADER row; reads and other
    # writes are served where they arrive): the leader refuses this one's empty token.
    reply = follower.call("POST", "/v1/peering/establish", {"PeerName": "rid-check"},
                          headers={"X-Request-Id": rid})
    assert reply.status == 400 and reply.headers["X-Request-Id"] == rid

    generated = follower.call("GET", "/v1/status/leader").headers["X-Request-Id"]
    uuid.UUID(generated)
    replaced = follower.call("GET", "/v1/status/leader",
                             headers={"X-Request-Id": "not a valid id"}).headers["X-Request-Id"]
    uuid.UUID(replaced)

    def logged(agent: Agent) -> list[dict]:
        return [o for o in json_lines(agent)
                if o.get("request_id") == rid and o["@module"] == "peerplane.http"]

    for agent in (follower, leader):  # one line per server: the stack runs once on each
        (line,) = eventually(lambda agent=agent: logged(agent))
        assert line["@level"] == "debug"
        assert line["route"] == "/v1/peering/establish" and line["status"] == 400
        assert line["@message"].startswith(
            "Request finished: method=POST url=/v1/peering/establish ")
        assert line["node"] == agent.name
        # The follower's line says which leader answered; the leader served it itself.
        assert line.get("forwarded_to") == (leader.raft_addr if agent is follower else None)


def test_no_secrets_in_logs(obs):
    agent = obs.agents[0]
    token_param, header_token = "query-token-0123456789", "header-token-9876543210"
    reply = agent.call("GET", f"/v1/peerings?token={token_param}&stale",
                       headers={"X-Consul-Token": header_token})
    assert reply.status == 200
    rid = reply.headers["X-Request-Id"]
    peering_token = agent.call("POST", "/v1/peering/token",
                               {"PeerName": "secret-check"}).json()["PeeringToken"]
    # A peering token travels in a body: establish it (refused - it is this cluster's own).
    refused = agent.call("POST", "/v1/peering/establish",
                         {"PeerName": "secret-dial", "PeeringToken": peering_token})
    assert refused.status == 400
    line = eventually(lambda: next((o for o in json_lines(agent)
                                    if o.get("request_id") == rid), None))
    assert "url=/v1/peerings?token=<hidden>&stale " in line["@message"]
    text = "".join(a for ag in obs.agents for a in ag.log_lines)
    for secret in (token_param, header_token, peering_token, SECRET):
        assert secret not in text

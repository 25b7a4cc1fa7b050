"""Hostile input against a live three-server cluster (issue 11), driven by the served OpenAPI
document with schemathesis plus hand-written hostile requests (tests/harness/fuzz.py).

Each run first sends only requests that must be refused and checks that the peering state (list
and X-Consul-Index, through the leader) is exactly what it was; then a mixed run of valid and
invalid schemathesis cases and raw requests, with schemathesis's conformance checks. Afterwards
the cluster must be healthy: every server running and answering, one leader everybody agrees on,
and no traceback in any server's log.

Short form by default (well under three minutes on a 2-core machine); the long form
(`pytest --fuzz-long`, or PEERPLANE_FUZZ_LONG=1) sends more than 10,000 requests. Each run
prints one line in the `fuzz` section of pytest's summary: requests sent, statuses, failures.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from conftest import FUZZ_LINES
from openapi_spec_validator import validate
from schemathesis import GenerationMode

from harness.fuzz import (
    FuzzRun,
    FuzzStats,
    case_strategy,
    invalid_requests,
    load_schema,
    mixed,
    operations,
    raw_requests,
)
from lab.cluster import LocalCluster, eventually

pytestmark = pytest.mark.integration

SHORT = {"invalid": 120, "mixed": 400}
LONG = {"invalid": 2000, "mixed": 10000}
SEED = 20261127
SEED_PEERINGS = ("fuzz-seed-1", "fuzz-seed-2")


@pytest.fixture(scope="module")
def sizes(request: pytest.FixtureRequest) -> dict[str, int]:
    long = request.config.getoption("--fuzz-long") or os.environ.get("PEERPLANE_FUZZ_LONG") == "1"
    return LONG if long else SHORT


STATE_READS = ("/v1/peerings", "/v1/catalog/nodes", "/v1/catalog/services",
               "/v1/config/exported-services")


def peering_state(cluster: LocalCluster, headers: dict[str, str] | None = None) -> Any:
    """The peerings, catalog and config entries as the leader sees them after a quorum round,
    each with its table's index."""
    leader = cluster.leader()
    state = []
    for path in STATE_READS:
        reply = leader.call("GET", f"{path}?consistent", headers=headers or {})
        assert reply.status == 200, reply.text
        state.append((reply.headers["X-Consul-Index"], reply.json()))
    return state


def assert_healthy(cluster: LocalCluster) -> None:
    for agent in cluster.agents:
        assert agent.running, f"{agent.name} exited; log:\n{''.join(agent.log_lines[-30:])}"
    leader = cluster.leader(timeout=30)
    for agent in cluster.agents:
        reply = agent.call("GET", "/v1/status/leader", timeout=10)
        assert reply.status == 200 and reply.json() == leader.raft_addr
    tracebacks = [(a.name, line) for a in cluster.agents for line in a.log_lines
                  if "Traceback" in line]
    assert not tracebacks, tracebacks[:5]


def report(stats: FuzzStats, started: float) -> None:
    line = f"{stats.line()} ({time.monotonic() - started:.0f} s)"
    FUZZ_LINES.append(line)
    print(line)
    assert not stats.failures, "\n".join([line, *stats.failures[:25]])


def without_acl_endpoints(op: Any) -> bool:
    """With ACLs off every ACL endpoint but one answers the same 401 before reading anything:
    spend the requests elsewhere (the ACL-on run covers them)."""
    return not op.path.startswith("/v1/acl/") or op.path == "/v1/acl/bootstrap"


def fuzz_cluster(cluster: LocalCluster, sizes: dict[str, int], label: str,
                 headers: dict[str, str] | None = None,
                 extra_headers: list[dict[str, str]] | None = None,
                 include: Callable[[Any], bool] = lambda op: True) -> None:
    headers = headers or {}
    bases = [f"http://{a.http_addr}" for a in cluster.agents]
    spec = requests.get(bases[0] + "/v1/openapi.json", headers=headers, timeout=10).json()
    schema = load_schema(spec)
    for name in SEED_PEERINGS:  # something the refused requests could damage
        reply = cluster.agents[0].call("POST", "/v1/peering/token", {"PeerName": name},
                                       headers=headers)
        assert reply.status == 200, reply.text

    # 1. only requests that must be refused: the peering state does not move
    before = peering_state(cluster, headers)
    started = time.monotonic()
    stats = FuzzStats(f"{label} refused-only")
    body_ops = operations(schema, lambda op: len(op.body) > 0 and include(op))
    refused = FuzzRun(spec, bases, stats, headers=headers, invalid_only=True, conformance=False)
    negative = case_strategy(body_ops, [GenerationMode.NEGATIVE]).filter(refused.body_is_invalid)
    refused.run(mixed(negative, invalid_requests(spec), raw_share=0.7), sizes["invalid"], SEED)
    assert peering_state(cluster, headers) == before
    report(stats, started)

    # 2. valid and invalid requests of every kind, with conformance checks
    started = time.monotonic()
    stats = FuzzStats(f"{label} mixed")
    cases = case_strategy(operations(schema, include),
                          [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    for i, extra in enumerate([{}, *(extra_headers or [])]):
        share = sizes["mixed"] // (1 + len(extra_headers or []))
        FuzzRun(spec, bases, stats, headers={**headers, **extra}).run(
            mixed(cases, raw_requests(list(spec["paths"])), raw_share=0.2), share, SEED + 1 + i)
    assert_healthy(cluster)
    report(stats, started)


def test_the_served_openapi_document_is_valid_and_the_same_on_every_server(cluster):
    documents = []
    for agent in cluster.agents:
        reply = agent.call("GET", "/v1/openapi.json")
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("application/json")
        documents.append(reply.json())
    validate(documents[0])
    assert documents[1:] == documents[:1] * 2
    assert "/v1/peering/{name}" in documents[0]["paths"]


def test_fuzz_with_acls_off(cluster, sizes):
    fuzz_cluster(cluster, sizes, "acl-off", include=without_acl_endpoints)


@pytest.fixture(scope="module")
def acl_cluster(tmp_path_factory: pytest.TempPathFactory):
    token = str(uuid.uuid4())
    args = ["--acl-enabled", "--acl-default-policy", "deny",
            "--acl-initial-management-token", token]
    with LocalCluster(str(tmp_path_factory.mktemp("acl")), extra_args=args) as c:
        c.management_token = token
        yield c


def test_fuzz_with_acls_on(acl_cluster, sizes):
    """Default deny: the same runs with the management token, and the mixed run also
    anonymous and with an unknown token (403s must be plain text too)."""
    token = acl_cluster.management_token
    eventually(lambda: acl_cluster.agents[0].call("GET", "/v1/peerings").status == 403)
    fuzz_cluster(acl_cluster, {k: v // 2 for k, v in sizes.items()}, "acl-on",
                 headers={"X-Consul-Token": token},
                 extra_headers=[{"X-Consul-Token": "anonymous"},
                                {"X-Consul-Token": str(uuid.uuid4())}])

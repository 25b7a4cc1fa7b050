"""Two peered clusters from the outside (tests and bench/): fast stream timings, a peering's
state, tokens (and their surgery), establishing."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from .cluster import Agent, LocalCluster, eventually

HEARTBEAT = 0.5
HEARTBEAT_TIMEOUT = 4.0
# Fast peer-stream timings for tests (defaults are Consul's 15 s / 2 min).
STREAM_ARGS = [
    "--peering-heartbeat",
    str(HEARTBEAT),
    "--peering-heartbeat-timeout",
    str(HEARTBEAT_TIMEOUT),
]


def peering(agent: Agent, name: str, query: str = "") -> dict[str, Any] | None:
    """The peering as this agent serves it (None on 404); raises on anything else."""
    reply = agent.call("GET", f"/v1/peering/{name}{query}", timeout=10)
    if reply.status == 404:
        return None
    assert reply.status == 200, (reply.status, reply.text)
    return reply.json()


def state(cluster: LocalCluster, name: str) -> str | None:
    """State through any running agent (default reads are served by the leader)."""
    agent = next(a for a in cluster.agents if a.running)
    rec = peering(agent, name)
    return rec["State"] if rec else None


def wait_state(cluster: LocalCluster, name: str, want: str | None, timeout: float = 30.0) -> None:
    eventually(lambda: state(cluster, name) == want, timeout, 0.05)


def token(cluster: LocalCluster, name: str, **body: Any) -> str:
    agent = next(a for a in cluster.agents if a.running)
    reply = agent.call("POST", "/v1/peering/token", {"PeerName": name, **body})
    assert reply.status == 200, reply.text
    return reply.json()["PeeringToken"]


def establish(cluster: LocalCluster, name: str, tok: str):
    agent = next(a for a in cluster.agents if a.running)
    return agent.call(
        "POST", "/v1/peering/establish", {"PeerName": name, "PeeringToken": tok}, timeout=30
    )


def decode(tok: str) -> dict[str, Any]:
    return json.loads(base64.b64decode(tok))


def encode(doc: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def time_until(fn, timeout: float = 60.0, interval: float = 0.01) -> float:
    """Seconds until fn() is truthy (polling every `interval`)."""
    start = time.monotonic()
    eventually(fn, timeout, interval)
    return time.monotonic() - start

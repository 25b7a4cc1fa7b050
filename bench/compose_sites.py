"""Two sites behind NAT (docker-compose.yml, profile `peer`): how long a leader kill on each side
at once takes to heal, on a real Docker engine.

Brings both sites up under a project name of its own (the image through deploy/build.sh,
cached), peers them (dc2 dials dc1 through its published ports), exports `web` from dc1, then
`--rounds` times: `docker kill` both leaders at once and time
  - leaders: until each site's two survivors agree on a new leader,
  - active:  until both sides read ACTIVE with a stream message received after the kill,
  - flowing: until an instance registered on dc1 after the kill is served by dc2 (?peer=dc1),
then start the killed servers and wait until they follow again. Always ends with `down -v`.
Uses host ports 8500-8505 and 8510-8515 (and /tmp/compose.lock, like the compose tests).

    python bench/compose_sites.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

from _cluster import machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DC1 = {"dc1-server-1": 8500, "dc1-server-2": 8501, "dc1-server-3": 8502}
DC2 = {"dc2-server-1": 8510, "dc2-server-2": 8511, "dc2-server-3": 8512}
FAST = {"PEERPLANE_PEERING_HEARTBEAT": "1", "PEERPLANE_PEERING_HEARTBEAT_TIMEOUT": "10"}


def sh(*cmd: str, timeout: float = 300) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True,
                          timeout=timeout).stdout


def call(port: int, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def until(fn, timeout: float = 120.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fn():
                return time.monotonic()
        except (OSError, KeyError, TypeError, ValueError, AssertionError):
            pass
        time.sleep(0.05)
    raise SystemExit("timed out")


def leader(nodes: dict[str, int]) -> str | None:
    names = {call(p, "GET", "/v1/status/leader").partition(":")[0] for p in nodes.values()}
    return names.pop() if len(names) == 1 and names <= set(nodes) else None


def active_since(nodes: dict[str, int], name: str, since: float) -> bool:
    for port in nodes.values():
        try:
            rec = call(port, "GET", f"/v1/peering/{name}")
        except OSError:
            continue
        last = (rec.get("StreamStatus") or {}).get("LastReceive")
        stamp = datetime.fromisoformat(last).replace(tzinfo=UTC).timestamp() if last else 0
        return rec["State"] == "ACTIVE" and stamp > since
    return False


def imported(nodes: dict[str, int]) -> set[str]:
    for port in nodes.values():
        try:
            return {e["Node"]["Node"] for e in call(port, "GET", "/v1/health/service/web?peer=dc1")}
        except OSError:
            continue
    return set()


def register(port: int, node: str) -> None:
    call(port, "PUT", "/v1/catalog/register", {"Node": node, "Address": "10.1.0.9",
                                               "Service": {"Service": "web", "Port": 80}})


def one_round(compose: list[str], r: int) -> tuple[float, float, float]:
    """Kill both leaders; seconds until new leaders, ACTIVE again, a new instance imported."""
    old1, old2 = leader(DC1), leader(DC2)
    assert old1 and old2
    live1 = {n: p for n, p in DC1.items() if n != old1}
    live2 = {n: p for n, p in DC2.items() if n != old2}
    ids = [sh(*compose, "ps", "-q", n).strip() for n in (old1, old2)]
    wall, start = time.time(), time.monotonic()
    sh("docker", "kill", *ids)
    t_lead = until(lambda: leader(live1) and leader(live2)) - start
    t_active = until(lambda: active_since(live1, "dc2", wall) and
                     active_since(live2, "dc1", wall)) - start
    register(next(iter(live1.values())), f"n{r}")
    t_flow = until(lambda: f"n{r}" in imported(live2)) - start
    sh("docker", "start", *ids)
    until(lambda: leader(DC1) and leader(DC2) and
          all(call(p, "GET", "/v1/status/leader") for p in {**DC1, **DC2}.values()))
    return t_lead, t_active, t_flow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    rounds = ap.parse_args().rounds
    subprocess.run([os.path.join(ROOT, "deploy", "build.sh")], check=True,
                   env=dict(os.environ, PYTHON=sys.executable), capture_output=True)
    while True:
        try:
            os.mkdir("/tmp/compose.lock")
            break
        except FileExistsError:
            time.sleep(30)
    project = f"ppbench{uuid.uuid4().hex[:8]}"
    override = f"/tmp/{project}.yml"
    with open(override, "w") as f:
        json.dump({"services": {n: {"environment": FAST} for n in {**DC1, **DC2}}}, f)
    compose = ["docker-compose", "-p", project, "-f", os.path.join(ROOT, "docker-compose.yml"),
               "-f", override, "--profile", "peer"]
    results: dict[str, list[float]] = {"leaders": [], "active": [], "flowing": []}
    try:
        sh(*compose, "up", "-d")
        until(lambda: leader(DC1) and leader(DC2), 180)
        tok = call(DC1["dc1-server-1"], "POST", "/v1/peering/token", {"PeerName": "dc2"})
        call(DC2["dc2-server-1"], "POST", "/v1/peering/establish",
             {"PeerName": "dc1", "PeeringToken": tok["PeeringToken"]})
        until(lambda: active_since(DC1, "dc2", 0) and active_since(DC2, "dc1", 0))
        register(DC1["dc1-server-1"], "n0")
        call(DC1["dc1-server-1"], "PUT", "/v1/config", {
            "Kind": "exported-services", "Name": "default",
            "Services": [{"Name": "web", "Consumers": [{"Peer": "dc2"}]}]})
        until(lambda: imported(DC2) == {"n0"})
        for r in range(1, rounds + 1):
            times = one_round(compose, r)
            for k, v in zip(("leaders", "active", "flowing"), times, strict=True):
                results[k].append(v)
            print(f"round {r}: leaders {times[0]:.2f} s, active {times[1]:.2f} s, "
                  f"flowing {times[2]:.2f} s", flush=True)
    finally:
        subprocess.run([*compose, "down", "-v", "--timeout", "5"], capture_output=True)
        os.remove(override)
        os.rmdir("/tmp/compose.lock")
    print(f"\n{rounds} rounds; {machine()}")
    print("| from `docker kill` of both leaders | median | max |\n|---|---|---|")
    for k, label in (("leaders", "new leader on both sides"),
                     ("active", "ACTIVE on both sides, stream traffic after the kill"),
                     ("flowing", "an instance registered on dc1 after it served by dc2")):
        print(f"| {label} | {statistics.median(results[k]):.1f} s | {max(results[k]):.1f} s |")


if __name__ == "__main__":
    main()

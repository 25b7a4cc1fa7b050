"""Replication over a peering: how soon an exported change is served by the peer cluster, and
how long the initial sync of a large export takes.

Two real three-server clusters on 127.0.0.1 (dc1 exports, dc2 imports; fast stream timings).

- export -> visible: register one more instance of an exported service on dc1 (through a
  follower), time from just before the PUT until dc2's leader serves it under `?peer=dc1`
  (watched with a blocking query). p50 / p99 over --samples registrations.
- initial sync: register --services services x --instances instances on dc1 (not exported),
  then export them all in one config-entry write; time from that PUT until dc2's leader lists
  every service under `?peer=dc1` (each service's snapshot is applied atomically, so a listed
  service has all its instances; a few are checked).

    python bench/replication.py [--samples 200] [--services 1000] [--instances 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

import aiohttp
from _cluster import LocalCluster, machine

from lab.peering import STREAM_ARGS, establish, token, wait_state


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def put(agent: Any, path: str, body: Any) -> None:
    reply = agent.call("PUT", path, body, timeout=30)
    assert reply.status == 200, (path, reply.status, reply.text)


def export(agent: Any, services: list[str]) -> None:
    put(agent, "/v1/config", {"Kind": "exported-services", "Name": "default", "Services": [
        {"Name": s, "Consumers": [{"Peer": "dc2"}]} for s in services]})


def instance(service: str, i: int) -> dict[str, Any]:
    return {"Node": f"node-{i % 50}", "Address": f"10.3.{i % 50}.1",
            "Service": {"ID": f"{service}-{i}", "Service": service, "Port": 20000 + i % 1000},
            "Checks": [{"CheckID": f"{service}-{i}-tcp", "Name": "tcp", "Status": "passing",
                        "ServiceID": f"{service}-{i}"}]}


def visible_after(leader: Any, service: str, sid: str, index: int, timeout: float = 30.0
                  ) -> tuple[float, int]:
    """monotonic() when `sid` is served under ?peer=dc1 by dc2's leader (blocking queries)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = leader.call("GET", f"/v1/health/service/{service}?peer=dc1&index={index}"
                            "&wait=10s", timeout=20)
        now = time.monotonic()
        index = int(reply.headers.get("X-Consul-Index", index))
        if reply.status == 200 and any(e["Service"]["ID"] == sid for e in reply.json()):
            return now, index
    raise SystemExit(f"{sid} never became visible on the peer")


def latency(dc1: LocalCluster, dc2: LocalCluster, samples: int) -> list[float]:
    writer, reader = dc1.followers()[0], dc2.leader()
    put(writer, "/v1/catalog/register", instance("lat", 0))
    export(writer, ["lat"])
    _, index = visible_after(reader, "lat", "lat-0", 0)
    out = []
    for i in range(1, samples + 1):
        holder: dict[str, tuple[float, int]] = {}
        watcher = threading.Thread(target=lambda i=i, h=holder, x=index: h.update(
            t=visible_after(reader, "lat", f"lat-{i}", x)))
        watcher.start()
        time.sleep(0.02)  # the blocking query is parked before the write
        t0 = time.monotonic()
        put(writer, "/v1/catalog/register", instance("lat", i))
        watcher.join()
        seen, index = holder["t"]
        out.append(seen - t0)
    return out


async def _register_all(addrs: list[str], bodies: list[dict[str, Any]], workers: int) -> None:
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession() as s:
        async def worker(w: int) -> None:
            addr = addrs[w % len(addrs)]
            while queue:
                body = queue.pop()
                async with s.put(f"http://{addr}/v1/catalog/register", json=body) as resp:
                    assert resp.status == 200, await resp.text()
        await asyncio.gather(*(worker(w) for w in range(workers)))


def initial_sync(dc1: LocalCluster, dc2: LocalCluster, services: int, instances: int
                 ) -> tuple[float, float]:
    names = [f"svc-{k:04d}" for k in range(services)]
    bodies = [instance(n, k * instances + j) for k, n in enumerate(names)
              for j in range(instances)]
    t0 = time.monotonic()
    asyncio.run(_register_all([a.http_addr for a in dc1.agents], bodies, 32))
    fill = time.monotonic() - t0
    reader = dc2.leader()
    t0 = time.monotonic()
    export(dc1.followers()[0], names + ["lat"])
    while True:
        got = reader.call("GET", "/v1/catalog/services?peer=dc1", timeout=30).json()
        if len([n for n in got if n.startswith("svc-")]) == services:
            break
        time.sleep(0.05)
    took = time.monotonic() - t0
    for n in (names[0], names[len(names) // 2], names[-1]):
        rows = reader.call("GET", f"/v1/health/service/{n}?peer=dc1").json()
        assert len(rows) == instances, (n, len(rows))
    return fill, took


def measure(samples: int = 200, services: int = 1000, instances: int = 5) -> dict[str, float]:
    base = tempfile.mkdtemp(prefix="peerplane-bench-replication-")
    dc1 = LocalCluster(f"{base}/dc1", datacenter="dc1", extra_args=STREAM_ARGS).start()
    dc2 = LocalCluster(f"{base}/dc2", datacenter="dc2", extra_args=STREAM_ARGS).start()
    try:
        assert establish(dc2, "dc1", token(dc1, "dc2")).status == 200
        wait_state(dc2, "dc1", "ACTIVE")
        lat = latency(dc1, dc2, samples)
        fill, sync = initial_sync(dc1, dc2, services, instances)
    finally:
        dc2.stop()
        dc1.stop()
    return {"p50": statistics.median(lat), "p99": pct(lat, 0.99), "max": max(lat),
            "n": len(lat), "fill": fill, "sync": sync, "services": services,
            "instances": instances}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    r = measure(args.samples, args.services, args.instances)
    print(f"export -> visible on the peer (n={r['n']:.0f}): p50 {r['p50'] * 1000:.1f} ms   "
          f"p99 {r['p99'] * 1000:.1f} ms   max {r['max'] * 1000:.1f} ms")
    print(f"initial sync of {args.services} services x {args.instances} instances: "
          f"{r['sync']:.2f} s   (registering them on dc1 took {r['fill']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time from `POST /v1/peering/establish` to ACTIVE on both sides, and back to ACTIVE after a
leader of either cluster is killed with SIGKILL.

Two real three-server clusters on 127.0.0.1 (dc1 accepts, dc2 dials). Each side's state is
polled from its leader every few ms in its own thread; "ACTIVE" on the dialer means the stream
is up and the state written through Raft, on the acceptor that the Open was accepted and
written. Failover: the time from the SIGKILL until the new leader of the killed cluster serves
ACTIVE with a live stream status (LastHeartbeat set) and the other side reads ACTIVE too.

    python bench/establish.py [--runs 20] [--failovers 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time

from _cluster import LocalCluster, machine

from lab.peering import STREAM_ARGS, peering, token

POLL = 0.01


def until(fn, timeout: float = 60.0) -> float:
    """monotonic() at which fn() was first seen true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if fn():
                return time.monotonic()
        except (OSError, AssertionError, KeyError, ValueError):
            pass
        time.sleep(POLL)
    raise SystemExit("timed out waiting for a peering state")


def active_on(agent, name: str, need_stream: bool = False) -> bool:
    rec = peering(agent, name)
    return bool(rec and rec["State"] == "ACTIVE"
                and (not need_stream or rec["StreamStatus"]["LastHeartbeat"]))


def blocking_until_active(agent, name: str, timeout: float = 60.0) -> float:
    """monotonic() at which the leader answered ACTIVE, watching with blocking queries (the
    state is written through Raft, so each change wakes the query; no polling load)."""
    deadline = time.monotonic() + timeout
    index = 0
    while time.monotonic() < deadline:
        reply = agent.call("GET", f"/v1/peering/{name}?index={index}&wait=5s", timeout=15)
        now = time.monotonic()
        if reply.status == 200 and reply.json()["State"] == "ACTIVE":
            return now
        index = int(reply.headers.get("X-Consul-Index", index))
    raise SystemExit("timed out waiting for ACTIVE")


def watch_both(dc1, dc2, name: str, need_stream: bool = False) -> tuple[float, float]:
    """monotonic() when each side first read ACTIVE (watched in parallel)."""
    out: dict[str, float] = {}
    l1, l2 = dc1.leader(), dc2.leader()

    def run(key: str, agent) -> None:
        if need_stream:
            out[key] = until(lambda: active_on(agent, name, need_stream))
        else:
            out[key] = blocking_until_active(agent, name)

    threads = [threading.Thread(target=run, args=("dc1", l1)),
               threading.Thread(target=run, args=("dc2", l2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out["dc1"], out["dc2"]


def summary(label: str, xs: list[float]) -> None:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    print(f"  {label:34s} median {statistics.median(xs) * 1000:8.1f} ms   "
          f"p90 {p90 * 1000:8.1f} ms   max {xs[-1] * 1000:8.1f} ms   (n={len(xs)})")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--failovers", type=int, default=3, help="SIGKILLs per side")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="peerplane-bench-establish-")
    print(f"machine: {machine()}")
    print(f"stream flags: {' '.join(STREAM_ARGS)}")
    dc1 = LocalCluster(f"{base}/dc1", datacenter="dc1", extra_args=STREAM_ARGS).start()
    dc2 = LocalCluster(f"{base}/dc2", datacenter="dc2", extra_args=STREAM_ARGS).start()
    try:
        call_t, dialer_t, acceptor_t, both_t = [], [], [], []
        for i in range(args.runs):
            name = f"bench-{i}"
            tok = token(dc1, name)
            leader2 = dc2.leader()
            holder: dict[str, tuple[float, float]] = {}

            def watch(n: str = name, h: dict = holder) -> None:
                h["t"] = watch_both(dc1, dc2, n)

            watcher = threading.Thread(target=watch)
            watcher.start()
            time.sleep(0.05)  # the blocking queries are parked before establish starts
            t0 = time.monotonic()
            reply = leader2.call("POST", "/v1/peering/establish",
                                 {"PeerName": name, "PeeringToken": tok})
            t_call = time.monotonic()
            assert reply.status == 200, reply.text
            watcher.join()
            a1, a2 = holder["t"]
            call_t.append(t_call - t0)
            acceptor_t.append(a1 - t0)
            dialer_t.append(a2 - t0)
            both_t.append(max(a1, a2) - t0)
        print(f"establish -> ACTIVE ({args.runs} peerings, timed from the establish request):")
        summary("establish call (exchange incl.)", call_t)
        summary("dialer (dc2) ACTIVE", dialer_t)
        summary("acceptor (dc1) ACTIVE", acceptor_t)
        summary("both ACTIVE", both_t)

        name = "bench-0"
        for side, cluster in (("acceptor", dc1), ("dialer", dc2)):
            times = []
            for _ in range(args.failovers):
                victim = cluster.leader()
                victim.kill()
                t0 = time.monotonic()
                new = cluster.leader([a for a in cluster.agents if a.running])
                t_elect = time.monotonic() - t0
                t_new = until(lambda a=new: active_on(a, name, need_stream=True))
                a1, a2 = watch_both(dc1, dc2, name, need_stream=True)
                times.append(max(t_new, a1, a2) - t0)
                print(f"  {side} leader SIGKILL: leader known after {t_elect * 1000:.0f} ms, "
                      f"ACTIVE on both sides after {times[-1] * 1000:.0f} ms")
                victim.start()
                victim.wait_ready()
                cluster.wait_converged()
            summary(f"{side} failover -> ACTIVE", times)
    finally:
        dc1.stop()
        dc2.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

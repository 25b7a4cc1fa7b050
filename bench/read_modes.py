"""Reads/s and p50/p99 for each read mode, and writes/s in both durability modes.

    .venv/bin/python bench/read_modes.py [--duration 10] [--connections 32] [--smoke]

wrk drives the load, one thread per server, so reads are spread over all three nodes; default
and ?consistent reads arriving at followers are served there after the leader's read index
(?consistent with the barrier mechanism is forwarded to the leader), ?stale reads are served
where they land. Consistent reads are measured with both mechanisms (replicated no-op
barrier, ReadIndex on PySyncObj's internals), each on a cluster of its own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from _cluster import LocalCluster, machine, wrk

SEED = 100


def run(
    args: argparse.Namespace, consistent_reads: str, durability: str = "fsync"
) -> list[tuple[str, object]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(
        tmp, extra_args=["--consistent-reads", consistent_reads, "--durability", durability]
    ) as c:
        nodes = [a.http_addr for a in c.agents]
        if durability == "page-cache":
            return [("writes, --durability page-cache",
                     wrk("token.lua", nodes, "/v1/peering/token", args.duration,
                         args.connections))]
        for i in range(SEED):
            c.agents[i % 3].call("POST", "/v1/peering/token", {"PeerName": f"seed-{i}"})
        if consistent_reads == "barrier" and not args.consistent_only:
            for label, query in (("default read", ""), ("stale read", "?stale")):
                rows.append((label, wrk("spread.lua", nodes, f"/v1/peering/seed-7{query}",
                                        args.duration, args.connections)))
            rows.append(("default list (100)", wrk("spread.lua", nodes, "/v1/peerings",
                                                   args.duration, args.connections)))
            # last: it adds thousands of peerings
            rows.append(("writes, --durability fsync",
                         wrk("token.lua", nodes, "/v1/peering/token", args.duration,
                             args.connections)))
        rows.append((f"consistent read ({consistent_reads})",
                     wrk("spread.lua", nodes, "/v1/peering/seed-7?consistent", args.duration,
                         args.connections)))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--smoke", action="store_true", help="one-second runs, for CI")
    p.add_argument("--consistent-only", action="store_true",
                   help="only the two ?consistent rows (barrier vs ReadIndex)")
    args = p.parse_args()
    if args.smoke:
        args.duration = 1.0
    rows = run(args, "barrier") + run(args, "readindex")
    if not args.consistent_only:
        rows += run(args, "barrier", "page-cache")
    print(f"\npeerplane read modes - 3 servers + wrk on one machine ({machine()})")
    print(f"{args.connections} connections, {args.duration:g} s per row\n")
    print(f"| {'workload':<36} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
    for label, r in rows:
        print(f"| {label:<36} | {r.rate:>8.0f} | {r.p50_ms:>7.2f} | {r.p99_ms:>7.2f} | "
              f"{r.errors:>6} |")
    failed = sum(r.errors for _, r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

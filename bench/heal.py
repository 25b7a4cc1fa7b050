"""How long after a partition heals does the cut-off server have the majority's writes?

Runs a real three-server cluster in network namespaces (root, `ip`, `iptables`). Each round
cuts off the server the other two dial (PySyncObj connects from the higher address to the
lower, so theirs are the connects a partition leaves pending: the cut drops their SYNs),
writes a peering on the majority side while the cut lasts, heals, and times until the cut-off
server answers a ?stale read of that peering. A connect pending when the cut heals waits for
the kernel's next SYN retry (1, 3, 7, 15, 31, 63 s after the dial) unless peerplane abandons
it first (CONNECT_TIMEOUT in cluster/raft_wall/syncobj.py).

    sudo .venv/bin/python bench/heal.py --rounds 3 --cut 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from lab.cluster import eventually
from lab.netns import NetnsCluster, missing_tools


def one_round(c: NetnsCluster, n: int, cut_s: float) -> float:
    dialled = min(c.agents, key=lambda a: a.raft_addr)  # everyone else dials this one
    rest = [a for a in c.agents if a is not dialled]
    c.isolate(dialled)
    time.sleep(cut_s)
    name = f"heal-{n}-{int(time.time())}"

    def written() -> bool:
        for a in rest:
            reply = a.call("POST", "/v1/peering/token", {"PeerName": name}, timeout=5)
            if reply.status == 200:
                return True
        return False

    eventually(written, timeout=30, interval=0.2)
    c.heal()
    healed = time.monotonic()

    def caught_up() -> bool:
        try:
            return dialled.call("GET", f"/v1/peering/{name}?stale", timeout=1).status == 200
        except OSError:
            return False

    eventually(caught_up, timeout=180, interval=0.05)
    took = time.monotonic() - healed
    print(f"round {n}: {dialled.name} cut off {cut_s:.0f} s, had the majority's write "
          f"{took:.2f} s after the heal", flush=True)
    time.sleep(2.0)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cut", type=float, default=20.0, help="seconds each cut lasts")
    args = ap.parse_args()
    if problem := missing_tools():
        print(problem, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, NetnsCluster(tmp) as c:
        took = [one_round(c, i + 1, args.cut) for i in range(args.rounds)]
    print(f"median: {statistics.median(took):.2f} s (min {min(took):.2f}, max {max(took):.2f}, "
          f"n={len(took)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

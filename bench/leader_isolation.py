"""How long after the leader is cut off does the majority side acknowledge writes again?

Runs a real three-server cluster in network namespaces (root, `ip`, `iptables`), keeps four
writers busy on each of the two servers that will stay in the majority (each write creates a
peering; a client gives up after 6 s like the lab's, and retries at once on any error), cuts
the leader off, and records per round: when a quorum-side server first named no leader (the
election started), when the new leader was named, and when the first write *sent to the
majority side* was acknowledged by the new leader. Then it heals, waits for calm, and repeats
with the current leader. Prints one line per round and the medians.

    sudo .venv/bin/python bench/leader_isolation.py --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time

from lab.cluster import Agent, eventually
from lab.netns import NetnsCluster, missing_tools

WRITERS_PER_SERVER = 4
CLIENT_TIMEOUT = 6.0


class Writers:
    """Writers pinned to servers; `acks` holds (sent, acked, serving leader) of every success."""

    def __init__(self) -> None:
        self.acks: list[tuple[float, float, str]] = []
        self.targets: list[Agent] = []
        self._stop = threading.Event()
        self._seq = 0
        self._lock = threading.Lock()

    def start(self, targets: list[Agent]) -> None:
        self.targets = targets
        for t in targets:
            for _ in range(WRITERS_PER_SERVER):
                threading.Thread(target=self._run, args=(t,), daemon=True).start()

    def _name(self) -> str:
        with self._lock:
            self._seq += 1
            return f"iso-{self._seq}"

    def _run(self, agent: Agent) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                reply = agent.call("POST", "/v1/peering/token", {"PeerName": self._name()},
                                   timeout=CLIENT_TIMEOUT)
            except OSError:
                continue
            if reply.status == 200:
                served = reply.headers.get("X-Peerplane-Served-By", "")
                self.acks.append((sent, time.monotonic(), served))
            else:
                time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()


def leader_view(agent: Agent) -> str:
    try:
        return agent.call("GET", "/v1/status/leader", timeout=0.5).json()
    except (OSError, ValueError):
        return "?"


def one_round(c: NetnsCluster, n: int) -> dict[str, float | None]:
    old = c.leader()
    rest = [a for a in c.agents if a is not old]
    w = Writers()
    w.start(rest)
    time.sleep(1.5)  # writes flowing
    c.isolate(old)
    cut = time.monotonic()
    lost = new = None
    while time.monotonic() - cut < 15 and new is None:
        views = [leader_view(a) for a in rest]
        now = time.monotonic() - cut
        if lost is None and any(v in ("", None) for v in views):
            lost = now
        if views[0] == views[1] and views[0] not in ("", "?", old.raft_addr):
            new = now
        time.sleep(0.02)
    def by_new_leader() -> list[float]:
        return [a for _, a, by in w.acks if a > cut and by != old.name]

    eventually(by_new_leader, timeout=15, interval=0.05)
    time.sleep(0.5)
    first = min(by_new_leader(), default=None)
    w.stop()
    c.heal()
    eventually(lambda: leader_view(old) not in ("", "?", old.raft_addr), timeout=20)
    time.sleep(2.0)  # let the healed server settle before the next cut
    row = {"round": n, "election_started": lost, "new_leader": new,
           "first_ack": None if first is None else first - cut}
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"+{v:.2f} s"

    print(f"round {n:2d}: election started {fmt(lost)}, new leader {fmt(new)}, first "
          f"acknowledged write {fmt(row['first_ack'])}", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--logs", action="store_true", help="print the servers' Raft log lines")
    args = ap.parse_args()
    if problem := missing_tools():
        print(problem, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, NetnsCluster(tmp) as c:
        rows = [one_round(c, i + 1) for i in range(args.rounds)]
        if args.logs:
            for a in c.agents:
                print(a.name, "".join(line for line in a.log_lines if "raft" in line))
    for key in ("election_started", "new_leader", "first_ack"):
        vals = [r[key] for r in rows if r[key] is not None]
        print(f"median {key}: {statistics.median(vals):.2f} s  (min {min(vals):.2f}, "
              f"max {max(vals):.2f}, n={len(vals)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

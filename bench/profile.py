"""Where does the leader spend its time under load? py-spy on the leader while wrk drives it.

    .venv/bin/python bench/profile.py [--load write|default|consistent|stale|list]
                                      [--duration 10] [--connections 32] [--top 25]
                                      [--peerings 100] [--raw PATH]

Starts a three-server cluster (lab.cluster), seeds --peerings peerings, runs wrk against all
three servers (one thread each, like bench/compare.py) and `py-spy record` on the leader for
the same time, then prints CPU time per request of each server (the measure that survives a
busy machine best), each server's mean time from submitting a command to its result and per
request (its /v1/agent/metrics timers: a follower's proposals travel to the leader and back)
and the functions with the most samples: "self" (the frame on top of
the stack) and "total" (anywhere on the stack), as a share of all samples, per thread kind
(event loop vs PySyncObj's tick thread). Needs wrk and py-spy (`pip install py-spy`); py-spy
needs ptrace permission (root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading

from _cluster import LocalCluster, cpu_seconds, cpu_split, wrk
from compare import fill

from lab.cluster import Agent

LOADS = {
    "write": ("token.lua", "/v1/peering/token"),
    "default": ("spread.lua", "/v1/peering/seed-7"),
    "consistent": ("spread.lua", "/v1/peering/seed-7?consistent"),
    "stale": ("spread.lua", "/v1/peering/seed-7?stale"),
    "list": ("spread.lua", "/v1/peerings"),
}


def machine_cpu() -> dict[str, int]:
    """Whole-machine CPU ticks from /proc/stat, by kind."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return {"user": v[0] + v[1], "system": v[2], "idle": v[3], "iowait": v[4],
            "irq+softirq": v[5] + v[6]}


# Timers each server keeps (/v1/agent/metrics): how long a proposal took from submit to its
# result on this server, and how long this server took to answer a request.
TIMERS = {"submit to result": "peerplane.raft.apply.duration_seconds",
          "request": "peerplane.http.request.duration_seconds"}


def timer_totals(agent: Agent) -> dict[str, tuple[int, float]]:
    """(count, seconds) of each of TIMERS on this server, summed over its label sets."""
    samples = json.loads(agent.call("GET", "/v1/agent/metrics").body)["Samples"]
    out = {}
    for what, name in TIMERS.items():
        rows = [x for x in samples if x["Name"] == name]
        out[what] = (sum(x["Count"] for x in rows), sum(x["Sum"] for x in rows))
    return out


def timer_means(before: dict, after: dict) -> dict[str, float | None]:
    """Mean ms of each timer between two `timer_totals`; None when nothing was timed."""
    out: dict[str, float | None] = {}
    for what in TIMERS:
        n = after[what][0] - before[what][0]
        out[what] = 1000 * (after[what][1] - before[what][1]) / n if n > 0 else None
    return out


def py_spy() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    found = here if os.path.exists(here) else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is required: .venv/bin/pip install py-spy")
    return found


def summarize(collapsed: str, top: int) -> list[str]:
    """Collapsed stacks ("thread;frame;frame N" per line, outermost first) -> top tables."""
    self_n: collections.Counter[str] = collections.Counter()
    total_n: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    all_n = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        all_n += n
        threads[frames[0]] += n
        self_n[frames[-1]] += n
        for f in set(frames[1:]):
            total_n[f] += n
    if not all_n:
        return ["no samples"]
    out = [f"{all_n} samples", "", "threads:"]
    out += [f"  {100 * n / all_n:5.1f}%  {t}" for t, n in threads.most_common(8)]
    out += ["", f"top {top} by self:"]
    out += [f"  {100 * n / all_n:5.1f}%  {f}" for f, n in self_n.most_common(top)]
    out += ["", f"top {top} by total:"]
    out += [f"  {100 * n / all_n:5.1f}%  {f}" for f, n in total_n.most_common(top)]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--load", choices=sorted(LOADS), default="write")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--peerings", type=int, default=100)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--raw", help="also write the collapsed stacks here")
    p.add_argument("--gil", action="store_true",
                   help="only samples holding the GIL (CPU spent in Python, not waits)")
    p.add_argument("--no-spy", action="store_true",
                   help="only the load and CPU per request (py-spy slows the leader a little)")
    p.add_argument("--spy-on", choices=("leader", "follower"), default="leader",
                   help="which server py-spy records")
    p.add_argument("--agent-arg", action="append", default=[],
                   help="extra argument for every agent (repeatable)")
    args = p.parse_args()
    spy = None if args.no_spy else py_spy()  # --no-spy runs where py-spy is not installed
    script, path = LOADS[args.load]
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp, LocalCluster(
        tmp, extra_args=args.agent_arg
    ) as c:
        nodes = [a.http_addr for a in c.agents]
        for i in range(min(args.peerings, 100)):
            c.agents[i % 3].call("POST", "/v1/peering/token", {"PeerName": f"seed-{i}"})
        if args.peerings > 100:
            fill(c, args.peerings - 100, timeout=600)
        leader = c.leader()
        spied = leader if args.spy_on == "leader" else next(a for a in c.agents if a is not leader)
        assert spied.proc is not None
        raw_path = args.raw or os.path.join(tmp, "stacks.txt")
        result: dict[str, object] = {}

        def load() -> None:
            result["wrk"] = wrk(script, nodes, path, args.duration, args.connections)

        pids = {a.name: a.proc.pid for a in c.agents if a.proc is not None}
        timers0 = {a.name: timer_totals(a) for a in c.agents}
        stat0, kids0 = machine_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        split0 = {name: cpu_split(pid) for name, pid in pids.items()}
        t = threading.Thread(target=load)
        t.start()
        if args.no_spy:
            t.join()
            open(raw_path, "w").close()
        else:
            assert spy is not None
            spy_cmd = [spy, "record", "--pid", str(spied.proc.pid), "--rate",
                       str(args.rate), "--duration", str(max(1, int(args.duration) - 1)),
                       "--format", "raw", "--threads", "--nonblocking", "--output", raw_path,
                       *(["--gil"] if args.gil else [])]
            subprocess.run(spy_cmd, check=True, capture_output=True)
            t.join()
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        means = {a.name: timer_means(timers0[a.name], timer_totals(a)) for a in c.agents}
        stat1, kids1 = machine_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN)
        sys_share = {name: (cpu_split(pid)[1] - split0[name][1]) / max(1e-9, cpu[name])
                     for name, pid in pids.items()}
        with open(raw_path) as f:
            collapsed = f.read()
    r = result["wrk"]
    print(f"load {args.load}: {r.rate:.0f}/s p50 {r.p50_ms:.1f} ms p99 {r.p99_ms:.1f} ms "
          f"errors {r.errors}; leader {leader.name}")
    per = {name: 1000 * s / max(1, r.requests) for name, s in cpu.items()}

    def label(name: str) -> str:
        return f"{name} (leader)" if name == leader.name else name

    print("CPU ms per request: " + ", ".join(
        f"{label(name)} {ms:.2f}" for name, ms in per.items())
        + f"; all servers {sum(per.values()):.2f}")
    # A follower's proposal goes to the leader and comes back with a later commit index: the
    # gap between the leader's and the followers' means is what forwarding adds.
    for what in TIMERS:
        print(f"{what}, mean ms: " + ", ".join(
            f"{label(name)} " + (f"{m[what]:.2f}" if m[what] is not None else "-")
            for name, m in means.items()))
    print("system (kernel) share of that CPU: " + ", ".join(
        f"{name} {100 * share:.0f}%" for name, share in sys_share.items()))
    # The whole machine over the run: what the servers used, what wrk (and py-spy) used, the
    # kernel's own threads and interrupts, and what was left idle.
    ticks = {k: stat1[k] - stat0[k] for k in stat0}
    wall = sum(ticks.values()) or 1
    kids = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    print("machine CPU over the run: " + ", ".join(
        f"{k} {100 * v / wall:.0f}%" for k, v in ticks.items()) + "; "
        f"wrk + py-spy {1000 * kids / max(1, r.requests):.2f} ms per request")
    print(f"py-spy on {spied.name}")
    print("\n".join(summarize(collapsed, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""peerplane vs etcd 3.4 vs raw PySyncObj, side by side, in one run on this machine.

    .venv/bin/python bench/compare.py [--duration 10] [--connections 32] [--failovers 10]
                                      [--peerings 10000] [--rounds 5] [--markdown PATH]
                                      [--only PARTS] [--smoke]

Everything runs on 127.0.0.1 and is stopped before the script exits:
- peerplane: three `peerplane agent` processes (lab.cluster LocalCluster), driven by wrk
  with one thread per server (bench/_cluster.py): writes are POST /v1/peering/token with unique
  names (and, beside them, PUT /v1/catalog/register of a unique node with a service); reads
  are GET /v1/peering/<name> in default, ?consistent and ?stale mode, spread over all
  three servers (followers serve them too, default/consistent after the leader's read index).
  Failover: SIGKILL the leader, time until the next write is acknowledged by a survivor
  (median). Establish -> ACTIVE comes from bench/establish.py. Scale: two fresh clusters,
  one with 100 peerings and one filled to --peerings; writes/s on each in interleaved rounds
  (the ratio of the medians is the flatness target); on the big one p50 of GET /v1/peerings
  on the leader, VmRSS of each server, and cold restart (SIGKILL all, start all, until a
  consistent list answers with every peering).
- etcd 3.4 (Debian etcd-server): three members, default settings, the same wrk threads and
  connections against the v3 JSON gateway: POST /v3/kv/put (unique keys), POST /v3/kv/range
  linearizable and serializable, spread over all members; failover the same way.
- raw PySyncObj (bench/raw_pysyncobj.py): three SyncObj processes configured like peerplane,
  the replicated call submitted on the leader through an asyncio bridge, no HTTP.
- floor: the same three processes with aiohttp in front (uvloop, no middleware), the same wrk
  writes to all three, each handler making the replicated call (a follower's goes to the
  leader the way peerplane's does) and answering a small JSON: what the two libraries cost
  without the application. Its writes run interleaved with peerplane's and etcd's.

peerplane's and etcd's write and read runs are interleaved (--rounds, default 5: both
clusters up, each round runs every load of both, back to back, and each row is the median of
the rounds; each cluster's write load first runs once, not counted), so a drift of the shared
host's speed hits both alike. Five rounds, not three: single runs of the same code on this
host spread by 20-30 % (one slow run in three moved a median).

The report ends with one line per target of the speed issue (met / MISSED).

--smoke (CI): one-second wrk runs, 3 failovers, 1,000 peerings, short raw runs; exits non-zero if
any part fails, so the scripts cannot rot. Numbers from a loaded machine are noise: compare
ratios from one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from _cluster import LocalCluster, Result, cpu_seconds, machine, wrk
from _etcd import EtcdCluster, b64
from raw_pysyncobj import RawCluster

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 100  # peerings seeded before the read runs
WARM_UP = 3  # seconds of each cluster's write load before the measured rounds


@dataclass
class Run:
    """Everything measured, keyed like "pp.write"; values are wrk Results, floats or text."""

    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)

    def part(self, name: str, fn: Callable[[], None]) -> None:
        print(f"== {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # one broken part must not hide the others' numbers
            traceback.print_exc()
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
        took = time.monotonic() - t0
        self.timings.append((name, took))
        print(f"== {name} done in {took:.1f} s", flush=True)

    def load(self, key: str, result: Result) -> Result:
        """Record a wrk run; a run with no answers or mostly errors fails its part."""
        self.values[key] = result
        print(f"   {key}: {result.rate:.0f}/s p50 {result.p50_ms:.1f} ms "
              f"p99 {result.p99_ms:.1f} ms errors {result.errors}", flush=True)
        if result.requests == 0 or result.errors * 2 > result.requests:
            raise RuntimeError(f"{key}: {result.requests} requests, {result.errors} errors")
        if result.errors:
            self.notes.append(f"{key}: {result.errors} of {result.requests} requests failed")
        return result


# ---------------------------------------------------------------- helpers


def first_ack(writers: list[Callable[[float], bool]], timeout: float,
              interval: float = 0.05, per_request: float = 2.0) -> float:
    """Every `interval`, start one request per writer (each in a thread of its own, with a
    `per_request` timeout) until one succeeds; monotonic() of the first success. A steady
    stream of fresh requests, as retrying clients send: a request parked in a dead leader's
    queue (etcd drops those proposals) cannot hide a later one that succeeds."""
    done = threading.Event()
    acks: list[float] = []
    threads: list[threading.Thread] = []
    deadline = time.monotonic() + timeout

    def attempt(write: Callable[[float], bool]) -> None:
        try:
            ok = write(per_request)
        except Exception:
            ok = False
        if ok:
            acks.append(time.monotonic())
            done.set()

    while not done.is_set() and time.monotonic() < deadline:
        for w in writers:
            t = threading.Thread(target=attempt, args=(w,), daemon=True)
            t.start()
            threads.append(t)
        done.wait(interval)
    for t in threads:  # every request ends within per_request: nothing outlives the round
        t.join(per_request + 5)
    if not acks:
        raise RuntimeError(f"no write acknowledged within {timeout}s of the kill")
    return min(acks)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _fill(addrs: list[str], names: list[str], concurrency: int,
                deadline: float) -> int:
    import aiohttp

    todo = list(reversed(names))
    created = 0
    t0 = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker(w: int) -> None:
            nonlocal created
            addr = addrs[w % len(addrs)]
            while todo and time.monotonic() < deadline:
                name = todo.pop()
                for _ in range(5):  # generate-token is idempotent per name: retry is safe
                    try:
                        async with s.post(f"http://{addr}/v1/peering/token",
                                          json={"PeerName": name}) as r:
                            await r.read()
                            if r.status == 200:
                                created += 1
                                if created % 2000 == 0:  # does the write rate hold as n grows?
                                    print(f"   {created} peerings after "
                                          f"{time.monotonic() - t0:.1f} s", flush=True)
                                break
                    except (aiohttp.ClientError, TimeoutError):
                        pass
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return created


def fill(cluster: LocalCluster, count: int, timeout: float, concurrency: int = 32,
         prefix: str = "scale") -> float:
    """Create `count` peerings (unique names, spread over all servers); seconds taken."""
    t0 = time.monotonic()
    names = [f"{prefix}-{i:06d}" for i in range(count)]
    addrs = [a.http_addr for a in cluster.agents]
    created = asyncio.run(_fill(addrs, names, concurrency, t0 + timeout))
    if created != count:
        raise RuntimeError(f"created {created} of {count} peerings within {timeout}s")
    return time.monotonic() - t0


def list_count(agent: Any, query: str = "", timeout: float = 30.0) -> int | None:
    reply = agent.call("GET", f"/v1/peerings{query}", timeout=timeout)
    return len(reply.json()) if reply.status == 200 else None


# ---------------------------------------------------------------- peerplane


def side_by_side(args: argparse.Namespace, run: Run, only: set[str]) -> None:
    """peerplane's and etcd's load runs, interleaved: both clusters up (the one not measured
    idles), each round runs every load once, peerplane and etcd back to back (which goes first
    alternates by round), and each row is the median of the rounds; each cluster's write load
    runs once first, not counted (a warm-up). The host's speed drifts
    (other tenants) by 10-20 % over minutes: with each system's runs minutes apart, one ratio
    measured the drift as much as the systems."""
    with contextlib.ExitStack() as stack:
        # each workload's runs, peerplane's and etcd's, back to back in a round
        pairs: dict[str, list[tuple[str, Callable[[], Result]]]] = {
            w: [] for w in ("write", "register", "default", "consistent", "stale")}
        # Each cluster's write load once before round 1, not counted: a cluster's first
        # seconds of writes grow its journal files and heap (one such first run measured
        # 1,301 writes/s against 1,927 and 1,906 in the next rounds).
        warm_ups: list[Callable[[], Result]] = []
        warm = min(WARM_UP, args.duration)
        if "peerplane" in only:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pp-"))
            c = stack.enter_context(LocalCluster(tmp))
            nodes = [a.http_addr for a in c.agents]
            for i in range(SEED):
                reply = c.agents[i % 3].call("POST", "/v1/peering/token",
                                             {"PeerName": f"seed-{i}"})
                if reply.status != 200:
                    raise RuntimeError(f"seeding: {reply.status} {reply.text}")
            register = {"PEERPLANE_BENCH_WRITE": "register"}
            for workload, key, script, path, env in (
                ("write", "pp.write", "token.lua", "/v1/peering/token", None),
                ("register", "pp.register", "token.lua", "/v1/catalog/register", register),
                ("default", "pp.read.default", "spread.lua", "/v1/peering/seed-7", None),
                ("consistent", "pp.read.consistent", "spread.lua",
                 "/v1/peering/seed-7?consistent", None),
                ("stale", "pp.read.stale", "spread.lua", "/v1/peering/seed-7?stale", None),
            ):
                load = term_watched(c, run, key, functools.partial(
                    wrk, script, nodes, path, args.duration, args.connections, env=env))
                if workload == "write":
                    load = cpu_counted(functools.partial(cpu_ms, c), run, key, load)
                    warm_ups.append(functools.partial(
                        wrk, script, nodes, path, warm, args.connections, env=env))
                pairs[workload].append((key, load))
        if "etcd" in only:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-etcd-"))
            e = stack.enter_context(EtcdCluster(tmp))
            enodes = e.client_addrs
            e.put(e.leader(), "bench/seed", "x" * 64)
            put = functools.partial(wrk, "etcd_put.lua", enodes, "/v3/kv/put")
            warm_ups.append(functools.partial(put, warm, args.connections))
            pairs["write"].append(("etcd.write", cpu_counted(
                functools.partial(procs_cpu_ms, e.procs), run, "etcd.write",
                functools.partial(put, args.duration, args.connections))))
            for workload, mode, serializable in (("default", "linearizable", False),
                                                 ("stale", "serializable", True)):
                body = json.dumps({"key": b64("bench/seed"), "serializable": serializable})
                pairs[workload].append((f"etcd.read.{mode}", functools.partial(
                    wrk, "post.lua", enodes, "/v3/kv/range", args.duration, args.connections,
                    env={"PEERPLANE_BENCH_BODY": body})))
        if "floor" in only:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-floor-"))
            f = stack.enter_context(RawCluster(tmp, http=True))
            for i in range(len(f.procs)):  # fsync before an entry counts, as peerplane does
                f.ask(i, {"cmd": "fsync", "on": True})
            token = functools.partial(wrk, "token.lua", f.http_addrs, "/v1/peering/token")
            warm_ups.append(functools.partial(token, warm, args.connections))
            pairs["write"].append(("floor.write", cpu_counted(
                functools.partial(procs_cpu_ms, f.procs), run, "floor.write",
                functools.partial(token, args.duration, args.connections))))
        for warm_up in warm_ups:
            warm_up()
        rounds: dict[str, list[Result]] = collections.defaultdict(list)
        for r in range(args.rounds):
            print(f"   round {r + 1} of {args.rounds}", flush=True)
            for pair in pairs.values():
                for key, load in (pair if r % 2 == 0 else pair[::-1]):
                    rounds[key].append(run.load(f"{key} (round {r + 1})", load()))
        for key, results in rounds.items():
            run.values[f"{key}.rounds"] = results
            run.load(key, median_result(results))


def raft_term(c: LocalCluster) -> int | None:
    """The highest Raft term any server reports (GET /v1/agent/metrics); None if none answers."""
    terms = []
    for a in c.agents:
        try:
            gauges = a.call("GET", "/v1/agent/metrics", timeout=5).json().get("Gauges") or []
        except (OSError, ValueError):
            continue
        terms += [int(g["Value"]) for g in gauges if g.get("Name") == "peerplane.raft.term"]
    return max(terms, default=None)


def term_watched(c: LocalCluster, run: Run, key: str,
                 load: Callable[[], Result]) -> Callable[[], Result]:
    """`load`, noting when the Raft term moved during it (an election: a stall or the errors
    of a run are then a leader change, not the load)."""
    def watched() -> Result:
        before = raft_term(c)
        result = load()
        after = raft_term(c)
        if before is not None and after is not None and after != before:
            run.notes.append(f"{key}: Raft term {before} -> {after} during the run "
                             f"(a leader election)")
        return result
    return watched


def cpu_counted(cpu: Callable[[], float], run: Run, key: str,
                load: Callable[[], Result]) -> Callable[[], Result]:
    """`load`, adding the CPU ms its cluster used during it (`cpu`: the cluster's so far), and
    its requests, to run.values[key + ".cpu"] ([CPU ms, requests] over all rounds): how much
    work a write costs, apart from how fast the host let it go."""
    def counted() -> Result:
        before = cpu()
        result = load()
        total = run.values.setdefault(f"{key}.cpu", [0.0, 0])
        total[0] += cpu() - before
        total[1] += result.requests
        return result
    return counted


def median_result(results: list[Result]) -> Result:
    """Rate, p50 and p99 each the median of the rounds'; errors summed."""
    seconds = sum(r.seconds for r in results)
    rate = statistics.median(r.rate for r in results)
    return Result(round(rate * seconds), seconds, statistics.median(r.p50_ms for r in results),
                  statistics.median(r.p99_ms for r in results), sum(r.errors for r in results))


def peerplane_failover(args: argparse.Namespace, run: Run) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pp-fo-") as tmp, LocalCluster(tmp) as c:
        times = []
        for k in range(args.failovers):
            victim = c.leader()
            survivors = [a for a in c.agents if a is not victim]

            def writer(agent: Any, k: int = k) -> Callable[[float], bool]:
                seq = iter(range(10**6))
                return lambda t: agent.call(
                    "POST", "/v1/peering/token",
                    {"PeerName": f"failover-{k}-{agent.name}-{next(seq)}"}, timeout=t,
                ).status == 200

            t0 = time.monotonic()
            victim.kill()
            t_ack = first_ack([writer(a) for a in survivors], timeout=30)
            times.append(t_ack - t0)
            print(f"   failover {k + 1}: {times[-1] * 1000:.0f} ms", flush=True)
            victim.start()
            victim.wait_ready()
            c.wait_converged()
        run.values["pp.failover"] = times


def peerplane_page_cache(args: argparse.Namespace, run: Run) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pp-pc-") as tmp, LocalCluster(
        tmp, extra_args=["--durability", "page-cache"]
    ) as c:
        nodes = [a.http_addr for a in c.agents]
        run.load("pp.write.pagecache", wrk("token.lua", nodes, "/v1/peering/token",
                                           args.duration, args.connections))


def procs_cpu_ms(procs: Iterable[subprocess.Popen[Any] | None]) -> float:
    """CPU ms these processes have used so far, summed (None: a member not running)."""
    return 1000 * sum(cpu_seconds(p.pid) for p in procs if p is not None)


def cpu_ms(c: LocalCluster) -> float:
    """CPU ms the cluster's servers have used so far, summed."""
    return procs_cpu_ms(a.proc for a in c.agents)


def peerplane_scale(args: argparse.Namespace, run: Run) -> None:
    """Two clusters, one with SEED peerings and one filled to `n`: writes/s on each in
    interleaved rounds (both up, which goes first alternating; the median of the rounds - the
    ratio is the flatness - and CPU per write over all rounds); then on the big one the list
    p50, RSS, and a cold restart. The write runs generate new tokens for the SEED peerings
    both clusters have, so the numbers of peerings stay SEED and `n`."""
    n = args.peerings
    with contextlib.ExitStack() as stack:
        small, big = (stack.enter_context(LocalCluster(stack.enter_context(
            tempfile.TemporaryDirectory(prefix=f"bench-pp-scale-{size}-"))))
            for size in ("small", "big"))
        for c in (small, big):
            fill(c, SEED, timeout=args.fill_timeout, prefix="small")
        have = list_count(big.leader(), "?consistent") or 0
        took = fill(big, max(0, n - have), timeout=args.fill_timeout)
        run.values["pp.fill"] = (n - have, took)
        print(f"   created {n - have} more peerings in {took:.1f} s", flush=True)
        if have > n:
            run.notes.append(f"the scale cluster had {have} peerings before the fill (> {n})")
        pool = {"PEERPLANE_BENCH_POOL": str(SEED)}  # new tokens for the SEED peerings
        results: dict[str, list[Result]] = {"small": [], "n": []}
        for r in range(args.rounds):
            order = (("small", small), ("n", big))
            for key, c in (order if r % 2 == 0 else order[::-1]):
                name = f"pp.write.{key} (round {r + 1})"
                load = cpu_counted(functools.partial(cpu_ms, c), run, f"pp.write.{key}",
                                   term_watched(c, run, name, functools.partial(
                                       wrk, "token.lua", [a.http_addr for a in c.agents],
                                       "/v1/peering/token", args.duration, args.connections,
                                       env=pool)))
                results[key].append(run.load(name, load()))
        for key, got in results.items():
            run.values[f"pp.write.{key}.rounds"] = got
            run.load(f"pp.write.{key}", median_result(got))
            spent, requests = run.values[f"pp.write.{key}.cpu"]
            run.values[f"pp.cpu.{key}"] = spent / max(1, requests)
        c = big
        leader = c.leader()
        got_n = list_count(leader, "?consistent")
        if got_n != max(n, have):
            raise RuntimeError(f"consistent list has {got_n} peerings, expected {max(n, have)}")
        samples = []
        deadline = time.monotonic() + 60
        while len(samples) < args.list_samples and time.monotonic() < deadline:
            t0 = time.monotonic()
            reply = leader.call("GET", "/v1/peerings", timeout=30)
            samples.append(time.monotonic() - t0)
            if reply.status != 200:
                raise RuntimeError(f"list: {reply.status} {reply.text[:200]}")
        run.values["pp.list"] = samples
        run.values["pp.rss"] = [rss_mb(a.proc.pid) for a in c.agents if a.proc is not None]
        n = list_count(c.leader(), "?consistent") or 0
        run.values["pp.restart.n"] = n
        # cold restart: SIGKILL everything, start everything, until a consistent list is whole
        for a in c.agents:
            a.kill()
        t0 = time.monotonic()
        for a in c.agents:
            a.start()
        deadline = t0 + args.restart_timeout
        seen = None
        while time.monotonic() < deadline:
            for a in c.agents:
                try:
                    seen = list_count(a, "?consistent", timeout=5)
                except OSError:
                    seen = None
                if seen == n:
                    break
            if seen == n:
                break
            time.sleep(0.02)
        if seen != n:
            raise RuntimeError(f"no whole consistent list within {args.restart_timeout}s "
                               f"of a cold restart (last: {seen})")
        run.values["pp.restart"] = time.monotonic() - t0


ESTABLISH_RE = re.compile(r"both ACTIVE\s+median\s+([\d.]+) ms")


def peerplane_establish(args: argparse.Namespace, run: Run) -> None:
    """Use establish.py's `measure(runs) -> list[seconds]` if it has one; else run its CLI
    and read the "both ACTIVE" median it prints."""
    path = os.path.join(HERE, "establish.py")
    if not os.path.exists(path):
        run.values["pp.establish"] = "n/a"
        run.notes.append("establish -> ACTIVE: n/a (bench/establish.py does not exist)")
        return
    import establish

    measure = getattr(establish, "measure", None)
    if callable(measure):
        xs = list(measure(args.establish_runs))
        run.values["pp.establish"] = statistics.median(xs) * 1000
        run.values["pp.establish.n"] = len(xs)
        return
    # establish.py needs >= 1 failover per side to finish; its failover numbers are its own.
    proc = subprocess.run(
        [sys.executable, path, "--runs", str(args.establish_runs), "--failovers", "1"],
        capture_output=True, text=True, timeout=args.establish_timeout,
    )
    m = ESTABLISH_RE.search(proc.stdout)
    if proc.returncode != 0 or not m:
        run.values["pp.establish"] = "n/a"
        raise RuntimeError(f"bench/establish.py exited {proc.returncode} without a 'both "
                           f"ACTIVE' median:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    run.values["pp.establish"] = float(m.group(1))
    run.values["pp.establish.n"] = args.establish_runs
    run.notes.append("establish -> ACTIVE: median of 'both ACTIVE' from bench/establish.py "
                     f"--runs {args.establish_runs} (two 3-server clusters, fast stream timings)")


def peerplane_replication(args: argparse.Namespace, run: Run) -> None:
    """bench/replication.py: export -> visible on the peer, and the initial sync."""
    import replication

    run.values["pp.repl"] = replication.measure(args.repl_samples, args.repl_services, 5)


# ---------------------------------------------------------------- etcd


def etcd_failover(args: argparse.Namespace, run: Run) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-etcd-fo-") as tmp, EtcdCluster(tmp) as e:
        nodes = e.client_addrs
        times = []
        for k in range(args.failovers):
            victim = e.leader()
            survivors = [i for i in range(len(nodes)) if i != victim]

            def writer(i: int, k: int = k) -> Callable[[float], bool]:
                seq = iter(range(10**6))
                return lambda t: bool(e.put(i, f"failover/{k}/{i}/{next(seq)}", "x", t))

            t0 = time.monotonic()
            e.kill(victim)
            t_ack = first_ack([writer(i) for i in survivors], timeout=30)
            times.append(t_ack - t0)
            print(f"   failover {k + 1}: {times[-1] * 1000:.0f} ms", flush=True)
            e.start_member(victim)
            e.leader()  # every member (the restarted one too) answers and agrees
        run.values["etcd.failover"] = times


# ---------------------------------------------------------------- raw PySyncObj


def raw(args: argparse.Namespace, run: Run) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp, RawCluster(tmp) as c:
        for key, inflight, fsync in (("raw.write", args.connections, True),
                                     ("raw.write.pagecache", args.connections, False),
                                     ("raw.write.1000", 1000, False)):
            r = c.bench(inflight, args.duration, fsync)
            res = Result(r["calls"], r["seconds"], r["p50_ms"], r["p99_ms"], r["errors"])
            run.load(key, res)


# ---------------------------------------------------------------- the table


def _num(v: float | None, kind: str) -> str:
    if v is None:
        return "—"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "s":
        return f"{v:.2f}"
    return f"{v:,.1f}" if v >= 10 else f"{v:.2f}"


def table(run: Run, args: argparse.Namespace) -> list[str]:
    v = run.values

    def res(key: str, what: str) -> float | None:
        r = v.get(key)
        if not isinstance(r, Result):
            return None
        return {"rate": r.rate, "p50": r.p50_ms, "p99": r.p99_ms}[what]

    def med_ms(key: str) -> float | None:
        xs = v.get(key)
        return statistics.median(xs) * 1000 if isinstance(xs, list) and xs else None

    rows: list[tuple[str, str, float | None, float | None, float | None, str | None]] = []

    def triple(name: str, detail: str, pp: str, et: str | None, rw: str | None) -> None:
        for what, label, kind in ((("rate", f"{name}/s {detail}", "rate"),
                                   ("p50", f"{name} p50 ms", "ms"),
                                   ("p99", f"{name} p99 ms", "ms"))):
            rows.append((label, kind, res(pp, what), res(et, what) if et else None,
                         res(rw, what) if rw else None, None))

    c = args.connections
    triple("writes", f"(fsync; {c} conns / in flight)", "pp.write", "etcd.write", "raw.write")
    if isinstance(v.get("floor.write"), Result):  # the raw column: raw PySyncObj behind aiohttp
        triple("writes", f"(fsync; {c} conns; raw: behind aiohttp, no app)", "pp.write",
               "etcd.write", "floor.write")
    triple("catalog registers", f"(fsync; {c} conns; a new node + service each)",
           "pp.register", "etcd.write", None)
    n = args.peerings
    small, at_n = res("pp.write.small", "rate"), res("pp.write.n", "rate")
    rows.append((f"writes/s with {SEED} peerings (a cluster of their own)", "rate", small, None,
                 None, None))
    rows.append((f"writes/s with {n:,} peerings (another cluster)", "rate", at_n, None, None,
                 f"{at_n / small:.2f}× with {SEED}" if at_n and small else None))
    triple("page-cache writes", f"(no fsync; {c} conns / in flight)", "pp.write.pagecache",
           None, "raw.write.pagecache")
    triple("default reads", "(etcd: linearizable)", "pp.read.default",
           "etcd.read.linearizable", None)
    triple("consistent reads", "(etcd: linearizable)", "pp.read.consistent",
           "etcd.read.linearizable", None)
    triple("stale reads", "(etcd: serializable)", "pp.read.stale",
           "etcd.read.serializable", None)
    fo = v.get("pp.failover") or []
    rows.append((f"failover ms, median of {len(fo)} (SIGKILL leader -> next ack)", "ms",
                 med_ms("pp.failover"), med_ms("etcd.failover"), None, None))
    est = v.get("pp.establish")
    rows.append(("establish -> ACTIVE ms, median", "ms",
                 est if isinstance(est, float) else None, None, None,
                 est if isinstance(est, str) else None))
    repl = v.get("pp.repl") or {}
    for label, key, kind, scale in (
        (f"export -> visible on the peer p50 ms (n={repl.get('n', 0):.0f})", "p50", "ms", 1000),
        ("export -> visible on the peer p99 ms", "p99", "ms", 1000),
        (f"initial sync s, {repl.get('services', 0):,.0f} services x 5 instances", "sync",
         "s", 1),
    ):
        rows.append((label, kind, repl[key] * scale if key in repl else None, None, None, None))
    rows.append((f"list p50 ms at {n:,} peerings", "ms", med_ms("pp.list"), None, None, None))
    rss = v.get("pp.rss")
    rows.append((f"RSS MB per node at {n:,} peerings (max)", "ms",
                 max(rss) if rss else None, None, None,
                 " / ".join(f"{x:.0f}" for x in rss) if rss else None))
    rows.append((f"cold restart s at {v.get('pp.restart.n') or n:,} peerings", "s",
                 v.get("pp.restart"), None, None, None))
    raw1000 = v.get("raw.write.1000")
    raw_text = (f"{raw1000.rate:,.0f}/s (p50 {raw1000.p50_ms:.0f} / p99 {raw1000.p99_ms:.0f} ms)"
                if isinstance(raw1000, Result) else "—")

    head = ["workload", "peerplane", "etcd 3.4", "raw PySyncObj", "ratio peerplane/anchor"]
    body = []
    for label, kind, pp, et, rw, text in rows:
        ratios = [f"{pp / a:.2f}× {name}" for a, name in ((et, "etcd"), (rw, "raw"))
                  if pp is not None and a]
        pp_cell = _num(pp, kind)
        if text and pp is None:
            pp_cell = text
        elif text:
            pp_cell = f"{pp_cell} ({text})"
        body.append([label, pp_cell, _num(et, kind), _num(rw, kind), ", ".join(ratios) or "—"])
    body.append(["replicated calls, 1000 in flight, page cache", "—", "—", raw_text, "—"])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ) + " |"

    sep = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":"
                         for i, w in enumerate(widths)) + "|"
    return [line(head), sep, *(line(r) for r in body)]


def targets(run: Run) -> list[str]:
    """Each target of the speed issue: measured value, target, met or MISSED."""
    v = run.values

    def rate(key: str) -> float | None:
        r = v.get(key)
        return r.rate if isinstance(r, Result) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    pw, ew = v.get("pp.write"), v.get("etcd.write")
    fo = v.get("pp.failover")
    lst = v.get("pp.list")
    checks: list[tuple[str, float | None, str, Callable[[float], bool]]] = [
        ("writes/s vs etcd", ratio(rate("pp.write"), rate("etcd.write")), "≥ 1.00×",
         lambda x: x >= 1.0),
        ("writes p50 vs etcd", ratio(pw.p50_ms, ew.p50_ms) if isinstance(pw, Result)
         and isinstance(ew, Result) else None, "≤ 1.00×", lambda x: x <= 1.0),
        ("consistent reads/s vs etcd linearizable",
         ratio(rate("pp.read.consistent"), rate("etcd.read.linearizable")), "≥ 1.00×",
         lambda x: x >= 1.0),
        ("default reads/s vs etcd linearizable",
         ratio(rate("pp.read.default"), rate("etcd.read.linearizable")), "≥ 1.20×",
         lambda x: x >= 1.2),
        ("stale reads/s vs etcd serializable",
         ratio(rate("pp.read.stale"), rate("etcd.read.serializable")), "≥ 1.20×",
         lambda x: x >= 1.2),
        ("writes/s at n vs at 100 peerings", ratio(rate("pp.write.n"), rate("pp.write.small")),
         "≥ 0.90×", lambda x: x >= 0.9),
    ]
    out = []
    for name, value, goal, ok in checks:
        shown = f"{value:.2f}×" if value is not None else "—"
        verdict = "—" if value is None else ("met" if ok(value) else "MISSED")
        out.append(f"target: {name}: {shown} (target {goal}) {verdict}")
    for name, xs, limit in (("list p50 ms at n peerings", lst, 25.0),
                            ("failover median ms", fo, 1200.0)):
        if isinstance(xs, list) and xs:
            ms = statistics.median(xs) * 1000
            out.append(f"target: {name}: {ms:,.0f} (target ≤ {limit:,.0f}) "
                       f"{'met' if ms <= limit else 'MISSED'}")
    return out


def paired(run: Run) -> str | None:
    """The write ratios as the medians of the per-round ratios: each round runs the two loads
    back to back, so a round's ratio sees one speed of the host, while a ratio of medians can
    take its two medians from rounds minutes apart. Shown beside the targets, which keep the
    ratio of medians they were set on."""
    parts = []
    for name, a, b, of in (("writes/s vs etcd", "pp.write", "etcd.write", "rate"),
                           ("writes p50 vs etcd", "pp.write", "etcd.write", "p50_ms"),
                           ("writes/s at n vs at 100 peerings", "pp.write.n",
                            "pp.write.small", "rate")):
        xs, ys = run.values.get(f"{a}.rounds", []), run.values.get(f"{b}.rounds", [])
        if len(xs) != len(ys):  # a part that did not run (--only) or failed
            continue
        ratios = [getattr(x, of) / getattr(y, of) for x, y in zip(xs, ys, strict=True)
                  if getattr(y, of)]
        if ratios:
            shown = " / ".join(f"{r:.2f}" for r in ratios)
            parts.append(f"{name} {statistics.median(ratios):.2f}× ({shown})")
    if not parts:
        return None
    return "paired by round (the median of each round's ratio): " + "; ".join(parts)


def report(run: Run, args: argparse.Namespace, started: datetime.datetime) -> list[str]:
    fill = run.values.get("pp.fill")
    out = [
        f"peerplane vs etcd 3.4 vs raw PySyncObj — {started:%Y-%m-%d %H:%M} UTC"
        f"{' (SMOKE: numbers meaningless)' if args.smoke else ''}",
        f"machine: {machine()}; load average at start {args.loadavg}",
        f"wrk: {args.connections} connections, one thread per server/member, "
        f"{args.duration:g} s per run; peerplane's and etcd's writes and reads: the median of "
        f"{args.rounds} interleaved rounds; raw PySyncObj: submitted on the leader, "
        f"{args.connections} or 1000 in flight, {args.duration:g} s",
        "",
        *table(run, args),
        "",
        "ratio: peerplane divided by the anchor (for rates higher is better; for ms/s/MB lower "
        "is better). peerplane and etcd fsync their logs; 'page cache' rows run peerplane with "
        "--durability page-cache and raw PySyncObj without fsync.",
    ]
    if isinstance(fill, tuple) and fill[1] > 0:
        out.append(f"{fill[0]:,} peerings created in {fill[1]:.1f} s "
                   f"({fill[0] / fill[1]:,.0f}/s, 32 concurrent HTTP clients)")
    cpu = {}
    for name, key in (("peerplane", "pp.write.cpu"), ("etcd", "etcd.write.cpu"),
                      ("aiohttp + raw PySyncObj", "floor.write.cpu")):
        spent, requests = run.values.get(key) or (0.0, 0)
        if requests:
            cpu[name] = spent / requests
    if "peerplane" in cpu and "etcd" in cpu:
        out.append("CPU per write over all rounds, three servers / members summed: "
                   + ", ".join(f"{name} {ms:.3f} ms" for name, ms in cpu.items())
                   + f" (peerplane {cpu['peerplane'] / cpu['etcd']:.2f}× etcd's)")
    small, at_n = run.values.get("pp.cpu.small"), run.values.get("pp.cpu.n")
    if small and at_n:
        out.append(f"CPU per write, all three servers: {small:.2f} ms with {SEED} peerings, "
                   f"{at_n:.2f} ms with {args.peerings:,} ({at_n / small:.2f}×)")
    out += ["", *targets(run)]
    if (line := paired(run)) is not None:
        out.append(line)
    out.append("")
    out += [f"note: {n}" for n in run.notes]
    out += [f"FAILED: {f}" for f in run.failures]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--failovers", type=int, default=10)
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds of peerplane's and etcd's loads (medians)")
    p.add_argument("--peerings", type=int, default=10_000)
    p.add_argument("--establish-runs", type=int, default=20)
    p.add_argument("--markdown", metavar="PATH", help="also write the table here (Markdown)")
    p.add_argument("--only",
                   default="peerplane,failover,establish,replication,scale,etcd,raw,floor",
                   help="comma-separated parts to run (default: all)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds-long run of every part, for CI; non-zero exit on any failure")
    args = p.parse_args()
    args.list_samples, args.fill_timeout, args.restart_timeout = 20, 600.0, 120.0
    args.establish_timeout = 600.0
    args.repl_samples, args.repl_services = 200, 1000
    if args.smoke:
        args.duration, args.failovers, args.peerings, args.rounds = 1.0, 3, 1000, 1
        args.establish_runs, args.list_samples, args.fill_timeout = 1, 3, 60.0
        args.repl_samples, args.repl_services = 5, 20
    args.loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    only = set(args.only.split(","))
    run = Run()
    parts: list[tuple[str, str, Callable[[], None]]] = [
        ("peerplane|etcd|floor",
         f"peerplane and etcd 3.4: writes, reads, {args.rounds} rounds",
         lambda: side_by_side(args, run, only)),
        ("failover", "peerplane: failover", lambda: peerplane_failover(args, run)),
        ("peerplane", "peerplane: writes with --durability page-cache",
         lambda: peerplane_page_cache(args, run)),
        ("scale", f"peerplane: {args.peerings} peerings", lambda: peerplane_scale(args, run)),
        ("establish", "peerplane: establish -> ACTIVE", lambda: peerplane_establish(args, run)),
        ("replication", "peerplane: replication over a peering",
         lambda: peerplane_replication(args, run)),
        ("etcd", "etcd 3.4: failover", lambda: etcd_failover(args, run)),
        ("raw", "raw PySyncObj", lambda: raw(args, run)),
    ]
    unknown = only - {k for key, _, _ in parts for k in key.split("|")}
    if unknown:
        p.error(f"unknown parts: {', '.join(sorted(unknown))}")
    for key, name, fn in parts:
        if only & set(key.split("|")):
            run.part(name, fn)
    lines = report(run, args, started)
    print("\n" + "\n".join(lines))
    total = time.monotonic() - t0
    print("\ntime per part: " + ", ".join(f"{n} {s:.0f} s" for n, s in run.timings)
          + f"; total {total:.0f} s")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())

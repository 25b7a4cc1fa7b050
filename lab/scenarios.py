"""`peerplane lab <scenario>`: show, measure and explain each read mode under faults.

Each scenario starts its own three-server cluster (real `peerplane agent` processes; the two
partition scenarios put each server in its own network namespace), runs bounded concurrent
clients in all three read modes while it injects the scenario's faults, records every operation,
and hands the history to `lab.report` (per-mode linearizability, staleness, failover
timeline) and `lab.svg` (the timeline picture).

The clients. Every write creates a new peering (`POST /v1/peering/token`), so each peering is
a register that goes from absent to present once. Writes are spread over small partitions
("buckets" of BUCKET names, `lab-0`, `lab-1`, ...), and every read lists one bucket
(`GET /v1/peerings?partition=lab-N[&stale|&consistent]`): one cheap call that returns the
bucket's names *and* `X-Consul-Index`, the index of the serving server's peerings table. The
names feed the linearizability checker (a read is projected onto every name of its bucket);
the index measures how far behind the answer was, for any name. One writer and one reader per
mode are pinned to each server, so a fault on one server shows in that server's lanes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .clients import (
    BUCKET,
    FORMS,
    REQUEST_TIMEOUT,
    Form,
    LabClients,
    LeaderMonitor,
)
from .cluster import Agent, LocalCluster, eventually


@dataclass
class Round:
    number: int
    fault: str
    victim: str
    victim_was_leader: bool
    old_leader: str
    fault_at: float
    victim_survives: bool = True  # False when the fault kills the process
    recover: str = ""
    recover_at: float | None = None
    end_at: float | None = None


@dataclass
class LabRun:
    """What a scenario function gets: the cluster, the clients, and bookkeeping for faults."""

    scenario: str
    form: Form
    cluster: LocalCluster
    clients: LabClients
    clock: Callable[[], float]
    rng: random.Random
    rounds: list[Round] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def event(self, kind: str, text: str) -> float:
        at = self.clock()
        self.events.append({"t": at, "kind": kind, "text": text})
        return at

    def fault(self, text: str, victim: Agent, old_leader: Agent, inject: Callable[[], None],
              *, kills: bool = False) -> Round:
        inject()
        at = self.event("fault", text)
        r = Round(len(self.rounds) + 1, text, victim.name, victim is old_leader, old_leader.name,
                  at, victim_survives=not kills)
        self.rounds.append(r)
        return r

    def recover(self, r: Round, text: str, undo: Callable[[], None]) -> None:
        undo()
        r.recover, r.recover_at = text, self.event("recover", text)

    def hold(self, seconds: float, since: float | None = None, not_by: str | None = None
             ) -> None:
        """Keep the load running for `seconds` of acknowledged writes: wait until a write is
        acknowledged after `since` (default: now) by a server other than `not_by` (the old
        leader: an answer it sent just before the fault does not count), at most 30 s; then
        `seconds` more."""
        since = self.clock() if since is None else since
        deadline = self.clock() + 30.0
        while self.clients.acked_writes(since, not_by) == 0 and self.clock() < deadline:
            time.sleep(0.05)
        time.sleep(seconds)

    def leader(self, among: list[Agent] | None = None) -> Agent:
        return self.cluster.leader(among=among, timeout=30)

    def caught_up(self, agent: Agent) -> None:
        """Wait until every running server names one leader and `agent` has applied what the
        leader had committed when we asked."""
        leader = self.leader()
        commit = int(_raft_stats(leader)["commit_index"])
        eventually(lambda: int(_raft_stats(agent)["applied_index"]) >= commit, 30, 0.05)

    def finish_round(self, r: Round) -> None:
        self.hold(self.form.recover_hold, since=r.recover_at)
        r.end_at = self.clock()


def _raft_stats(agent: Agent) -> dict[str, str]:
    return agent.call("GET", "/v1/agent/self", timeout=2).json()["Stats"]["raft"]


# ---- scenarios ----


def leader_isolation(run: LabRun) -> None:
    """Cut the leader off the other two servers with iptables (it still answers clients)."""
    c = run.cluster
    for _ in range(run.form.rounds):
        old = run.leader()
        rest = [a for a in c.agents if a is not old]
        r = run.fault(f"isolate {old.name} (leader)", old, old, lambda o=old: c.isolate(o))
        run.leader(among=rest)
        run.hold(run.form.fault_hold, since=r.fault_at, not_by=old.name)
        run.recover(r, "heal", c.heal)
        run.caught_up(old)
        run.finish_round(r)


def leader_pause(run: LabRun) -> None:
    """SIGSTOP the leader; the other two elect and write; SIGCONT: requests queued at the old
    leader are served the moment it wakes, while it may still believe it leads."""
    for _ in range(run.form.rounds):
        old = run.leader()
        rest = [a for a in run.cluster.agents if a is not old]
        r = run.fault(f"SIGSTOP {old.name} (leader)", old, old, old.pause)
        run.leader(among=rest)
        run.hold(run.form.fault_hold, since=r.fault_at, not_by=old.name)
        # Wake it while every client pinned to it has a request queued there (the case the
        # send-time lease is for), not just after they timed out.
        pinned = {lane["client"] for lane in run.clients.lanes if lane["target"] == old.name}
        deadline = run.clock() + REQUEST_TIMEOUT
        while run.clients.waiting_at(old.name, 2.0) != pinned and run.clock() < deadline:
            time.sleep(0.02)
        run.recover(r, f"SIGCONT {old.name}", old.resume)
        run.caught_up(old)
        run.finish_round(r)


def follower_lag(run: LabRun) -> None:
    """Cut one follower off; its ?stale reads fall behind while the majority writes on."""
    c = run.cluster
    for _ in range(run.form.rounds):
        leader = run.leader()
        victim = run.rng.choice([a for a in c.agents if a is not leader])
        r = run.fault(f"isolate {victim.name} (follower)", victim, leader,
                      lambda v=victim: c.isolate(v))
        run.hold(run.form.fault_hold, since=r.fault_at)
        run.recover(r, "heal", c.heal)
        run.caught_up(victim)
        run.finish_round(r)


def failover(run: LabRun) -> None:
    """SIGKILL the leader; the other two elect; restart it from its data dir."""
    for _ in range(run.form.rounds):
        old = run.leader()
        rest = [a for a in run.cluster.agents if a is not old]
        r = run.fault(f"SIGKILL {old.name} (leader)", old, old, old.kill, kills=True)
        run.leader(among=rest)
        run.hold(run.form.fault_hold, since=r.fault_at, not_by=old.name)
        run.recover(r, f"restart {old.name}", old.start)
        old.wait_ready()
        run.caught_up(old)
        run.finish_round(r)


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[LabRun], None]
    netns: bool  # needs a network namespace per server (partitions)
    summary: str


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("leader-isolation", leader_isolation, True,
                 "the leader is cut off by a network partition (iptables in netns), then healed"),
        Scenario("leader-pause", leader_pause, False,
                 "the leader is paused (SIGSTOP) while the others elect and write, then resumed"),
        Scenario("follower-lag", follower_lag, True,
                 "one follower is cut off, so its ?stale reads lag, then healed"),
        Scenario("failover", failover, False,
                 "the leader is killed (SIGKILL), the others elect, it restarts from disk"),
    )
}


# ---- one run ----


def run_scenario(name: str, *, short: bool = False, seed: int = 1, out: str | None = None,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run one scenario end to end; return its report (see lab.report.analyze)."""
    from . import report as labreport
    from . import svg as labsvg

    scenario = SCENARIOS[name]
    form = FORMS["short" if short else "full"]
    wall = time.monotonic()
    base = time.monotonic()

    def clock() -> float:
        return time.monotonic() - base

    workdir = tempfile.mkdtemp(prefix=f"peerplane-lab-{name}-")
    cluster: LocalCluster | None = None
    monitor = clients = None
    try:
        if scenario.netns:
            from .netns import NetnsCluster, missing_tools

            if problem := missing_tools():
                raise LabError(f"{name} partitions the network: {problem}")
            cluster = NetnsCluster(workdir)
        else:
            cluster = LocalCluster(workdir)
        log(f"{name}: starting three servers")
        cluster.start()
        base = time.monotonic()  # time 0 = load starts
        monitor = LeaderMonitor(cluster, clock).start()
        clients = LabClients(cluster.agents, clock, form, seed).start()
        run = LabRun(name, form, cluster, clients, clock, random.Random(seed))
        run.hold(form.warmup)
        log(f"{name}: injecting faults ({form.rounds} round(s))")
        scenario.run(run)
        end = clock()
        clients.stop()
        monitor.stop()
        log(f"{name}: reading the final state")
        final = final_state(cluster, clients)
    finally:
        if clients is not None:
            clients.stop()
        if monitor is not None:
            monitor.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    log(f"{name}: checking the history")
    report = labreport.analyze(
        scenario=name, form="short" if short else "full", seed=seed,
        servers=[a.name for a in cluster.agents], lanes=clients.lanes, ops=clients.ops,
        samples=monitor.samples, events=run.events, rounds=[asdict(r) for r in run.rounds],
        final=final, end=end,
    )
    report["summary"] = scenario.summary
    report["wall_seconds"] = round(time.monotonic() - wall, 1)
    if out:
        os.makedirs(out, exist_ok=True)
        svg = os.path.join(out, f"{name}.svg")
        with open(svg, "w") as f:
            f.write(labsvg.render(report, clients.ops,
                                  labreport.staleness(clients.ops, final["created"])))
        history = os.path.join(out, f"{name}-history.jsonl")
        with open(history, "w") as f:
            for op in clients.ops:
                f.write(json.dumps(asdict(op)) + "\n")
        report["files"] = {"timeline_svg": svg, "history": history,
                           "report": os.path.join(out, f"{name}.json")}
        with open(report["files"]["report"], "w") as f:
            json.dump(report, f, indent=2)
    return report


def final_state(cluster: LocalCluster, clients: LabClients) -> dict[str, Any]:
    """After the load: each name's CreateIndex on the leader (consistent reads), and which
    acknowledged names any running server lacks once it has applied the leader's index."""
    cluster.wait_converged()
    leader = cluster.leader()
    buckets = range(max(clients.seq - 1, 0) // BUCKET + 1)
    created: dict[str, int] = {}
    top = 1
    for b in buckets:
        path = f"/v1/peerings?partition=lab-{b}&consistent"
        reply = leader.call("GET", path, timeout=15)
        for _ in range(5):  # 503: a leader change right now; wait for the next leader
            if reply.status != 503:
                break
            leader = cluster.leader()
            reply = leader.call("GET", path, timeout=15)
        if reply.status != 200:
            tail = "".join(leader.log_lines[-15:])
            raise LabError(f"final read of lab-{b} on {leader.name} failed: {reply.status} "
                           f"{reply.text}\n{tail}")
        top = max(top, int(reply.headers["X-Consul-Index"]))
        for p in reply.json():
            created[p["Name"]] = int(p["CreateIndex"])
    missing: dict[str, list[str]] = {}
    for a in cluster.agents:
        if not a.running:
            continue
        a.call("GET", f"/v1/peerings?stale&index={top - 1}&wait=10s", timeout=20)
        have: set[str] = set()
        for b in buckets:
            reply = a.call("GET", f"/v1/peerings?partition=lab-{b}&stale", timeout=15)
            have.update(p["Name"] for p in reply.json())
        missing[a.name] = sorted(set(created) - have)
    return {"created": created, "missing_on": missing}


class LabError(Exception):
    pass


# ---- the command ----


def main(args: argparse.Namespace) -> int:
    """`peerplane lab` (peerplane_cli/main.py parses the arguments)."""
    names = list(SCENARIOS) if args.scenario == ["all"] else args.scenario
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"peerplane lab: unknown scenario {', '.join(unknown)}; choose from "
              f"{', '.join(SCENARIOS)} or all", file=sys.stderr)
        return 2

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the finally blocks: stop the servers

    signal.signal(signal.SIGTERM, terminate)
    from .report import render_text

    def log(msg: str) -> None:
        print(f"[lab] {msg}", file=sys.stderr, flush=True)

    reports = []
    for n in names:
        try:
            report = run_scenario(n, short=args.short, seed=args.seed, out=args.out, log=log)
        except LabError as e:
            print(f"peerplane lab: {e}", file=sys.stderr)
            return 1
        reports.append(report)
        if not args.json:
            print(render_text(report), flush=True)
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    held = all(e["holds"] for r in reports for e in r["expectations"])
    return 0 if held else 1

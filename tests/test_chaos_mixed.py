"""Issue 16: one long run mixing every fault under load - leader SIGKILLs, partitions of the
leader and of a follower, servers replaced (remove-peer, data lost, rejoined with --join), and
a disk that fills up - with no acknowledged write lost and the history linearizable. The history
is written as a JSONL file (lab/jsonl.py, README "History files") any checker can re-verify.

CI runs the short form; the long one (README "Chaos and failover suite"):

    sudo .venv/bin/pytest tests/test_chaos_mixed.py --chaos-long --chaos-history chaos-out -s
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import SCENARIO_LINES

from lab import jsonl
from lab.cluster import Agent, eventually
from lab.netns import NetnsCluster, missing_tools
from lab.workload import ScenarioReport, Workload, verify

pytestmark = pytest.mark.integration

SHORT = {"kill": 3, "isolate-leader": 1, "isolate-follower": 1, "replace": 1, "disk-full": 1}
LONG = {"kill": 50, "isolate-leader": 10, "isolate-follower": 10, "replace": 3, "disk-full": 2}
DISK = "64m"  # each server's data dir is a tmpfs of this size (filled in disk-full episodes)


class Chaos:
    def __init__(self, c: NetnsCluster, load: Workload) -> None:
        self.c, self.load = c, load
        self.done: Counter[str] = Counter()

    def running(self) -> list[Agent]:
        return [a for a in self.c.agents if a.running]

    def leader(self) -> Agent:
        return self.c.leader(among=self.running(), timeout=30)

    def writes_resume(self) -> None:
        acked = len(self.load.acked)
        eventually(lambda: len(self.load.acked) > acked, timeout=30)

    def kill(self) -> None:
        victim = self.leader()
        victim.kill()
        self.leader()
        time.sleep(0.3)  # writes go on with two servers
        victim.start()
        victim.wait_ready(30)

    def isolate(self, who: Callable[[], Agent]) -> None:
        victim = who()
        self.c.isolate(victim)
        time.sleep(2.5)  # longer than an election timeout
        self.c.heal()
        self.leader()
        self.writes_resume()

    def replace(self) -> None:
        """A server whose volume was lost: stopped, removed from the configuration, its data
        wiped, started again with --join of the others (no --bootstrap-expect)."""
        victim = self.c.followers()[0]
        others = [a for a in self.c.agents if a is not victim]
        victim.kill()
        reply = self.leader().call(
            "DELETE", f"/v1/operator/raft/peer?address={victim.raft_addr}", timeout=15)
        assert (reply.status, reply.text) == (200, ""), reply.text
        self.done["membership-change"] += 1
        for entry in os.listdir(victim.data_dir):
            path = os.path.join(victim.data_dir, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        victim.bootstrap = False
        victim.join = [a.raft_addr for a in others]
        victim.start()
        victim.wait_ready(60)
        self.done["membership-change"] += 1
        expected = sorted(a.raft_addr for a in self.c.agents)
        eventually(lambda: all(sorted(a.call("GET", "/v1/status/peers", timeout=2).json())
                               == expected for a in self.c.agents), timeout=60)

    def disk_full(self) -> None:
        victim = self.c.followers()[0]
        filler = os.path.join(victim.data_dir, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=256k"], capture_output=True)
        eventually(lambda: journal_failure(victim).startswith("ENOSPC"), timeout=30)
        time.sleep(1.0)  # writes go on without it
        os.unlink(filler)
        eventually(lambda: journal_failure(victim) == "", timeout=30)
        self.writes_resume()

    def run(self, kind: str) -> None:
        {
            "kill": self.kill,
            "isolate-leader": lambda: self.isolate(self.leader),
            "isolate-follower": lambda: self.isolate(lambda: self.c.followers()[0]),
            "replace": self.replace,
            "disk-full": self.disk_full,
        }[kind]()
        self.done[kind] += 1


def journal_failure(agent: Agent) -> str:
    return agent.call("GET", "/v1/agent/self", timeout=5).json()["Stats"]["raft"][
        "journal_failure"]


def mount_disks(c: NetnsCluster) -> None:
    for a in c.agents:
        os.makedirs(a.data_dir, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", a.data_dir],
                       check=True)


def unmount_disks(c: NetnsCluster) -> None:
    for a in c.agents:
        subprocess.run(["umount", "-l", a.data_dir], check=False)


def test_mixed_faults_lose_no_acknowledged_write_and_stay_linearizable(tmp_path, request):
    if problem := missing_tools():
        pytest.fail(problem, pytrace=False)
    plan = LONG if request.config.getoption("--chaos-long") else SHORT
    faults = [kind for kind, n in plan.items() for _ in range(n)]
    random.Random(16).shuffle(faults)
    out = request.config.getoption("--chaos-history") or str(tmp_path)
    os.makedirs(out, exist_ok=True)
    history = os.path.join(out, "chaos-mixed-history.jsonl")

    c = NetnsCluster(str(tmp_path / "cluster"))
    mount_disks(c)
    try:
        c.start()
        load = Workload(lambda: [a for a in c.agents if a.running],
                        modes=("consistent", "default"), max_ops=1_000_000, timeout=8.0).start()
        chaos = Chaos(c, load)
        t0 = time.monotonic()
        for kind in faults:
            chaos.run(kind)
        time.sleep(1.0)
        load.stop()
        report = ScenarioReport("mixed")
        report.faults = len(faults)
        report.max_gap = load.max_gap(t0, time.monotonic())
        verify(c, load, report)
        lines = jsonl.write(history, load.recorder, report.final)
    finally:
        c.stop()
        unmount_disks(c)
    counts = " ".join(f"{k}={v}" for k, v in sorted(chaos.done.items()))
    SCENARIO_LINES.append(f"{report.line()} {counts} history={history} ({lines} lines)")
    assert report.lost_writes == []
    assert report.verdict == "yes"
    assert chaos.done["kill"] == plan["kill"] and chaos.done["disk-full"] == plan["disk-full"]
    # and the file says the same to an independent reader
    assert jsonl.main([history]) == 0

"""A bounded concurrent client workload that records a checkable history.

Keys are peering names. A write creates one (POST /v1/peering/token); a read asks for one
(GET /v1/peering/<name>[?mode]) and sees "present" (200) or absent (404). Each key is a register
that goes from None to "present", so a read that answers 404 after the create was acknowledged -
a stale read - is a linearizability violation, and so is an acknowledged create that is missing
after the run (a lost write).
"""

from __future__ import annotations

import random
import threading
import time
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .cluster import Agent, LocalCluster, eventually
from .history import HistoryRecorder
from .http import call
from .threads import Background

PRESENT = "present"
NO_LEADER = (503, "No cluster leader")
MODE_QUERY = {"default": "", "consistent": "?consistent", "stale": "?stale"}


@dataclass
class ScenarioReport:
    name: str
    faults: int = 0
    operations: int = 0
    acknowledged_writes: int = 0
    lost_writes: list[str] = field(default_factory=list)
    verdict: str = "?"
    max_gap: float = 0.0
    stale_reads: int = 0
    final: dict[str, str | None] = field(default_factory=dict)  # key -> state after the run

    def line(self) -> str:
        return (
            f"SCENARIO {self.name}: faults={self.faults} ops={self.operations} "
            f"acked_writes={self.acknowledged_writes} lost_writes={len(self.lost_writes)} "
            f"linearizable={self.verdict} max_failover_gap={self.max_gap:.2f}s "
            f"stale_reads={self.stale_reads}"
        )


class Workload(Background):
    """`clients` threads, each alternating creates and reads until `stop()` or `max_ops`."""

    def __init__(
        self,
        targets: Callable[[], Sequence[Agent]],
        *,
        clients: int = 4,
        modes: Sequence[str] = ("consistent",),
        max_ops: int = 2000,
        timeout: float = 8.0,
        prefix: str = "w",
        read_targets: Callable[[], Sequence[Agent]] | None = None,
        write_ratio: float = 0.5,
        names_from: Workload | None = None,
    ) -> None:
        """`names_from`: read the names another workload creates (with write_ratio 0, a pure
        reader of someone else's writes - e.g. stale reads on the cut-off side)."""
        self.write_ratio = write_ratio
        self.names_from = names_from
        self.targets = targets
        self.read_targets = read_targets or targets
        self.clients = clients
        self.modes = modes
        self.max_ops = max_ops
        self.timeout = timeout
        self.prefix = prefix
        self.recorder = HistoryRecorder()
        self.acked: dict[str, float] = {}  # name -> time the create was acknowledged
        self.ack_times: list[float] = []
        self.stale_reads = 0
        self._created: list[str] = []
        self._lock = threading.Lock()
        super().__init__(timeout + 5)
        self._ops = 0

    def start(self) -> Workload:
        for c in range(self.clients):
            self.spawn(self._client, c)
        return self

    def _take_op(self) -> bool:
        with self._lock:
            if self._ops >= self.max_ops:
                return False
            self._ops += 1
            return True

    def _client(self, c: int) -> None:
        rng = random.Random(c)
        n = 0
        while not self._stop.is_set() and self._take_op():
            source = self.names_from or self
            with source._lock:
                known = list(source._created[-50:])
            if not known and self.write_ratio == 0:
                time.sleep(0.05)
            elif not known or rng.random() < self.write_ratio:
                n += 1
                self._write(f"c{c}", f"{self.prefix}-{c}-{n}", rng)
            else:
                self._read(f"c{c}", rng.choice(known), rng.choice(self.modes), rng)

    def _pick(self, pool: Sequence[Agent], rng: random.Random) -> Agent | None:
        if not pool:
            time.sleep(0.05)  # every server is down right now
            return None
        return rng.choice(list(pool))

    def _write(self, client: str, name: str, rng: random.Random) -> None:
        agent = self._pick(self.targets(), rng)
        if agent is None:
            return
        with self._lock:
            self._created.append(name)
        with self.recorder.op(client, name, "write", PRESENT) as op:
            try:
                reply = call("POST", agent.url("/v1/peering/token"), {"PeerName": name},
                             timeout=self.timeout)
            except (OSError, urllib.error.URLError) as e:
                if _refused(e):
                    op.fail()  # never reached a server
                    time.sleep(0.05)
                else:
                    op.unknown()
                return
            if reply.status == 200:
                op.ok()
                now = time.monotonic()
                with self._lock:
                    self.acked[name] = now
                    self.ack_times.append(now)
            elif reply.status in (400, 403, 404) or (reply.status, reply.text) == NO_LEADER:
                op.fail()  # ("No cluster leader" is answered only before anything is proposed)
                time.sleep(0.05 if reply.status == 503 else 0)  # cut off: it says so at once
            else:
                op.unknown()

    def _read(self, client: str, name: str, mode: str, rng: random.Random) -> None:
        agent = self._pick(self.read_targets(), rng)
        if agent is None:
            return
        url = agent.url(f"/v1/peering/{name}{MODE_QUERY[mode]}")
        if mode == "stale":
            # Stale reads may legitimately be stale: counted, kept out of the checked history.
            acked_before = name in (self.names_from or self).acked
            try:
                reply = call("GET", url, timeout=self.timeout)
            except (OSError, urllib.error.URLError):
                return
            if reply.status == 404 and acked_before:
                with self._lock:
                    self.stale_reads += 1
            return
        with self.recorder.op(client, name, "read") as op:
            try:
                reply = call("GET", url, timeout=self.timeout)
            except (OSError, urllib.error.URLError):
                op.unknown()
                return
            if reply.status == 200:
                op.ok(PRESENT)
            elif reply.status == 404:
                op.ok(None)
            else:
                op.unknown()

    def max_gap(self, start: float, end: float) -> float:
        """Longest stretch without an acknowledged write (the worst failover gap)."""
        points = [start, *sorted(self.ack_times), end]
        return max(b - a for a, b in zip(points, points[1:], strict=False))


def _refused(e: BaseException) -> bool:
    reason = getattr(e, "reason", e)
    return isinstance(reason, ConnectionRefusedError)


def _raft_stats(agent: Agent) -> object:
    try:
        return agent.call("GET", "/v1/agent/self", timeout=5).json()["Stats"]["raft"]
    except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
        return f"unavailable ({e})"


def verify(cluster: LocalCluster, workload: Workload, report: ScenarioReport) -> ScenarioReport:
    """After the run: every acknowledged create is on every running node, and the history of
    creates + non-stale reads (plus a final read per key) is linearizable."""
    running = [a for a in cluster.agents if a.running]
    cluster.wait_converged()
    # Every server - a just-healed old leader too - answers a consistent read within the time
    # limit (it asks the leader for a read index and applies up to it); the highest index
    # answered is the one every server must reach below.
    deadline = time.monotonic() + 60
    indexes: list[int] = []
    for a in running:
        def consistent_index(a: Agent = a) -> int:
            reply = a.call("GET", "/v1/peerings?consistent")
            if reply.status != 200:
                raise AssertionError(f"{a.name}: {reply.status} {reply.text[:120]}; "
                                     f"raft: {_raft_stats(a)}")
            return int(reply.headers["X-Consul-Index"])

        indexes.append(eventually(consistent_index, max(deadline - time.monotonic(), 1.0)))
    index = max(indexes)
    final: dict[str, str | None] = {}
    names_by_node = {}
    for a in running:
        # wait until this node has applied everything the leader had at `index`
        a.call("GET", f"/v1/peerings?stale&index={index - 1}&wait=30s", timeout=40)
        names_by_node[a.name] = {p["Name"] for p in a.call("GET", "/v1/peerings?stale").json()}
    leader_names = next(iter(names_by_node.values()))
    for name in {op.key for op in workload.recorder.operations()}:
        final[name] = PRESENT if name in leader_names else None
    report.lost_writes = sorted(
        name for name in workload.acked
        if any(name not in names for names in names_by_node.values())
    )
    summary = workload.recorder.summary()
    report.operations = summary.ops
    report.acknowledged_writes = len(workload.acked)
    report.final = final
    result = workload.recorder.check(final=final)
    report.verdict = "yes" if result.ok else f"NO: {result.describe()[:2000]}"
    report.stale_reads = workload.stale_reads
    return report

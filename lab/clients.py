"""The lab's clients: one writer and one reader per read mode pinned to each server, recording
every operation (`LabOp`), and a monitor of who each server thinks leads. See lab/scenarios.py
for what they are driven through."""

from __future__ import annotations

import http.client
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cluster import Agent, LocalCluster
from .http import call
from .threads import Background

MODES = ("default", "consistent", "stale")
MODE_QUERY = {"default": "", "consistent": "&consistent", "stale": "&stale"}
BUCKET = 10  # names per partition; a read lists one partition
# Clients give up after 6 s: just above the servers' hold time (5 s in lab.cluster), so a
# leaderless server's 503 still arrives as an answer, while a request that hangs (forwarded to
# a leader that became unreachable) stalls its client no longer than that.
REQUEST_TIMEOUT = 6.0
MONITOR_PERIOD = 0.05


@dataclass
class LabOp:
    """One client operation. Times are seconds on the lab's monotonic clock."""

    id: int
    client: str
    kind: str  # "write" | "read"
    mode: str  # "write", or the read mode
    target: str  # the server the client sent it to
    bucket: int
    key: str | None  # the name a write creates
    invoke: float
    ret: float | None = None  # None: no answer (timeout, connection lost)
    gave_up: float | None = None  # when the client stopped waiting for an answer it never got
    status: int | None = None
    outcome: str = "unknown"  # ok | fail (certainly no effect) | unknown (write may have landed)
    error: str = ""
    names: list[str] | None = None  # what a read returned
    index: int | None = None  # X-Consul-Index
    last_contact_ms: int | None = None  # X-Consul-LastContact
    known_leader: bool | None = None
    served_by: str | None = None  # X-Peerplane-Served-By


@dataclass(frozen=True)
class Form:
    """How long each phase lasts. `short` is the CI form; `full` repeats the fault."""

    rounds: int
    warmup: float  # seconds of load before the first fault
    fault_hold: float  # seconds the fault lasts after its effect (e.g. a new leader) is seen
    recover_hold: float  # seconds of load after the cluster recovered, per round
    pace: float  # mean pause between one client's operations
    max_ops_per_client: int


FORMS = {
    "short": Form(rounds=1, warmup=1.5, fault_hold=3.0, recover_hold=2.0, pace=0.05,
                  max_ops_per_client=2_000),
    "full": Form(rounds=3, warmup=3.0, fault_hold=6.0, recover_hold=4.0, pace=0.05,
                 max_ops_per_client=20_000),
}


class LabClients(Background):
    """One writer and one reader per read mode, pinned to each server; bounded in count."""

    def __init__(self, agents: list[Agent], clock: Callable[[], float], form: Form,
                 seed: int) -> None:
        self.agents = agents
        self.clock = clock
        self.form = form
        self.seed = seed
        self.ops: list[LabOp] = []
        self.seq = 0  # names created so far (invoked)
        self._lock = threading.Lock()
        super().__init__(REQUEST_TIMEOUT + 5)
        self.lanes: list[dict[str, str]] = []  # client, kind, mode, target (for the picture)

    def start(self) -> LabClients:
        plans: list[tuple[str, str, Agent]] = []
        for i, a in enumerate(self.agents):
            plans.append((f"w{i + 1}", "write", a))
        for mode in MODES:
            for i, a in enumerate(self.agents):
                plans.append((f"{mode[0]}{i + 1}", mode, a))
        for n, (client, mode, agent) in enumerate(plans):
            self.lanes.append({"client": client, "mode": mode, "target": agent.name})
            self.spawn(self._run, client, mode, agent, random.Random(self.seed * 1000 + n),
                       name=f"lab-{client}")
        return self

    def acked_writes(self, since: float = float("-inf"), not_by: str | None = None) -> int:
        """Writes acknowledged after `since`, not counting those served by `not_by`."""
        with self._lock:
            ops = list(self.ops)
        return sum(1 for o in ops if o.kind == "write" and o.outcome == "ok" and o.ret
                   and o.ret > since and (not_by is None or o.served_by != not_by))

    def waiting_at(self, server: str, fresh_for: float) -> set[str]:
        """Clients with a request at `server` that is unanswered and will not time out for
        at least `fresh_for` seconds."""
        now = self.clock()
        with self._lock:
            ops = list(self.ops)
        return {o.client for o in ops if o.target == server and o.ret is None
                and o.gave_up is None and o.invoke > now - (REQUEST_TIMEOUT - fresh_for)}

    def _record(self, op: LabOp) -> LabOp:
        with self._lock:
            op.id = len(self.ops)
            self.ops.append(op)
        return op

    def _run(self, client: str, mode: str, agent: Agent, rng: random.Random) -> None:
        for _ in range(self.form.max_ops_per_client):
            if self._stop.is_set():
                return
            pause = 0.0
            if mode == "write":
                op = self._write(client, agent)
            else:
                op = self._read(client, mode, agent, rng)
            if op.error == "refused" or op.error == NO_LEADER:
                pause = 0.2  # the server is down, or cut off and says so at once: do not spin
            self._stop.wait(pause + self.form.pace * rng.uniform(0.5, 1.5))

    def _write(self, client: str, agent: Agent) -> LabOp:
        with self._lock:
            n = self.seq
            self.seq += 1
        key = f"k{n:05d}"
        bucket = n // BUCKET
        op = self._record(LabOp(0, client, "write", "write", agent.name, bucket, key,
                                invoke=self.clock()))
        path = f"/v1/peering/token?partition=lab-{bucket}"
        self._send(op, agent, "POST", path, {"PeerName": key})
        return op

    def _read(self, client: str, mode: str, agent: Agent, rng: random.Random) -> LabOp:
        with self._lock:
            newest = max(self.seq - 1, 0) // BUCKET
        # Mostly the bucket being written now (where staleness shows), sometimes an older one.
        bucket = newest if rng.random() < 0.6 else max(0, newest - rng.randint(1, 3))
        op = self._record(LabOp(0, client, "read", mode, agent.name, bucket, None,
                                invoke=self.clock()))
        self._send(op, agent, "GET", f"/v1/peerings?partition=lab-{bucket}{MODE_QUERY[mode]}")
        return op

    def _send(self, op: LabOp, agent: Agent, method: str, path: str, body: Any = None) -> None:
        try:
            reply = call(method, agent.url(path), body, timeout=REQUEST_TIMEOUT)
        except (OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ConnectionRefusedError):
                op.outcome, op.error = "fail", "refused"  # never reached a server
                op.ret = self.clock()
            else:
                # No answer: a write may still land; a read tells nothing.
                op.gave_up = self.clock()
                op.outcome = "unknown" if op.kind == "write" else "fail"
                op.error = "timeout" if isinstance(reason, TimeoutError) else type(reason).__name__
            return
        op.ret = self.clock()
        op.status = reply.status
        op.served_by = reply.headers.get("X-Peerplane-Served-By")
        if "X-Consul-Index" in reply.headers:
            op.index = int(reply.headers["X-Consul-Index"])
        if "X-Consul-LastContact" in reply.headers:
            op.last_contact_ms = int(reply.headers["X-Consul-LastContact"])
        if "X-Consul-KnownLeader" in reply.headers:
            op.known_leader = reply.headers["X-Consul-KnownLeader"] == "true"
        if reply.status == 200:
            op.outcome = "ok"
            if op.kind == "read":
                op.names = sorted(p["Name"] for p in reply.json())
            return
        op.error = f"{reply.status} {reply.text.strip()[:80]}"
        if op.kind == "read" or reply.status in (400, 403, 404, 405, 413) or op.error == NO_LEADER:
            op.outcome = "fail"  # (a server answers "No cluster leader" only before proposing)
        else:
            op.outcome = "unknown"  # 503 "outcome unknown", 500: it may have been applied


NO_LEADER = "503 No cluster leader"


class LeaderMonitor(Background):
    """Asks every server `GET /v1/status/leader` every MONITOR_PERIOD: who does it follow?

    A sample is (time, server, view): view is the leader's server name, "" for "no leader",
    None when the server did not answer (paused, killed)."""

    def __init__(self, cluster: LocalCluster, clock: Callable[[], float]) -> None:
        self.cluster = cluster
        self.clock = clock
        self.samples: list[tuple[float, str, str | None]] = []
        super().__init__(5)

    def start(self) -> LeaderMonitor:
        for a in self.cluster.agents:
            self.spawn(self._watch, a, name=f"lab-monitor-{a.name}")
        return self

    def _name(self, raft_addr: str) -> str:
        for a in self.cluster.agents:
            if a.raft_addr == raft_addr:
                return a.name
        return raft_addr

    def _watch(self, agent: Agent) -> None:
        while not self._stop.is_set():
            started = self.clock()
            view: str | None
            try:
                addr = agent.call("GET", "/v1/status/leader", timeout=0.5).json()
                view = self._name(addr) if addr else ""
            except (OSError, ValueError, http.client.HTTPException):
                view = None
            self.samples.append((self.clock(), agent.name, view))
            self._stop.wait(max(0.0, MONITOR_PERIOD - (self.clock() - started)))

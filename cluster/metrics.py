"""Per-server metrics: one `prometheus_client` CollectorRegistry per server (never the global
one), served as Consul's JSON (`GET /v1/agent/metrics`) and as Prometheus text
(`?format=prometheus`).

Names are dot-paths, as in Consul's telemetry (`peerplane.raft.term`); the Prometheus exposition
replaces the dots with underscores (`peerplane_raft_term`, counters get `_total`). Durations are
in seconds in both forms. JSON values are cumulative since the server started (Consul's JSON
covers its last 10 s interval).

Code without a ServerContext at hand (Raft node, peer stream, reconciler, replication) reports
through the `Events` it was built with: the composition root (peerplane_cli/agent.py) passes
`Metrics.events`; the default, `NO_EVENTS`, records nothing (unit tests, tools):

    self.events.stream_heartbeat("sent")     # or "received"; one call per Heartbeat frame
    self.events.reconciler_retry("dial")     # one call per retried attempt; kind is a short word
    self.events.raft_apply("establish", "ok", seconds)   # RaftNode.submit does this itself
"""

from __future__ import annotations

import datetime
import math
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from .fsm import ACTIVE, DELETING, ESTABLISHING, FAILING, PENDING, TERMINATED

PEERING_STATES = (PENDING, ESTABLISHING, ACTIVE, FAILING, DELETING, TERMINATED)
RAFT_STATES = {0: "follower", 1: "candidate", 2: "leader"}
HTTP_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})
# Seconds; from sub-millisecond local commits to a hold timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0)


def prom_name(dotted: str) -> str:
    return dotted.replace(".", "_")


class _Stats:
    """Count, sum, min, max and sum of squares of one timer's label set (for the JSON form)."""

    __slots__ = ("count", "sum", "sumsq", "min", "max")

    def __init__(self) -> None:
        self.count = 0
        self.sum = self.sumsq = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, v: float) -> None:
        self.count += 1
        self.sum += v
        self.sumsq += v * v
        if v < self.min:
            self.min = v
        if v > self.max:
            self.max = v

    def json(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        mean = self.sum / self.count if self.count else 0.0
        var = max(0.0, self.sumsq / self.count - mean * mean) if self.count > 1 else 0.0
        return {
            "Name": name, "Count": self.count, "Rate": 0.0, "Sum": self.sum,
            "Min": self.min if self.count else 0.0, "Max": self.max if self.count else 0.0,
            "Mean": mean, "Stddev": math.sqrt(var), "Labels": labels,
        }


class _Series:
    """One label set of a timer: its histogram child and its JSON stats."""

    __slots__ = ("histogram", "stats", "lock")

    def __init__(self, histogram: Any, stats: _Stats, lock: threading.Lock) -> None:
        self.histogram, self.stats, self.lock = histogram, stats, lock

    def observe(self, seconds: float) -> None:
        self.histogram.observe(seconds)
        with self.lock:
            self.stats.add(seconds)


class _Timer:
    """A Prometheus histogram plus the count/sum/min/max/stddev Consul's JSON samples carry."""

    def __init__(self, registry: CollectorRegistry, dotted: str, doc: str,
                 labels: tuple[str, ...]) -> None:
        self.dotted = dotted
        self.labels = labels
        self.histogram = Histogram(prom_name(dotted), doc, labels, registry=registry,
                                   buckets=BUCKETS)
        self._stats: dict[tuple[str, ...], _Stats] = {}
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()

    def series(self, *values: str) -> _Series:
        """The label set's series, made once: `Histogram.labels()` costs more than observing."""
        found = self._series.get(values)
        if found is None:
            with self._lock:
                stats = self._stats.setdefault(values, _Stats())
            found = self._series.setdefault(
                values, _Series(self.histogram.labels(*values), stats, self._lock))
        return found

    def observe(self, seconds: float, *values: str) -> None:
        self.series(*values).observe(seconds)

    def samples(self) -> list[dict[str, Any]]:
        with self._lock:
            items = sorted(self._stats.items())
            return [s.json(self.dotted, dict(zip(self.labels, k, strict=True)))
                    for k, s in items]


class _LiveState:
    """Gauges read at scrape time from the Raft node, the FSM and the leader's live streams."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        for dotted, doc, labels, rows in m.live_gauges():
            fam = GaugeMetricFamily(prom_name(dotted), doc, labels=list(labels))
            for values, value in rows:
                fam.add_metric(list(values), value)
            yield fam


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.node: Any = None
        self.fsm: Any = None
        self.streams: dict[str, Any] | None = None
        self._dotted: dict[str, str] = {}
        self._http: dict[tuple[str, str, int], tuple[Any, _Series]] = {}
        self._parsed: dict[tuple[str, str], Any] = {}
        self.http_requests = self._counter(
            "peerplane.http.requests", "HTTP requests answered, by route, method and status",
            ("route", "method", "code"))
        self.http_forwarded = self._counter(
            "peerplane.http.forwarded",
            "Requests this server forwarded to the leader, by method and the leader's status "
            "(code=\"error\": no answer)", ("method", "code"))
        self.http_parsed = self._counter(
            "peerplane.http.parsed",
            "Requests whose input a handler parsed and validated on this server (the server "
            "that serves them; a follower that forwards never does), by route and method",
            ("route", "method"))
        self.stream_heartbeats = self._counter(
            "peerplane.peering.stream.heartbeats",
            "Peer-stream heartbeat frames, by direction (sent/received)", ("direction",))
        self.replication_messages = self._counter(
            "peerplane.peering.replication.messages",
            "Replication responses, by direction (export/import), resource and outcome "
            "(sent, ack, nack; batch for purge commands)", ("direction", "resource", "outcome"))
        self.reconciler_retries = self._counter(
            "peerplane.peering.reconciler.retries",
            "Retried reconciler attempts (dials, redirects, writes), by kind", ("kind",))
        self.http_latency = _Timer(
            self.registry, "peerplane.http.request.duration_seconds",
            "Time to answer an HTTP request, by route and method", ("route", "method"))
        self.raft_apply = _Timer(
            self.registry, "peerplane.raft.apply.duration_seconds",
            "Time from submitting a command to Raft until it is applied here (or fails), "
            "by command and result (ok, not_applied, unknown)", ("op", "result"))
        self._timers = (self.http_latency, self.raft_apply)
        for direction in ("sent", "received"):  # present (at 0) from the first scrape
            self.stream_heartbeats.labels(direction)
        self.registry.register(_LiveState(self))
        self.events: Events = _Recorder(self)  # handed to the parts built without a context

    def _counter(self, dotted: str, doc: str, labels: tuple[str, ...]) -> Counter:
        self._dotted[prom_name(dotted)] = dotted
        return Counter(prom_name(dotted), doc, labels, registry=self.registry)

    def bind(self, node: Any, fsm: Any, streams: dict[str, Any] | None) -> Metrics:
        """The sources of the scrape-time gauges (RaftNode, FSM, the leader's stream table)."""
        self.node, self.fsm, self.streams = node, fsm, streams
        return self

    # ---- recording ----

    def observe_http(self, route: str, method: str, code: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else "OTHER"
        key = (route, method, code)  # bounded: route patterns, known methods, status codes
        series = self._http.get(key)
        if series is None:  # labelled children made once per label set, not per request
            series = self._http.setdefault(key, (
                self.http_requests.labels(route, method, str(code)),
                self.http_latency.series(route, method)))
        series[0].inc()
        series[1].observe(seconds)

    def observe_parsed(self, route: str, method: str) -> None:
        method = method if method in HTTP_METHODS else "OTHER"
        child = self._parsed.get((route, method))
        if child is None:
            child = self._parsed.setdefault((route, method),
                                            self.http_parsed.labels(route, method))
        child.inc()

    def observe_forward(self, method: str, code: int | str) -> None:
        method = method if method in HTTP_METHODS else "OTHER"
        self.http_forwarded.labels(method, str(code)).inc()

    # ---- scrape-time gauges ----

    def live_gauges(self) -> list[tuple[str, str, tuple[str, ...], list[tuple[tuple, float]]]]:
        out: list[tuple[str, str, tuple[str, ...], list[tuple[tuple, float]]]] = []
        node = self.node
        if node is not None:
            st = node.status()
            state = RAFT_STATES.get(st.get("state"), "unknown")
            connected = sum(1 for k, v in st.items()
                            if k.startswith("partner_node_status_server_") and v == 2)
            out += [
                ("peerplane.raft.state", "1 for this server's Raft state (leader, candidate, "
                 "follower), 0 otherwise", ("state",),
                 [((s,), 1.0 if s == state else 0.0) for s in RAFT_STATES.values()]),
                ("peerplane.raft.term", "Current Raft term", (), [((), st.get("raft_term", 0))]),
                ("peerplane.raft.commit_index", "Raft commit index known here", (),
                 [((), st.get("commit_idx", 0))]),
                ("peerplane.raft.applied_index", "Last Raft index applied to the FSM here", (),
                 [((), st.get("last_applied", 0))]),
                ("peerplane.raft.log_entries", "Entries in the Raft log (since compaction)", (),
                 [((), st.get("log_len", 0))]),
                ("peerplane.raft.has_leader", "1 when this server knows a leader", (),
                 [((), 1.0 if st.get("leader") is not None else 0.0)]),
                ("peerplane.raft.peers.connected", "Other servers this one is connected to", (),
                 [((), connected)]),
                ("peerplane.raft.servers", "Servers in the Raft configuration (voters, this one "
                 "included)", (), [((), float(len(node.members())))]),
                ("peerplane.raft.journal.writable", "0 while this server's Raft journal cannot "
                 "be written (disk full, I/O errors): it takes no part in Raft", (),
                 [((), 0.0 if node.disk_failure() else 1.0)]),
                ("peerplane.raft.leader.last_contact_seconds",
                 "Seconds since this server last heard from a leader (0 on the leader)", (),
                 [((), node.last_contact_ms() / 1000.0)]),
            ]
        if self.fsm is not None:
            counts = dict.fromkeys(PEERING_STATES, 0)
            counts.update(self.fsm.state_counts())
            out.append(("peerplane.peerings", "Peerings in the replicated state, by state",
                        ("state",), [((s,), float(n)) for s, n in counts.items()]))
        if self.streams is not None:
            out.append(("peerplane.peering.streams",
                        "Peer streams this server holds status for (the leader's)", (),
                        [((), float(len(self.streams)))]))
            out += self._replication_gauges()
        return out

    def _replication_gauges(self) -> list[tuple[str, str, tuple[str, ...], list[Any]]]:
        """Import freshness per peering (beyond Consul, whose peerings show ACTIVE while the
        imported catalog is stale - its issue #22868). Only the leader holds streams."""
        rows: dict[str, list[tuple[tuple, float]]] = {
            k: [] for k in ("age", "pending", "unacked", "imported", "exported")}
        now = datetime.datetime.now(datetime.UTC).timestamp()
        assert self.streams is not None
        for pid, st in list(self.streams.items()):
            rec = self.fsm.by_id(pid) if self.fsm is not None else None
            if rec is None or "ImportPending" not in st:
                continue
            label = (rec["Name"],)
            last = st.get("ImportLastApplied")
            if last:
                ts = datetime.datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp()
                rows["age"].append((label, max(0.0, now - ts)))
            rows["pending"].append((label, float(st.get("ImportPending") or 0)))
            rows["unacked"].append((label, float(st.get("ExportUnacked") or 0)))
            rows["imported"].append((label, float(len(st.get("ImportedServices") or []))))
            rows["exported"].append((label, float(len(st.get("ExportedServices") or []))))
        docs = {
            "age": ("peerplane.peering.import.last_applied_age_seconds",
                    "Seconds since a replication message from this peer was last applied"),
            "pending": ("peerplane.peering.import.pending",
                        "Replication messages received from this peer, not yet applied"),
            "unacked": ("peerplane.peering.export.unacked",
                        "Replication messages sent to this peer, not yet acknowledged"),
            "imported": ("peerplane.peering.imported_services",
                         "Services imported from this peer (its last exported-service list)"),
            "exported": ("peerplane.peering.exported_services",
                         "Services exported to this peer"),
        }
        return [(docs[k][0], docs[k][1], ("peer",), rows[k]) for k in docs]

    # ---- the two forms ----

    def prometheus(self, accept: str = "") -> tuple[bytes, str]:
        """Exposition text and its content type (Prometheus 0.0.4 text unless the client
        asks for OpenMetrics in Accept)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def json(self) -> dict[str, Any]:
        """Consul's /v1/agent/metrics shape."""
        now = datetime.datetime.now(datetime.UTC)
        gauges: list[dict[str, Any]] = []
        for dotted, _doc, labels, rows in self.live_gauges():
            for values, value in rows:
                gauges.append({"Name": dotted, "Value": float(value),
                               "Labels": dict(zip(labels, values, strict=True))})
        counters: list[dict[str, Any]] = []
        for fam in self.registry.collect():
            if fam.type != "counter" or fam.name not in self._dotted:
                continue
            for s in fam.samples:
                if not s.name.endswith("_total") or s.value <= 0:
                    continue
                n = s.value
                counters.append({
                    "Name": self._dotted[fam.name], "Count": int(n), "Rate": 0.0, "Sum": n,
                    "Min": 1.0, "Max": 1.0, "Mean": 1.0, "Stddev": 0.0,
                    "Labels": dict(s.labels),
                })
        samples = [s for t in self._timers for s in t.samples()]
        return {
            "Timestamp": now.strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
            "Gauges": gauges,
            "Points": [],
            "Counters": counters,
            "Samples": samples,
        }


# ---- events reported by code without a ServerContext ----


class Events:
    """What the Raft node, peer streams, reconciler and replication report. This base records
    nothing (unit tests, tools); the composition root hands each part its server's
    `Metrics.events`."""

    def raft_apply(self, op: str, result: str, seconds: float) -> None:
        """One proposal's outcome (ok, not_applied, unknown) and how long it took."""

    def stream_heartbeat(self, direction: str) -> None:
        """One peer-stream Heartbeat frame, `direction` "sent" or "received"."""

    def reconciler_retry(self, kind: str) -> None:
        """One retried reconciler attempt; `kind` is a short fixed word (dial, redirect,
        exchange, write)."""

    def replication(self, direction: str, resource: str, outcome: str) -> None:
        """One replication response: `direction` export/import, `resource` the short type
        name (ExportedService, ...), `outcome` sent/ack/nack (or batch, for purges)."""


NO_EVENTS = Events()


class _Recorder(Events):
    def __init__(self, m: Metrics) -> None:
        self._m = m

    def raft_apply(self, op: str, result: str, seconds: float) -> None:
        self._m.raft_apply.observe(seconds, op, result)

    def stream_heartbeat(self, direction: str) -> None:
        self._m.stream_heartbeats.labels(direction).inc()

    def reconciler_retry(self, kind: str) -> None:
        self._m.reconciler_retries.labels(kind).inc()

    def replication(self, direction: str, resource: str, outcome: str) -> None:
        self._m.replication_messages.labels(direction, resource, outcome).inc()

"""What a lab run means: per-mode linearizability, staleness, and the failover timeline.

Staleness is measured against acknowledged writes only, so it never overstates: a read is
*stale* when the index it was served at (`X-Consul-Index`, the serving server's peerings-table
index) is below the index of a write that had been acknowledged before the read was sent. Its
staleness in index is how many entries it was behind (at least); in milliseconds, how long
before the read the first write it missed had been acknowledged. Each write's index is the
`CreateIndex` of the peering it created, read after the run.

Linearizability is checked per mode: all writes plus that mode's reads (each read projected onto
every name of the partition it listed), plus the final state, with the Wing–Gong checker of
`lab.linearizability`. Timed-out writes may or may not have taken effect.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .history import check_history
from .linearizability import Operation

PRESENT = "present"
MODES = ("default", "consistent", "stale")
QUORUM = 2  # of three servers


def _r(t: float | None, nd: int = 3) -> float | None:
    return None if t is None else round(t, nd)


class WriteIndex:
    """Acknowledged writes ordered by acknowledgement time, with their Raft index."""

    def __init__(self, ops: Iterable[Any], created: dict[str, int]) -> None:
        acked = sorted(
            (o.ret, created[o.key]) for o in ops
            if o.kind == "write" and o.outcome == "ok" and o.key in created
        )
        self.rets = [t for t, _ in acked]
        self.prefix_max: list[int] = []
        top = 0
        for _, idx in acked:
            top = max(top, idx)
            self.prefix_max.append(top)

    def committed_before(self, t: float) -> int:
        """Highest index of a write acknowledged before t (0 if none)."""
        pos = bisect.bisect_left(self.rets, t)
        return self.prefix_max[pos - 1] if pos else 0

    def outdated_since(self, index: int) -> float | None:
        """When a write with an index above `index` was first acknowledged."""
        pos = bisect.bisect_right(self.prefix_max, index)
        return self.rets[pos] if pos < len(self.rets) else None


def staleness(ops: Sequence[Any], created: dict[str, int]) -> dict[int, tuple[int, float]]:
    """op id -> (entries behind, ms since the first missed write was acknowledged), for every
    answered read that missed an acknowledged write."""
    w = WriteIndex(ops, created)
    out: dict[int, tuple[int, float]] = {}
    for o in ops:
        if o.kind != "read" or o.outcome != "ok" or o.index is None:
            continue
        behind = w.committed_before(o.invoke) - o.index
        if behind > 0:
            since = w.outdated_since(o.index)
            assert since is not None and since < o.invoke
            out[o.id] = (behind, (o.invoke - since) * 1000)
    return out


def history(ops: Sequence[Any], mode: str, created: dict[str, int]) -> list[Operation]:
    """Writes plus `mode`'s answered reads, as register operations per name."""
    writes = [o for o in ops if o.kind == "write"]
    by_bucket: dict[int, list[Any]] = {}
    for w in writes:
        by_bucket.setdefault(w.bucket, []).append(w)
    out = []
    for w in writes:
        if w.outcome == "ok":
            out.append(Operation(w.client, w.key, "write", PRESENT, None, w.invoke, w.ret))
        elif w.outcome == "unknown":
            out.append(Operation(w.client, w.key, "write", PRESENT, None, w.invoke, None))
    for r in ops:
        if r.kind != "read" or r.mode != mode or r.outcome != "ok":
            continue
        seen = set(r.names or ())
        keys = {w.key for w in by_bucket.get(r.bucket, ()) if w.invoke < r.ret} | seen
        for key in sorted(keys):
            out.append(Operation(r.client, key, "read", None, PRESENT if key in seen else None,
                                 r.invoke, r.ret))
    return out


def leader_view(samples: Iterable[tuple[float, str, str | None]]
                ) -> list[tuple[float, str | None]]:
    """The leader a quorum of servers names over time: [(time, leader or None)] changes."""
    latest: dict[str, str | None] = {}
    changes: list[tuple[float, str | None]] = []
    current: str | None = None  # nothing to show until a quorum first names a leader
    for t, server, view in sorted(samples):
        latest[server] = view
        votes = Counter(v for v in latest.values() if v)
        top = votes.most_common(1)
        leader = top[0][0] if top and top[0][1] >= QUORUM else None
        if leader != current:
            changes.append((t, leader))
            current = leader
    return changes


def _mode_report(ops: Sequence[Any], mode: str, stale: dict[int, tuple[int, float]],
                 created: dict[str, int]) -> dict[str, Any]:
    reads = [o for o in ops if o.kind == "read" and o.mode == mode]
    ok = [o for o in reads if o.outcome == "ok"]
    errors = Counter(o.error.split(" (")[0][:40] or "?" for o in reads if o.outcome != "ok")
    lags = [stale[o.id] for o in ok if o.id in stale]
    latencies = sorted((o.ret - o.invoke) * 1000 for o in ok)
    result = check_history(history(ops, mode, created), final={
        o.key: PRESENT if o.key in created else None for o in ops if o.kind == "write"
    })
    failures = result.failures()
    first = next(iter(failures.values())).describe() if failures else ""
    return {
        "reads": len(reads),
        "answered": len(ok),
        "errors": dict(errors.most_common()),
        "stale_reads": len(lags),
        "stale_percent": round(100 * len(lags) / len(ok), 1) if ok else 0.0,
        "max_staleness_index": max((b for b, _ in lags), default=0),
        "max_staleness_ms": round(max((ms for _, ms in lags), default=0.0)),
        "max_last_contact_ms": max((o.last_contact_ms or 0 for o in ok), default=0),
        "latency_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        "latency_ms_max": round(latencies[-1], 1) if latencies else None,
        "served_by": dict(Counter(o.served_by for o in ok).most_common()),
        "linearizable": result.ok,
        "verdict": str(result.verdict),
        "keys_checked": len(result.keys),
        "violations": len(failures),
        "first_violation": first[:1500],
    }


def _round_timeline(rnd: dict[str, Any], ops: Sequence[Any],
                    samples: Sequence[tuple[float, str, str | None]],
                    view: list[tuple[float, str | None]], stale: dict[int, tuple[int, float]],
                    end: float) -> dict[str, Any]:
    fault, old = rnd["fault_at"], rnd["old_leader"]
    until = rnd["end_at"] or end
    changes = [(t, who) for t, who in view if fault < t <= until]
    lost = next((t for t, who in changes if who != old), None)
    new = next(((t, who) for t, who in changes if who and who != old), None)
    if new is not None:
        # First seen: by the monitor's polls, or by a write the new leader acknowledged,
        # whichever came first. (Not by reads: followers serve default and consistent reads
        # too, so a read served by that server does not show it was leading.)
        served = [o.ret for o in ops if o.ret is not None and fault < o.ret <= new[0]
                  and o.served_by == new[1] and o.outcome == "ok" and o.kind == "write"]
        new = (min([new[0], *served]), new[1])
    stepped_down = None
    if rnd["victim_was_leader"] and rnd["victim_survives"]:
        stepped_down = next((t for t, s, v in sorted(samples)
                             if s == old and t > fault and v is not None and v != old), None)
    acks = sorted(o.ret for o in ops if o.kind == "write" and o.outcome == "ok"
                  and fault < o.ret <= until)
    new_name = new[1] if new else None
    # When the leader was the victim: the first write its successor acknowledged. Otherwise
    # (a follower was hit) the first write acknowledged after the fault, by anyone.
    by = new_name if rnd["victim_was_leader"] else None
    first_write = next(
        (o.ret for o in sorted((o for o in ops if o.kind == "write" and o.outcome == "ok"),
                               key=lambda o: o.ret)
         if o.ret > fault and (by is None or o.served_by == by)), None)
    points = [fault, *acks, until]
    gap = max(b - a for a, b in zip(points, points[1:], strict=False))
    caught_up = None
    if rnd["recover_at"] is not None:
        caught_up = next(
            (o.ret for o in sorted(ops, key=lambda o: o.invoke)
             if o.kind == "read" and o.mode == "stale" and o.outcome == "ok"
             and o.target == rnd["victim"] and o.invoke > rnd["recover_at"] and o.id not in stale),
            None)

    # Requests the victim received during the fault and answered only after it recovered
    # (queued at a paused server; waiting at a cut-off one): what did they see?
    waiting: dict[str, dict[str, int]] = {}
    if rnd["recover_at"] is not None:
        for o in ops:
            if (o.target == rnd["victim"] and fault < o.invoke < rnd["recover_at"]
                    and o.ret is not None and o.ret > rnd["recover_at"]):
                w = waiting.setdefault(o.mode, {"answered": 0, "ok": 0, "stale": 0})
                w["answered"] += 1
                w["ok"] += o.outcome == "ok"
                w["stale"] += o.id in stale

    def rel(t: float | None) -> float | None:
        return None if t is None else round((t - fault) * 1000)

    steps = [("fault", fault, rnd["fault"])]
    if stepped_down is not None:
        steps.append(("old leader stepped down", stepped_down, f"{old} no longer names itself"))
    previous, announced = old, False
    for t, who in changes:
        if who is None:
            steps.append(("leader lost", t, f"no quorum names a leader (was {previous})"))
        elif new is not None and who == new[1] and not announced:
            steps.append(("new leader", new[0], f"a quorum names {who}"))
            announced = True
        else:
            steps.append(("leader", t, f"a quorum names {who}" + (" again" if who == old else "")))
        previous = who or previous
    if first_write is not None:
        steps.append(("first acknowledged write", first_write,
                      f"served by {by}" if by else "after the fault"))
    if rnd["recover_at"] is not None:
        steps.append(("recovered", rnd["recover_at"], rnd["recover"]))
    if caught_up is not None:
        steps.append(("victim's stale reads fresh again", caught_up, rnd["victim"]))
    steps.sort(key=lambda s: s[1])
    return {
        "round": rnd["number"],
        "fault": rnd["fault"],
        "victim": rnd["victim"],
        "old_leader": old,
        "fault_at_s": _r(fault),
        "old_leader_stepped_down_ms": rel(stepped_down),
        "leader_lost_ms": rel(lost),
        "new_leader": new_name,
        "new_leader_ms": rel(new[0] if new else None),
        "first_acknowledged_write_ms": rel(first_write),
        "recovered_ms": rel(rnd["recover_at"]),
        "victim_fresh_again_ms": rel(caught_up),
        "longest_write_gap_ms": round(gap * 1000),
        "answered_after_recovery": waiting,
        "leader_changes": [{"at_ms": rel(t), "leader": who} for t, who in changes],
        "steps": [{"what": w, "at_s": _r(t), "after_fault_ms": rel(t), "detail": d}
                  for w, t, d in steps],
    }


def expectations(scenario: str, modes: dict[str, Any], writes: dict[str, Any]
                 ) -> list[dict[str, Any]]:
    exp = [
        ("consistent reads are linearizable", modes["consistent"]["linearizable"]),
        ("default reads are linearizable", modes["default"]["linearizable"]),
        ("default reads are never stale", modes["default"]["stale_reads"] == 0),
        ("no acknowledged write is lost", writes["lost"] == 0),
    ]
    if scenario == "leader-isolation":
        exp.append(("stale reads on the cut-off side are stale", modes["stale"]["stale_reads"] > 0))
    return [{"what": w, "holds": bool(h)} for w, h in exp]


def analyze(*, scenario: str, form: str, seed: int, servers: list[str],
            lanes: list[dict[str, str]], ops: Sequence[Any],
            samples: Sequence[tuple[float, str, str | None]], events: list[dict[str, Any]],
            rounds: list[dict[str, Any]], final: dict[str, Any], end: float) -> dict[str, Any]:
    created: dict[str, int] = final["created"]
    stale = staleness(ops, created)
    view = leader_view(samples)
    writes = [o for o in ops if o.kind == "write"]
    acked = {o.key for o in writes if o.outcome == "ok"}
    missing = {k for names in final["missing_on"].values() for k in names}
    lost = sorted(k for k in acked if k not in created or k in missing)
    write_report = {
        "invoked": len(writes),
        "acknowledged": len(acked),
        "unknown": sum(o.outcome == "unknown" for o in writes),
        "failed": sum(o.outcome == "fail" for o in writes),
        "unknown_that_landed": sum(o.outcome == "unknown" and o.key in created for o in writes),
        "lost": len(lost),
        "lost_names": lost[:20],
        "errors": dict(Counter(o.error.split(" (")[0][:40] for o in writes
                               if o.outcome != "ok").most_common()),
    }
    modes = {m: _mode_report(ops, m, stale, created) for m in MODES}
    return {
        "scenario": scenario,
        "form": form,
        "seed": seed,
        "servers": servers,
        "clients": lanes,
        "load_seconds": _r(end, 2),
        "operations": len(ops),
        "writes": write_report,
        "modes": modes,
        "rounds": [_round_timeline(r, ops, samples, view, stale, end) for r in rounds],
        "leader_changes": [{"at_s": _r(t), "leader": who} for t, who in view],
        "events": [{"at_s": _r(e["t"]), "kind": e["kind"], "text": e["text"]} for e in events],
        "expectations": expectations(scenario, modes, write_report),
    }


# ---- text ----


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:+.0f} ms"


def render_text(report: dict[str, Any]) -> str:
    w = report["writes"]
    lines = [
        f"== peerplane lab: {report['scenario']} ({report['form']} form, seed {report['seed']})",
        f"   {report.get('summary', '')}",
        f"   3 servers, {len(report['clients'])} clients (one writer and one reader per mode "
        f"pinned to each server), {report['load_seconds']} s of load, "
        f"{report['operations']} operations",
        "",
        "failover timeline (times after the fault):",
    ]
    for rnd in report["rounds"]:
        lines.append(f"  round {rnd['round']}: {rnd['fault']} at {rnd['fault_at_s']:.2f} s")
        for s in rnd["steps"][1:]:
            lines.append(f"    {_ms(s['after_fault_ms']):>10}  {s['what']:<34} {s['detail']}")
        lines.append(f"    longest stretch without an acknowledged write: "
                     f"{rnd['longest_write_gap_ms']} ms")
        if rnd["answered_after_recovery"]:
            late = sorted(rnd["answered_after_recovery"].items())
            parts = [f"{m} {w['answered']} ({w['ok']} ok, {w['stale']} stale)" if m != "write"
                     else f"write {w['answered']} ({w['ok']} acknowledged)" for m, w in late]
            lines.append(f"    sent to {rnd['victim']} during the fault, answered after "
                         f"recovery: {', '.join(parts)}")
    lines += [
        "",
        f"writes: {w['invoked']} sent, {w['acknowledged']} acknowledged, {w['unknown']} outcome "
        f"unknown ({w['unknown_that_landed']} of them landed), {w['failed']} refused; "
        f"lost: {w['lost']}",
        "",
        f"{'mode':<11}{'reads':>6}{'answered':>9}{'stale':>7}{'max stale':>11}{'max stale':>11}"
        f"{'max Last':>10}{'p50':>7}  linearizable",
        f"{'':<11}{'':>6}{'':>9}{'':>7}{'(index)':>11}{'(ms)':>11}{'Contact':>10}{'(ms)':>7}",
    ]
    for m in MODES:
        r = report["modes"][m]
        p50 = "-" if r["latency_ms_p50"] is None else f"{r['latency_ms_p50']:.0f}"
        lines.append(
            f"{m:<11}{r['reads']:>6}{r['answered']:>9}{r['stale_reads']:>7}"
            f"{r['max_staleness_index']:>11}{r['max_staleness_ms']:>11}"
            f"{r['max_last_contact_ms']:>10}{p50:>7}  {'yes' if r['linearizable'] else 'NO'}"
        )
    for m in MODES:
        errs = report["modes"][m]["errors"]
        if errs:
            lines.append(f"  {m} errors: " + ", ".join(f"{k} x{v}" for k, v in errs.items()))
    for m in MODES:
        first = report["modes"][m]["first_violation"]
        if first:
            head = "\n      ".join(first.splitlines()[:4])
            lines.append(f"  {m}: first violation ({report['modes'][m]['violations']} names):"
                         f"\n      {head}")
    lines += ["", "expected:"]
    for e in report["expectations"]:
        lines.append(f"  [{'ok' if e['holds'] else 'FAILED'}] {e['what']}")
    if "files" in report:
        lines += ["", f"timeline: {report['files']['timeline_svg']}",
                  f"history:  {report['files']['history']}"]
    lines.append(f"(wall time {report.get('wall_seconds', '?')} s)")
    return "\n".join(lines)

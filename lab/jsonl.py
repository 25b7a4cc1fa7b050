"""History files: a recorded history as JSON lines, and back, so any checker can re-verify a run.

One operation per line (README "History files"):

    {"client": "c3", "key": "w-3-17", "op": "write", "value": "present",
     "call": 12.503, "return": 12.561, "ok": true}

- `op`: "write" (the key's register is set to `value`) or "read" (`value` is what was read; null
  = absent). Every key starts absent.
- `call`, `return`: seconds on one monotonic clock shared by all clients; `return` is when the
  client got its answer or gave up (null: still in flight when the run ended).
- `ok`: true (acknowledged; a read returned `value`), false (definitely did not take effect:
  a clean rejection, or the server could not be reached), null (outcome unknown: a timeout or
  503 "outcome unknown" - a write may take effect at any time after `call`, or never).
- Client "final" holds one read per key made after the run, after every other operation: the
  state the cluster kept. An acknowledged write missing there is a lost write.

    python -m lab.jsonl run-history.jsonl     # re-check a file with peerplane's checker
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from .history import HistoryRecorder, final_reads
from .linearizability import Operation, check_operations

_OUTCOME = {"ok": True, "fail": False, "unknown": None}


def lines(recorder: HistoryRecorder, final: Mapping[Hashable, Any] | None = None) -> list[dict]:
    """The recorded operations (and one final read per key) as history-file records."""
    out = []
    for p in recorder.records():
        out.append({
            "client": str(p.client), "key": str(p.key), "op": p.kind,
            "value": p.input if p.kind == "write" else p.output,
            "call": round(p.invoke, 6), "return": None if p.ret is None else round(p.ret, 6),
            "ok": _OUTCOME.get(p.outcome or "unknown"),
        })
    for f in final_reads(recorder.operations(), final or {}):
        out.append({"client": f.client, "key": str(f.key), "op": "read", "value": f.output,
                    "call": round(f.invoke, 6), "return": round(f.ret or 0.0, 6), "ok": True})
    return out


def write(path: str, recorder: HistoryRecorder,
          final: Mapping[Hashable, Any] | None = None) -> int:
    """Write the history file; returns the number of lines."""
    records = lines(recorder, final)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    return len(records)


def operations(records: Iterable[dict]) -> list[Operation]:
    """History-file records as the checker's operations (failed ops and unknown reads say
    nothing and are dropped; unknown writes are open-ended)."""
    ops = []
    for r in records:
        if r["ok"] is False or (r["ok"] is None and r["op"] == "read"):
            continue
        known = r["ok"] is True
        ops.append(Operation(
            r["client"], r["key"], r["op"],
            input=r["value"] if r["op"] == "write" else None,
            output=r["value"] if r["op"] == "read" else None,
            invoke=float(r["call"]), ret=float(r["return"]) if known else None,
        ))
    return ops


def read(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.jsonl",
                                 description="Check recorded histories for linearizability.")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--timeout-per-key", type=float, default=10.0)
    args = ap.parse_args(argv)
    bad = 0
    for path in args.files:
        records = read(path)
        result = check_operations(operations(records), timeout_per_key=args.timeout_per_key)
        verdict = "linearizable" if result.ok else f"NOT linearizable: {result.describe()}"
        print(f"{path}: {len(records)} operations, {verdict}")
        bad += not result.ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Two checkouts, one load, paired runs: is B faster than A, beyond this host's drift?

    .venv/bin/python bench/ab.py TREE_A TREE_B [--pairs 6] [--pause 5] [--load write]
                                 [--duration 10] [--peerings 100] [--agent-arg ARG ...]

Each run is `bench/profile.py --no-spy` started from that tree (so its servers run that tree's
code): a fresh three-server cluster, wrk on all three, rate and CPU per request. Pairs run in
ABBA order (A B, B A, A B, ...) with a pause before every run. Back to back and always in the
same order, the same code measured 2,375 / 1,984, 2,782 / 2,057 and 2,005 / 2,045 writes/s
on 2026-12-01 (the second run of a pair lost up to a quarter): the order and the previous
run's wind-down are part of what a fixed order measures.

The summary gives each tree's mean, B/A per pair and their geometric mean, and in how many
pairs B won. With per-run spread of 10-15 % here, a difference of a few per cent needs many
pairs; read the per-pair ratios, not only the mean.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

_RATE = re.compile(r"load \w+: (\d+)/s p50 ([\d.]+) ms p99 ([\d.]+) ms errors (\d+)")
_CPU = re.compile(r"all servers ([\d.]+)")


@dataclass
class Sample:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float


def parse(out: str) -> Sample:
    """profile.py's first two lines -> one sample."""
    m, c = _RATE.search(out), _CPU.search(out)
    if not m or not c:
        raise RuntimeError(f"unexpected profile.py output:\n{out[-2000:]}")
    return Sample(float(m.group(1)), float(m.group(2)), float(m.group(3)), int(m.group(4)),
                  float(c.group(1)))


def run_one(tree: str, args: argparse.Namespace) -> Sample:
    cmd = [sys.executable, os.path.join(tree, "bench", "profile.py"), "--no-spy",
           "--load", args.load, "--duration", str(args.duration),
           "--peerings", str(args.peerings), *(f"--agent-arg={a}" for a in args.agent_arg)]
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: profile.py exited {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    return parse(proc.stdout)


def order(pair: int) -> tuple[str, str]:
    """ABBA: pair 0 runs A first, pair 1 B first, and so on."""
    return ("A", "B") if pair % 2 == 0 else ("B", "A")


def summary(samples: dict[str, list[Sample]]) -> list[str]:
    a, b = samples["A"], samples["B"]
    ratios = [y.rate / x.rate for x, y in zip(a, b, strict=True) if x.rate]
    lines = [f"{name}: mean {statistics.mean(s.rate for s in xs):,.0f}/s "
             f"(runs {', '.join(f'{s.rate:,.0f}' for s in xs)}), "
             f"CPU per request {statistics.mean(s.cpu_ms for s in xs):.3f} ms, "
             f"p50 {statistics.median(s.p50_ms for s in xs):.1f} ms"
             for name, xs in samples.items()]
    if ratios:
        geo = math.exp(statistics.mean(math.log(r) for r in ratios))
        lines.append(f"B/A per pair: {', '.join(f'{r:.3f}' for r in ratios)}; "
                     f"geometric mean {geo:.3f}; B faster in {sum(r > 1 for r in ratios)} "
                     f"of {len(ratios)} pairs")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tree_a")
    p.add_argument("tree_b")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--pause", type=float, default=5.0, help="seconds before every run")
    p.add_argument("--load", default="write")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--peerings", type=int, default=100)
    p.add_argument("--agent-arg", action="append", default=[])
    args = p.parse_args()
    trees = {"A": os.path.abspath(args.tree_a), "B": os.path.abspath(args.tree_b)}
    samples: dict[str, list[Sample]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        for name in order(pair):
            time.sleep(args.pause)
            s = run_one(trees[name], args)
            samples[name].append(s)
            print(f"pair {pair + 1} {name}: {s.rate:,.0f}/s p50 {s.p50_ms:.1f} ms "
                  f"p99 {s.p99_ms:.1f} ms errors {s.errors}, CPU per request "
                  f"{s.cpu_ms:.2f} ms", flush=True)
    print("\n".join(summary(samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

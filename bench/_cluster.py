"""Shared by the bench scripts: a real three-process cluster (lab.cluster) and wrk."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from lab.cluster import LocalCluster

HERE = os.path.dirname(os.path.abspath(__file__))

__all__ = ["LocalCluster", "Result", "wrk", "machine", "cpu_seconds"]


@dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk(
    script: str, nodes: list[str], path: str, seconds: float, connections: int,
    env: dict[str, str] | None = None,
) -> Result:
    """Run wrk with bench/<script>, thread i on nodes[i]; `env` adds variables for the script."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is required: apt-get install wrk")
    threads = len(nodes)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(max(connections, threads)),
         "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", os.path.join(HERE, script), f"http://{nodes[0]}{path}"],
        env={**os.environ, **(env or {}), "PEERPLANE_BENCH_NODES": ",".join(nodes)},
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) "
                  r"errors=(\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    req, dur, p50, p99, err = (int(x) for x in m.groups())
    return Result(req, dur / 1e6, p50 / 1000, p99 / 1000, err)


def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    # The interpreter's build matters as much as its version (see PY in the Makefile): name
    # the base interpreter behind the venv.
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]} ({base})"


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

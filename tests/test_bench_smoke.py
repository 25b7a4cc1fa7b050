"""The benchmark comparison still runs end to end (bench/compare.py --smoke), and so does the
A/B harness (bench/ab.py).

A seconds-long run of every part - peerplane (writes, reads, failover, peerings at scale,
establish), etcd 3.4 and raw PySyncObj - so the bench scripts cannot rot. Its numbers are not
checked (speed is measured in benchmarks, never asserted in tests); only that every part ran.
Needs `wrk` and `etcd` (Debian's wrk, etcd-server; .ci/run installs them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.integration
def test_compare_smoke_runs_every_part(tmp_path):
    md = tmp_path / "table.md"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "compare.py"), "--smoke",
         "--markdown", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    table = md.read_text()
    for row in ("writes/s", "catalog registers/s", "consistent reads/s", "stale reads/s",
                "failover ms",
                "establish -> ACTIVE", "export -> visible on the peer", "initial sync s",
                "list p50 ms", "cold restart s"):
        assert row in table, table
    assert "FAILED" not in table, table
    # every part ran by default, each with its numbers (a row alone is printed either way)
    assert "failover ms, median of 3 " in table, table
    assert "target: list p50 ms at n peerings:" in table, table
    assert re.search(r"paired by round \(the median of each round.s ratio\): writes/s vs etcd "
                     r"\d+\.\d\d× \([\d. /]+\); writes p50 vs etcd \d+\.\d\d× .*; writes/s at n "
                     r"vs at 100 peerings \d+\.\d\d×", table), table
    assert re.search(r"CPU per write over all rounds, .*: peerplane \d+\.\d+ ms, "
                     r"etcd \d+\.\d+ ms, aiohttp \+ raw PySyncObj \d+\.\d+ ms", table), table
    assert re.search(r"writes/s \(fsync; 32 conns; raw: behind aiohttp, no app\) *\| *[\d,]+ "
                     r"*\| *[\d,]+ *\| *[\d,]+ *\|", table), table


@pytest.mark.integration
def test_ab_runs_pairs_in_abba_order_and_summarizes_them():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "ab.py"), ROOT, ROOT, "--pairs", "2",
         "--pause", "0", "--duration", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    runs = re.findall(r"^pair (\d) ([AB]): [\d,]+/s p50 ", out, re.M)
    assert runs == [("1", "A"), ("1", "B"), ("2", "B"), ("2", "A")], out
    assert re.search(r"^B/A per pair: [\d.]+, [\d.]+; geometric mean [\d.]+; "
                     r"B faster in \d of 2 pairs$", out, re.M), out

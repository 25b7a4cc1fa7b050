"""Issue 10: `peerplane lab <scenario>` shows, measures and explains each read mode under faults.

The analysis is tested on hand-made histories (fast); each scenario then runs in its short form
through the real command (`python -m peerplane_cli lab <scenario> --short --json`), and the expected
direction is asserted: `consistent` always linearizable, `default` never stale (linearizable)
in every scenario, `stale` shows stale reads in leader-isolation. Wall times are printed in the
run summary and recorded as junit properties, never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from argparse import Namespace

import pytest
from conftest import SCENARIO_LINES

from lab import clients, scenarios
from lab import report as labreport
from lab import svg as labsvg
from lab.clients import LabOp
from lab.linearizability import Operation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(i: int, key: str, invoke: float, ret: float | None, outcome: str = "ok",
          by: str = "s1", bucket: int = 0) -> LabOp:
    return LabOp(i, "w1", "write", "write", "s1", bucket, key, invoke, ret, outcome=outcome,
                 served_by=by, status=200 if outcome == "ok" else None)


def read(i: int, mode: str, names: list[str], index: int, invoke: float, ret: float,
         target: str = "s2", bucket: int = 0) -> LabOp:
    return LabOp(i, f"{mode[0]}1", "read", mode, target, bucket, None, invoke, ret,
                 status=200, outcome="ok", names=names, index=index, served_by=target,
                 last_contact_ms=0)


# ---- analysis on hand-made histories ----


def test_a_read_is_stale_when_it_misses_a_write_acknowledged_before_it_was_sent():
    created = {"k0": 10, "k1": 11, "k2": 12}
    ops = [
        write(0, "k0", 0.0, 1.0),
        write(1, "k1", 1.1, 2.0),
        write(2, "k2", 2.1, 3.0),
        read(3, "stale", ["k0"], 10, 2.5, 2.6),  # missed k1 (acked at 2.0): 1 entry, 500 ms
        read(4, "stale", ["k0", "k1"], 11, 2.5, 3.5),  # k2 was not acked when it was sent
        read(5, "stale", ["k0"], 10, 4.0, 4.1),  # missed k1 and k2: 2 entries, since 2.0
        read(6, "default", ["k0", "k1", "k2"], 12, 3.2, 3.3),
    ]
    lags = labreport.staleness(ops, created)
    assert set(lags) == {3, 5}
    assert lags[3][0] == 1 and lags[3][1] == pytest.approx(500)
    assert lags[5][0] == 2 and lags[5][1] == pytest.approx(2000)


def test_reads_are_projected_onto_every_name_of_their_partition():
    created = {"k0": 10, "k1": 11}
    ops = [
        write(0, "k0", 0.0, 1.0),
        write(1, "k1", 1.5, None, outcome="unknown"),
        write(2, "k9", 0.0, 0.1, bucket=1),
        read(3, "stale", ["k0"], 10, 2.0, 2.1),
        read(4, "default", ["k0", "k1"], 11, 2.0, 2.1),
    ]
    hist = labreport.history(ops, "stale", created)
    reads = sorted((o.key, o.output) for o in hist if o.kind == "read")
    assert reads == [("k0", "present"), ("k1", None)]  # not k9: another partition
    unknown = next(o for o in hist if o.key == "k1" and o.kind == "write")
    assert unknown.ret is None


def test_a_stale_read_breaks_linearizability_only_in_its_own_mode():
    created = {"k0": 10, "k1": 11}
    ops = [
        write(0, "k0", 0.0, 1.0),
        write(1, "k1", 1.1, 2.0),
        read(2, "stale", ["k0"], 10, 2.5, 2.6),
        read(3, "consistent", ["k0", "k1"], 11, 2.5, 2.7),
        read(4, "default", ["k0", "k1"], 11, 2.8, 2.9),
    ]
    modes = {m: labreport._mode_report(ops, m, labreport.staleness(ops, created), created)
             for m in clients.MODES}
    assert modes["stale"]["linearizable"] is False
    assert modes["stale"]["stale_reads"] == 1
    assert "k1" in modes["stale"]["first_violation"]
    assert modes["consistent"]["linearizable"] and modes["consistent"]["stale_reads"] == 0
    assert modes["default"]["linearizable"] and modes["default"]["stale_reads"] == 0


def test_the_leader_view_is_what_a_quorum_names():
    samples = [
        (0.0, "s1", "s1"), (0.0, "s2", "s1"), (0.0, "s3", "s1"),
        (1.0, "s1", None),  # paused: no answer; the others still name it
        (1.5, "s2", ""), (1.6, "s3", ""),
        (2.0, "s2", "s3"), (2.1, "s3", "s3"),
        (3.0, "s1", "s1"),  # woke up believing it leads: one voice is no quorum
    ]
    assert labreport.leader_view(samples) == [(0.0, "s1"), (1.5, None), (2.1, "s3")]


def synthetic_run() -> tuple[dict, list[LabOp]]:
    ops = [
        write(0, "k0", 0.0, 0.5),
        read(1, "stale", [], 4, 0.6, 0.7, target="s1"),  # 100 ms behind
        write(2, "k1", 1.2, 3.5, by="s2"),
        read(3, "default", ["k0", "k1"], 7, 3.6, 3.7),
        read(4, "consistent", ["k0", "k1"], 7, 3.6, 3.8),
        read(5, "stale", ["k0"], 6, 3.9, 4.0, target="s1"),
        LabOp(6, "d1", "read", "default", "s1", 0, None, 1.5, None, gave_up=7.5,
              outcome="fail", error="timeout"),
        read(7, "stale", [], 4, 4.5, 5.5, target="s1"),  # waited at s1 across the heal
    ]
    samples = [(0.0, "s1", "s1"), (0.0, "s2", "s1"), (0.0, "s3", "s1"),
               (1.3, "s1", ""), (1.3, "s2", ""), (1.3, "s3", ""),
               (2.6, "s1", ""), (2.6, "s2", "s2"), (2.6, "s3", "s2")]
    rounds = [{"number": 1, "fault": "isolate s1 (leader)", "victim": "s1",
               "victim_was_leader": True, "old_leader": "s1", "fault_at": 1.2,
               "victim_survives": True, "recover": "heal", "recover_at": 5.0, "end_at": 8.0}]
    events = [{"t": 1.2, "kind": "fault", "text": "isolate s1 (leader)"},
              {"t": 5.0, "kind": "recover", "text": "heal"}]
    lanes = [{"client": c, "mode": m, "target": "s1"}
             for c, m in (("w1", "write"), ("d1", "default"), ("c1", "consistent"),
                          ("s1", "stale"))]
    final = {"created": {"k0": 5, "k1": 7}, "missing_on": {"s1": [], "s2": [], "s3": []}}
    report = labreport.analyze(
        scenario="leader-isolation", form="short", seed=1, servers=["s1", "s2", "s3"],
        lanes=lanes, ops=ops, samples=samples, events=events, rounds=rounds, final=final,
        end=8.0)
    return report, ops


def test_the_report_has_a_failover_timeline_and_expectations():
    report, _ = synthetic_run()
    rnd = report["rounds"][0]
    assert rnd["old_leader_stepped_down_ms"] == pytest.approx(100)
    assert rnd["leader_lost_ms"] == pytest.approx(100)
    assert rnd["new_leader"] == "s2"
    assert rnd["new_leader_ms"] == pytest.approx(1400)
    assert rnd["first_acknowledged_write_ms"] == pytest.approx(2300)
    assert rnd["recovered_ms"] == pytest.approx(3800)
    whats = [s["what"] for s in rnd["steps"]]
    assert whats[:5] == ["fault", "old leader stepped down", "leader lost", "new leader",
                         "first acknowledged write"]
    assert rnd["answered_after_recovery"] == {"stale": {"answered": 1, "ok": 1, "stale": 1}}
    assert report["modes"]["stale"]["stale_reads"] == 3
    # sent at 4.5 with index 4: k0 (index 5) had been acknowledged at 0.5
    assert report["modes"]["stale"]["max_staleness_index"] == 3
    assert report["modes"]["stale"]["max_staleness_ms"] == 4000
    held = {e["what"]: e["holds"] for e in report["expectations"]}
    assert all(held.values()), held
    text = labreport.render_text(report)
    assert "new leader" in text and "linearizable" in text
    json.dumps(report)  # --json must be able to print it


def test_the_timeline_picture_is_well_formed_svg_with_stale_reads_marked():
    report, ops = synthetic_run()
    svg = labsvg.render(report, ops, labreport.staleness(ops, {"k0": 5, "k1": 7}))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    fills = [e.get("fill") for e in root.iter() if e.tag.endswith("rect")]
    assert fills.count(labsvg.COLOURS["stale"]) >= 3  # the stale reads (+ legend)
    assert labsvg.COLOURS["fresh"] in fills and labsvg.COLOURS["write"] in fills
    texts = "".join(e.text or "" for e in root.iter() if e.tag.endswith("text"))
    assert "isolate s1 (leader)" in texts and "heal" in texts
    # A request that never got an answer is drawn until the client gave up (7.5 s), not on.
    assert "timeout" in svg


# ---- the command ----


def test_unknown_scenario_is_refused_with_the_list(capsys):
    args = Namespace(scenario=["nope"], short=True, json=False, out=None, seed=1)
    assert scenarios.main(args) == 2
    err = capsys.readouterr().err
    assert "unknown scenario nope" in err and "leader-isolation" in err


@pytest.mark.integration
def test_the_lab_runs_from_the_wheel_installed_in_a_fresh_venv_outside_the_checkout(tmp_path):
    """`pip install` of the built wheel is all `peerplane lab` needs: the lab ships in the wheel
    (lab/), its agents are `python -m peerplane_cli agent` of the installed package, and nothing
    reads the source tree (the run's working directory and imports are outside it)."""
    src = _mkdir(tmp_path / "peerplane")  # what an sdist holds: the packages, project files
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        include = tomllib.load(f)["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "lab" in include
    for package in (p for p in include if "." not in p):
        shutil.copytree(os.path.join(REPO, package), src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    wheels, venv, run = tmp_path / "wheels", tmp_path / "venv", _mkdir(tmp_path / "run")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
         tmp_path)
    [wheel] = wheels.glob("peerplane-*.whl")
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    _run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], tmp_path)
    shutil.rmtree(src)  # nothing left to import from but the installed wheel

    where = _run([str(venv / "bin" / "python"), "-c",
                  "import lab, peerplane_cli; print(lab.__file__)"], run).stdout.strip()
    assert where.startswith(str(venv)), where
    proc = _run([str(venv / "bin" / "peerplane"), "lab", "failover", "--short", "--json",
                 "--out", str(run / "out")], run, timeout=300)
    report = json.loads(proc.stdout)
    assert report["scenario"] == "failover"
    assert all(e["holds"] for e in report["expectations"]), report["expectations"]
    assert (run / "out" / "failover.svg").is_file()


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], cwd, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stderr[-3000:]}"
    return proc


def run_lab(scenario: str, out: str, timeout: float = 300.0) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerplane_cli", "lab", scenario, "--short", "--json", "--out", out],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the lab stops its servers on SIGTERM
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"lab {scenario} did not finish in {timeout}s:\n{stderr[-3000:]}")
    assert proc.returncode in (0, 1), stderr[-3000:]
    return json.loads(stdout)


@pytest.mark.integration
@pytest.mark.parametrize("scenario", list(scenarios.SCENARIOS))
def test_scenario_short_form_shows_the_expected_direction(scenario, tmp_path, record_property):
    if scenarios.SCENARIOS[scenario].netns:
        from lab.netns import missing_tools

        if problem := missing_tools():
            pytest.fail(problem, pytrace=False)  # never skip: CI installs these tools
    report = run_lab(scenario, str(tmp_path))
    modes = report["modes"]
    line = (f"LAB {scenario} (short): wall={report['wall_seconds']}s ops={report['operations']} "
            + " ".join(f"{m}:stale={modes[m]['stale_reads']},lin={modes[m]['linearizable']}"
                       for m in clients.MODES))
    SCENARIO_LINES.append(line)
    record_property("wall_seconds", report["wall_seconds"])
    record_property("report", json.dumps({k: report[k] for k in ("modes", "rounds", "writes")}))

    for m in clients.MODES:
        assert modes[m]["answered"] > 0, (m, modes[m])
    assert report["writes"]["acknowledged"] > 0
    assert modes["consistent"]["linearizable"], modes["consistent"]["first_violation"]
    assert modes["consistent"]["stale_reads"] == 0
    assert modes["default"]["linearizable"], modes["default"]["first_violation"]
    assert modes["default"]["stale_reads"] == 0
    assert report["writes"]["lost"] == 0, report["writes"]
    if scenario == "leader-isolation":
        assert modes["stale"]["stale_reads"] > 0
        assert modes["stale"]["max_staleness_index"] > 0
    assert all(e["holds"] for e in report["expectations"]), report["expectations"]

    rnd = report["rounds"][0]
    if scenario != "follower-lag":  # the leader is the victim: a new one takes over
        assert rnd["new_leader"] not in (None, rnd["old_leader"]), rnd
        assert rnd["first_acknowledged_write_ms"] is not None, rnd
    svg = report["files"]["timeline_svg"]
    assert ET.parse(svg).getroot().tag.endswith("svg")
    with open(report["files"]["history"]) as f:
        assert sum(1 for _ in f) == report["operations"]


def test_operations_convert_to_checker_operations():
    created = {"k0": 3}
    hist = labreport.history([write(0, "k0", 0.0, 1.0)], "stale", created)
    assert hist == [Operation("w1", "k0", "write", "present", None, 0.0, 1.0)]

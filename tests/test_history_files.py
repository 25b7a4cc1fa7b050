"""History files (lab/jsonl.py): a recorded history written as JSON lines reads back as the
same checkable operations, and a file showing a lost write fails the re-check."""

from __future__ import annotations

import json

from lab import jsonl
from lab.history import HistoryRecorder


def recorded() -> HistoryRecorder:
    ticks = iter(range(100))
    rec = HistoryRecorder(clock=lambda: float(next(ticks)))
    with rec.op("c1", "a", "write", "present") as op:
        op.ok()
    with rec.op("c2", "a", "read") as op:
        op.ok("present")
    with rec.op("c1", "b", "write", "present") as op:
        op.unknown()
    with rec.op("c2", "c", "write", "present") as op:
        op.fail()
    return rec


def test_each_operation_is_one_line_with_the_documented_fields(tmp_path):
    path = tmp_path / "h.jsonl"
    assert jsonl.write(str(path), recorded(), {"a": "present", "b": None}) == 6
    first, read, unknown, failed, *final = [json.loads(x) for x in path.read_text().splitlines()]
    assert first == {"client": "c1", "key": "a", "op": "write", "value": "present",
                     "call": 0.0, "return": 1.0, "ok": True}
    assert read["op"] == "read" and read["value"] == "present" and read["ok"] is True
    assert unknown["ok"] is None and unknown["return"] == 5.0
    assert failed["ok"] is False
    assert {(f["client"], f["key"], f["value"]) for f in final} == {
        ("final", "a", "present"), ("final", "b", None)}


def test_a_file_reads_back_as_the_checker_operations(tmp_path):
    path = tmp_path / "h.jsonl"
    rec = recorded()
    jsonl.write(str(path), rec, {})
    assert jsonl.operations(jsonl.read(str(path))) == rec.operations()
    assert jsonl.main([str(path)]) == 0


def test_a_lost_acknowledged_write_fails_the_recheck(tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    jsonl.write(str(path), recorded(), {"a": None})  # the acknowledged write of "a" is gone
    assert jsonl.main([str(path)]) == 1
    assert "NOT linearizable" in capsys.readouterr().out

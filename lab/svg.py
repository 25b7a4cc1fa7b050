"""The lab's timeline picture, written as SVG by hand (no plotting library needed).

One lane per client (writers, then readers by mode), each operation a bar from its call to its
answer, coloured by what happened; a band on top shows which server a quorum named leader;
faults, recoveries and leader changes are vertical markers. Bars closer than a pixel are merged
(the tooltip says how many operations a bar stands for).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

COLOURS = {
    "write": "#3a6db5",
    "fresh": "#4c9f50",
    "stale": "#e0282e",
    "error": "#9a9a9a",
    "unknown": "#f2a93b",
}
LEGEND = [
    ("write", "write acknowledged"),
    ("fresh", "read, up to date"),
    ("stale", "read, stale (missed an acknowledged write)"),
    ("error", "no answer / error (503, refused)"),
    ("unknown", "write outcome unknown"),
]
SERVER_COLOURS = ["#7b4fa0", "#1f8a8a", "#b5651d", "#556b2f", "#8b1a4a"]
LEFT, RIGHT, TOP = 200, 30, 84
LANE, GAP = 15, 5
WIDTH = 1200


def _class(op: Any, stale: dict[int, Any]) -> str:
    if op.kind == "write":
        return {"ok": "write", "unknown": "unknown"}.get(op.outcome, "error")
    if op.outcome != "ok":
        return "error"
    return "stale" if op.id in stale else "fresh"


def _ticks(end: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 20, 30, 60):
        if end / step <= 14:
            return step
    return 120


def render(report: dict[str, Any], ops: Sequence[Any], stale: dict[int, tuple[int, float]]
           ) -> str:
    lanes = report["clients"]
    end = max([report["load_seconds"] or 1.0] + [o.ret for o in ops if o.ret is not None])
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: float) -> float:
        return LEFT + max(0.0, min(t, end)) / end * plot_w

    lane_y = {lane["client"]: TOP + 30 + i * (LANE + GAP) for i, lane in enumerate(lanes)}
    bottom = TOP + 30 + len(lanes) * (LANE + GAP)
    height = bottom + 30 + 18 * len(LEGEND)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="15" font-weight="bold">peerplane lab: '
        f'{escape(report["scenario"])} ({report["form"]} form, seed {report["seed"]})</text>',
        f'<text x="{LEFT}" y="36" fill="#444">{escape(report.get("summary", ""))}</text>',
    ]
    # time axis and grid
    step = _ticks(end)
    t = 0.0
    while t <= end + 1e-9:
        out.append(f'<line x1="{x(t):.1f}" y1="{TOP + 22}" x2="{x(t):.1f}" y2="{bottom}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x(t):.1f}" y="{bottom + 14}" text-anchor="middle" '
                   f'fill="#555">{t:g}s</text>')
        t += step
    # leader band
    colour = {s: SERVER_COLOURS[i % len(SERVER_COLOURS)] for i, s in enumerate(report["servers"])}
    changes = report["leader_changes"]
    out.append(f'<text x="{LEFT - 8}" y="{TOP + 12}" text-anchor="end">leader (quorum view)'
               '</text>')
    for i, ch in enumerate(changes):
        start = ch["at_s"]
        stop = changes[i + 1]["at_s"] if i + 1 < len(changes) else end
        fill = colour.get(ch["leader"], "#ddd") if ch["leader"] else "#ddd"
        w = max(x(stop) - x(start), 0.5)
        label = ch["leader"] or "no leader"
        out.append(f'<rect x="{x(start):.1f}" y="{TOP}" width="{w:.1f}" height="{LANE}" '
                   f'fill="{fill}"><title>{escape(label)} from {start:.3f}s</title></rect>')
        if w > 7 * len(label):
            out.append(f'<text x="{x(start) + 3:.1f}" y="{TOP + 11}" fill="white">'
                       f'{escape(label)}</text>')
    # client lanes
    for lane in lanes:
        y = lane_y[lane["client"]]
        what = "writes" if lane["mode"] == "write" else lane["mode"]
        out.append(f'<text x="{LEFT - 8}" y="{y + 11}" text-anchor="end">{lane["client"]} '
                   f'{what} \u2192 {escape(lane["target"])}</text>')
        out.append(f'<rect x="{LEFT}" y="{y}" width="{plot_w}" height="{LANE}" fill="#f7f7f7"/>')
        bars: list[list[Any]] = []  # [x0, x1, class, count, first op, last op]
        for op in sorted((o for o in ops if o.client == lane["client"]), key=lambda o: o.invoke):
            cls = _class(op, stale)
            stop = op.ret if op.ret is not None else (op.gave_up or end)
            x0, x1 = x(op.invoke), max(x(stop), x(op.invoke) + 1.0)
            if bars and bars[-1][2] == cls and x0 - bars[-1][1] < 1.0:
                bars[-1][1] = max(bars[-1][1], x1)
                bars[-1][3] += 1
                bars[-1][5] = op
            else:
                bars.append([x0, x1, cls, 1, op, op])
        for x0, x1, cls, count, first, last in bars:
            tip = escape(_tip(first, last, count, cls, stale))
            out.append(f'<rect x="{x0:.1f}" y="{y}" width="{x1 - x0:.1f}" height="{LANE}" '
                       f'fill="{COLOURS[cls]}"><title>{tip}</title></rect>')
    # markers
    label_end = [float("-inf"), float("-inf")]  # two rows of labels, so close ones never overlap
    for e in report["events"]:
        dash = "" if e["kind"] == "fault" else ' stroke-dasharray="6,3"'
        at = x(e["at_s"])
        row = 0 if at > label_end[0] + 4 else 1
        width = 6.5 * len(e["text"])
        label_end[row] = at + 3 + width
        # near the right edge the label goes to the left of its line
        anchor, tx = ("end", at - 3) if at + 3 + width > WIDTH else ("start", at + 3)
        out.append(f'<line x1="{at:.1f}" y1="{TOP - 6 - 12 * row}" x2="{at:.1f}" '
                   f'y2="{bottom}" stroke="black" stroke-width="1.5"{dash}/>')
        out.append(f'<text x="{tx:.1f}" y="{TOP - 9 - 12 * row}" font-weight="bold" '
                   f'text-anchor="{anchor}">{escape(e["text"])}</text>')
    for ch in changes[1:]:
        label = f'leader: {ch["leader"] or "none"}'
        out.append(f'<line x1="{x(ch["at_s"]):.1f}" y1="{TOP}" x2="{x(ch["at_s"]):.1f}" '
                   f'y2="{bottom}" stroke="#7b4fa0" stroke-width="1" stroke-dasharray="2,3">'
                   f'<title>{escape(label)} at {ch["at_s"]:.3f}s</title></line>')
    # legend
    y = bottom + 34
    for cls, text in LEGEND:
        out.append(f'<rect x="{LEFT}" y="{y - 10}" width="14" height="11" fill="{COLOURS[cls]}"/>')
        out.append(f'<text x="{LEFT + 20}" y="{y}">{escape(text)}</text>')
        y += 18
    notes = ["solid line: fault", "dashed line: recovery", "dotted purple: leader change"]
    for i, text in enumerate(notes):
        out.append(f'<text x="{LEFT + 420}" y="{bottom + 34 + 18 * i}">{text}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _tip(first: Any, last: Any, count: int, cls: str, stale: dict[int, Any]) -> str:
    def one(op: Any) -> str:
        end = f"{op.ret:.3f}" if op.ret is not None else "?"
        what = f"write {op.key}" if op.kind == "write" else f"{op.mode} read lab-{op.bucket}"
        extra = f" index {op.index}" if op.index is not None else ""
        if op.id in stale:
            behind, ms = stale[op.id]
            extra += f", {behind} entries / {ms:.0f} ms behind"
        if op.error:
            extra += f" ({op.error})"
        if op.served_by:
            extra += f" served by {op.served_by}"
        return f"{what} {op.invoke:.3f}-{end}s{extra}"

    if count == 1:
        return one(first)
    return f"{count} ops ({cls}), {first.invoke:.3f}-{last.ret or last.invoke:.3f}s; " \
           f"last: {one(last)}"

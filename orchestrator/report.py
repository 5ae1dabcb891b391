"""The report of `odorch compare`: REPORT_DIR/report.json (everything compare measured),
report.md (tables, the PNGs beside it), report.html (self-contained: the PNGs inline as data
URIs, no external CSS or JS) and the PNGs: bars.png (AP, AP50, F1; AP50 per class; latency),
pr_curves.png (COCOeval's precision-recall curve per class at IoU 0.5), confusion.png (each
candidate's confusion matrix at its best-F1 threshold) and grid.png (one test image per class,
then the worst ones: the ground truth beside each candidate's boxes). Plots use matplotlib's Agg
canvas (Figure objects, no pyplot state)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odorch.compare import GRID_BOXES, GRID_SCORE, CompareError, compare, parse_candidates
from odorch.converters.fsutil import atomic_write_bytes, atomic_write_json

PNGS = {"bars.png": "AP, AP50 and best F1; AP50 per class; latency per image",
        "pr_curves.png": "Precision-recall per class at IoU 0.5 (COCOeval)",
        "confusion.png": "Confusion matrix per candidate at its best-F1 threshold, IoU 0.5 (rows: truth)",
        "grid.png": "One test image per class, then the worst ones: ground truth and each candidate's boxes"}
NOTES = [
    "Winner: the highest COCO AP (AP@[.5:.95]) to 3 decimals; of candidates tied there, the fastest (latency p50).",
    "Every candidate saw the same images, one per call; its detections were scored by the COCO evaluation of "
    "`odorch evaluate` (a local run's numbers equal `odorch evaluate --batch-size 1`).",
    "Latency: after one warm-up call, each image's call was timed: decoding and forward pass for a local model, "
    "the whole round trip for an endpoint.",
    "F1: at confidence thresholds 0.025 to 0.975 (step 0.025), COCOeval's own matches at IoU 0.5 (of the same class), "
    "TP/FP summed over classes; the best F1 and its threshold (as OpenVINO Training Extensions). Precision, recall "
    "and F1 per class are counted at that threshold from the same matches.",
    "Confusion matrix: at the best-F1 threshold, COCOeval matching at IoU 0.5 across classes (useCats=0), so a box "
    "of the wrong class shows where it was confused; the background row counts boxes on nothing, its column "
    "missed objects. Worst images: the most missed boxes plus false positives.",
    f"Grid: each candidate's boxes at or above its best-F1 threshold ({GRID_SCORE} when it has none), "
    f"at most {GRID_BOXES} per image.",
]


def compare_and_report(candidates: list[str], *, data: Path, split: str, out: Path, runs_dir: Path,
                       region: str | None, device: str, echo: Callable[[str], None]) -> dict[str, Any]:
    """`odorch compare`: evaluate the candidates, write the report to ``out``, print its summary
    and table; CompareError for a candidate or a report folder that cannot be used."""
    report = compare(parse_candidates(candidates, runs_dir=runs_dir), data=data, split=split, runs_dir=runs_dir,
                     region=region, device=device, echo=echo)
    try:
        written = write_report(out, report)
    except OSError as e:
        raise CompareError(f"cannot write the report to {out}: {e}") from e
    echo(report["summary"])
    echo(summary_table(report))
    echo(f"wrote {', '.join(str(p) for p in written)}")
    return report


def summary_table(report: dict[str, Any]) -> str:
    """The report's first table, laid out by rich for a 160-column screen."""
    from rich.console import Console
    from rich.table import Table

    _, header, rows = tables(report)[0]
    table = Table(box=None, pad_edge=False)
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console = Console(width=160, file=io.StringIO())
    console.print(table)
    return console.file.getvalue().rstrip("\n")


def write_report(out_dir: Path, report: dict[str, Any]) -> list[Path]:
    """Write the report files (each atomically) and return their paths."""
    pngs = {"bars.png": bar_chart(report), "pr_curves.png": pr_curves(report), "confusion.png": confusion_plot(report),
            "grid.png": visual_grid(report)}
    for name, data in pngs.items():
        atomic_write_bytes(out_dir / name, data)
    atomic_write_json(out_dir / "report.json", report, indent=2)
    atomic_write_bytes(out_dir / "report.md", markdown(report).encode())
    atomic_write_bytes(out_dir / "report.html", to_html(report, pngs).encode())
    return [out_dir / n for n in ("report.json", "report.md", "report.html", *pngs)]


# ---------------------------------------------------------------- tables


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value == -1 else f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _training(info: dict[str, Any] | None) -> str:
    if not info:
        return "n/a"
    text = f"{_duration(info.get('duration_s'))} {info.get('backend') or ''}".strip()
    if info.get("cost_usd") is not None:
        text += f", ${info['cost_usd']:.2f}"
    study = info.get("study")
    if study:
        text += f"; study: {study['trials']} trials, {_duration(study['duration_s'])}"
        text += f", ${study['cost_usd']:.2f}" if study.get("cost_usd") is not None else ""
    return text


def tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the summary, the 12 COCO statistics, the per-class AP/AP50, the
    per-class precision/recall/F1 and each candidate's confusion matrix."""
    rows = report["candidates"]
    summary = []
    for r in rows:
        f1 = r["f1"]
        threshold = f"{f1['threshold']:.3f}" if f1["threshold"] is not None else "n/a"
        summary.append([r["name"], f"{r['kind']} {r['model'] or ''}".strip(), _num(r["stats"]["AP"]), _num(r["stats"]["AP50"]),
                        f"{f1['f1']:.3f} ({threshold})",
                        f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p95']:.1f}",
                        _num(r["size_mb"], 1), _training(r["training"])])
    stats = [[name, *[_num(r["stats"][name]) for r in rows]] for name in rows[0]["stats"]]
    per_class = [[c, str(rows[0]["per_class"][c]["gt_boxes"]),
                  *[_num(r["per_class"][c][k]) for r in rows for k in ("AP", "AP50")]] for c in report["classes"]]
    errors = [[c, *[_num(r["errors"]["per_class"][c][k]) for r in rows for k in ("precision", "recall", "f1")]]
              for c in report["classes"]]
    confusions = []
    for r in rows:
        confusion = r["errors"]["confusion"]
        confusions.append((f"Confusion matrix of {r['name']} (score >= {r['errors']['threshold']:g}, IoU 0.5)",
                           ["truth ↓ predicted →", *confusion["labels"]],
                           [[label, *map(str, counts)] for label, counts in zip(confusion["labels"], confusion["matrix"])]))
    return [
        ("Summary", ["candidate", "kind", "AP", "AP50", "best F1 (threshold)", "latency p50 / p95 ms", "size MB",
                     "training"], summary),
        ("COCO statistics", ["statistic", *[r["name"] for r in rows]], stats),
        ("AP and AP50 per class", ["class", "gt boxes", *[f"{r['name']} {k}" for r in rows for k in ("AP", "AP50")]],
         per_class),
        ("Precision, recall and F1 per class at each candidate's best-F1 threshold",
         ["class", *[f"{r['name']} {k}" for r in rows for k in ("P", "R", "F1")]], errors),
        *confusions,
    ]


def _about(report: dict[str, Any]) -> str:
    return (f"{report['images']} images of {report['annotations']} (split {report['split']}), "
            f"classes {', '.join(report['classes'])}; written {report['created']}")


def _sources(report: dict[str, Any]) -> list[str]:
    return [f"{r['name']}: {r['source']} ({r['kind']}: {r['target']})" for r in report["candidates"]]


def markdown(report: dict[str, Any]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["# odorch compare", "", f"**{report['summary']}**", "", _about(report), ""]
    for title, header, rows in tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
        lines.append("")
    for name, title in PNGS.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    lines += ["## Candidates", "", *[f"- {s}" for s in _sources(report)], ""]
    lines += ["## Notes", "", *[f"- {n}" for n in [*report["notes"], *NOTES]], ""]
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
.verdict { font-size: 1.3em; font-weight: bold; background: #eef6ee; border-left: 6px solid #3a3; padding: .6em 1em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def to_html(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>odorch compare: {e(report['winner'])} wins</title><style>{STYLE}</style></head><body>",
             "<h1>odorch compare</h1>", f'<p class="verdict">{e(report["summary"])}</p>', f"<p>{e(_about(report))}</p>"]
    for title, header, rows in tables(report):
        parts.append(f"<h2>{e(title)}</h2><table><thead><tr>{''.join(f'<th>{e(h)}</th>' for h in header)}</tr></thead><tbody>")
        parts += [f"<tr>{''.join(f'<td>{e(c)}</td>' for c in row)}</tr>" for row in rows]
        parts.append("</tbody></table>")
    for name, title in PNGS.items():
        uri = "data:image/png;base64," + base64.b64encode(pngs[name]).decode()
        parts.append(f'<h2>{e(title)}</h2><img alt="{e(title)}" src="{uri}">')
    parts.append("<h2>Candidates</h2><ul>" + "".join(f"<li>{e(s)}</li>" for s in _sources(report)) + "</ul>")
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in [*report["notes"], *NOTES]) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- plots


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _bars(ax: Any, groups: list[str], series: dict[str, list[float]], title: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ax.bar([g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))], values, width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
    ax.set_title(title)


def bar_chart(report: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    rows = report["candidates"]
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    left, middle, right = fig.subplots(1, 3, width_ratios=[1, 1.4, 0.8])
    metrics = {r["name"]: [max(0.0, r["stats"]["AP"]), max(0.0, r["stats"]["AP50"]), r["f1"]["f1"]] for r in rows}
    _bars(left, ["AP", "AP50", "best F1"], metrics, "accuracy")
    left.set_ylim(0, 1)
    left.legend(fontsize="small")
    per_class = {r["name"]: [max(0.0, r["per_class"][c]["AP50"]) for c in report["classes"]] for r in rows}
    _bars(middle, report["classes"], per_class, "AP50 per class")
    middle.set_ylim(0, 1)
    names = [r["name"] for r in rows]
    right.bar(names, [r["latency_ms"]["p50"] for r in rows], color="tab:gray", label="p50")
    right.scatter(names, [r["latency_ms"]["p95"] for r in rows], color="tab:red", marker="_", s=400, label="p95", zorder=3)
    right.set_ylabel("ms / image")
    right.set_title("latency")
    right.legend(fontsize="small")
    return _png(fig)


def pr_curves(report: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    classes = report["classes"]
    cols = min(3, len(classes))
    n_rows = -(-len(classes) // cols)
    fig = Figure(figsize=(5 * cols, 4 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, classes):
        for r in report["candidates"]:
            points = [(x, p) for x, p in zip(report["pr_recall"], r["pr_curve"][name]) if p > -1]
            if points:
                ax.plot(*zip(*points), label=f"{r['name']} (AP50 {_num(r['per_class'][name]['AP50'])})")
        if ax.lines:
            ax.legend(fontsize="small", loc="lower left")
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=name, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    for ax in axes[len(classes):]:
        ax.set_axis_off()
    return _png(fig)


def confusion_plot(report: dict[str, Any]) -> bytes:
    """One heat map per candidate: colour is the share of its truth row, the number is the count."""
    import numpy as np
    from matplotlib.figure import Figure

    rows = report["candidates"]
    labels = rows[0]["errors"]["confusion"]["labels"]
    side = 1.2 + 0.6 * len(labels)
    fig = Figure(figsize=(side * len(rows), side + 0.6), layout="constrained")
    for ax, r in zip(fig.subplots(1, len(rows), squeeze=False)[0], rows):
        counts = np.asarray(r["errors"]["confusion"]["matrix"], dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, f"{n:.0f}", ha="center", va="center", color="white" if shares[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set(xlabel="predicted", ylabel="truth", title=f"{r['name']} (score ≥ {r['errors']['threshold']:g})")
    return _png(fig)


def visual_grid(report: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from odorch.runtime.data import read_rgb

    rows, names = report["grid"], [r["name"] for r in report["candidates"]]
    colors = {c: f"C{i % 10}" for i, c in enumerate(report["classes"])}
    if not rows:
        fig = Figure(figsize=(6, 1))
        fig.text(0.5, 0.5, "no ground-truth boxes in this split", ha="center", va="center")
        return _png(fig)
    fig = Figure(figsize=(3 * (1 + len(names)), 3 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1 + len(names), squeeze=False)
    for i, row in enumerate(rows):
        pixels = read_rgb(row["image"])  # the frame the boxes are in (EXIF applied), as the loaders read it
        panels = [("ground truth", row["truth"]), *[(n, row["candidates"][n]) for n in names]]
        for ax, (title, boxes) in zip(axes[i], panels):
            ax.imshow(pixels)
            for b in boxes:
                x0, y0, x1, y1 = b["box"]
                color = colors.get(b["class"], "white")
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5))
                label = b["class"] + (f" {b['score']:.2f}" if "score" in b else "")
                ax.text(x0, y0, label, color="white", fontsize=7, va="bottom", bbox={"facecolor": color, "pad": 1, "linewidth": 0})
            if i == 0:
                shown = f" (score ≥ {report['grid_min_score'][title]:g})" if title in names else ""
                ax.set_title(title + shown, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(f"{row['label']}\n{Path(row['image']).name}", fontsize=9)
    return _png(fig)

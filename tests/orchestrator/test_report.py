"""The report files from a report dict: self-contained HTML with escaped text, markdown tables
with the verdict on top, PNGs written beside them."""

from __future__ import annotations

import json


def _report(image: str) -> dict:
    names = ["a<b>", "plain"]
    stats = {s: 0.5 for s in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")}
    rows = [{
        "name": name, "kind": "url", "source": f"{name}=http://127.0.0.1:1/<script>alert(1)</script>",
        "target": "http://127.0.0.1:1", "model": None, "classes": None, "stats": {**stats, "APl": -1.0},
        "per_class": {"cat|dog": {"AP": 0.5, "AP50": 0.75, "gt_boxes": 1, "detections": 2}},
        "images": 1, "detections": 2, "backend": "pycocotools",
        "f1": {"f1": 0.5, "threshold": None, "precision": 0.5, "recall": 0.5, "curve": [0.5] * 39},
        "latency_ms": {"p50": 10.0, "p95": 12.0, "mean": 11.0, "images": 1}, "size_mb": None,
        "training": {"job": "j", "backend": "sagemaker", "duration_s": 3725, "cost_usd": 1.234},
        "pr_curve": {"cat|dog": [1.0] * 50 + [0.0] * 51},
        "errors": {"threshold": 0.45, "iou": 0.5, "f1": {"f1": 0.5, "threshold": None},
                   "per_class": {"cat|dog": {"precision": 0.25, "recall": 0.5, "f1": 1 / 3, "tp": 1, "fp": 3, "fn": 1}},
                   "confusion": {"labels": ["cat|dog", "background"], "matrix": [[1, 1], [3, 0]]},
                   "worst_images": [{"image_id": 1, "file_name": "im.jpg", "missed": 1, "false_positives": 3}]},
    } for name in names]  # fmt: skip
    return {
        "summary": "a<b> wins: AP 0.500, tied with plain, and faster: 10 ms/image vs 10 ms.", "winner": "a<b>",
        "data": "d", "split": "test", "annotations": "d/annotations/test.json", "images": 1, "classes": ["cat|dog"],
        "created": "2026-01-01T00:00:00+00:00", "f1_thresholds": [], "pr_recall": [i / 100 for i in range(101)],
        "candidates": rows, "grid_min_score": {n: 0.5 for n in names}, "notes": ["a note & more"],
        "grid": [{"class": "cat|dog", "label": "cat|dog", "image": image, "truth": [{"box": [1, 1, 10, 10], "class": "cat|dog"}],
                  "candidates": {n: [{"box": [2, 2, 9, 9], "class": "cat|dog", "score": 0.9}] for n in names}}],
    }  # fmt: skip


def test_write_report(tmp_path):
    from PIL import Image

    from odorch.report import write_report

    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "im.jpg")
    report = _report(str(tmp_path / "im.jpg"))
    written = write_report(tmp_path / "out", report)
    assert [p.name for p in written] == ["report.json", "report.md", "report.html", "bars.png", "pr_curves.png",
                                         "confusion.png", "grid.png"]
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<p class="verdict">a&lt;b&gt; wins' in html and "a note &amp; more" in html
    assert "1:02:05 sagemaker, $1.23" in html and "n/a" in html  # APl -1 and no size: n/a
    md = (tmp_path / "out" / "report.md").read_text().splitlines()
    assert md[2] == f"**{report['summary']}**"
    assert "| cat\\|dog | 1 | 0.500 | 0.750 | 0.500 | 0.750 |" in md
    assert "| cat\\|dog | 0.250 | 0.500 | 0.333 | 0.250 | 0.500 | 0.333 |" in md  # P, R, F1 of each candidate
    assert "## Confusion matrix of plain (score >= 0.45, IoU 0.5)" in md
    assert "| truth ↓ predicted → | cat\\|dog | background |" in md and "| background | 3 | 0 |" in md
    for name in ("bars.png", "pr_curves.png", "confusion.png", "grid.png"):
        with Image.open(tmp_path / "out" / name) as im:
            assert im.format == "PNG"

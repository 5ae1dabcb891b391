"""Dataset statistics for `odorch inspect`: what is in the data and what is wrong with it."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from odorch.converters.dataset import Dataset

# COCO's size buckets (area in pixels²)
SMALL, MEDIUM = 32**2, 96**2


def read_any(path: Path, *, classes: list[str] | None = None, images_dirs: list[Path] | None = None) -> Dataset:
    """Read a dataset in any format odorch knows (converters.detect), or an odorch layout."""
    from odorch.converters.detect import detect, read_detected

    return read_detected(detect(Path(path)), images_dirs=images_dirs, classes=classes)


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {
        "min": round(values[0], 3),
        "p10": round(pick(0.10), 3),
        "median": round(statistics.median(values), 3),
        "p90": round(pick(0.90), 3),
        "max": round(values[-1], 3),
        "mean": round(statistics.fmean(values), 3),
    }


def dataset_stats(dataset: Dataset) -> dict[str, Any]:
    boxes = [box for image in dataset.images for box in image.boxes]
    per_class: dict[str, dict[str, Any]] = {}
    for name in dataset.classes:
        mine = [b for b in boxes if b.label == name]
        per_class[name] = {
            "boxes": len(mine),
            "images": sum(any(b.label == name for b in im.boxes) for im in dataset.images),
            "crowd": sum(b.iscrowd for b in mine),
            "ignore": sum(b.ignore for b in mine),
        }
    sizes = Counter(
        "small" if b.box_area < SMALL else "medium" if b.box_area < MEDIUM else "large" for b in boxes
    )
    per_image = [len(im.boxes) for im in dataset.images]
    return {
        "source": dataset.source,
        "images": len(dataset.images),
        "boxes": len(boxes),
        "classes": len(dataset.classes),
        "per_class": per_class,
        "size_buckets": {k: sizes.get(k, 0) for k in ("small", "medium", "large")},
        "boxes_per_image": {**_quantiles(per_image), "histogram": dict(sorted(Counter(per_image).items()))},
        "images_without_boxes": sum(n == 0 for n in per_image),
        "box_aspect_ratio_w_over_h": _quantiles([b.width / b.height for b in boxes]),
        "box_size_relative_to_image": _quantiles(
            [(b.box_area / (im.width * im.height)) ** 0.5 for im in dataset.images for b in im.boxes]
        ),
        "image_sizes": {f"{w}x{h}": n for (w, h), n in Counter((im.width, im.height) for im in dataset.images).most_common(10)},
        "image_modes": dict(Counter(im.mode for im in dataset.images)),
        "splits": dict(Counter(im.split or "all" for im in dataset.images)),
        **dataset.problems.as_dict(),
    }


def format_stats(stats: dict[str, Any]) -> list[str]:
    lines = [
        f"{stats['source']}",
        f"  {stats['images']} images, {stats['boxes']} boxes, {stats['classes']} classes,"
        f" {stats['images_without_boxes']} images without boxes",
        f"  splits: {', '.join(f'{k} {v}' for k, v in stats['splits'].items())}",
        "",
        f"  {'class':<24}{'boxes':>8}{'images':>8}{'crowd':>7}{'ignore':>8}",
    ]
    for name, c in stats["per_class"].items():
        lines.append(f"  {name:<24}{c['boxes']:>8}{c['images']:>8}{c['crowd']:>7}{c['ignore']:>8}")
    b = stats["size_buckets"]
    lines += [
        "",
        f"  COCO size buckets: small (<32²) {b['small']}, medium {b['medium']}, large (≥96²) {b['large']}",
        f"  boxes per image: {_fmt(stats['boxes_per_image'])}",
        f"  box aspect w/h: {_fmt(stats['box_aspect_ratio_w_over_h'])}",
        f"  box side / image side: {_fmt(stats['box_size_relative_to_image'])}",
        f"  image sizes: {', '.join(f'{k} ×{v}' for k, v in stats['image_sizes'].items())}",
        f"  image modes: {', '.join(f'{k} ×{v}' for k, v in stats['image_modes'].items())}",
    ]
    return lines


def inspect_lines(dataset: Dataset) -> list[str]:
    """What `odorch inspect` prints: the statistics, then the counts and problems."""
    lines = [*format_stats(dataset_stats(dataset)), "", *dataset.problems.report_lines()]
    return lines if dataset.problems.counts else [*lines, "no problems found"]


def _fmt(q: dict[str, Any]) -> str:
    return ", ".join(f"{k} {q[k]}" for k in ("min", "median", "mean", "p90", "max") if k in q)

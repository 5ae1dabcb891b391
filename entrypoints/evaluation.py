"""COCO box evaluation for odorch's validation and test splits.

mAP is never computed by hand here: the reference COCOeval does it, either pycocotools or
faster-coco-eval's C++ drop-in (same statistics, several times faster). This module only
prepares the inputs both of them need and reads their results.

Two things COCOeval does not do on its own, and this module adds:

- **VOC ``difficult`` boxes** (``ignore: 1`` in odorch's COCO files) must be neither a hit nor a
  miss. COCOeval overwrites its internal ``ignore`` flag with ``iscrowd``, so the evaluation runs
  on a copy of the ground truth in which ``ignore: 1`` boxes get ``iscrowd: 1``. A crowd box is
  matched by intersection over the *detection's* area and never counted for recall; a detection
  on it is neither a true nor a false positive. That is a close stand-in for VOC's rule (which
  uses plain IoU), and the caller's dict is never changed.
- **No detections at all**: pycocotools' ``loadRes([])`` raises, so an empty result set is built
  directly and evaluated by the same machinery (AP 0.0 where there is ground truth).

Absent values follow COCO: a statistic with no ground truth to measure (e.g. ``APs`` when there
are no small boxes) and the AP of a class without ground truth are ``-1.0``, never ``None``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("auto", "faster_coco_eval", "pycocotools")


def coco_evaluate(gt: dict, detections: list[dict], *, backend: str = "auto", curves: bool = False) -> dict:
    """COCO box statistics, per-class AP and counts for ``detections`` against ``gt``.

    ``gt`` is a COCO dict (images, annotations, categories); each detection is
    ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``. Every GT image is evaluated,
    with or without boxes or detections, as COCOeval does. ``backend`` is ``"auto"``
    (faster-coco-eval when installed, else pycocotools), ``"faster_coco_eval"`` or ``"pycocotools"``.
    ``curves`` adds ``pr_curves``: COCOeval's own precision-recall curve of each class at IoU 0.5.
    """
    _check_detections(gt, detections)
    name, coco_cls, eval_cls = _backend(backend)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = _run(coco_cls, eval_cls, _gt_for_eval(gt), _clean_detections(detections))
    result = {
        "stats": {stat: float(value) for stat, value in zip(STAT_NAMES, evaluator.stats[: len(STAT_NAMES)])},
        "per_class": _per_class(gt, detections, evaluator),
        "images": len(evaluator.params.imgIds),
        "detections": len(detections),
        "backend": name,
    }
    if curves:
        result["pr_curves"] = _pr_curves(gt, evaluator)
    return result


def _backend(backend: str) -> tuple[str, Any, Any]:
    """The COCO and COCOeval classes to use; "auto" falls back so the container needs only pycocotools."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("auto", "faster_coco_eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            if backend == "faster_coco_eval":
                raise
        else:
            return "faster_coco_eval", COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return "pycocotools", COCO, COCOeval


def _run(coco_cls: Any, eval_cls: Any, gt: dict, detections: list[dict]) -> Any:
    """evaluate/accumulate/summarize, exactly as a direct COCOeval run does."""
    coco_gt = _coco(coco_cls, gt)
    coco_dt = coco_gt.loadRes(detections) if detections else _empty_results(coco_cls, gt)
    evaluator = eval_cls(coco_gt, coco_dt, "bbox")
    if hasattr(evaluator, "print_function"):
        evaluator.print_function = _quiet  # faster-coco-eval logs instead of printing
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def _coco(coco_cls: Any, dataset: dict) -> Any:
    """A COCO object from a dict; pycocotools' constructor only reads files."""
    coco = coco_cls()
    if hasattr(coco, "print_function"):
        coco.print_function = _quiet
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _empty_results(coco_cls: Any, gt: dict) -> Any:
    """What loadRes would build for zero detections (pycocotools' loadRes([]) raises)."""
    empty = {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]), "annotations": []}
    return _coco(coco_cls, empty)


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """faster-coco-eval's print_function: callers print their own tables."""


def _gt_for_eval(gt: dict) -> dict:
    """A copy COCOeval may mutate, with ``ignore: 1`` boxes made crowd (see the module docstring)."""
    annotations = []
    for ann in gt["annotations"]:
        ann = dict(ann)
        ann["iscrowd"] = 1 if ann.get("ignore") else int(ann.get("iscrowd", 0))
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        annotations.append(ann)
    categories = copy.deepcopy(gt["categories"])
    return {**gt, "images": list(gt["images"]), "categories": categories, "annotations": annotations}


def _clean_detections(detections: list[dict]) -> list[dict]:
    """Fresh dicts: loadRes writes ids, areas and segmentations into the ones it gets."""
    return [
        {
            "image_id": det["image_id"],
            "category_id": det["category_id"],
            "bbox": [float(v) for v in det["bbox"]],
            "score": float(det["score"]),
        }
        for det in detections
    ]


def _check_detections(gt: dict, detections: list[dict]) -> None:
    """Refuse ids the GT lacks: COCOeval would assert, or silently skip a mislabelled class."""
    images = {img["id"] for img in gt["images"]}
    categories = {cat["id"] for cat in gt["categories"]}
    bad_images = sorted({det["image_id"] for det in detections} - images)
    bad_categories = sorted({det["category_id"] for det in detections} - categories)
    if bad_images:
        raise ValueError(f"detections for image ids not in the ground truth: {bad_images[:10]}")
    if bad_categories:
        raise ValueError(f"detections with category ids not in the ground truth: {bad_categories[:10]}")


def _per_class(gt: dict, detections: list[dict], evaluator: Any) -> dict[str, dict[str, Any]]:
    """AP and AP50 per class from the accumulated precision, area "all", the largest maxDets."""
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    iou50 = _iou50(evaluator)
    names = {cat["id"]: cat["name"] for cat in gt["categories"]}
    out = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        out[names[cat_id]] = {
            "AP": _mean_valid(precision[:, :, k, 0, -1]),
            "AP50": _mean_valid(precision[iou50, :, k, 0, -1]),
            "gt_boxes": _count_gt(gt, cat_id),
            "detections": sum(1 for det in detections if det["category_id"] == cat_id),
        }
    return out


def _iou50(evaluator: Any) -> int:
    return int(np.where(np.asarray(evaluator.params.iouThrs) == 0.5)[0][0])


def _pr_curves(gt: dict, evaluator: Any) -> dict[str, Any]:
    """``eval["precision"]`` at IoU 0.5, area "all", the largest maxDets: per class, the precision
    at each of COCO's 101 recall thresholds (-1 for a class without ground truth)."""
    precision = evaluator.eval["precision"]
    iou50 = _iou50(evaluator)
    names = {cat["id"]: cat["name"] for cat in gt["categories"]}
    return {
        "recall": [float(r) for r in evaluator.params.recThrs],
        "precision": {names[cat_id]: [float(p) for p in precision[iou50, :, k, 0, -1]]
                      for k, cat_id in enumerate(evaluator.params.catIds)},
    }


def _mean_valid(values: np.ndarray) -> float:
    """COCO's mean over entries > -1; -1.0 when there are none (no ground truth)."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _count_gt(gt: dict, cat_id: int) -> int:
    """Boxes that count for recall: crowd and ignored (difficult) boxes do not."""
    return sum(
        1
        for ann in gt["annotations"]
        if ann["category_id"] == cat_id and not ann.get("iscrowd") and not ann.get("ignore")
    )


def format_table(result: dict) -> list[str]:
    """Plain-text lines for a CLI: the 12 COCO statistics, then AP, AP50 and GT boxes per class."""
    lines = [f"COCO box evaluation ({result['backend']}): {result['images']} images, {result['detections']} detections"]
    lines += [f"  {name:<6} {_fmt(value)}" for name, value in result["stats"].items()]
    width = max([len("class")] + [len(name) for name in result["per_class"]])
    lines.append(f"  {'class':<{width}}  {'AP':>6}  {'AP50':>6}  {'gt boxes':>8}")
    for name, row in result["per_class"].items():
        lines.append(f"  {name:<{width}}  {_fmt(row['AP']):>6}  {_fmt(row['AP50']):>6}  {row['gt_boxes']:>8}")
    return lines


def _fmt(value: float) -> str:
    """-1 means "nothing to measure" in COCO; show it as such rather than as a score."""
    return "n/a" if value == -1 else f"{value:.4f}"

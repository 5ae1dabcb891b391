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
from collections import Counter
from typing import Any

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS = ("auto", "faster_coco_eval", "pycocotools")
MATCH_IOU = 0.5  # error analysis: a detection is a hit at IoU >= 0.5
F1_THRESHOLDS = tuple(round(0.025 * i, 3) for i in range(1, 40))  # as OpenVINO Training Extensions
DEFAULT_SCORE = 0.5  # error analysis threshold when no threshold gives an F1 above 0
WORST_IMAGES = 4
BACKGROUND = "background"


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
    for i, ann in enumerate(gt["annotations"]):
        ann = dict(ann, id=i + 1)  # pycocotools' matches use 0 for "none": ids from 1
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


def error_analysis(gt: dict, detections: list[dict], *, score_threshold: float | None = None,
                   worst: int = WORST_IMAGES) -> dict:
    """Where a model goes wrong at IoU 0.5, read from COCOeval's own matches (``evalImgs``).

    ``f1``: the best micro F1 over F1_THRESHOLDS (TP and FP summed over classes, ties to the
    higher threshold; ``threshold`` None when F1 is 0 everywhere) and the F1 at each threshold.
    At ``score_threshold`` (default: that best threshold, else DEFAULT_SCORE): ``per_class``
    precision, recall, F1 and TP/FP/FN counts from the same class-aware matches; ``confusion``:
    rows are the truth, columns the prediction, over the classes and ``background``, from a
    class-agnostic COCOeval run (``useCats=0``: a box of the wrong class still matches, and
    counts as that confusion); ``worst_images``: the images with the most misses plus false
    positives. A detection on a crowd or difficult box is neither TP nor FP, as in COCO; a
    threshold keeps a prefix of COCOeval's score-ordered matching, so one run serves every threshold.
    """
    _check_detections(gt, detections)
    names = {cat["id"]: cat["name"] for cat in gt["categories"]}
    dets, truths = _matches(gt, detections, use_cats=True)
    f1 = _best_f1(dets, truths)
    threshold = score_threshold if score_threshold is not None else f1["threshold"] or DEFAULT_SCORE
    kept = Counter((d["category_id"], d["outcome"]) for d in dets if d["score"] >= threshold)
    positives = Counter(t["category_id"] for t in truths)
    per_class = {}
    for cat_id, name in names.items():
        tp, fp = kept[cat_id, 1], kept[cat_id, 0]
        per_class[name] = {**_prf(tp, fp, positives[cat_id]), "tp": tp, "fp": fp, "fn": positives[cat_id] - tp}
    return {
        "iou": MATCH_IOU, "threshold": threshold, "f1": f1, "per_class": per_class,
        "confusion": _confusion(gt, [d for d in detections if d["score"] >= threshold]),
        "worst_images": _worst_images(gt, dets, truths, threshold, worst),
    }  # fmt: skip


def _matches(gt: dict, detections: list[dict], *, use_cats: bool) -> tuple[list[dict], list[dict]]:
    """pycocotools' per-image matching at IoU 0.5, area "all": per detection its score, category,
    outcome (1 hit, 0 false positive, -1 on an ignored box) and the category of the box it hit;
    per counted ground-truth box its category and the score of the detection that hit it (None).

    pycocotools, whatever the backend: faster-coco-eval keeps its per-image matches in C++ (not
    readable from Python), and its ``matched`` map counts a detection on a crowd box as a hit.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = _coco(COCO, _gt_for_eval(gt))
        coco_dt = coco_gt.loadRes(_clean_detections(detections)) if detections else _empty_results(COCO, gt)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        p = evaluator.params
        p.iouThrs, p.areaRng, p.areaRngLbl, p.useCats = np.array([MATCH_IOU]), p.areaRng[:1], p.areaRngLbl[:1], int(use_cats)
        if not use_cats:  # every class of an image in one pool: keep them all, not the best 100
            p.maxDets = [max(p.maxDets[-1], len(detections))]
        evaluator.evaluate()
    dets, truths = [], []
    for e in evaluator.evalImgs:
        if e is None:
            continue
        for d, dt_id in enumerate(e["dtIds"]):
            hit = int(e["dtMatches"][0, d])
            outcome = -1 if e["dtIgnore"][0, d] else 1 if hit else 0
            ann = coco_dt.anns[dt_id]
            dets.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "score": ann["score"],
                         "outcome": outcome, "truth": coco_gt.anns[hit]["category_id"] if hit else None})
        for g, gt_id in enumerate(e["gtIds"]):
            if not e["gtIgnore"][g]:
                hit = int(e["gtMatches"][0, g])
                ann = coco_gt.anns[gt_id]
                truths.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                               "score": coco_dt.anns[hit]["score"] if hit else None})
    return dets, truths


def _prf(tp: int, fp: int, positives: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _best_f1(dets: list[dict], truths: list[dict]) -> dict[str, Any]:
    score = np.asarray([d["score"] for d in dets], dtype=float)
    outcome = np.asarray([d["outcome"] for d in dets], dtype=int)
    points = []
    for threshold in F1_THRESHOLDS:
        kept = score >= threshold
        prf = _prf(int(np.sum(kept & (outcome == 1))), int(np.sum(kept & (outcome == 0))), len(truths))
        points.append((prf["f1"], threshold, prf["precision"], prf["recall"]))
    f1, threshold, precision, recall = max(points, key=lambda p: (p[0], p[1]))  # ties: the higher threshold
    return {"f1": f1, "threshold": threshold if f1 > 0 else None, "precision": precision, "recall": recall,
            "curve": [p[0] for p in points]}


def _confusion(gt: dict, kept: list[dict]) -> dict[str, Any]:
    """Counts of (true class, predicted class) over the classes and the background, from a
    class-agnostic matching of the detections ``kept`` at the threshold."""
    ids = [cat["id"] for cat in gt["categories"]]
    index = {cat_id: i for i, cat_id in enumerate(ids)}
    background = len(ids)
    matrix = np.zeros((len(ids) + 1, len(ids) + 1), dtype=int)
    dets, truths = _matches(gt, kept, use_cats=False)
    for d in dets:
        if d["outcome"] >= 0:
            truth = index[d["truth"]] if d["outcome"] == 1 else background
            matrix[truth, index[d["category_id"]]] += 1
    for t in truths:
        if t["score"] is None:
            matrix[index[t["category_id"]], background] += 1
    labels = [cat["name"] for cat in gt["categories"]] + [BACKGROUND]
    return {"labels": labels, "matrix": matrix.tolist()}


def _worst_images(gt: dict, dets: list[dict], truths: list[dict], threshold: float, worst: int) -> list[dict]:
    """The ``worst`` images with the most missed boxes plus false positives at ``threshold``."""
    missed: dict[int, int] = {}
    false_positives: dict[int, int] = {}
    for t in truths:
        if t["score"] is None or t["score"] < threshold:
            missed[t["image_id"]] = missed.get(t["image_id"], 0) + 1
    for d in dets:
        if d["outcome"] == 0 and d["score"] >= threshold:
            false_positives[d["image_id"]] = false_positives.get(d["image_id"], 0) + 1
    files = {img["id"]: img.get("file_name") for img in gt["images"]}
    errors = sorted(set(missed) | set(false_positives),
                    key=lambda i: (-(missed.get(i, 0) + false_positives.get(i, 0)), i))
    return [{"image_id": i, "file_name": files[i], "missed": missed.get(i, 0), "false_positives": false_positives.get(i, 0)}
            for i in errors[:worst]]


def format_errors(errors: dict) -> list[str]:
    """Plain-text lines for a CLI: per-class precision/recall/F1, the confusion matrix, the worst images."""
    lines = [f"Errors at score >= {errors['threshold']:g}, IoU {errors['iou']:g} "
             f"(best F1 {errors['f1']['f1']:.4f} at {_threshold(errors['f1']['threshold'])})"]
    width = max([len("class")] + [len(name) for name in errors["confusion"]["labels"]])
    lines.append(f"  {'class':<{width}}  {'prec':>6}  {'recall':>6}  {'F1':>6}  {'TP':>5}  {'FP':>5}  {'FN':>5}")
    for name, r in errors["per_class"].items():
        lines.append(f"  {name:<{width}}  {r['precision']:>6.4f}  {r['recall']:>6.4f}  {r['f1']:>6.4f}  "
                     f"{r['tp']:>5}  {r['fp']:>5}  {r['fn']:>5}")
    labels = errors["confusion"]["labels"]
    cell = max(6, *(len(name) for name in labels))
    lines.append("  confusion (rows: truth, columns: predicted)")
    lines.append(f"  {'':<{width}}  " + "  ".join(f"{name:>{cell}}" for name in labels))
    for name, row in zip(labels, errors["confusion"]["matrix"]):
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{n:>{cell}}" for n in row))
    for w in errors["worst_images"]:
        lines.append(f"  worst: {w['file_name']}: {w['missed']} missed, {w['false_positives']} false positives")
    return lines


def _threshold(value: float | None) -> str:
    return "no threshold" if value is None else f"score >= {value:g}"


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

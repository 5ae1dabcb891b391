"""odorch.runtime.evaluation against pycocotools' COCOeval run directly, on BCCD and synthetic GT."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from odorch.cli import main
from odorch.runtime.evaluation import STAT_NAMES, coco_evaluate, format_table
from tests.helpers import shared_path

CLASSES = ("cat", "dog", "fox")
BACKENDS = ("pycocotools", "faster_coco_eval")


def synthetic_gt(*, images: int = 40, seed: int = 0, difficult: bool = False) -> dict:
    """Three classes, boxes of all COCO sizes, some images without boxes, optional difficult boxes."""
    rng = random.Random(seed)
    gt = {
        "images": [{"id": i + 1, "file_name": f"{i + 1}.jpg", "width": 640, "height": 480} for i in range(images)],
        "annotations": [],
        "categories": [{"id": k + 1, "name": name, "supercategory": ""} for k, name in enumerate(CLASSES)],
    }
    for image in gt["images"]:
        if image["id"] % 7 == 0:
            continue  # an image without boxes
        for _ in range(rng.randint(1, 8)):
            side = rng.choice([rng.uniform(8, 30), rng.uniform(35, 90), rng.uniform(100, 250)])
            w, h = side * rng.uniform(0.7, 1.3), side * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            add_box(gt, image["id"], rng.randint(1, 3), [x, y, w, h], ignore=int(difficult and rng.random() < 0.1))
    return gt


def add_box(gt: dict, image_id: int, category_id: int, bbox: list[float], *, ignore: int = 0) -> None:
    gt["annotations"].append(
        {
            "id": len(gt["annotations"]) + 1,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": bbox,
            "area": bbox[2] * bbox[3],
            "iscrowd": 0,
            "ignore": ignore,
            "segmentation": [],
        }
    )


def perturb(gt: dict, seed: int) -> list[dict]:
    """Detections from GT: jitter, dropped boxes, wrong classes, duplicates, false positives, random scores."""
    rng = random.Random(seed)
    categories = [cat["id"] for cat in gt["categories"]]
    detections = []
    for ann in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(2 if rng.random() < 0.1 else 1):
            box = [x + rng.gauss(0, 0.08) * w, y + rng.gauss(0, 0.08) * h]
            box += [w * rng.uniform(0.8, 1.2), h * rng.uniform(0.8, 1.2)]
            category = rng.choice(categories) if rng.random() < 0.1 else ann["category_id"]  # a wrong class
            detections.append({"image_id": ann["image_id"], "category_id": category, "bbox": box, "score": rng.random()})
    for _ in range(len(gt["images"])):
        image = rng.choice(gt["images"])
        w, h = rng.uniform(5, 200), rng.uniform(5, 200)
        box = [rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h), w, h]
        category = rng.choice(categories)
        detections.append({"image_id": image["id"], "category_id": category, "bbox": box, "score": rng.random()})
    return detections


def exact(gt: dict) -> list[dict]:
    """Perfect detections: every countable GT box, score 1."""
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
        for a in gt["annotations"]
        if not a["ignore"]
    ]


def reference(gt: dict, detections: list[dict], tmp_path: Path, *, cat_ids: list[int] | None = None):
    """pycocotools' COCOeval run directly on a json file, the way its README does it."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = tmp_path / "reference_gt.json"
    path.write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(detections)), "bbox")
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, (float(v) for v in evaluator.stats)))


def as_crowd(gt: dict) -> dict:
    """The GT the module documents it evaluates: ignore=1 boxes made iscrowd=1."""
    out = copy.deepcopy(gt)
    for ann in out["annotations"]:
        ann["iscrowd"] = 1 if ann["ignore"] else ann["iscrowd"]
    return out


def backend_param(backend: str):
    if backend == "faster_coco_eval":
        pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is not installed")
    return backend


@pytest.fixture(scope="module")
def bccd_gt(tmp_path_factory) -> dict:
    """BCCD's test split as odorch converts it (3 classes, many boxes per image)."""
    bccd = shared_path("datasets", "bccd", "BCCD")
    out = tmp_path_factory.mktemp("bccd")
    result = CliRunner().invoke(main, ["convert", "voc2coco", str(bccd), "--out", str(out), "--imagesets"])
    assert result.exit_code == 0, result.output
    return json.loads((out / "annotations" / "test.json").read_text())


@pytest.fixture(params=["synthetic", "bccd"])
def any_gt(request) -> dict:
    return synthetic_gt() if request.param == "synthetic" else request.getfixturevalue("bccd_gt")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stats_equal_pycocotools_exactly(any_gt, seed, tmp_path):
    detections = perturb(any_gt, seed)
    result = coco_evaluate(any_gt, detections, backend="pycocotools")
    assert result["backend"] == "pycocotools"
    assert result["stats"] == reference(any_gt, detections, tmp_path)
    assert 0.2 < result["stats"]["AP"] < 0.95  # a meaningful, imperfect case


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stats_equal_pycocotools_with_faster_coco_eval(any_gt, seed, tmp_path):
    backend_param("faster_coco_eval")
    detections = perturb(any_gt, seed)
    result = coco_evaluate(any_gt, detections, backend="faster_coco_eval")
    expected = reference(any_gt, detections, tmp_path)
    assert result["backend"] == "faster_coco_eval"
    assert list(result["stats"]) == list(STAT_NAMES)
    for name in STAT_NAMES:
        assert result["stats"][name] == pytest.approx(expected[name], abs=1e-12, rel=0), name


def test_auto_prefers_faster_coco_eval_and_falls_back(monkeypatch):
    gt = synthetic_gt(images=10)
    detections = perturb(gt, 0)
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval is not installed")
    assert coco_evaluate(gt, detections)["backend"] == "faster_coco_eval"
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes the import raise ImportError
    fallback = coco_evaluate(gt, detections)
    assert fallback["backend"] == "pycocotools"
    assert fallback["stats"] == coco_evaluate(gt, detections, backend="pycocotools")["stats"]
    with pytest.raises(ImportError):
        coco_evaluate(gt, detections, backend="faster_coco_eval")
    with pytest.raises(ValueError, match="unknown backend"):
        coco_evaluate(gt, detections, backend="torchmetrics")


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_class_ap_averages_to_stats_ap(any_gt, backend):
    gt = copy.deepcopy(any_gt)
    gt["categories"].append({"id": 99, "name": "unused", "supercategory": ""})
    result = coco_evaluate(gt, perturb(gt, 3), backend=backend_param(backend))
    per_class = result["per_class"]
    # no GT: -1 as in COCO, even with (false-positive) detections of that class
    assert per_class["unused"]["detections"] > 0
    assert (per_class["unused"]["AP"], per_class["unused"]["AP50"], per_class["unused"]["gt_boxes"]) == (-1.0, -1.0, 0)
    with_gt = [row for row in per_class.values() if row["gt_boxes"] > 0]
    assert len(with_gt) >= 2
    assert sum(row["AP"] for row in with_gt) / len(with_gt) == pytest.approx(result["stats"]["AP"], abs=1e-9)
    assert sum(row["AP50"] for row in with_gt) / len(with_gt) == pytest.approx(result["stats"]["AP50"], abs=1e-9)
    assert len({round(row["AP"], 6) for row in with_gt}) > 1  # classes really differ


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_class_ap_equals_single_class_cocoeval(any_gt, backend, tmp_path):
    detections = perturb(any_gt, 4)
    result = coco_evaluate(any_gt, detections, backend=backend_param(backend))
    for cat in any_gt["categories"]:
        expected = reference(any_gt, detections, tmp_path, cat_ids=[cat["id"]])
        row = result["per_class"][cat["name"]]
        assert row["AP"] == pytest.approx(expected["AP"], abs=1e-12, rel=0), cat["name"]
        assert row["AP50"] == pytest.approx(expected["AP50"], abs=1e-12, rel=0), cat["name"]
        assert row["gt_boxes"] == sum(1 for a in any_gt["annotations"] if a["category_id"] == cat["id"])
        assert row["detections"] == sum(1 for d in detections if d["category_id"] == cat["id"])


def difficult_case() -> tuple[dict, dict, list[dict]]:
    """GT with one extra difficult box on image 1, the same GT without it, and imperfect detections."""
    without = synthetic_gt(images=12, seed=5)
    detections = perturb(without, 5)
    with_difficult = copy.deepcopy(without)
    add_box(with_difficult, 1, 1, [400.0, 300.0, 60.0, 50.0], ignore=1)
    return with_difficult, without, detections


@pytest.mark.parametrize("backend", BACKENDS)
def test_missed_difficult_box_is_not_a_miss(backend):
    with_difficult, without, detections = difficult_case()
    backend = backend_param(backend)
    ignored = coco_evaluate(with_difficult, detections, backend=backend)
    assert ignored["stats"] == coco_evaluate(without, detections, backend=backend)["stats"]
    counted = copy.deepcopy(with_difficult)
    counted["annotations"][-1]["ignore"] = 0
    as_miss = coco_evaluate(counted, detections, backend=backend)["stats"]
    assert as_miss["AR100"] < ignored["stats"]["AR100"]  # the same box, counted, is a miss
    assert as_miss["AP"] < ignored["stats"]["AP"]
    plain = coco_evaluate(without, detections, backend=backend)
    assert ignored["per_class"]["cat"]["gt_boxes"] == plain["per_class"]["cat"]["gt_boxes"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_detection_on_difficult_box_is_not_a_false_positive(backend):
    with_difficult, without, detections = difficult_case()
    backend = backend_param(backend)
    on_it = detections + [{"image_id": 1, "category_id": 1, "bbox": [402.0, 301.0, 58.0, 50.0], "score": 0.999}]
    baseline = coco_evaluate(without, detections, backend=backend)["stats"]
    assert coco_evaluate(with_difficult, on_it, backend=backend)["stats"] == baseline
    assert coco_evaluate(without, on_it, backend=backend)["stats"]["AP"] < baseline["AP"]  # where no box is, it is one


def test_ignore_is_evaluated_as_crowd_and_inputs_are_not_mutated(tmp_path):
    gt = synthetic_gt(seed=7, difficult=True)
    assert sum(a["ignore"] for a in gt["annotations"]) >= 5
    detections = perturb(gt, 7)
    gt_before, detections_before = copy.deepcopy(gt), copy.deepcopy(detections)
    result = coco_evaluate(gt, detections, backend="pycocotools")
    assert result["stats"] == reference(as_crowd(gt), detections, tmp_path)
    assert result["stats"] != reference(gt, detections, tmp_path)  # plain COCOeval would count them
    assert gt == gt_before and detections == detections_before
    coco_evaluate(gt, detections, backend=backend_param("faster_coco_eval"))
    assert gt == gt_before and detections == detections_before


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_detections_give_ap_one(any_gt, backend):
    result = coco_evaluate(any_gt, exact(any_gt), backend=backend_param(backend))
    assert result["stats"]["AP"] == 1.0
    assert result["stats"]["AP50"] == 1.0
    assert result["stats"]["AR100"] == 1.0
    assert all(row["AP"] == 1.0 for row in result["per_class"].values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_detections_give_zero_ap(backend, tmp_path):
    gt = synthetic_gt()
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] < 96**2]  # no large boxes: APl is -1
    result = coco_evaluate(gt, [], backend=backend_param(backend))
    assert result["stats"]["AP"] == 0.0 and result["stats"]["AR100"] == 0.0
    assert result["stats"]["APl"] == -1.0 and result["stats"]["ARl"] == -1.0
    assert result["detections"] == 0 and result["images"] == len(gt["images"])
    assert all(row["AP"] == 0.0 and row["detections"] == 0 for row in result["per_class"].values())
    nowhere = [{"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.5}]
    assert result["stats"] == reference(gt, nowhere, tmp_path)  # what COCOeval says when nothing matches


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_gt_images_are_evaluated(backend, tmp_path):
    gt = synthetic_gt()
    annotated = {a["image_id"] for a in gt["annotations"]}
    empty_image = next(img["id"] for img in gt["images"] if img["id"] not in annotated)
    detections = [d for d in exact(gt) if d["image_id"] % 2]  # images without detections too
    result = coco_evaluate(gt, detections, backend=backend_param(backend))
    assert result["images"] == len(gt["images"])
    assert result["stats"]["AR100"] < 1.0
    fp = [{"image_id": empty_image, "category_id": 1, "bbox": [10.0, 10.0, 50.0, 50.0], "score": 1.0}]
    with_fp = coco_evaluate(gt, detections + fp, backend=backend)
    assert with_fp["stats"]["AP"] < result["stats"]["AP"]  # a box on an image without GT is a false positive
    assert with_fp["stats"] == pytest.approx(reference(gt, detections + fp, tmp_path), abs=1e-12)


def test_unknown_ids_are_refused():
    gt = synthetic_gt(images=5)
    with pytest.raises(ValueError, match="image ids"):
        coco_evaluate(gt, [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])
    with pytest.raises(ValueError, match="category ids"):
        coco_evaluate(gt, [{"image_id": 1, "category_id": 0, "bbox": [0, 0, 5, 5], "score": 0.5}])


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_prints_nothing(backend, capsys):
    gt = synthetic_gt(images=8)
    coco_evaluate(gt, perturb(gt, 0), backend=backend_param(backend))
    coco_evaluate(gt, [], backend=backend)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_format_table():
    gt = synthetic_gt()
    gt["categories"].append({"id": 4, "name": "unused", "supercategory": ""})
    result = coco_evaluate(gt, perturb(gt, 0))
    lines = format_table(result)
    text = "\n".join(lines)
    for name in STAT_NAMES:
        assert any(line.split()[:1] == [name] for line in lines), name
    assert f"{result['stats']['AP']:.4f}" in text
    for name in CLASSES:
        row = next(line for line in lines if line.split()[:1] == [name])
        per_class = result["per_class"][name]
        assert row.split()[1:] == [f"{per_class['AP']:.4f}", f"{per_class['AP50']:.4f}", str(per_class["gt_boxes"])]
    assert next(line for line in lines if line.split()[:1] == ["unused"]).split()[1:] == ["n/a", "n/a", "0"]


# ---------------------------------------------------------------- error analysis


def hand_built() -> tuple[dict, list[dict]]:
    """One image: cat boxes A and B, a dog box C, a crowd cat box; six detections with known fates."""
    gt = {"images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100},
                     {"id": 2, "file_name": "2.jpg", "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], "annotations": []}  # fmt: skip
    for image_id, category_id, bbox in ((1, 1, [0, 0, 10, 10]), (1, 1, [20, 0, 10, 10]), (1, 2, [0, 20, 10, 10]),
                                        (2, 2, [50, 50, 20, 20])):
        add_box(gt, image_id, category_id, bbox)
    add_box(gt, 1, 1, [40, 40, 10, 10])
    gt["annotations"][-1]["iscrowd"] = 1
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # TP on A
        {"image_id": 1, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.8},  # FP: A is taken
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 5, 5], "score": 0.6},  # FP on nothing
        {"image_id": 1, "category_id": 1, "bbox": [20, 1, 10, 10], "score": 0.3},  # TP on B (IoU 0.82)
        {"image_id": 1, "category_id": 1, "bbox": [40, 40, 10, 10], "score": 0.95},  # on the crowd box: ignored
        {"image_id": 1, "category_id": 1, "bbox": [0, 20, 10, 10], "score": 0.99},  # on C, the wrong class
        {"image_id": 2, "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.2},  # TP on D below 0.3
    ]  # fmt: skip
    return gt, dets


def test_error_analysis_on_a_hand_built_case():
    from odorch.runtime.evaluation import F1_THRESHOLDS, error_analysis, format_errors

    gt, dets = hand_built()
    result = error_analysis(gt, dets)
    # t <= 0.2: TP 3, FP 3 of 4 boxes -> P 0.5, R 0.75, F1 0.6; (0.2, 0.3]: TP 2, FP 3 -> P 0.4, R 0.5, F1 0.444;
    # (0.3, 0.6]: TP 1, FP 3 -> 0.25; (0.6, 0.8]: TP 1, FP 2 -> 2/7; (0.8, 0.9]: TP 1, FP 1 -> 1/3; above: 0
    f1 = result["f1"]
    assert f1["f1"] == pytest.approx(0.6) and f1["threshold"] == 0.2
    assert f1["precision"] == pytest.approx(0.5) and f1["recall"] == pytest.approx(0.75)
    curve = dict(zip(F1_THRESHOLDS, f1["curve"]))
    assert curve[0.025] == curve[0.2] == pytest.approx(0.6) and curve[0.225] == curve[0.3] == pytest.approx(4 / 9)
    assert curve[0.325] == pytest.approx(0.25) and curve[0.625] == pytest.approx(2 / 7)
    assert curve[0.825] == curve[0.9] == pytest.approx(1 / 3) and curve[0.925] == 0.0
    assert result["threshold"] == 0.2 and result["iou"] == 0.5
    assert result["per_class"] == {
        "cat": {"precision": pytest.approx(0.4), "recall": 1.0, "f1": pytest.approx(4 / 7), "tp": 2, "fp": 3, "fn": 0},
        "dog": {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "tp": 1, "fp": 0, "fn": 1},
    }
    # class-agnostic: the 0.99 cat box takes C (a dog read as a cat); A and B found; 2 cat boxes on nothing
    assert result["confusion"] == {"labels": ["cat", "dog", "background"],
                                   "matrix": [[2, 0, 0], [1, 1, 0], [2, 0, 0]]}
    assert result["worst_images"] == [{"image_id": 1, "file_name": "1.jpg", "missed": 1, "false_positives": 3}]

    at = error_analysis(gt, dets, score_threshold=0.5)  # B and D are now missed
    assert at["threshold"] == 0.5 and at["f1"] == f1
    assert at["confusion"]["matrix"] == [[1, 0, 1], [1, 0, 1], [2, 0, 0]]
    assert at["per_class"]["dog"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 2}
    assert at["worst_images"] == [{"image_id": 1, "file_name": "1.jpg", "missed": 2, "false_positives": 3},
                                  {"image_id": 2, "file_name": "2.jpg", "missed": 1, "false_positives": 0}]
    text = "\n".join(format_errors(at))
    assert "Errors at score >= 0.5, IoU 0.5 (best F1 0.6000 at score >= 0.2)" in text
    assert "worst: 1.jpg: 2 missed, 3 false positives" in text
    assert [line.split() for line in text.splitlines() if line.split()[:1] == ["dog"]][-1] == ["dog", "1", "0", "1"]

    nothing = error_analysis(gt, [])
    assert nothing["f1"]["threshold"] is None and nothing["threshold"] == 0.5
    assert nothing["confusion"]["matrix"] == [[0, 0, 2], [0, 0, 2], [0, 0, 0]]


@pytest.mark.parametrize("threshold", [0.0, 0.4, 0.8])
def test_confusion_matrix_equals_faster_coco_eval_helper(threshold):
    """faster-coco-eval's PreviewResults.compute_confusion_matrix (class-agnostic matching at an IoU and a
    minimum score; rows: true class; columns: predicted class, then false positives and misses) on
    synthetic detections with wrong classes, duplicates and boxes on nothing (no crowd boxes: the helper
    counts a detection on one as a hit)."""
    pytest.importorskip("faster_coco_eval")
    import numpy as np
    from faster_coco_eval import COCO
    from faster_coco_eval.extra import PreviewResults

    from odorch.runtime.evaluation import error_analysis

    gt = synthetic_gt(images=30, seed=3)
    dets = perturb(gt, 5)
    ours = np.asarray(error_analysis(gt, dets, score_threshold=threshold)["confusion"]["matrix"])
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    with contextlib.redirect_stdout(io.StringIO()):
        preview = PreviewResults(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iou_tresh=0.5, min_score=threshold)
        theirs = preview.compute_confusion_matrix().astype(int)
    k = len(CLASSES)
    assert ours[:k, :k].tolist() == theirs[:, :k].tolist()
    assert ours[:k, k].tolist() == theirs[:, k + 1].tolist()  # missed: truth read as background
    assert ours[k, :k].tolist() == theirs[:, k].tolist()  # false positives: background read as a class
    assert ours[:k, :k].sum() > ours[:k, :k].trace() > 0 and ours[k, :k].sum() > 0 and ours[:k, k].sum() > 0

"""BCCD written in each format by an independent library (globox, label-studio-converter; a writer
of our own only for Ground Truth manifests, which no library on PyPI writes), read back by
odorch through the CLI: every image's boxes equal the Pascal VOC original. And odorch's YOLO
writer read back by supervision (an independent YOLO reader) and by odorch's own reader."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import invoke, load_coco, shared_path

CLASSES = ["Platelets", "RBC", "WBC"]


@pytest.fixture(scope="module")
def bccd() -> Path:
    return shared_path("datasets", "bccd", "BCCD")


@pytest.fixture(scope="module")
def voc_boxes(bccd):
    """file name -> sorted [(class, (xmin, ymin, xmax, ymax))] of the VOC XMLs, without the 2
    zero-area boxes BCCD has (every reader drops and counts them)."""
    out = {}
    for xml in sorted((bccd / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        boxes = []
        for obj in root.iter("object"):
            b = tuple(float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            if b[0] != b[2] and b[1] != b[3]:
                boxes.append((obj.findtext("name"), b))
        out[root.findtext("filename")] = sorted(boxes)
    return out


@pytest.fixture(scope="module")
def globox_set(bccd):
    globox = pytest.importorskip("globox")
    return globox.AnnotationSet.from_pascal_voc(bccd / "Annotations")


def _link_images(bccd: Path, folder: Path, names=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((bccd / "JPEGImages").glob("*.jpg")):
        if names is None or path.name in names:
            os.symlink(path, folder / path.name)


def _coco_boxes(out: Path) -> dict[str, list]:
    """file name -> sorted [(class, (xmin, ymin, xmax, ymax))] of every split odorch wrote."""
    found = {}
    for path in sorted((out / "annotations").glob("*.json")):
        coco = load_coco(path)
        names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
        for im in coco.dataset["images"]:
            boxes = [(names[a["category_id"]], a["bbox"]) for a in coco.imgToAnns[im["id"]]]
            found[im["file_name"]] = sorted((n, (x, y, x + w, y + h)) for n, (x, y, w, h) in boxes)
    return found


def _assert_same(found: dict[str, list], expected: dict[str, list]) -> None:
    """Per image, the same classes and boxes to 1e-3 px (a float32 reader of 6-decimal YOLO is off by ~3e-4)."""
    assert sorted(found) == sorted(expected)
    for name, boxes in expected.items():
        got = sorted(found[name], key=lambda item: (item[0], tuple(round(v, 2) for v in item[1])))
        assert [n for n, _ in got] == [n for n, _ in boxes], name
        assert [b for _, b in got] == [pytest.approx(b, abs=1e-3) for _, b in boxes], name


def _convert(runner, *args) -> str:
    result = invoke(runner, "convert", *args)
    assert result.exit_code == 0, result.output
    return result.output


def test_yolo_by_globox(tmp_path, runner, bccd, voc_boxes, globox_set):
    """Ultralytics layout with the ImageSets splits: images/<split>/ + labels/<split>/ + data.yaml."""
    root = tmp_path / "yolo"
    lists = {s: (bccd / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    for split, ids in lists.items():
        names = {f"{i}.jpg" for i in ids}
        _link_images(bccd, root / "images" / split, names)
        subset = globox_set.filter(lambda ann, names=names: ann.image_id in names)
        subset.save_yolo_v5(_mkdir(root / "labels" / split), label_to_id={c: i for i, c in enumerate(CLASSES)})
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n  0: Platelets\n  1: RBC\n  2: WBC\n"
    )
    output = _convert(runner, "yolo2coco", root, "--out", tmp_path / "out")
    listed = {f"{i}.jpg" for ids in lists.values() for i in ids}
    expected = {k: v for k, v in voc_boxes.items() if k in listed}
    _assert_same(_coco_boxes(tmp_path / "out"), expected)
    for split, ids in lists.items():
        coco = load_coco(tmp_path / "out" / "annotations" / f"{split}.json")
        assert sorted(im["file_name"] for im in coco.dataset["images"]) == sorted(f"{i}.jpg" for i in ids)
    assert "2 × zero-area box: dropped" in output


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_cvat_by_globox(tmp_path, runner, bccd, voc_boxes, globox_set):
    """annotations.xml beside images/, as CVAT exports a task: found from the folder alone."""
    root = tmp_path / "cvat"
    _link_images(bccd, root / "images")
    globox_set.save_cvat(root / "annotations.xml")
    output = _convert(runner, "auto", root, "--out", tmp_path / "out")
    assert "detected: CVAT for images XML" in output
    _assert_same(_coco_boxes(tmp_path / "out"), voc_boxes)
    assert "boxes: 4888 total = 4886 kept + 0 repaired + 2 dropped" in output


def test_labelme_by_globox(tmp_path, runner, bccd, voc_boxes, globox_set):
    root = tmp_path / "labelme"
    globox_set.save_labelme(_mkdir(root))
    _link_images(bccd, root)
    output = _convert(runner, "labelme2coco", root, "--out", tmp_path / "out")
    _assert_same(_coco_boxes(tmp_path / "out"), voc_boxes)
    assert "boxes: 4888 total = 4886 kept + 0 repaired + 2 dropped" in output


def test_labelstudio_by_label_studio_converter(tmp_path, runner, bccd, voc_boxes, globox_set):
    """globox writes COCO, label-studio-converter turns it into Label Studio tasks (percent boxes,
    /data/local-files/?d= URLs); the images are found in --images by their path."""
    ls_coco = pytest.importorskip("label_studio_converter.imports.coco")
    globox_set.save_coco(tmp_path / "coco.json", label_to_id={c: i + 1 for i, c in enumerate(CLASSES)}, auto_ids=True)
    ls_coco.convert_coco_to_ls(str(tmp_path / "coco.json"), str(tmp_path / "tasks.json"), image_root_url="/data/local-files/?d=")
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert tasks[0]["annotations"][0]["result"][0]["type"] == "rectanglelabels"
    output = _convert(runner, "labelstudio2coco", tmp_path / "tasks.json", "--images", bccd / "JPEGImages", "--out", tmp_path / "out")
    _assert_same(_coco_boxes(tmp_path / "out"), voc_boxes)
    total = sum(len(t["annotations"][0]["result"]) for t in tasks)
    assert f"boxes: {total} total = " in output


def _groundtruth_manifest(voc_dir: Path, path: Path) -> None:
    """Our own writer, from the VOC XMLs: no library writes Ground Truth output manifests.
    One line per image as a bounding-box labeling job writes it (s3:// source-ref, class-map)."""
    ids = {name: i for i, name in enumerate(CLASSES)}
    lines = []
    for xml in sorted(voc_dir.glob("*.xml")):
        root = ET.parse(xml).getroot()
        anns = []
        for obj in root.iter("object"):
            x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            anns.append({"class_id": ids[obj.findtext("name")], "left": x0, "top": y0, "width": x1 - x0, "height": y1 - y0})
        size = {k: int(root.findtext(f"size/{k}")) for k in ("width", "height", "depth")}
        lines.append({
            "source-ref": f"s3://my-bucket/bccd/JPEGImages/{root.findtext('filename')}",
            "cells": {"annotations": anns, "image_size": [size]},
            "cells-metadata": {
                "objects": [{"confidence": 0.9} for _ in anns],
                "class-map": {str(i): name for name, i in ids.items()},
                "type": "groundtruth/object-detection",
                "human-annotated": "yes",
                "creation-date": "2026-11-30T08:00:00.000000",
                "job-name": "labeling-job/cells",
            },
        })  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_groundtruth_manifest(tmp_path, runner, bccd, voc_boxes):
    manifest = tmp_path / "output.manifest"
    _groundtruth_manifest(bccd / "Annotations", manifest)
    output = _convert(runner, "auto", manifest, "--images", bccd / "JPEGImages", "--out", tmp_path / "out")
    assert "detected: SageMaker Ground Truth manifest" in output
    _assert_same(_coco_boxes(tmp_path / "out"), voc_boxes)
    assert "boxes: 4888 total = 4886 kept + 0 repaired + 2 dropped" in output


def test_our_yolo_read_by_supervision_and_by_odorch(tmp_path, runner, bccd, voc_boxes):
    sv = pytest.importorskip("supervision")
    _convert(runner, "voc2coco", bccd, "--out", tmp_path / "coco", "--split", "0.7,0.2,0.1")
    output = _convert(runner, "coco2yolo", tmp_path / "coco", "--out", tmp_path / "yolo")
    assert f"wrote {tmp_path / 'yolo' / 'data.yaml'}" in output
    written = {}
    for split in ("train", "val", "test"):
        ds = sv.DetectionDataset.from_yolo(
            images_directory_path=str(tmp_path / "yolo" / "images" / split),
            annotations_directory_path=str(tmp_path / "yolo" / "labels" / split),
            data_yaml_path=str(tmp_path / "yolo" / "data.yaml"),
        )
        assert ds.classes == CLASSES
        for path, detections in ds.annotations.items():
            written[Path(path).name] = sorted(
                (ds.classes[c], tuple(float(v) for v in xyxy)) for xyxy, c in zip(detections.xyxy, detections.class_id)
            )
    _assert_same(written, voc_boxes)
    output = _convert(runner, "yolo2coco", tmp_path / "yolo", "--out", tmp_path / "back")
    assert "boxes: 4886 total = 4886 kept + 0 repaired + 0 dropped" in output
    _assert_same(_coco_boxes(tmp_path / "back"), voc_boxes)


@pytest.mark.parametrize(
    ("dataset", "files"),
    [
        # Roboflow's COCO export: one _annotations.coco.json per split folder
        (("chess-pieces-coco",), ["train/_annotations.coco.json", "valid/_annotations.coco.json", "test/_annotations.coco.json"]),
        # COCO's own layout: annotations/instances_*.json (captions and keypoints files left aside)
        (("tiny-coco", "tiny_coco"), ["annotations/instances_train2017.json", "annotations/instances_val2017.json"]),
    ],
)
def test_auto_on_real_coco_folders_equals_coco2coco_on_their_files(tmp_path, runner, dataset, files):
    root = shared_path("datasets", *dataset)
    output = _convert(runner, "auto", root, "--out", tmp_path / "auto")
    assert "detected: COCO json (COCO files" in output
    _convert(runner, "coco2coco", *[root / f for f in files], "--out", tmp_path / "direct")
    splits = sorted(p.name for p in (tmp_path / "direct" / "annotations").glob("*.json"))
    assert splits == sorted(p.name for p in (tmp_path / "auto" / "annotations").glob("*.json"))
    for split in splits:
        auto, direct = (json.loads((tmp_path / out / "annotations" / split).read_text()) for out in ("auto", "direct"))
        assert {k: v for k, v in auto.items() if k != "info"} == {k: v for k, v in direct.items() if k != "info"}

"""The YOLO, CVAT, Label Studio, LabelMe and Ground Truth readers on small hand-made datasets:
each layout found, every skipped box counted with its reason, paths that leave the dataset refused."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import invoke, load_coco, make_voc, read_json, write_image


def _run(runner, *args):
    return invoke(runner, "convert", *args)


def _boxes_line(output: str) -> tuple[int, int, int, int]:
    m = re.search(r"boxes: (\d+) total = (\d+) kept \+ (\d+) repaired \+ (\d+) dropped", output)
    assert m, output
    total, kept, repaired, dropped = map(int, m.groups())
    assert total == kept + repaired + dropped
    return total, kept, repaired, dropped


def _images(out, split="all"):
    coco = load_coco(out / "annotations" / f"{split}.json")
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    return {
        im["file_name"]: sorted((names[a["category_id"]], a["bbox"]) for a in coco.imgToAnns[im["id"]])
        for im in coco.dataset["images"]
    }


# --- YOLO ---


def _roboflow_yolo(root):
    """Roboflow's layout: <split>/images + <split>/labels, data.yaml with ../<split>/images paths."""
    write_image(root / "train" / "images" / "a.jpg", (100, 50))
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"  # kept: (40, 20, 60, 30)
        "1 0.95 0.5 0.2 0.2\n"  # right edge at 1.05: clipped
        "1 1.5 0.5 0.2 0.2\n"  # entirely outside: dropped
        "7 0.5 0.5 0.1 0.1\n"  # class index beyond names: dropped
        "0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n"  # a polygon: its enclosing box (10, 5, 30, 15)
        "1 0.5 nan 0.1 0.1\n"  # bad coordinates: dropped
    )
    write_image(root / "train" / "images" / "empty.jpg", (100, 50))
    (root / "train" / "labels" / "empty.txt").write_text("")
    write_image(root / "valid" / "images" / "nolabel.jpg", (100, 50))
    (root / "valid" / "labels").mkdir(parents=True)
    (root / "valid" / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.2 0.2 0.1 0.1\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['cat', 'dog']\n")
    return root


def test_yolo_roboflow_layout_counts_every_line(tmp_path, runner):
    root = _roboflow_yolo(tmp_path / "yolo")
    result = _run(runner, "yolo2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _boxes_line(result.output) == (8, 2, 1, 5)  # 6 lines of a.txt + 2 of the orphan label file
    for reason in ("box partly outside the image: clipped", "box entirely outside", "class index or id is not in",
                   "missing or non-numeric", "image without a label file", "image file not found"):  # fmt: skip
        assert reason in result.output, reason
    assert "orphan.txt: label file without an image" in result.output
    train, val = _images(tmp_path / "out", "train"), _images(tmp_path / "out", "val")
    assert train == {
        "a.jpg": [("cat", [10.0, 5.0, 20.0, 10.0]), ("cat", [40.0, 20.0, 20.0, 10.0]), ("dog", [85.0, 20.0, 15.0, 10.0])],
        "empty.jpg": [],
    }
    assert val == {"nolabel.jpg": []}


def test_yolo_ultralytics_layout_and_darknet_classes_txt(tmp_path, runner):
    root = tmp_path / "u"
    for split in ("train", "val"):
        write_image(root / "images" / split / f"{split}1.png", (40, 40), fmt="PNG")
        (root / "labels" / split).mkdir(parents=True)
        (root / "labels" / split / f"{split}1.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: a\n  1: b\n")
    result = _run(runner, "auto", root / "data.yaml", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "detected: YOLO txt (data.yaml)" in result.output
    assert _images(tmp_path / "out", "val") == {"val1.png": [("b", [10.0, 10.0, 20.0, 20.0])]}
    dark = tmp_path / "dark"
    write_image(dark / "obj_train_data" / "x.jpg", (20, 10))
    (dark / "obj_train_data" / "x.txt").write_text("0 0.5 0.5 1 1\n")
    (dark / "obj.names").write_text("thing\n")
    result = _run(runner, "auto", dark, "--out", tmp_path / "out2")
    assert result.exit_code == 0, result.output
    assert _images(tmp_path / "out2") == {"x.jpg": [("thing", [0.0, 0.0, 20.0, 10.0])]}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("/etc", "leaves its folder"),
        ("images/../../../x", "leaves its folder"),
        # Roboflow's ../ is read from the dataset folder, never above it
        ("../../outside/images", "'train: outside/images' is not a folder or a .txt list of images"),
    ],
)
def test_yolo_split_path_leaving_the_dataset_is_refused(tmp_path, runner, entry, message):
    root = tmp_path / "deep" / "yolo"
    write_image(root / "images" / "a.jpg")
    (root / "data.yaml").write_text(f"train: {entry}\nval: images\nnames: [a]\n")
    write_image(tmp_path / "outside" / "images" / "secret.jpg")
    result = _run(runner, "yolo2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert message in result.output and "data.yaml" in result.output
    assert not (tmp_path / "out").exists()


# --- CVAT ---

CVAT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><labels><label><name>car</name></label><label><name>bus</name></label></labels></task></meta>
  <image id="0" name="sub/a.jpg" width="100" height="50" subset="Train">
    <box label="bus" occluded="1" xtl="10" ytl="5" xbr="30.5" ybr="25" z_order="0">
      <attribute name="color">red</attribute>
    </box>
    <box label="car" xtl="90" ytl="40" xbr="120" ybr="60" />
    <box label="car" xtl="10" ytl="10" xbr="20" ybr="20" rotation="30" />
    <polygon label="car" points="1,1;5,5;1,5" />
    <tag label="car" />
  </image>
  <image id="1" name="b.jpg" width="100" height="50" subset="Validation"><box label="car" xtl="1" ytl="1" xbr="2" ybr="2" /></image>
  <image id="2" name="../../secret.jpg" width="100" height="50"><box label="car" xtl="1" ytl="1" xbr="2" ybr="2" /></image>
  <image id="3" name="gone.jpg" width="100" height="50"><box label="car" xtl="1" ytl="1" xbr="2" ybr="2" /></image>
</annotations>
"""


def test_cvat_boxes_shapes_splits_and_refused_paths(tmp_path, runner):
    root = tmp_path / "task"
    write_image(root / "images" / "sub" / "a.jpg", (100, 50))
    write_image(root / "images" / "b.jpg", (100, 50))
    write_image(tmp_path / "secret.jpg", (100, 50))
    (root / "annotations.xml").write_text(CVAT)
    result = _run(runner, "cvat2coco", root, "--out", tmp_path / "out", "--split", "source")
    assert result.exit_code == 0, result.output
    assert _boxes_line(result.output) == (7, 2, 1, 4)  # 4 shapes of a, 1 of b, 2 of refused/missing images
    assert "2 × shape that is not an axis-aligned box" in result.output
    assert "image path that leaves the dataset folder" in result.output and "'../../secret.jpg'" in result.output
    train = read_json(tmp_path / "out" / "annotations" / "train.json")
    assert [c["name"] for c in train["categories"]] == ["car", "bus"]  # the task's label order
    bus = next(a for a in train["annotations"] if a["category_id"] == 2)
    assert bus["bbox"] == [10.0, 5.0, 20.5, 20.0] and bus["attributes"] == {"color": "red", "occluded": 1}
    assert _images(tmp_path / "out", "val") == {"b.jpg": [("car", [1.0, 1.0, 1.0, 1.0])]}


def test_cvat_video_export_is_refused_with_the_fix(tmp_path, runner):
    (tmp_path / "a.xml").write_text('<annotations><track id="0" label="car"><box frame="0" xtl="1" ytl="1" xbr="2" ybr="2"/></track></annotations>')
    result = _run(runner, "cvat2coco", tmp_path / "a.xml", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "export the task as 'CVAT for images 1.1'" in result.output


# --- LabelMe ---


def _labelme(path, image_path, shapes, size=(100, 50)):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
        "imageHeight": size[1], "imageWidth": size[0],
    }))  # fmt: skip


def _shape(label, points, kind="rectangle"):
    return {"label": label, "points": points, "group_id": None, "shape_type": kind, "flags": {}}


def test_labelme_rectangles_other_shapes_and_paths(tmp_path, runner):
    root = tmp_path / "lm"
    write_image(root / "images" / "a.jpg", (100, 50))
    write_image(root / "train" / "b.jpg", (100, 50))
    write_image(tmp_path / "secret.jpg", (100, 50))
    _labelme(root / "json" / "a.json", "..\\images\\a.jpg", [
        _shape("cat", [[30, 20], [10, 5]]),  # drawn bottom-right to top-left
        _shape("cat", [[1, 1], [5, 5], [1, 5]], "polygon"),
        _shape("dog", [[10, 10], [3]], "circle"),
        _shape("", [[1, 1], [2, 2]]),
    ])  # fmt: skip
    _labelme(root / "train" / "b.json", "b.jpg", [_shape("dog", [[0, 0], [200, 20]])])
    _labelme(root / "json" / "evil.json", "../../secret.jpg", [_shape("cat", [[1, 1], [2, 2]])])
    (root / "notes.json").write_text('{"not": "labelme"}')
    result = _run(runner, "labelme2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _boxes_line(result.output) == (6, 1, 1, 4)
    assert "2 × shape that is not an axis-aligned box" in result.output
    assert "box with an empty class name" in result.output
    assert "image path that leaves the dataset folder" in result.output
    assert "file that is not an annotation of this format: ignored (e.g. notes.json" in result.output
    assert _images(tmp_path / "out") == {"a.jpg": [("cat", [10.0, 5.0, 20.0, 15.0])], "b.jpg": [("dog", [0.0, 0.0, 100.0, 20.0])]}


# --- Label Studio ---


def _result(label, x, y, w, h, kind="rectanglelabels", rotation=0, size=(200, 100)):
    return {
        "id": "r", "type": kind, "from_name": "label", "to_name": "image",
        "original_width": size[0], "original_height": size[1], "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, kind: [label]},
    }  # fmt: skip


def test_labelstudio_urls_annotations_and_shapes(tmp_path, runner):
    images = tmp_path / "media"
    write_image(images / "cells.jpg", (200, 100))
    write_image(images / "dir" / "b.jpg", (200, 100))
    write_image(images / "c.jpg", (200, 100))
    tasks = [
        {"id": 1, "data": {"image": "/data/upload/3/0a1b2c3d-cells.jpg"}, "annotations": [
            {"id": 10, "was_cancelled": False, "result": [
                _result("RBC", 10, 20, 30, 40),  # (20, 20, 80, 60)
                _result("RBC", 10, 20, 30, 40, rotation=15),
                _result("RBC", 10, 20, 30, 40, kind="polygonlabels"),
            ]},
            {"id": 11, "was_cancelled": False, "result": [_result("WBC", 1, 1, 1, 1), _result("WBC", 2, 2, 2, 2)]},
        ]},
        {"id": 2, "data": {"image": "/data/local-files/?d=dir/b.jpg"}, "annotations": [{"id": 12, "result": []}]},
        {"id": 3, "data": {"image": "s3://bucket/c.jpg"}, "annotations": [{"id": 13, "was_cancelled": True, "result": []}]},
        {"id": 4, "data": {"image": "/data/local-files/?d=../../etc/x.jpg"}, "annotations": [
            {"id": 14, "result": [_result("RBC", 1, 1, 1, 1)]}]},
    ]  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    result = _run(runner, "labelstudio2coco", tmp_path / "export.json", "--images", images, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _boxes_line(result.output) == (6, 1, 0, 5)
    assert "2 × box of a task's second annotation" in result.output
    assert "image the labeling job left without an answer" in result.output and "export.json task 3" in result.output
    assert "image path that leaves the dataset folder" in result.output
    assert _images(tmp_path / "out") == {"cells.jpg": [("RBC", [20.0, 20.0, 60.0, 40.0])], "b.jpg": []}


# --- Ground Truth ---


def _gt_line(ref, anns, attribute="boxes", size=(100, 50), class_map=None):
    return {
        "source-ref": ref,
        attribute: {"annotations": anns, "image_size": [{"width": size[0], "height": size[1], "depth": 3}]},
        f"{attribute}-metadata": {"class-map": class_map or {"0": "car", "1": "bus"}, "type": "groundtruth/object-detection"},
    }


def test_groundtruth_s3_keys_failures_and_class_map(tmp_path, runner):
    images = tmp_path / "imgs"
    write_image(images / "2026" / "a.jpg", (100, 50))
    write_image(images / "b.jpg", (100, 50))
    lines = [
        _gt_line("s3://bkt/jobs/2026/a.jpg", [
            {"class_id": 1, "left": 10, "top": 5, "width": 20, "height": 10},
            {"class_id": 5, "left": 10, "top": 5, "width": 20, "height": 10},
            {"class_id": 0, "left": 90, "top": 5, "width": 20, "height": 10},
        ]),
        _gt_line("s3://bkt/other/b.jpg", []),
        {"source-ref": "s3://bkt/c.jpg", "boxes-metadata": {"failure-reason": "ClientError: worker timed out"}},
        _gt_line("s3://bkt/../../../etc/passwd", [{"class_id": 0, "left": 1, "top": 1, "width": 1, "height": 1}]),
    ]  # fmt: skip
    (tmp_path / "out.manifest").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = _run(runner, "groundtruth2coco", tmp_path / "out.manifest", "--images", images, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _boxes_line(result.output) == (4, 1, 1, 2)
    assert "worker timed out" in result.output
    assert _images(tmp_path / "out") == {"a.jpg": [("bus", [10.0, 5.0, 20.0, 10.0]), ("car", [90.0, 5.0, 10.0, 10.0])], "b.jpg": []}


def test_groundtruth_two_label_attributes_need_a_choice(tmp_path, runner):
    write_image(tmp_path / "a.jpg", (100, 50))
    line = {**_gt_line("a.jpg", [], "first"), **_gt_line("a.jpg", [{"class_id": 0, "left": 1, "top": 1, "width": 9, "height": 9}], "second")}
    (tmp_path / "o.manifest").write_text(json.dumps(line) + "\n")
    result = _run(runner, "groundtruth2coco", tmp_path / "o.manifest", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "first, second; give the one to read with --label-attribute" in result.output
    result = _run(runner, "groundtruth2coco", tmp_path / "o.manifest", "--label-attribute", "second", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _images(tmp_path / "out") == {"a.jpg": [("car", [1.0, 1.0, 9.0, 9.0])]}


# --- detection, inspect, the YOLO writer ---


def test_auto_says_what_it_found_and_inspect_reads_it(tmp_path, runner):
    root = _roboflow_yolo(tmp_path / "yolo")
    result = _run(runner, "auto", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"detected: YOLO txt (data.yaml) at {root}" in result.output
    result = invoke(runner, "inspect", root)
    assert result.exit_code == 0, result.output
    assert "3 images, 3 boxes, 2 classes" in result.output and "splits: train 2, val 1" in result.output
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hello")
    result = _run(runner, "auto", tmp_path / "junk", "--out", tmp_path / "out2")
    assert result.exit_code == 1
    assert "no known dataset here" in result.output


def test_coco2yolo_drops_crowd_renames_clashing_stems_and_strict_refuses(tmp_path, runner):
    write_image(tmp_path / "src" / "a.jpg", (100, 50))
    write_image(tmp_path / "src" / "a.png", (100, 50), fmt="PNG")
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50}, {"id": 2, "file_name": "a.png", "width": 100, "height": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 50, 50], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "cat"}],
    }  # fmt: skip
    (tmp_path / "src" / "c.json").write_text(json.dumps(coco))
    result = _run(runner, "coco2yolo", tmp_path / "src" / "c.json", "--out", tmp_path / "y", "--strict")
    assert result.exit_code == 1 and "--strict: 1 × crowd" in result.output
    assert not (tmp_path / "y").exists()
    result = _run(runner, "coco2yolo", tmp_path / "src" / "c.json", "--out", tmp_path / "y")
    assert result.exit_code == 0, result.output
    assert _boxes_line(result.output) == (2, 1, 0, 1)
    labels = {p.name: p.read_text() for p in (tmp_path / "y" / "labels").iterdir()}
    assert labels == {"a.txt": "0 0.200000 0.200000 0.200000 0.200000\n", "a_2.txt": ""}
    assert sorted(p.name for p in (tmp_path / "y" / "images").iterdir()) == ["a.jpg", "a_2.png"]
    import yaml

    assert yaml.safe_load((tmp_path / "y" / "data.yaml").read_text()) == {
        "path": ".", "train": "images", "val": "images", "nc": 1, "names": {0: "cat"}
    }  # fmt: skip
    # read back: train and val name one folder, so each image is kept once, in no split
    result = _run(runner, "yolo2coco", tmp_path / "y", "--out", tmp_path / "back")
    assert result.exit_code == 0, result.output
    assert "2 × image listed in more than one split: kept once" in result.output
    assert _images(tmp_path / "back") == {"a.jpg": [("cat", [10.0, 5.0, 20.0, 10.0])], "a_2.png": []}


def _tiny_datasets(tmp_path):
    """One small dataset per format: {format: (path to give, --images args, what auto must say)}."""
    images = tmp_path / "media"
    write_image(images / "a.jpg", (100, 50))
    yolo = _roboflow_yolo(tmp_path / "yolo")
    cvat = tmp_path / "cvat.xml"
    cvat.write_text('<annotations><image id="0" name="a.jpg" width="100" height="50"><box label="car" xtl="1" ytl="1" xbr="9" ybr="9"/></image></annotations>')
    labelme = tmp_path / "labelme"
    _labelme(labelme / "a.json", "a.jpg", [_shape("cat", [[1, 1], [9, 9]])])
    write_image(labelme / "a.jpg", (100, 50))
    studio = tmp_path / "project.json"
    studio.write_text(json.dumps([{"id": 1, "data": {"image": "/data/local-files/?d=a.jpg"}, "annotations": [{"result": [_result("cat", 1, 1, 5, 5)]}]}]))
    manifest = tmp_path / "gt" / "output.manifest"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps(_gt_line("s3://b/a.jpg", [{"class_id": 0, "left": 1, "top": 1, "width": 5, "height": 5}])) + "\n")
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}], "categories": [{"id": 1, "name": "cat"}]}))
    voc = make_voc(tmp_path / "voc" / "train", {"v1": [{"name": "cat", "box": (1, 1, 9, 9)}]})
    (voc.parent / "classes.txt").write_text("cat\n")  # as some VOC exports carry: still VOC
    media = ["--images", str(images)]
    return {
        "voc": (voc.parent, [], "Pascal VOC (<annotation> XMLs)"),
        "yolo": (yolo, [], "YOLO txt (data.yaml)"),
        "cvat": (cvat, media, "CVAT for images XML (XML root <annotations>)"),
        "labelme": (labelme, [], "LabelMe JSON (1 LabelMe .json files)"),
        "labelstudio": (studio, media, "Label Studio JSON"),
        "groundtruth": (manifest.parent, media, "SageMaker Ground Truth manifest (output.manifest: JSON lines with source-ref)"),
        "coco": (coco, media, "COCO json"),
    }  # fmt: skip


@pytest.mark.parametrize("fmt", ["voc", "yolo", "cvat", "labelme", "labelstudio", "groundtruth", "coco"])
def test_auto_detects_each_format_and_inspect_reads_it(tmp_path, runner, fmt):
    path, images, said = _tiny_datasets(tmp_path)[fmt]
    result = _run(runner, "auto", path, *images, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"detected: {said}" in result.output
    assert (tmp_path / "out" / "odorch.json").is_file()
    result = invoke(runner, "inspect", path, *images, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["images"] >= 1 and stats["boxes"] >= 1 and stats["box_counts"]["total"] >= stats["boxes"]
    result = invoke(runner, "inspect", tmp_path / "out")  # and the converted folder
    assert result.exit_code == 0 and f"{stats['images']} images, {stats['boxes']} boxes" in result.output, result.output


def test_labelstudio_json_min(tmp_path, runner):
    """JSON-MIN: one object per annotated task, regions under the control's name (here 'bbox')."""
    write_image(tmp_path / "cells.jpg", (200, 100))
    region = {"x": 10, "y": 20, "width": 30, "height": 40, "rotation": 0, "rectanglelabels": ["RBC"], "original_width": 200, "original_height": 100}
    polygon = {"points": [[1, 1], [5, 5], [1, 5]], "closed": True, "polygonlabels": ["RBC"], "original_width": 200, "original_height": 100}
    (tmp_path / "min.json").write_text(json.dumps([{"image": "/data/upload/2/0a1b2c3d-cells.jpg", "id": 7, "bbox": [region, polygon]}]))
    result = _run(runner, "auto", tmp_path / "min.json", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "detected: Label Studio JSON" in result.output
    assert _boxes_line(result.output) == (2, 1, 0, 1)
    assert "1 × shape that is not an axis-aligned box" in result.output
    assert _images(tmp_path / "out") == {"cells.jpg": [("RBC", [20.0, 20.0, 60.0, 40.0])]}


def test_yolo_data_yaml_mistakes_are_one_line_errors(tmp_path, runner):
    root = tmp_path / "y"
    write_image(root / "images" / "a.jpg")
    cases = {
        "names: [a, b]\nnc: 3\n": "nc is 3 but 'names' has 2 classes; make them agree",
        "names: {0: a, 2: b}\n": "'names' indexes must be 0..1 with none missing",
        "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nnames: *b\n": "YAML aliases (*name) are not allowed",
        "names: [a, \n": "invalid YAML",
        "just text\n": "not a YOLO data.yaml",
    }
    for text, message in cases.items():
        (root / "data.yaml").write_text(text)
        result = _run(runner, "yolo2coco", root, "--out", tmp_path / "out")
        assert result.exit_code == 1 and message in result.output, (text, result.output)
        assert "Traceback" not in result.output
    (root / "data.yaml").write_text("nc: 2\n")  # Ultralytics' class_0, class_1
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("\ufeff1 0.5 0.5 0.5 0.5\r\n")  # a BOM and CRLF, as Windows tools write
    result = _run(runner, "yolo2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _images(tmp_path / "out") == {"a.jpg": [("class_1", [16.0, 12.0, 32.0, 24.0])]}


def _rotated_jpeg(path, size=(100, 50), orientation=6):
    """A JPEG stored `size`, shown turned by its EXIF Orientation (6: 90° clockwise, shown 50 x 100)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", size, (200, 30, 30)).save(path, exif=exif)
    return path


def test_exif_rotated_image_in_yolo_and_cvat(tmp_path, runner):
    """YOLO coordinates are normalized to the image as shown (Ultralytics reads it so); a CVAT box on
    an image whose declared size is the stored one was drawn on the stored pixels and is turned."""
    from PIL import Image, ImageOps

    root = tmp_path / "y"
    _rotated_jpeg(root / "images" / "a.jpg")
    with Image.open(root / "images" / "a.jpg") as im:
        assert ImageOps.exif_transpose(im).size == (50, 100)
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.1\n")
    (root / "classes.txt").write_text("cat\n")
    result = _run(runner, "yolo2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _images(tmp_path / "out") == {"a.jpg": [("cat", [20.0, 45.0, 10.0, 10.0])]}
    assert read_json(tmp_path / "out" / "annotations" / "all.json")["images"][0]["width"] == 50
    # odorch's YOLO writes it upright (no EXIF tag), so tools that ignore EXIF see the boxes' frame
    result = _run(runner, "coco2yolo", tmp_path / "out", "--out", tmp_path / "y2")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "y2" / "images" / "a.jpg") as im:
        assert im.size == (50, 100) and im.getexif().get(0x0112, 1) == 1
    assert (tmp_path / "y2" / "labels" / "a.txt").read_text() == "0 0.500000 0.500000 0.200000 0.100000\n"

    _rotated_jpeg(tmp_path / "c" / "images" / "a.jpg")
    (tmp_path / "c" / "annotations.xml").write_text(
        '<annotations><image id="0" name="a.jpg" width="100" height="50">'
        '<box label="cat" xtl="10" ytl="5" xbr="30" ybr="15"/></image></annotations>'
    )
    result = _run(runner, "cvat2coco", tmp_path / "c", "--out", tmp_path / "out2")
    assert result.exit_code == 0, result.output
    assert "EXIF-rotated image annotated on its stored (unrotated) pixels" in result.output
    assert _images(tmp_path / "out2") == {"a.jpg": [("cat", [35.0, 10.0, 10.0, 20.0])]}


def test_an_image_annotated_twice_is_one_error_line(tmp_path, runner):
    write_image(tmp_path / "img" / "a.jpg", (100, 50))
    line = json.dumps(_gt_line("s3://b/x/a.jpg", [{"class_id": 0, "left": 1, "top": 1, "width": 5, "height": 5}]))
    (tmp_path / "o.manifest").write_text((line + "\n") * 6)
    result = _run(runner, "groundtruth2coco", tmp_path / "o.manifest", "--images", tmp_path / "img", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "error: 5 images annotated twice (o.manifest line 2 is the same image file as o.manifest line 1;" in result.output
    assert "and 2 more); keep one annotation per image" in result.output
    assert len(result.output.strip().splitlines()) <= 4  # the box line, its header, the error

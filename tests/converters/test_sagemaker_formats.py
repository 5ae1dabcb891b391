import io
import json

import pytest
from PIL import Image

from odorch.converters.recordio import detection_boxes, read_records, unpack
from tests.helpers import invoke, load_coco, read_json, shared_path, write_image


def _dataset(tmp_path):
    """A COCO json with a crowd box, an image with no box and a greyscale PNG."""
    write_image(tmp_path / "a.jpg", (100, 50))
    write_image(tmp_path / "b.png", (40, 80), mode="L")
    write_image(tmp_path / "none.jpg", (10, 10))
    path = tmp_path / "train.json"
    path.write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "a.jpg"},
                    {"id": 2, "file_name": "b.png"},
                    {"id": 3, "file_name": "none.jpg"},
                ],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 5, 40, 20]},
                    {"id": 2, "image_id": 1, "category_id": 9, "bbox": [0, 0, 100, 50]},
                    {"id": 3, "image_id": 1, "category_id": 5, "bbox": [1, 1, 5, 5], "iscrowd": 1},
                    {"id": 4, "image_id": 2, "category_id": 9, "bbox": [4, 8, 20, 40]},
                ],
                "categories": [{"id": 5, "name": "dog"}, {"id": 9, "name": "cat"}],
            }
        )
    )
    return path


def test_coco2rec_round_trip(tmp_path, runner):
    path = _dataset(tmp_path)
    out = tmp_path / "rec"
    result = invoke(runner, "convert", "coco2rec", path, "--out", out)
    assert result.exit_code == 0, result.output
    assert "label_width: 12 (2 + 5 × 2 boxes in the busiest image)" in result.output
    assert "1 × crowd (iscrowd=1) box" in result.output
    assert "1 × image without boxes" in result.output
    assert "boxes: 4 total = 3 kept + 0 repaired + 1 dropped" in result.output
    records = list(read_records(out / "train.rec", out / "train.idx"))
    assert [key for key, _ in records] == [0, 1]
    expected = {
        0: ("a.jpg", [(0, 0.1, 0.1, 0.5, 0.5), (1, 0, 0, 1, 1)]),
        1: ("b.png", [(1, 0.1, 0.1, 0.6, 0.6)]),
    }
    lst = (out / "train.lst").read_text().splitlines()
    for (key, payload), line in zip(records, lst):
        header, labels, image_bytes = unpack(payload)
        name, boxes = expected[key]
        assert header.id == key and labels[:2] == [2, 5]
        assert [tuple(round(v, 6) for v in b) for b in detection_boxes(labels)] == boxes
        assert image_bytes == (tmp_path / name).read_bytes()  # passed through unchanged
        fields = line.split("\t")
        assert fields[0] == str(key) and fields[-1] == name
        assert [float(v) for v in fields[1:-1]] == pytest.approx(labels, abs=1e-6)
    meta = read_json(out / "train.json")
    assert meta["label_width"] == 12 and meta["classes"] == ["dog", "cat"] and meta["records"] == 2


def test_coco2rec_resize_reencodes(tmp_path, runner):
    path = _dataset(tmp_path)
    result = invoke(runner, "convert", "coco2rec", path, "--out", tmp_path / "rec", "--resize", 50)
    assert result.exit_code == 0, result.output
    sizes = []
    for _, payload in read_records(tmp_path / "rec" / "train.rec"):
        _, _, image_bytes = unpack(payload)
        with Image.open(io.BytesIO(image_bytes)) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            sizes.append(im.size)
    assert sizes == [(50, 25), (25, 50)]


def test_coco2rec_strict_writes_nothing(tmp_path, runner):
    path = _dataset(tmp_path)
    result = invoke(runner, "convert", "coco2rec", path, "--out", tmp_path / "rec", "--strict")
    assert result.exit_code == 1 and "--strict" in result.stderr
    assert not (tmp_path / "rec").exists()


def test_coco2jumpstart_pixel_corners(tmp_path, runner):
    path = _dataset(tmp_path)
    out = tmp_path / "js"
    result = invoke(runner, "convert", "coco2jumpstart", path, "--out", out)
    assert result.exit_code == 0, result.output
    data = read_json(out / "annotations.json")
    assert [(im["file_name"], im["width"], im["height"]) for im in data["images"]] == [("a.jpg", 100, 50), ("b.png", 40, 80)]
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in data["annotations"]] == [
        (0, 0, [10, 5, 50, 25]),
        (0, 1, [0, 0, 100, 50]),
        (1, 1, [4, 8, 24, 48]),
    ]
    assert data["categories"] == [{"id": 0, "name": "dog"}, {"id": 1, "name": "cat"}]
    for im in data["images"]:
        assert (out / "images" / im["file_name"]).read_bytes() == (tmp_path / im["file_name"]).read_bytes()


def test_bccd_rec_round_trip(tmp_path, runner):
    bccd = shared_path("datasets", "bccd", "BCCD")
    out = tmp_path / "bccd"
    assert invoke(runner, "convert", "voc2coco", bccd, "--out", out, "--imagesets").exit_code == 0
    result = invoke(runner, "convert", "coco2rec", out / "annotations" / "val.json", "--out", tmp_path / "rec")
    assert result.exit_code == 0, result.output
    coco = load_coco(out / "annotations" / "val.json")
    names = [c["name"] for c in coco.dataset["categories"]]
    by_key = dict(read_records(tmp_path / "rec" / "val.rec", tmp_path / "rec" / "val.idx"))
    assert len(by_key) == len(coco.getImgIds())
    max_boxes = 0
    for key, image_id in enumerate(coco.getImgIds()):
        im = coco.imgs[image_id]
        _, labels, image_bytes = unpack(by_key[key])
        got = sorted(
            (names[int(c)], round(x0 * im["width"], 3), round(y0 * im["height"], 3), round(x1 * im["width"], 3), round(y1 * im["height"], 3))
            for c, x0, y0, x1, y1 in detection_boxes(labels)
        )
        want = sorted(
            (names[a["category_id"] - 1], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])
            for a in coco.imgToAnns[image_id]
        )
        assert [g[0] for g in got] == [w[0] for w in want]
        for g, w in zip(got, want):
            assert g[1:] == pytest.approx(w[1:], abs=0.01)  # float32 storage
        assert image_bytes == (out / "images" / im["file_name"]).read_bytes()
        max_boxes = max(max_boxes, len(want))
    assert f"label_width: {2 + 5 * max_boxes} " in result.output

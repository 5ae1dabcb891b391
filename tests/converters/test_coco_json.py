"""coco_json (the fast writer behind every odorch COCO file) must write exactly the text of
json.dumps(coco_dict(...), ensure_ascii=False): on BCCD as read by the VOC reader, and on boxes
with every kind of value a reader can leave in them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from odorch.converters.coco import coco_dict, coco_json
from odorch.converters.dataset import Box, ImageRecord
from odorch.converters.voc import read_voc

BCCD = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "bccd" / "BCCD"


def _same(images: list[ImageRecord], classes: list[str], **kw) -> str:
    text = coco_json(images, classes, **kw)
    assert text == json.dumps(coco_dict(images, classes, **kw), ensure_ascii=False)
    return text


def test_bccd_text_equals_json_dumps():
    if not BCCD.is_dir():
        pytest.skip(f"{BCCD} not found: the shared BCCD dataset is needed for this test")
    dataset = read_voc(BCCD)
    text = _same(dataset.images, dataset.classes, first_image_id=7, description="odorch test: all")
    data = json.loads(text)
    assert len(data["annotations"]) == dataset.num_boxes == 4886
    assert data["images"][0]["id"] == 7 and data["annotations"][-1]["id"] == 4886


def test_every_kind_of_value():
    boxes = [
        Box(1, 2, 30, 40, "cat"),  # ints, as a COCO file may hold
        Box(0.1, 0.2, 0.30000000000000004, 1e-7, "dög \"q\"", iscrowd=True, area=12.5, segmentation={"counts": "ab", "size": [3, 4]}),
        Box(np.float64(1.5), np.float64(2.25), np.float64(3.5), 4.0, "cat", ignore=True, attributes={"b": True, "n": 1, "f": 1.0}),
        Box(5.0, 6.0, 7.0, 8.0, "cat", attributes={"list": [1, "é", None], "nested": {"x": False}}, segmentation=[[1, 2, 3, 4, 5, 6]]),
        Box(0.0, 0.0, 1.0, 1.0, "cat", area=float("nan")),
        Box(0.0, 0.0, 1e308, 1.0, "cat", area=float("inf"), segmentation=[], attributes={}),
    ]
    images = [
        ImageRecord(source=Path("a.jpg"), file_name='sub/ä "b".jpg', width=64, height=48, mode="RGB", boxes=boxes[:3], origin="x"),
        ImageRecord(source=Path("b.jpg"), file_name="b.jpg", width=1, height=1, mode="L", boxes=[], origin="y"),
        ImageRecord(source=Path("c.jpg"), file_name="c.jpg", width=9, height=9, mode="RGB", boxes=boxes[3:], origin="z"),
    ]
    text = _same(images, ["cat", 'dög "q"'], description="ümlaut \"quoted\"")
    assert '"area": NaN' in text and "np.float" not in text


def test_no_boxes_and_no_images():
    _same([], ["cat"])
    image = ImageRecord(source=Path("a.jpg"), file_name="a.jpg", width=4, height=4, mode="RGB", boxes=[], origin="x")
    assert json.loads(_same([image], []))["annotations"] == []


def test_all_float_columns_with_repeats_signed_zeros_and_nan():
    """Columns of floats alone take the path that encodes each distinct value once: repeats, NaN
    and infinities must come out as json.dumps writes them, and -0.0 beside 0.0 must keep its sign."""
    nan = float("nan")
    boxes = [
        Box(0.0, 1.5, 10.0, 20.0, "cat"),
        Box(-0.0, 1.5, 10.0, 20.0, "cat", area=nan),
        Box(0.0, -0.0, 0.30000000000000004, 1e-7, "cat", area=float("inf")),
        Box(0.1, 0.2, 0.1 + 0.2, 20.0, "cat", area=nan),
    ]
    image = ImageRecord(source=Path("a.jpg"), file_name="a.jpg", width=64, height=48, mode="RGB", boxes=boxes, origin="x")
    text = _same([image], ["cat"])
    assert '"bbox": [-0.0, 1.5, 10.0, 18.5]' in text and '"bbox": [0.0, -0.0, 0.3, 0.0]' in text
    no_negative_zero = [Box(b.x0 or 0.0, b.y0 or 0.0, b.x1, b.y1, b.label, area=b.area) for b in boxes]
    _same([ImageRecord(**{**vars(image), "boxes": no_negative_zero})], ["cat"])

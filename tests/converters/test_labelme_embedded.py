"""LabelMe files that carry their image only as base64 ``imageData`` (the image not beside them,
imagePath null or absent): the image is decoded, checked against the pixel cap, and written under
the JSON's own name. The JSON files are written here by hand with the field names labelme 5's
LabelFile.save writes (the `labelme` package installs only with PyQt5 and onnxruntime, so it is
not used); the embedded images are real BCCD JPEG bytes, as labelme stores them."""

from __future__ import annotations

import base64
import io
import json
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from tests.helpers import invoke, load_coco, write_image

BCCD = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "bccd" / "BCCD"
IDS = ("BloodImage_00000", "BloodImage_00001", "BloodImage_00002")


def _labelme(path: Path, image_data: bytes | None, shapes: list[dict], size=(640, 480), **image_path) -> None:
    record = {"version": "5.5.0", "flags": {}, "shapes": shapes, **image_path}
    record["imageData"] = None if image_data is None else base64.b64encode(image_data).decode("utf-8")
    record.update(imageHeight=size[1], imageWidth=size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))


def _rect(label: str, x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"label": label, "points": [[x0, y0], [x1, y1]], "group_id": None, "description": "",
            "shape_type": "rectangle", "flags": {}, "mask": None}  # fmt: skip


def _voc_boxes(image_id: str) -> list[tuple[str, list[float]]]:
    root = ET.parse(BCCD / "Annotations" / f"{image_id}.xml").getroot()
    boxes = []
    for obj in root.iter("object"):
        b = obj.find("bndbox")
        x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        if x1 > x0 and y1 > y0:
            boxes.append((obj.findtext("name"), [x0, y0, x1, y1]))
    return boxes


def _coco_boxes(out: Path) -> dict[str, list]:
    coco = load_coco(out / "annotations" / "all.json")
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    return {
        im["file_name"]: sorted((names[a["category_id"]], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]])
                                for a in coco.imgToAnns[im["id"]])
        for im in coco.dataset["images"]
    }  # fmt: skip


def test_bccd_images_only_in_image_data(tmp_path, runner):
    if not BCCD.is_dir():
        pytest.skip(f"{BCCD} not found: the shared BCCD dataset is needed for this test")
    src = tmp_path / "labelme"
    jpegs = {i: (BCCD / "JPEGImages" / f"{i}.jpg").read_bytes() for i in IDS}
    shapes = {i: [_rect(label, *corners) for label, corners in _voc_boxes(i)] for i in IDS}
    # imagePath names a file that is not there / is null / is absent; the JSONs are renamed
    _labelme(src / "cells-a.json", jpegs[IDS[0]], shapes[IDS[0]], imagePath=f"{IDS[0]}.jpg")
    _labelme(src / "train" / "cells-b.json", jpegs[IDS[1]], shapes[IDS[1]], imagePath=None)
    _labelme(src / "cells-c.json", jpegs[IDS[2]], shapes[IDS[2]])
    out = tmp_path / "out"
    result = invoke(runner, "convert", "labelme2coco", src, "--out", out)
    assert result.exit_code == 0, result.output
    assert "3 × image found only as base64 imageData in its LabelMe JSON" in result.output
    for name, image_id in (("cells-a.jpg", IDS[0]), ("cells-b.jpg", IDS[1]), ("cells-c.jpg", IDS[2])):
        assert (out / "images" / name).read_bytes() == jpegs[image_id]  # the embedded file, byte for byte
    boxes = _coco_boxes(out)
    assert boxes == {f"cells-{k}.jpg": sorted(_voc_boxes(i)) for k, i in zip("abc", IDS)}
    report = json.loads((out / "odorch.json").read_text())
    assert report["problems"]["image_embedded"]["count"] == 3
    assert report["box_counts"]["dropped"] == 0


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height (no pixel data): what a decompression bomb shows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_bad_and_oversized_image_data_are_counted_and_not_written(tmp_path, runner):
    from PIL import Image

    src = tmp_path / "labelme"
    good = io.BytesIO()
    Image.new("RGB", (100, 50), (200, 10, 10)).save(good, format="PNG")
    _labelme(src / "ok.json", good.getvalue(), [_rect("cat", 10, 5, 30, 25)], size=(100, 50), imagePath="gone.png")
    _labelme(src / "big.json", _png_header(10_000, 10_000), [_rect("cat", 1, 1, 5, 5)], imagePath=None)
    _labelme(src / "bomb.json", _png_header(60_000, 60_000), [_rect("cat", 1, 1, 5, 5)], imagePath=None)
    _labelme(src / "text.json", b"not an image", [_rect("cat", 1, 1, 5, 5), _rect("cat", 2, 2, 6, 6)], imagePath=None)
    # imagePath outside the dataset: not followed; the embedded image is written under the JSON's name
    write_image(tmp_path / "secret.jpg", (100, 50))
    _labelme(src / "evil.json", good.getvalue(), [_rect("dog", 0, 0, 100, 50)], size=(100, 50), imagePath="../../secret.jpg")
    out = tmp_path / "out"
    result = invoke(runner, "convert", "labelme2coco", src, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "2 × image above the pixel cap" in result.output
    assert "1 × image file unreadable or not an image: image and its boxes dropped (e.g. text.json: imageData is not an image)" in result.output
    assert "boxes: 6 total = 2 kept + 0 repaired + 4 dropped" in result.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["evil.png", "ok.png"]
    assert _coco_boxes(out) == {"ok.png": [("cat", [10.0, 5.0, 30.0, 25.0])], "evil.png": [("dog", [0.0, 0.0, 100.0, 50.0])]}


def test_image_on_disk_wins_over_image_data(tmp_path, runner):
    """imageData is only a fallback: the file beside the JSON is used, and nothing is reported."""
    src = tmp_path / "labelme"
    write_image(src / "a.jpg", (100, 50))
    _labelme(src / "a.json", _png_header(10, 10), [_rect("cat", 10, 5, 30, 25)], size=(100, 50), imagePath="a.jpg")
    out = tmp_path / "out"
    result = invoke(runner, "convert", "auto", src, "--out", out)
    assert result.exit_code == 0, result.output
    assert "imageData" not in result.output
    assert (out / "images" / "a.jpg").read_bytes() == (src / "a.jpg").read_bytes()

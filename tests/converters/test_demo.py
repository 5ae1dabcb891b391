"""Tests for converters.demo.make_demo_voc (synthetic Pascal VOC shapes dataset)."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from odorch.converters.demo import SHAPES, make_demo_voc

SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- helpers
def load(out: Path) -> dict:
    """Parse every annotation; returns {stem: record}."""
    records = {}
    for xml_path in sorted((out / "Annotations").glob("*.xml")):
        root = ET.parse(xml_path).getroot()
        assert root.tag == "annotation"
        filename = root.findtext("filename")
        size = root.find("size")
        objects = []
        for o in root.findall("object"):
            bb = o.find("bndbox")
            objects.append({
                "name": o.findtext("name"),
                "pose": o.findtext("pose"),
                "truncated": int(o.findtext("truncated")),
                "difficult": int(o.findtext("difficult")),
                "box": tuple(int(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")),
            })
        records[xml_path.stem] = {
            "filename": filename,
            "image": out / "JPEGImages" / filename,
            "width": int(size.findtext("width")),
            "height": int(size.findtext("height")),
            "depth": int(size.findtext("depth")),
            "segmented": root.findtext("segmented"),
            "objects": objects,
        }
    return records


def all_objects(records: dict):
    return [o for r in records.values() for o in r["objects"]]


def tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "voc"
    summary = make_demo_voc(out, images=200, classes=4, seed=0)
    return out, summary, load(out)


# --------------------------------------------------------------------------- layout / counts
def test_layout_and_summary_counts(demo):
    out, s, recs = demo
    assert s["out"] == str(out)
    assert s["images"] == 200 == len(recs)
    assert s["classes"] == list(SHAPES[:4])
    assert (out / "labels.txt").read_text().splitlines() == s["classes"]
    images = sorted(p.name for p in (out / "JPEGImages").iterdir())
    assert images == sorted(r["filename"] for r in recs.values())
    for stem, r in recs.items():
        assert Path(r["filename"]).stem == stem
        assert r["segmented"] == "0"
    objs = all_objects(recs)
    assert s["objects"] == len(objs)
    assert s["png"] == sum(r["filename"].endswith(".png") for r in recs.values())
    assert s["png"] + sum(r["filename"].endswith(".jpg") for r in recs.values()) == 200
    assert s["greyscale"] == sum(r["depth"] == 1 for r in recs.values())
    assert s["empty"] == 2 == sum(not r["objects"] for r in recs.values())
    assert s["truncated"] == sum(o["truncated"] for o in objs)
    assert s["difficult"] == sum(o["difficult"] for o in objs)
    # documented rates for 200 images
    assert (s["greyscale"], s["png"], s["truncated"], s["difficult"]) == (10, 6, 8, 6)
    # no temp files left behind by the atomic writes
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_objects_per_image_and_names(demo):
    _, s, recs = demo
    for r in recs.values():
        assert len(r["objects"]) <= 5  # 1-4, plus at most one forced special slot
        for o in r["objects"]:
            assert o["name"] in s["classes"]
            assert o["pose"] == "Unspecified"
            assert o["truncated"] in (0, 1) and o["difficult"] in (0, 1)


# --------------------------------------------------------------------------- validity
def test_boxes_inside_image_with_positive_area(demo):
    _, _, recs = demo
    n = 0
    for r in recs.values():
        for o in r["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= r["width"], (r["filename"], o)
            assert 0 <= y0 < y1 <= r["height"], (r["filename"], o)
            n += 1
    assert n > 200


def test_xml_size_matches_real_image_and_mode(demo):
    _, s, recs = demo
    modes = Counter()
    for r in recs.values():
        with Image.open(r["image"]) as im:
            assert im.size == (r["width"], r["height"]) == (256, 256)
            assert im.format == ("PNG" if r["filename"].endswith(".png") else "JPEG")
            modes[im.mode] += 1
            assert im.mode == ("L" if r["depth"] == 1 else "RGB"), r["filename"]
    assert modes["L"] == s["greyscale"] > 0


def test_greyscale_are_jpeg_and_disjoint_from_png_and_empty(demo):
    _, _, recs = demo
    grey = [r for r in recs.values() if r["depth"] == 1]
    assert grey and all(r["filename"].endswith(".jpg") for r in grey)
    assert all(r["objects"] for r in grey)
    assert all(r["objects"] for r in recs.values() if r["filename"].endswith(".png"))


def test_truncated_objects_touch_the_border(demo):
    _, _, recs = demo
    for r in recs.values():
        for o in r["objects"]:
            x0, y0, x1, y1 = o["box"]
            on_border = x0 == 0 or y0 == 0 or x1 == r["width"] or y1 == r["height"]
            if o["truncated"]:
                assert on_border, o
                assert max(x1 - x0, y1 - y0) >= 16  # visible part still a real object


def test_difficult_iff_tiny(demo):
    _, _, recs = demo
    for o in all_objects(recs):
        x0, y0, x1, y1 = o["box"]
        assert (max(x1 - x0, y1 - y0) < 16) == bool(o["difficult"]), o


def test_object_sizes_and_overlap_limited(demo):
    _, _, recs = demo
    for r in recs.values():
        for o in r["objects"]:
            x0, y0, x1, y1 = o["box"]
            if not o["difficult"] and not o["truncated"]:
                # nominal 20-90 px; rotated polygons may exceed nominal a little
                assert 16 <= max(x1 - x0, y1 - y0) <= 120, o
        for a, b in itertools.combinations(r["objects"], 2):
            assert iou(a["box"], b["box"]) < 0.3, (r["filename"], a, b)


def test_every_class_appears_roughly_balanced(demo):
    _, s, recs = demo
    counts = Counter(o["name"] for o in all_objects(recs))
    assert set(counts) == set(s["classes"])
    expected = s["objects"] / len(s["classes"])
    for name in s["classes"]:
        assert abs(counts[name] - expected) <= 0.15 * expected, counts


def test_imagesets_partition_all_ids(demo):
    out, _, recs = demo
    main = out / "ImageSets" / "Main"
    parts = {name: (main / f"{name}.txt").read_text().split() for name in SPLITS}
    for ids in parts.values():
        assert len(ids) == len(set(ids))
    sets = {k: set(v) for k, v in parts.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] \
        and not sets["val"] & sets["test"]
    assert sets["train"] | sets["val"] | sets["test"] == set(recs)
    assert [len(parts[k]) for k in SPLITS] == [128, 32, 40]


def test_boxes_are_tight_pixel_edges(tmp_path, monkeypatch):
    """On a flat background without pixel noise, saved losslessly (PNG), every
    foreground pixel lies inside some box and every box edge row/column holds
    foreground: boxes are exactly the drawn extent, with exclusive xmax/ymax.
    Objects also contrast with the background."""
    import numpy as np

    import odorch.converters.demo as demo_mod

    monkeypatch.setattr(demo_mod, "PIXEL_NOISE", (0.0, 0.0))
    monkeypatch.setattr(demo_mod, "RATE_PNG", 1.0)
    monkeypatch.setattr(demo_mod, "_background",
                        lambda rng, size: np.full((size, size, 3), 128, np.float32))
    make_demo_voc(tmp_path, images=40, classes=8, seed=3)
    recs = load(tmp_path)
    checked = 0
    for r in recs.values():
        if not r["filename"].endswith(".png"):
            continue
        with Image.open(r["image"]) as im:
            a = np.asarray(im.convert("RGB")).astype(int)
        fg = (a != 128).any(axis=2)
        covered = np.zeros_like(fg)
        for o in r["objects"]:
            x0, y0, x1, y1 = o["box"]
            covered[y0:y1, x0:x1] = True
            assert fg[y0, x0:x1].any() and fg[y1 - 1, x0:x1].any(), (r["filename"], o)
            assert fg[y0:y1, x0].any() and fg[y0:y1, x1 - 1].any(), (r["filename"], o)
            checked += 1
        assert not (fg & ~covered).any(), r["filename"]
        # object colours are chosen to contrast (in luminance) with what is under them
        luma = np.asarray(Image.fromarray(a.astype(np.uint8)).convert("L")).astype(int)
        if fg.any():
            assert (np.abs(luma[fg] - 128) >= 40).mean() > 0.9, r["filename"]
    assert checked > 40


# --------------------------------------------------------------------------- determinism
def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a = make_demo_voc(tmp_path / "a", images=30, seed=7)
    b = make_demo_voc(tmp_path / "b", images=30, seed=7)
    make_demo_voc(tmp_path / "c", images=30, seed=8)
    ta, tb, tc = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b"), tree_bytes(tmp_path / "c")
    assert {k: v for k, v in a.items() if k != "out"} == {k: v for k, v in b.items() if k != "out"}
    assert ta == tb
    assert len(ta) == 30 * 2 + 3 + 1
    differing = [k for k in ta if k in tc and ta[k] != tc[k]]
    assert any(k.startswith("JPEGImages") for k in differing)
    assert any(k.startswith("Annotations") for k in differing)
    assert (tmp_path / "a/ImageSets/Main/train.txt").read_bytes() != \
        (tmp_path / "c/ImageSets/Main/train.txt").read_bytes()


def test_rerun_into_same_dir_overwrites_and_drops_stale_files(tmp_path):
    make_demo_voc(tmp_path / "fresh", images=20, seed=0, classes=2)
    make_demo_voc(tmp_path / "reused", images=35, seed=5, classes=5)
    make_demo_voc(tmp_path / "reused", images=20, seed=0, classes=2)
    assert tree_bytes(tmp_path / "reused") == tree_bytes(tmp_path / "fresh")


# --------------------------------------------------------------------------- small datasets / args
@pytest.mark.parametrize("n", [10, 12, 25])
def test_small_dataset_keeps_each_edge_case(tmp_path, n):
    s = make_demo_voc(tmp_path, images=n, seed=n)
    recs = load(tmp_path)
    objs = all_objects(recs)
    assert len(recs) == n
    for key in ("greyscale", "png", "empty", "truncated", "difficult"):
        assert s[key] >= 1, key
    assert s["empty"] == sum(not r["objects"] for r in recs.values())
    assert s["truncated"] == sum(o["truncated"] for o in objs)
    assert s["difficult"] == sum(o["difficult"] for o in objs)
    assert s["greyscale"] == sum(r["depth"] == 1 for r in recs.values())
    assert s["png"] == sum(r["filename"].endswith(".png") for r in recs.values())


def test_all_eight_classes_and_small_image_size(tmp_path):
    s = make_demo_voc(tmp_path, images=40, classes=8, seed=1, image_size=96)
    recs = load(tmp_path)
    assert s["classes"] == list(SHAPES)
    assert Counter(o["name"] for o in all_objects(recs)).keys() == set(SHAPES)
    for r in recs.values():
        with Image.open(r["image"]) as im:
            assert im.size == (96, 96)
        for o in r["objects"]:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96


@pytest.mark.parametrize("bad", [0, 9, -1, 100, 2.5, True])
def test_bad_classes_raises(tmp_path, bad):
    with pytest.raises(ValueError, match="classes"):
        make_demo_voc(tmp_path, images=10, classes=bad)
    assert not (tmp_path / "Annotations").exists()  # validated before writing anything


def test_defaults(tmp_path):
    s = make_demo_voc(tmp_path)
    assert s["images"] == 200 and s["classes"] == ["circle", "square", "triangle"]

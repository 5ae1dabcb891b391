import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from odorch.converters.dataset import DatasetError
from odorch.converters.voc import read_voc
from tests.helpers import invoke, load_coco, make_voc, read_json, shared_path, voc_xml, write_image

RBC = {"name": "RBC", "box": (10, 10, 30, 30)}


def _boxes_of(out: Path, split: str = "all") -> list[list[float]]:
    return [a["bbox"] for a in read_json(out / "annotations" / f"{split}.json")["annotations"]]


def test_box_repairs_are_counted_and_reconcile(tmp_path, runner):
    root = make_voc(
        tmp_path / "voc",
        {
            "a": [
                RBC,
                {"name": "RBC", "box": (40, 40, 20, 20)},  # inverted: swapped
                {"name": "WBC", "box": (5, 5, 5, 20)},  # zero area: dropped
                {"name": "WBC", "box": (50, 30, 90, 60)},  # partly outside 64x48: clipped
                {"name": "WBC", "box": (70, 50, 90, 60)},  # entirely outside: dropped
            ]
        },
    )
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "boxes: 5 total = 1 kept + 2 repaired + 2 dropped" in result.output
    for what in ("inverted box", "zero-area box", "box partly outside", "box entirely outside"):
        assert what in result.output
    assert sorted(_boxes_of(tmp_path / "out")) == sorted([[10, 10, 20, 20], [20, 20, 20, 20], [50, 30, 14, 18]])
    summary = read_json(tmp_path / "out" / "odorch.json")
    assert summary["box_counts"] == {"total": 5, "kept": 1, "repaired": 2, "dropped": 2}
    assert load_coco(tmp_path / "out" / "annotations" / "all.json").getAnnIds() == [1, 2, 3]


def test_strict_refuses_repairs_and_writes_nothing(tmp_path, runner):
    root = make_voc(tmp_path / "voc", {"a": [RBC, {"name": "RBC", "box": (5, 5, 5, 9)}]})
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out", "--strict")
    assert result.exit_code == 1
    assert "--strict: 1 × zero-area box" in result.stderr
    assert not (tmp_path / "out").exists()


def test_malformed_xml_names_file_and_line(tmp_path, runner):
    root = make_voc(tmp_path / "voc", {"good": [RBC]})
    write_image(root / "JPEGImages" / "bad.jpg")
    (root / "Annotations" / "bad.xml").write_text("<annotation>\n<filename>bad.jpg</filename>\n<object>\n</annotation>")
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"{root / 'Annotations' / 'bad.xml'}:4:" in result.stderr
    assert "fix or delete this file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_image_problems_drop_image_and_count_its_boxes(tmp_path, runner):
    root = make_voc(tmp_path / "voc", {"ok": [RBC], "gone": [RBC, RBC], "junk": [RBC], "cut": [RBC]})
    (root / "JPEGImages" / "gone.jpg").unlink()
    (root / "JPEGImages" / "junk.jpg").write_bytes(b"not an image at all")
    cut = root / "JPEGImages" / "cut.jpg"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "1 × image file not found" in result.output
    assert "1 × image file unreadable" in result.output
    assert "1 × truncated image file" in result.output
    assert "boxes: 5 total = 1 kept + 0 repaired + 4 dropped" in result.output
    coco = load_coco(tmp_path / "out" / "annotations" / "all.json")
    assert [im["file_name"] for im in coco.dataset["images"]] == ["ok.jpg"]


def test_greyscale_kept_and_cmyk_reencoded_as_rgb(tmp_path, runner):
    root = make_voc(tmp_path / "voc", {"rgb": [RBC]})
    write_image(root / "JPEGImages" / "grey.jpg", mode="L")
    write_image(root / "JPEGImages" / "ink.jpg", mode="CMYK")
    for stem in ("grey", "ink"):
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", (64, 48), [RBC]))
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "1 × greyscale image" in result.output and "1 × CMYK image" in result.output
    with Image.open(tmp_path / "out" / "images" / "ink.jpg") as im:
        assert im.mode == "RGB"
    with Image.open(tmp_path / "out" / "images" / "grey.jpg") as im:
        assert im.mode == "L"
    assert (tmp_path / "out" / "images" / "rgb.jpg").stat().st_ino == (root / "JPEGImages" / "rgb.jpg").stat().st_ino


def test_classes_option_orders_map_and_drops_unknown(tmp_path, runner):
    root = make_voc(tmp_path / "voc", {"a": [RBC, {"name": "WBC", "box": (1, 1, 9, 9)}, {"name": "Dust", "box": (2, 2, 8, 8)}]})
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out", "--classes", "WBC,RBC,Platelets")
    assert result.exit_code == 0, result.output
    assert "1 × box of a class not in --classes: dropped" in result.output
    assert "'Dust'" in result.output
    assert "--classes name with no box in the data" in result.output
    data = read_json(tmp_path / "out" / "annotations" / "all.json")
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "WBC"), (2, "RBC"), (3, "Platelets")]
    assert sorted(a["category_id"] for a in data["annotations"]) == [1, 2]
    strict = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "o2", "--classes", "WBC,RBC", "--strict")
    assert strict.exit_code == 1 and "Dust" in strict.stderr


def test_difficult_and_truncated_are_kept_as_attributes(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": [{"name": "RBC", "box": (1, 1, 9, 9), "difficult": 1, "truncated": 1}, RBC]})
    dataset = read_voc(root)
    hard, easy = dataset.images[0].boxes
    assert hard.ignore and hard.attributes == {"difficult": 1, "truncated": 1} and not hard.iscrowd
    assert not easy.ignore and easy.attributes == {"difficult": 0, "truncated": 0}


def test_size_mismatch_is_reported_and_real_size_used(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": [RBC]})
    (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", (640, 480), [RBC]))
    dataset = read_voc(root)
    assert (dataset.images[0].width, dataset.images[0].height) == (64, 48)
    assert dataset.problems.counts["image_size_mismatch"] == 1
    assert "annotation 640x480, image 64x48" in dataset.problems.examples["image_size_mismatch"][0]


def test_two_xmls_for_one_image_is_an_error(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": [RBC]})
    (root / "Annotations" / "copy.xml").write_text(voc_xml("a.jpg", (64, 48), [RBC]))
    with pytest.raises(DatasetError, match="already annotated by a.xml"):
        read_voc(root)


def test_empty_dataset_is_an_error(tmp_path, runner):
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    result = invoke(runner, "convert", "voc2coco", tmp_path / "voc", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "no .xml annotation file at any depth" in result.stderr
    root = make_voc(tmp_path / "voc2", {"a": [RBC]})
    (root / "JPEGImages" / "a.jpg").unlink()
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "the dataset is empty" in result.stderr
    assert "1 × image file not found" in result.stderr


@pytest.mark.parametrize(
    "layout",
    ["lowercase", "flat", "no_extension", "no_filename", "png_named_jpg_in_xml"],
)
def test_finds_images_in_usual_layouts(tmp_path, layout):
    root = tmp_path / "voc"
    if layout == "flat":
        write_image(root / "x.jpg")
        (root / "x.xml").write_text(voc_xml("x.jpg", (64, 48), [RBC]))
    elif layout == "lowercase":
        write_image(root / "jpegimages" / "x.jpg")
        (root / "annotations").mkdir()
        (root / "annotations" / "x.xml").write_text(voc_xml("x.jpg", (64, 48), [RBC]))
    else:
        ext = ".png" if layout == "png_named_jpg_in_xml" else ".jpg"
        write_image(root / "JPEGImages" / f"x{ext}")
        (root / "Annotations").mkdir()
        filename = {"no_extension": "x", "no_filename": None, "png_named_jpg_in_xml": "x.jpg"}[layout]
        (root / "Annotations" / "x.xml").write_text(voc_xml(filename, (64, 48), [RBC]))
    dataset = read_voc(root)
    assert [im.source.stem for im in dataset.images] == ["x"]
    assert dataset.num_boxes == 1


def test_imagesets_conflict_and_unlisted(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": [RBC], "b": [RBC], "c": [RBC]})
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("a\n")
    (main / "test.txt").write_text("b\nghost\n")
    dataset = read_voc(root, imagesets=True)
    assert {im.source.stem: im.split for im in dataset.images} == {"a": "train", "b": "test"}
    assert dataset.problems.counts["image_not_in_split"] == 1
    assert dataset.problems.counts["imageset_unknown_id"] == 1
    assert dataset.problems.boxes["dropped"] == 1
    (main / "val.txt").write_text("a\n")
    with pytest.raises(DatasetError, match="a is also in train.txt"):
        read_voc(root, imagesets=True)


def test_rerun_after_kill_relinks_and_rewrites_json(tmp_path, runner):
    root = make_voc(tmp_path / "voc", {"a": [RBC], "b": [RBC]})
    out = tmp_path / "out"
    assert invoke(runner, "convert", "voc2coco", root, "--out", out).exit_code == 0
    (out / "annotations" / "all.json").unlink()  # as if killed before the json was written
    (out / "images" / "b.jpg").unlink()
    assert invoke(runner, "convert", "voc2coco", root, "--out", out).exit_code == 0
    assert len(load_coco(out / "annotations" / "all.json").getImgIds()) == 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


# ---- real data: BCCD (Pascal VOC, ImageSets, two zero-area boxes) ----


def _voc_boxes(root: Path) -> dict[str, list[tuple[str, list[float]]]]:
    """Independent parse of the source XMLs, to reconcile against what was written."""
    out = {}
    for xml in sorted((root / "Annotations").glob("*.xml")):
        r = ET.parse(xml).getroot()
        out[r.findtext("filename")] = [
            (o.findtext("name"), [float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")])
            for o in r.iter("object")
        ]
    return out


def test_bccd_imagesets(tmp_path, runner):
    bccd = shared_path("datasets", "bccd", "BCCD")
    out = tmp_path / "bccd"
    result = invoke(runner, "convert", "voc2coco", bccd, "--out", out, "--imagesets")
    assert result.exit_code == 0, result.output
    source = _voc_boxes(bccd)
    total = sum(len(v) for v in source.values())
    degenerate = sum(b[0] == b[2] or b[1] == b[3] for v in source.values() for _, b in v)
    assert degenerate == 2
    assert f"boxes: {total} total = {total - 2} kept + 0 repaired + 2 dropped" in result.output
    lists = {s: (bccd / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    written = 0
    for split, ids in lists.items():
        coco = load_coco(out / "annotations" / f"{split}.json")
        assert sorted(Path(im["file_name"]).stem for im in coco.dataset["images"]) == sorted(ids)
        assert [c["name"] for c in coco.dataset["categories"]] == ["Platelets", "RBC", "WBC"]
        names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
        for im in coco.dataset["images"]:
            expected = sorted(
                (n, [b[0], b[1], b[2] - b[0], b[3] - b[1]])
                for n, b in source[im["file_name"]]
                if b[0] != b[2] and b[1] != b[3]
            )
            got = sorted((names[a["category_id"]], a["bbox"]) for a in coco.imgToAnns[im["id"]])
            assert got == expected, im["file_name"]
            assert (out / "images" / im["file_name"]).exists()
            written += len(got)
    assert written == total - 2


def test_bccd_stratified_split_is_seeded_and_covers_classes(tmp_path, runner):
    bccd = shared_path("datasets", "bccd", "BCCD")
    counts = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / name
        result = invoke(runner, "convert", "voc2coco", bccd, "--out", out, "--split", "0.64,0.16,0.20", "--seed", seed)
        assert result.exit_code == 0, result.output
        files = {}
        for split, ratio in (("train", 0.64), ("val", 0.16), ("test", 0.20)):
            coco = load_coco(out / "annotations" / f"{split}.json")
            assert abs(len(coco.getImgIds()) - 364 * ratio) <= 3
            per_class = {c["name"]: len(coco.getAnnIds(catIds=[c["id"]])) for c in coco.dataset["categories"]}
            assert min(per_class.values()) > 0, (split, per_class)
            files[split] = sorted(im["file_name"] for im in coco.dataset["images"])
        counts[name] = files
        assert sorted(sum(files.values(), [])) == sorted(p.name for p in (bccd / "JPEGImages").glob("*.jpg"))
    assert counts["a"] == counts["b"]
    assert counts["a"] != counts["c"]

"""VOC from wherever it lies: XMLs at any depth and in any folder name, images found near them or
in --images, source splits kept; built from real BCCD files (copied into tmp_path)."""

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from odorch.converters.voc import read_voc
from tests.helpers import invoke, read_json, shared_path, voc_xml, write_image

RBC = {"name": "RBC", "box": (10, 10, 30, 30)}


def _bccd_files(n: int, start: int = 0) -> list[tuple[Path, Path]]:
    """(xml, jpg) pairs of BCCD, `n` of them from `start` in name order."""
    bccd = shared_path("datasets", "bccd", "BCCD")
    xmls = sorted((bccd / "Annotations").glob("*.xml"))[start : start + n]
    return [(xml, bccd / "JPEGImages" / f"{xml.stem}.jpg") for xml in xmls]


def _copy(pairs: list[tuple[Path, Path]], xml_dir: Path, image_dir: Path) -> None:
    xml_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    for xml, jpg in pairs:
        shutil.copy(xml, xml_dir / xml.name)
        shutil.copy(jpg, image_dir / jpg.name)


def _source_boxes(pairs: list[tuple[Path, Path]]) -> dict[str, list[tuple[str, list[float]]]]:
    """Independent parse of the XMLs: image name -> sorted (class, COCO bbox), zero-area boxes left out."""
    out = {}
    for xml, jpg in pairs:
        boxes = []
        for obj in ET.parse(xml).getroot().iter("object"):
            x0, y0, x1, y1 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x1 > x0 and y1 > y0:
                boxes.append((obj.findtext("name"), [x0, y0, x1 - x0, y1 - y0]))
        out[jpg.name] = sorted(boxes)
    return out


def _written_boxes(out: Path, split: str) -> dict[str, list[tuple[str, list[float]]]]:
    coco = read_json(out / "annotations" / f"{split}.json")
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: Path(im["file_name"]).name for im in coco["images"]}
    got: dict[str, list] = {name: [] for name in files.values()}
    for ann in coco["annotations"]:
        got[files[ann["image_id"]]].append((names[ann["category_id"]], ann["bbox"]))
    return {name: sorted(boxes) for name, boxes in got.items()}


def test_renamed_xml_folder_beside_an_images_folder(tmp_path, runner):
    """The issue's first layout: `voc_labels/` (not Annotations) beside `images/`."""
    pairs = _bccd_files(6)
    _copy(pairs, tmp_path / "ds" / "voc_labels", tmp_path / "ds" / "images")
    result = invoke(runner, "convert", "voc2coco", tmp_path / "ds", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert _written_boxes(tmp_path / "out", "all") == _source_boxes(pairs)
    assert sum(len(boxes) for boxes in _source_boxes(pairs).values()) > 50  # real BCCD boxes, not an empty match
    for _, jpg in pairs:
        assert (tmp_path / "out" / "images" / jpg.name).read_bytes() == jpg.read_bytes()


def test_two_folder_pairs_train_and_validation(tmp_path, runner):
    """The issue's second layout: a training pair and a validation pair of folders, each with its own
    images; both are read (none ignored), and their splits are kept and usable as --split source."""
    train, val = _bccd_files(5), _bccd_files(4, start=5)
    _copy(train, tmp_path / "ds" / "train" / "Annotations", tmp_path / "ds" / "train" / "JPEGImages")
    _copy(val, tmp_path / "ds" / "validation" / "labels_xml", tmp_path / "ds" / "validation" / "images")
    result = invoke(runner, "convert", "voc2coco", tmp_path / "ds", "--out", tmp_path / "out", "--split", "source")
    assert result.exit_code == 0, result.output
    assert _written_boxes(tmp_path / "out", "train") == _source_boxes(train)
    assert _written_boxes(tmp_path / "out", "val") == _source_boxes(val)
    assert sorted(p.name for p in (tmp_path / "out" / "annotations").iterdir()) == ["train.json", "val.json"]
    shown = invoke(runner, "inspect", tmp_path / "ds")
    assert shown.exit_code == 0 and "splits: train 5, val 4" in shown.output, shown.output


def test_images_and_annotations_given_explicitly(tmp_path, runner):
    """XMLs in one place, images in an unrelated folder outside the root: --images says where."""
    pairs = _bccd_files(3)
    _copy(pairs, tmp_path / "ds" / "xml", tmp_path / "elsewhere" / "frames_2024")
    no_images = invoke(runner, "convert", "voc2coco", tmp_path / "ds", "--out", tmp_path / "o1")
    assert no_images.exit_code == 1 and "3 × image file not found" in no_images.output + no_images.stderr
    result = invoke(
        runner, "convert", "voc2coco", tmp_path / "ds", "--out", tmp_path / "out",
        "--annotations", tmp_path / "ds" / "xml", "--images", tmp_path / "elsewhere" / "frames_2024",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _written_boxes(tmp_path / "out", "all") == _source_boxes(pairs)


def test_image_found_by_path_basename_and_mirrored_folder(tmp_path):
    """<filename> wrong, <path> right; Annotations/train/x.xml finds JPEGImages/train/x.jpg before another x.jpg."""
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "train" / "a.jpg", size=(64, 48))
    write_image(root / "JPEGImages" / "a.jpg", size=(32, 32))  # same name, wrong image
    write_image(root / "JPEGImages" / "train" / "photo_7.jpg", size=(64, 48))
    (root / "Annotations" / "train").mkdir(parents=True)
    (root / "Annotations" / "train" / "a.xml").write_text(voc_xml("a.jpg", (64, 48), [RBC]))
    xml = voc_xml("IMG_0001.JPG", (64, 48), [RBC]).replace("<filename>", r"<path>C:\data\photo_7.jpg</path><filename>")
    (root / "Annotations" / "train" / "b.xml").write_text(xml)
    dataset = read_voc(root)
    assert sorted(str(im.source.relative_to(root)) for im in dataset.images) == [
        "JPEGImages/train/a.jpg",
        "JPEGImages/train/photo_7.jpg",
    ]
    assert {im.split for im in dataset.images} == {"train"}
    assert not dataset.problems.counts


def test_every_xml_is_read_or_listed_with_its_reason(tmp_path, runner):
    """A non-VOC XML, a symlink loop of folders and a dangling link: listed, never silent, no traceback."""
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "a.jpg")
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", (64, 48), [RBC]))
    (root / "Annotations" / "labelmap.xml").write_text("<labels><label>RBC</label></labels>")
    os.symlink(root, root / "Annotations" / "loop")  # a folder link back to the root
    os.symlink(root / "nowhere.xml", root / "Annotations" / "dangling.xml")
    os.symlink("self.xml", root / "Annotations" / "self.xml")  # ELOOP
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "1 × XML file that is not a Pascal VOC annotation" in result.output
    assert "2 × XML file that cannot be read" in result.output
    assert read_json(tmp_path / "out" / "odorch.json")["splits"]["all"] == {
        "images": 1,
        "boxes": 1,
        "per_class": {"RBC": 1},
    }


def test_split_source_without_declared_splits_is_a_clear_error(tmp_path, runner):
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "a.jpg")
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", (64, 48), [RBC]))
    result = invoke(runner, "convert", "voc2coco", root, "--out", tmp_path / "out", "--split", "source")
    assert result.exit_code == 1
    assert "--split source: 1 of 1 images have no split in the source" in result.stderr


def test_worker_processes_read_the_same_dataset_as_one_process(tmp_path, monkeypatch):
    """Above PARALLEL_MIN XMLs, chunks are read in worker processes and sent back packed: the
    dataset must be the same, box for box, as a single-process read (zero-area BCCD boxes included)."""
    import odorch.converters.voc as voc

    train, val = _bccd_files(6), _bccd_files(6, start=299)  # 00338 and 00343 hold zero-area boxes
    _copy(train, tmp_path / "ds" / "train" / "Annotations", tmp_path / "ds" / "train" / "JPEGImages")
    _copy(val, tmp_path / "ds" / "val" / "Annotations", tmp_path / "ds" / "val" / "JPEGImages")

    def snapshot(dataset):
        images = [(im.source, im.file_name, im.width, im.height, im.mode, im.origin, im.split, im.orientation,
                   [(b.x0, b.y0, b.x1, b.y1, b.label, b.ignore, b.repaired, b.attributes) for b in im.boxes])
                  for im in dataset.images]
        return images, dataset.classes, dataset.problems.as_dict()

    serial = snapshot(read_voc(tmp_path / "ds"))
    monkeypatch.setattr(voc, "PARALLEL_MIN", 2)
    monkeypatch.setattr(voc, "CHUNK", 3)
    assert snapshot(read_voc(tmp_path / "ds")) == serial
    assert serial[2]["problems"]["box_zero_area"]["count"] == 2

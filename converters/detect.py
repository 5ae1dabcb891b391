"""Which annotation format a file or folder holds, from its names and a look inside, and one
entry that reads any of them (`odorch convert auto`, `odorch inspect`)."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odorch.converters.dataset import Dataset, DatasetError

TITLES = {
    "coco": "COCO json",
    "voc": "Pascal VOC",
    "yolo": "YOLO txt",
    "cvat": "CVAT for images XML",
    "labelstudio": "Label Studio JSON",
    "labelme": "LabelMe JSON",
    "groundtruth": "SageMaker Ground Truth manifest",
    "odorch": "odorch COCO layout",
}


@dataclass(frozen=True)
class Detected:
    format: str
    path: Path  # the file or folder to give the reader
    why: str  # what gave it away, for the user

    def describe(self) -> str:
        return f"{TITLES[self.format]} ({self.why})"


def _xml_root(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            for _, element in ET.iterparse(f, events=("start",)):
                return element.tag
    except (ET.ParseError, OSError, LookupError, ValueError):  # LookupError: an unknown encoding=
        return None
    return None


def _json_kind(path: Path) -> str | None:
    from odorch.converters.labelme import is_labelme
    from odorch.converters.labelstudio import is_labelstudio

    try:
        with open(path, "rb") as f:
            data: Any = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("categories"), list):
        return "coco"  # (COCO's captions files have no categories)
    if is_labelme(data):
        return "labelme"
    if is_labelstudio(data):
        return "labelstudio"
    if isinstance(data, dict) and "source-ref" in data:
        return "groundtruth"  # a one-line manifest
    return None


def _manifest(path: Path) -> bool:
    """A Ground Truth manifest: its first line a JSON object with source-ref."""
    from odorch.converters.groundtruth import is_manifest_line

    try:
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        return is_manifest_line(json.loads(first))
    except (OSError, ValueError, RecursionError):
        return False


def detect_file(path: Path) -> Detected:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return Detected("yolo", path, f"{path.name}")
    if suffix == ".xml":
        root = _xml_root(path)
        if root == "annotations":
            return Detected("cvat", path, "XML root <annotations>")
        if root == "annotation":
            raise DatasetError(f"{path}: one Pascal VOC XML; give the folder of VOC annotations instead")
    if suffix != ".json" and _manifest(path):
        return Detected("groundtruth", path, "JSON lines with source-ref")
    if suffix == ".json":
        kind = _json_kind(path)
        if kind == "coco":
            return Detected("coco", path, "'images', 'annotations', 'categories'")
        if kind == "labelstudio":
            return Detected("labelstudio", path, "a list of tasks with 'data' and 'annotations'")
        if kind == "labelme":
            return Detected("labelme", path, "'shapes' and 'imagePath'")
        if kind == "groundtruth":
            return Detected("groundtruth", path, "a JSON line with source-ref")
    raise DatasetError(
        f"{path}: not a format odorch reads (COCO/Label Studio/LabelMe .json, CVAT .xml, YOLO data.yaml, "
        "Ground Truth .manifest); give the dataset's folder or its annotation file"
    )


def detect(path: Path) -> Detected:
    """The format of a dataset file or folder; DatasetError saying what was looked for when none fits."""
    from odorch.converters.cvat import find_xml
    from odorch.converters.yolo import find_config

    path = Path(path)
    if path.is_file():
        return detect_file(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: not found; give a dataset folder or annotation file")
    if (path / "odorch.json").is_file() and (path / "annotations").is_dir():
        return Detected("odorch", path, "odorch.json + annotations/")
    config = find_config(path)
    if config is not None and config.suffix in (".yaml", ".yml"):
        return Detected("yolo", path, config.name)
    voc = any(_xml_root(p) == "annotation" for p in _voc_candidates(path))
    if config is not None and not voc:  # a VOC export may carry a classes.txt too
        return Detected("yolo", path, config.name)
    files = sorted(p for p in path.iterdir() if p.is_file())
    for p in files:
        if p.suffix.lower() in (".manifest", ".jsonl") and _manifest(p):
            return Detected("groundtruth", p, f"{p.name}: JSON lines with source-ref")
    try:
        cvat = find_xml(path)
        if _xml_root(cvat) == "annotations":
            return Detected("cvat", cvat, f"{cvat.name}: XML root <annotations>")
    except DatasetError:
        pass
    jsons = [p for p in files if p.suffix.lower() == ".json"]
    kinds = {p: _json_kind(p) for p in jsons[:50]}
    if any(k == "labelme" for k in kinds.values()):
        return Detected("labelme", path, f"{sum(k == 'labelme' for k in kinds.values())} LabelMe .json files")
    cocos = _detection_files([p for p, k in kinds.items() if k == "coco"])
    if len(cocos) == 1:
        return Detected("coco", cocos[0], f"{cocos[0].name}")
    if cocos:
        return Detected("coco", path, f"COCO files {', '.join(p.name for p in cocos)}")
    studio = [p for p, k in kinds.items() if k == "labelstudio"]
    if len(studio) == 1:
        return Detected("labelstudio", studio[0], f"{studio[0].name}: a list of Label Studio tasks")
    if voc:
        return Detected("voc", path, "<annotation> XMLs")
    deep = {p: _json_kind(p) for p in sorted(path.rglob("*.json"))[:200] if p.parent != path}
    if any(k == "labelme" for k in deep.values()):
        return Detected("labelme", path, "LabelMe .json files in subfolders")
    cocos = _detection_files([p for p, k in deep.items() if k == "coco"])
    if cocos:
        return Detected("coco", path, f"COCO files {', '.join(p.relative_to(path).as_posix() for p in cocos)}")
    raise DatasetError(
        f"{path}: no known dataset here (looked for data.yaml/classes.txt, a .manifest, CVAT annotations.xml, "
        "LabelMe/COCO/Label Studio .json, Pascal VOC .xml); give the annotation file itself"
    )


def _detection_files(cocos: list[Path]) -> list[Path]:
    """COCO's own folder also holds person_keypoints_*.json (the person boxes again): when
    instances_*.json files are there, they are the detection annotations."""
    instances = [p for p in cocos if p.name.startswith("instances_")]
    return instances or cocos


def _voc_candidates(path: Path) -> list[Path]:
    """A few .xml files at any depth (Pascal VOC keeps them in any folder)."""
    return list(itertools.islice((p for p in path.rglob("*.xml") if p.is_file()), 20))


def read_detected(
    found: Detected,
    *,
    images_dirs: list[Path] | None = None,
    classes: list[str] | None = None,
    label_attribute: str | None = None,
) -> Dataset:
    """Read what `detect` found with that format's reader."""
    images_dir = images_dirs[0] if images_dirs else None
    if found.format in ("cvat", "labelstudio", "labelme", "groundtruth") and images_dirs and len(images_dirs) > 1:
        raise DatasetError(f"--images given {len(images_dirs)} times; {TITLES[found.format]} takes one images folder")
    if found.format == "odorch":
        from odorch.converters.coco import read_coco

        files = sorted((found.path / "annotations").glob("*.json"))
        return read_coco(files, images_dirs=[found.path / "images"], classes=classes)
    if found.format == "coco":
        from odorch.converters.coco import read_coco

        files = [found.path]
        if found.path.is_dir():
            files = _detection_files([p for p in sorted(found.path.rglob("*.json")) if _json_kind(p) == "coco"])
        return read_coco(files, images_dirs=images_dirs or None, classes=classes)
    if found.format == "voc":
        from odorch.converters.voc import read_voc

        return read_voc(found.path, classes=classes, imagesets=None, images_dirs=images_dirs or None)
    if found.format == "yolo":
        from odorch.converters.yolo import read_yolo

        return read_yolo(found.path, classes=classes)
    if found.format == "cvat":
        from odorch.converters.cvat import read_cvat

        return read_cvat(found.path, images_dir=images_dir, classes=classes)
    if found.format == "labelstudio":
        from odorch.converters.labelstudio import read_labelstudio

        return read_labelstudio(found.path, images_dir=images_dir, classes=classes)
    if found.format == "labelme":
        from odorch.converters.labelme import read_labelme

        return read_labelme(found.path, images_dir=images_dir, classes=classes)
    from odorch.converters.groundtruth import read_groundtruth

    return read_groundtruth(found.path, images_dir=images_dir, label_attribute=label_attribute, classes=classes)

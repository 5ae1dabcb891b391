"""Pascal VOC reader: finds XMLs and images in the usual layouts and validates every box.

Coordinates are taken as pixel edges, as Datumaro and Roboflow do: COCO
``[x, y, w, h] = [xmin, ymin, xmax - xmin, ymax - ymin]``.
"""

from __future__ import annotations

import gc
import math
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from odorch.converters.dataset import (
    Box,
    Dataset,
    DatasetError,
    ImageRecord,
    Problems,
    accept_label,
    check_image_mode,
    final_classes,
    fix_box,
)
from odorch.converters.images import IMAGE_EXTENSIONS, ImageProblem, probe_image

ANNOTATION_DIRS = ("annotations", "annotation", "xml", "xmls", "labels")
IMAGE_DIRS = ("jpegimages", "images", "image", "imgs", "img")
IMAGESET_NAMES = ("train", "val", "test")


def _child_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    """The first child directory whose lower-cased name is in `names` (VOC dirs come in any case)."""
    children = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir()}
    for name in names:
        if name in children:
            return children[name]
    return None


class ImageIndex:
    """Image files of a few folders, looked up by file name or by stem."""

    def __init__(self, folders: list[Path]):
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        for folder in folders:
            with os.scandir(folder) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    stem, ext = os.path.splitext(entry.name)
                    if ext.lower() in IMAGE_EXTENSIONS and entry.is_file():
                        path = Path(entry.path)
                        self.by_name.setdefault(entry.name, path)
                        self.by_stem.setdefault(stem, path)

    def find(self, filename: str | None, xml_stem: str) -> Path | None:
        """Resolve by <filename>, then <filename> without its extension, then the XML's stem."""
        if filename:
            name = Path(filename.replace("\\", "/")).name
            if name in self.by_name:
                return self.by_name[name]
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                stem = name  # "<filename>0001</filename>": no extension at all
            if stem in self.by_stem:
                return self.by_stem[stem]
        return self.by_stem.get(xml_stem)


def find_layout(root: Path) -> tuple[Path, list[Path]]:
    """(folder of XMLs, folders to search for images) for a VOC root or a flat folder."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; give the VOC root (the folder holding Annotations/)")
    xml_dir = _child_dir(root, ANNOTATION_DIRS) or root
    image_dirs = [d for d in (_child_dir(root, IMAGE_DIRS), xml_dir, root) if d is not None]
    return xml_dir, list(dict.fromkeys(image_dirs))


def read_imagesets(root: Path) -> dict[str, str]:
    """image id -> split from ImageSets/Main/{train,val,test}.txt (trainval.txt stands in for train)."""
    main = root / "ImageSets" / "Main"
    if not main.is_dir():
        raise DatasetError(f"{main}: not found; --imagesets needs ImageSets/Main/{{train,val,test}}.txt (or use --split)")
    files = {name: main / f"{name}.txt" for name in IMAGESET_NAMES}
    if not files["train"].exists() and (main / "trainval.txt").exists():
        files["train"] = main / "trainval.txt"
    split_of: dict[str, str] = {}
    for split, path in files.items():
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            image_id = line.split()[0] if line.split() else ""
            if not image_id:
                continue
            if split_of.get(image_id, split) != split:
                raise DatasetError(
                    f"{path}: {image_id} is also in {split_of[image_id]}.txt; an image must be in one split only"
                )
            split_of[image_id] = split
    if not split_of:
        raise DatasetError(f"{main}: no ids in train/val/test/trainval .txt files")
    return split_of


def _texts(element: ET.Element | None) -> dict[str, str]:
    """Child tag -> text (direct children only: much faster than findtext paths on 10k files)."""
    return {} if element is None else {child.tag: (child.text or "").strip() for child in element}


_CORNERS = {"xmin": 0, "ymin": 1, "xmax": 2, "ymax": 3}
_FLAGS = ("difficult", "truncated", "occluded")


def _object_fields(obj: ET.Element) -> tuple[str, list[float], dict[str, int]]:
    """(name, [xmin, ymin, xmax, ymax] with NaN for a missing or bad value, flags) in one pass."""
    label, corners, attributes = "", [math.nan] * 4, {}
    for child in obj:
        tag = child.tag
        if tag == "name":
            label = (child.text or "").strip()
        elif tag == "bndbox":
            for coord in child:
                i = _CORNERS.get(coord.tag)
                if i is not None:
                    corners[i] = _number(coord.text)
        elif tag in _FLAGS and (value := _flag(child.text)) is not None:
            attributes[tag] = value
    return label, corners, attributes


def _number(text: str | None) -> float:
    try:
        return float(text) if text else math.nan
    except ValueError:
        return math.nan


def _flag(text: str | None) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


def _read_xml(
    xml_path: Path,
    index: ImageIndex,
    problems: Problems,
    classes: list[str] | None,
    split: str | None,
) -> ImageRecord | None:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        line, col = e.position
        problems.error(f"{xml_path}:{line}:{col}: malformed XML ({e}); fix or delete this file")
        return None
    objects = root.findall("object")
    filename = root.findtext("filename")
    image_path = index.find(filename, xml_path.stem)
    where = xml_path.name
    if image_path is None:
        problems.add("image_missing", f"{where} (<filename>{filename}</filename>)")
        problems.drop_boxes(len(objects))
        return None
    try:
        info = probe_image(image_path)
    except ImageProblem as e:
        problems.add(e.reason, str(e))
        problems.drop_boxes(len(objects))
        return None
    size = _texts(root.find("size"))
    declared = (size.get("width"), size.get("height"))
    if declared[0] and declared[1] and declared != (str(info.width), str(info.height)):
        try:
            mismatch = (float(declared[0]), float(declared[1])) != (info.width, info.height)
        except ValueError:
            mismatch = True
        if mismatch:
            problems.add(
                "image_size_mismatch", f"{where}: XML {declared[0]}x{declared[1]}, image {info.width}x{info.height}"
            )
    boxes = []
    for n, obj in enumerate(objects):
        label, corners, attributes = _object_fields(obj)
        obj_where = f"{where} object {n + 1}"
        if not accept_label(label, classes, problems, obj_where):
            continue
        fixed = fix_box(*corners, width=info.width, height=info.height, problems=problems, where=obj_where)
        if fixed is None:
            continue
        boxes.append(
            Box(
                *fixed,
                label=label,
                ignore=bool(attributes.get("difficult")),
                attributes=attributes,
                repaired=tuple(fixed) != tuple(corners),
            )
        )
    image = ImageRecord(
        source=image_path,
        file_name=image_path.name,
        width=info.width,
        height=info.height,
        mode=info.mode,
        boxes=boxes,
        origin=where,
        split=split,
    )
    check_image_mode(image, problems)
    return image


PARALLEL_MIN = 2000  # XMLs; below this a process pool costs more than it saves
CHUNK = 500


def _read_chunk(
    jobs: list[tuple[Path, str | None]], *, index: ImageIndex, classes: list[str] | None
) -> tuple[list[ImageRecord | None], Problems]:
    """Read (XML, split) pairs with their own Problems, so chunks can run in worker processes.

    The cyclic GC is paused: the many small objects kept would trigger ~15% of wasted collections.
    """
    problems = Problems()
    enabled = gc.isenabled()
    gc.disable()
    try:
        return [_read_xml(path, index, problems, classes, split) for path, split in jobs], problems
    finally:
        if enabled:
            gc.enable()


def read_voc(root: Path, *, classes: list[str] | None = None, imagesets: bool = False) -> Dataset:
    """Read a Pascal VOC dataset; raises DatasetError when nothing usable is found."""
    root = Path(root)
    xml_dir, image_dirs = find_layout(root)
    xml_files = sorted(p for p in xml_dir.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    if not xml_files:
        raise DatasetError(f"{xml_dir}: no .xml annotation files; give the VOC root (the folder holding Annotations/)")
    split_of = read_imagesets(root) if imagesets else None
    problems = Problems()
    jobs: list[tuple[Path, str | None]] = []
    for xml_path in xml_files:
        split = None
        if split_of is not None:
            split = split_of.get(xml_path.stem)
            if split is None:
                problems.add("image_not_in_split", xml_path.name)
                problems.drop_boxes(_count_objects(xml_path))
                continue
        jobs.append((xml_path, split))
    read = partial(_read_chunk, index=ImageIndex(image_dirs), classes=classes)
    workers = min(os.cpu_count() or 1, 8)
    if len(jobs) < PARALLEL_MIN or workers < 2:
        results = [read(jobs)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(read, [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]))
    images: list[ImageRecord] = []
    seen: dict[Path, str] = {}
    for chunk_images, chunk_problems in results:
        problems.merge(chunk_problems)
        images += [image for image in chunk_images if image is not None]
    unique = []
    for image in images:
        if image.source in seen:
            problems.error(
                f"{image.origin}: image {image.source.name} is already annotated by {seen[image.source]}; "
                "keep one annotation file per image"
            )
            continue
        seen[image.source] = image.origin
        unique.append(image)
    images = unique
    if split_of is not None:
        known = {p.stem for p in xml_files}
        for image_id in sorted(set(split_of) - known):
            problems.add("imageset_unknown_id", image_id)
    problems.raise_if_unusable()
    if not images:
        raise DatasetError(f"{root}: no usable image; the dataset is empty", problems=problems)
    return Dataset(
        images=images,
        classes=final_classes(images, classes, problems),
        problems=problems,
        source=str(root),
    )


def _count_objects(xml_path: Path) -> int:
    try:
        return len(ET.parse(xml_path).getroot().findall("object"))
    except ET.ParseError:
        return 0

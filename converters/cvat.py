"""CVAT for images XML (format 1.1): ``<image name width height [subset]>`` elements holding
``<box label xtl ytl xbr ybr [rotation]>`` in pixel-edge coordinates, as CVAT exports them
(``annotations.xml`` beside an ``images/`` folder). Other shapes are counted and skipped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from odorch.converters.coco import SPLIT_WORDS
from odorch.converters.dataset import Box, Dataset, DatasetError, ImageRecord, Problems
from odorch.converters.reading import (
    finish_dataset,
    image_record,
    make_box,
    number,
    probe_frame,
    resolve_image,
)

SHAPES = ("box", "polygon", "polyline", "points", "ellipse", "mask", "cuboid", "skeleton")


def find_xml(src: Path) -> Path:
    """SRC itself, or the annotations.xml (or only .xml) in the folder SRC."""
    if src.is_file():
        return src
    if (src / "annotations.xml").is_file():
        return src / "annotations.xml"
    xmls = sorted(src.glob("*.xml"))
    if len(xmls) == 1:
        return xmls[0]
    raise DatasetError(f"{src}: no annotations.xml; give the CVAT for images XML file")


def parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        line, col = e.position
        raise DatasetError(f"{path}:{line}:{col}: malformed XML ({e}); fix or re-export the file") from e
    except LookupError as e:
        raise DatasetError(f"{path}: {e} in its <?xml ?> declaration; re-export it as UTF-8") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from e


def _meta_labels(root: ET.Element) -> list[str]:
    """Label names in the order the task or project declares them."""
    names = [(label.findtext("name") or "").strip() for label in root.iterfind("meta/*/labels/label")]
    return list(dict.fromkeys(n for n in names if n))


def read_cvat(src: Path, *, images_dir: Path | None = None, classes: list[str] | None = None) -> Dataset:
    """Read a CVAT for images XML; images are looked up in --images, images/ beside it, or its folder."""
    path = find_xml(Path(src))
    root = parse_xml(path)
    if root.tag != "annotations" or (root.find("image") is None and root.find("track") is not None):
        raise DatasetError(
            f"{path}: not a CVAT for images XML (needs <annotations> holding <image> elements); "
            "export the task as 'CVAT for images 1.1'"
        )
    folders = [images_dir] if images_dir else [path.parent / "images", path.parent]
    problems = Problems()
    images: list[ImageRecord] = []
    for n, element in enumerate(root.iterfind("image")):
        name = element.get("name") or ""
        where = f"{path.name} image {element.get('id', n)} ({name!r})"
        shapes = [child for child in element if child.tag in SHAPES]
        source = resolve_image(folders, [name, Path(name.replace("\\", "/")).name], problems=problems, where=where, n_boxes=len(shapes))
        if source is None:
            continue
        frame = probe_frame(
            source, declared=(element.get("width"), element.get("height")), problems=problems, where=where, n_boxes=len(shapes)
        )
        if frame is None:
            continue
        boxes: list[Box] = []
        for k, shape in enumerate(shapes):
            shape_where = f"{where} {shape.tag} {k + 1}"
            if shape.tag != "box" or number(shape.get("rotation", 0)) != 0:
                problems.add("box_not_rectangle", f"{shape_where}: {shape.tag}{' (rotated)' if shape.tag == 'box' else ''}")
                problems.count_box("dropped")
                continue
            corners = [number(shape.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
            attributes = {a.get("name"): (a.text or "").strip() for a in shape.iterfind("attribute") if a.get("name")}
            if shape.get("occluded") in ("1", "0"):
                attributes["occluded"] = int(shape.get("occluded"))
            box = make_box(corners, shape.get("label"), frame, classes=classes, problems=problems, where=shape_where, attributes=attributes)
            if box is not None:
                boxes.append(box)
        subset = SPLIT_WORDS.get((element.get("subset") or "").strip().lower())
        images.append(image_record(frame, boxes, file_name=source.name, origin=where, split=subset, problems=problems))
    return finish_dataset(images, classes=classes, problems=problems, source=str(path), order=_meta_labels(root) or None)

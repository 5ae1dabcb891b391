"""SageMaker Ground Truth bounding-box output manifests (JSON lines).

Each line: ``source-ref`` (an ``s3://`` URI or a path), the job's label attribute
``{"annotations": [{"class_id", "left", "top", "width", "height"}], "image_size": [{"width",
"height", "depth"}]}`` in pixels, and ``<attribute>-metadata`` whose ``class-map`` names the
class ids. An ``s3://`` image is looked up in the local --images folder by its key, then by
shorter and shorter tails of it, then by its file name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from odorch.converters.dataset import Box, Dataset, DatasetError, ImageRecord, Problems
from odorch.converters.reading import (
    finish_dataset,
    image_record,
    make_box,
    number,
    probe_frame,
    resolve_image,
)

BOX_TYPE = "groundtruth/object-detection"


def _lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object) of every non-empty line; a malformed line is an error."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    out.append((n, json.loads(line)))
                except (json.JSONDecodeError, RecursionError) as e:
                    raise DatasetError(f"{path}:{n}: not a JSON object ({e}); a manifest has one JSON object per line") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text; a manifest is UTF-8 JSON lines") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from e
    return out


def label_attributes(entry: Any) -> list[str]:
    """Keys of a manifest line that hold a bounding-box job's answer (have '-metadata' of the box type,
    or an 'annotations' list)."""
    if not isinstance(entry, dict):
        return []
    found = []
    for key, value in entry.items():
        if key == "source-ref" or key.endswith("-metadata"):
            continue
        meta = entry.get(f"{key}-metadata")
        if (isinstance(meta, dict) and meta.get("type") == BOX_TYPE) or (isinstance(value, dict) and "annotations" in value):
            found.append(key)
    return found


def is_manifest_line(entry: Any) -> bool:
    return isinstance(entry, dict) and "source-ref" in entry


def image_names(source_ref: str) -> list[str]:
    """Relative paths to try: the S3 key, its shorter tails, then the file name."""
    parsed = urlparse(source_ref)
    key = unquote(parsed.path).lstrip("/") if parsed.scheme == "s3" else source_ref.replace("\\", "/")
    parts = key.split("/")
    return list(dict.fromkeys("/".join(parts[i:]) for i in range(len(parts)) if parts[i:] and "/".join(parts[i:])))


def _class_map(entries: list[tuple[int, Any]], attribute: str, path: Path) -> dict[str, str]:
    """class id (as text) -> name, merged over every line; one id with two names is an error."""
    names: dict[str, str] = {}
    for n, entry in entries:
        meta = entry.get(f"{attribute}-metadata") if isinstance(entry, dict) else None
        class_map = meta.get("class-map") if isinstance(meta, dict) else None
        if not isinstance(class_map, dict):
            continue
        for key, name in class_map.items():
            name = str(name).strip()
            if str(key) in names and names[str(key)] != name:
                raise DatasetError(f"{path}:{n}: class id {key} is both {names[str(key)]!r} and {name!r} in class-map")
            names[str(key)] = name
    return names


def _box(ann: Any, names: dict[str, str], frame: Any, problems: Problems, classes: list[str] | None, where: str) -> Box | None:
    if not isinstance(ann, dict):
        problems.add("box_bad_coords", f"{where}: not an object")
        problems.count_box("dropped")
        return None
    class_id = ann.get("class_id")
    name = names.get(str(class_id)) if not isinstance(class_id, (dict, list)) else None
    if name is None:
        problems.add("box_bad_class_id", f"{where}: class_id {class_id!r} not in class-map")
        problems.count_box("dropped")
        return None
    x, y, w, h = (number(ann.get(k)) for k in ("left", "top", "width", "height"))
    return make_box([x, y, x + w, y + h], name, frame, classes=classes, problems=problems, where=where)


def read_groundtruth(
    src: Path, *, images_dir: Path | None = None, label_attribute: str | None = None, classes: list[str] | None = None
) -> Dataset:
    """Read a Ground Truth bounding-box output manifest; images from --images (needed for s3://
    sources), else beside the manifest."""
    src = Path(src)
    entries = _lines(src)
    if not entries or not is_manifest_line(entries[0][1]):
        raise DatasetError(f"{src}: not a Ground Truth manifest (JSON lines with 'source-ref'); give the output.manifest")
    attributes = list(dict.fromkeys(a for _, e in entries for a in label_attributes(e)))
    if label_attribute is None:
        if len(attributes) != 1:
            found = ", ".join(attributes) or "none"
            raise DatasetError(
                f"{src}: bounding-box label attributes found: {found}; give the one to read with --label-attribute"
            )
        label_attribute = attributes[0]
    names = _class_map(entries, label_attribute, src)
    folders = [images_dir] if images_dir else [src.parent, src.parent / "images"]
    problems = Problems()
    images: list[ImageRecord] = []
    for n, entry in entries:
        where = f"{src.name} line {n}"
        if not is_manifest_line(entry):
            problems.add("file_not_annotation", f"{where}: no 'source-ref'")
            continue
        answer = entry.get(label_attribute)
        anns = answer.get("annotations") if isinstance(answer, dict) else None
        if not isinstance(anns, list):
            meta = entry.get(f"{label_attribute}-metadata")
            reason = meta.get("failure-reason") if isinstance(meta, dict) else None
            problems.add("image_unlabelled", f"{where}{f': {reason}' if reason else ''}")
            continue
        ref = entry["source-ref"]
        if not isinstance(ref, str) or not ref.strip():
            problems.add("image_path_outside", f"{where}: source-ref {ref!r} is not a path")
            problems.drop_boxes(len(anns))
            continue
        source = resolve_image(folders, image_names(ref), problems=problems, where=f"{where} ({ref})", n_boxes=len(anns))
        if source is None:
            continue
        sizes = answer.get("image_size")
        size = sizes[0] if isinstance(sizes, list) and sizes and isinstance(sizes[0], dict) else {}
        frame = probe_frame(source, declared=(size.get("width"), size.get("height")), problems=problems, where=where, n_boxes=len(anns))
        if frame is None:
            continue
        boxes = [b for k, a in enumerate(anns) if (b := _box(a, names, frame, problems, classes, f"{where} box {k + 1}"))]
        images.append(image_record(frame, boxes, file_name=source.name, origin=where, split=None, problems=problems))
    order = [names[k] for k in sorted(names, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))]
    return finish_dataset(images, classes=classes, problems=problems, source=str(src), order=list(dict.fromkeys(order)))

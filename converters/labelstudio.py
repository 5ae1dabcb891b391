"""Label Studio JSON export (and JSON-MIN): a list of tasks whose ``data`` names the image and
whose first annotation's ``rectanglelabels`` results are boxes in percent of the image
(``x, y, width, height``, with ``original_width``/``original_height``).

Image references are URLs: ``/data/upload/<project>/<8 hex>-name.jpg``, ``/data/local-files/?d=
dir/name.jpg``, ``s3://bucket/key``, ``http(s)://…`` or a plain path; each is looked up in the
images folder by its path, then by its file name (upload prefix removed too).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from odorch.converters.dataset import Box, Dataset, DatasetError, ImageRecord, Problems
from odorch.converters.reading import (
    finish_dataset,
    image_record,
    load_json_file,
    make_box,
    number,
    probe_frame,
    resolve_image,
    scale,
)

_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


def is_labelstudio(data: Any) -> bool:
    """A list of tasks: dicts with 'data' and 'annotations' (JSON), or an image URL and regions (JSON-MIN)."""
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        return False
    first = data[0]
    return ("data" in first and "annotations" in first) or (
        any(isinstance(v, str) for v in first.values()) and bool(_min_regions(first))
    )


def _min_regions(task: dict[str, Any]) -> list[Any]:
    """JSON-MIN's regions: every list of objects with x/y/width/height (or a polygon's points), keyed
    by its control's name."""
    regions: list[Any] = []
    for value in task.values():
        is_regions = isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        if is_regions and any("x" in v or "points" in v for v in value):
            regions += value
    return regions


def image_names(url: str) -> list[str]:
    """Relative paths to try for a task's image URL, most specific first."""
    parsed = urlparse(url)
    if parsed.path.startswith("/data/local-files/") and "d" in parse_qs(parsed.query):
        path = parse_qs(parsed.query)["d"][0]
    elif parsed.scheme in ("s3", "gs", "azure-blob", "http", "https"):
        path = unquote(parsed.path).lstrip("/")
    else:
        path = unquote(parsed.path)
    path = path.replace("\\", "/")
    name = posixpath.basename(path)
    names = [path] if not path.startswith("/data/upload/") else []
    names += [name, _UPLOAD_PREFIX.sub("", name)]
    return list(dict.fromkeys(n for n in names if n))


def _task_image(task: dict[str, Any], results: list[Any]) -> Any:
    """The image URL: data[to_name] of the first result, else data['image'], else the first string."""
    data = task.get("data", task)
    if not isinstance(data, dict):
        return None
    for result in results:
        if isinstance(result, dict) and isinstance(data.get(result.get("to_name")), str):
            return data[result["to_name"]]
    if isinstance(data.get("image"), str):
        return data["image"]
    return next((v for v in data.values() if isinstance(v, str) and "/" in v), None)


def _results(task: dict[str, Any], problems: Problems, where: str) -> list[Any] | None:
    """The first usable annotation's results (JSON) or the regions (JSON-MIN, which lists annotated
    tasks only); None when the task has no answer (unlabelled, or every annotation cancelled)."""
    if "annotations" not in task:
        kinds = [("points", "polygon"), ("rectanglelabels", "rectanglelabels")]
        return [
            {"type": next((kind for key, kind in kinds if key in v), "rectangle"), "value": v, **_sizes(v)}
            for v in _min_regions(task)
        ]
    annotations = [a for a in task["annotations"] if isinstance(a, dict)] if isinstance(task["annotations"], list) else []
    usable = [a for a in annotations if not a.get("was_cancelled") and isinstance(a.get("result"), list)]
    if not usable:
        return None
    for extra in usable[1:]:
        n = len(extra["result"])
        if n:
            problems.add("box_second_annotation", f"{where} annotation {extra.get('id', '?')}", n)
            problems.drop_boxes(n)
    return usable[0]["result"]


def _sizes(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {k: value[k] for k in ("original_width", "original_height") if k in value}


def _box(result: Any, frame: Any, problems: Problems, classes: list[str] | None, where: str) -> Box | None:
    value = result.get("value") if isinstance(result, dict) else None
    if not isinstance(value, dict) or result.get("type") not in ("rectanglelabels", "rectangle", "labels", None):
        problems.add("box_not_rectangle", f"{where}: {result.get('type') if isinstance(result, dict) else 'not an object'}")
        problems.count_box("dropped")
        return None
    if number(value.get("rotation", 0)) != 0:
        problems.add("box_not_rectangle", f"{where}: rotated {value.get('rotation')}°")
        problems.count_box("dropped")
        return None
    labels = value.get("rectanglelabels") or value.get("labels") or []
    label = labels[0] if isinstance(labels, list) and labels else None
    # percent of the frame the annotator saw: stored pixels when the box must be turned
    w, h = (frame.info.width, frame.info.height) if frame.turn != 1 else (frame.width, frame.height)
    x, y, bw, bh = (number(value.get(k)) for k in ("x", "y", "width", "height"))
    corners = scale([x / 100, y / 100, (x + bw) / 100, (y + bh) / 100], w, h)
    return make_box(corners, label, frame, classes=classes, problems=problems, where=where)


def read_labelstudio(src: Path, *, images_dir: Path | None = None, classes: list[str] | None = None) -> Dataset:
    """Read a Label Studio JSON (or JSON-MIN) export; images from --images, else beside the file
    (its folder, or images/ in it)."""
    src = Path(src)
    tasks = load_json_file(src, what="Label Studio export")
    if not isinstance(tasks, list) or not tasks or not any(isinstance(t, dict) for t in tasks):
        raise DatasetError(
            f"{src}: not a Label Studio export (needs a list of tasks with 'data' and 'annotations'); "
            "export the project as JSON or JSON-MIN"
        )
    folders = [images_dir] if images_dir else [src.parent, src.parent / "images"]
    problems = Problems()
    images: list[ImageRecord] = []
    for n, task in enumerate(tasks):
        where = f"{src.name} task {task.get('id', n + 1) if isinstance(task, dict) else n + 1}"
        if not isinstance(task, dict):
            problems.add("file_not_annotation", f"{where}: not a task object")
            continue
        results = _results(task, problems, where)
        if results is None:
            problems.add("image_unlabelled", where)
            continue
        url = _task_image(task, results)
        if not isinstance(url, str):
            problems.add("image_missing", f"{where}: no image URL in 'data'")
            problems.drop_boxes(len(results))
            continue
        source = resolve_image(folders, image_names(url), problems=problems, where=f"{where} ({url})", n_boxes=len(results))
        if source is None:
            continue
        first = next((r for r in results if isinstance(r, dict) and "original_width" in r), {})
        declared = (first.get("original_width"), first.get("original_height"))
        frame = probe_frame(source, declared=declared, problems=problems, where=where, n_boxes=len(results))
        if frame is None:
            continue
        boxes = [b for k, r in enumerate(results) if (b := _box(r, frame, problems, classes, f"{where} result {k + 1}"))]
        images.append(image_record(frame, boxes, file_name=source.name, origin=where, split=None, problems=problems))
    return finish_dataset(images, classes=classes, problems=problems, source=str(src))

"""LabelMe JSON (wkentaro/labelme): one JSON per image with ``imagePath`` (relative to the
JSON), ``imageWidth``/``imageHeight`` and ``shapes``; a ``rectangle`` shape is two corner
points. Other shape types (polygon, circle, line, point, mask) are counted and skipped.
An image that is not on disk but embedded as base64 ``imageData`` is decoded."""

from __future__ import annotations

import atexit
import functools
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from odorch.converters.dataset import Box, Dataset, DatasetError, ImageRecord, Problems
from odorch.converters.fsutil import atomic_write_bytes
from odorch.converters.images import MAX_PIXELS
from odorch.converters.reading import (
    finish_dataset,
    image_record,
    load_json_file,
    make_box,
    number,
    probe_frame,
    resolve_image,
    split_of_path,
)


def is_labelme(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and ("imagePath" in data or "imageData" in data)


def json_files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found += [Path(dirpath, f) for f in sorted(filenames) if f.lower().endswith(".json")]
    return found


def _corners(points: Any) -> list[float]:
    """[x0, y0, x1, y1] from a rectangle's two points (any order); NaN when malformed."""
    try:
        (ax, ay), (bx, by) = points
    except (TypeError, ValueError):
        return [float("nan")] * 4
    ax, ay, bx, by = (number(v) for v in (ax, ay, bx, by))
    return [min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)]


def _image_names(json_rel: str, image_path: Any) -> list[str]:
    """Candidate paths (relative to the dataset folder) for an imagePath relative to its JSON."""
    if not isinstance(image_path, str) or not image_path.strip():
        return []
    rel = image_path.replace("\\", "/")
    names = [posixpath.normpath(posixpath.join(posixpath.dirname(json_rel), rel))] if not rel.startswith("/") else [rel]
    return names + [posixpath.join(posixpath.dirname(json_rel), posixpath.basename(rel))]


def _read_one(
    path: Path,
    data: dict[str, Any],
    root: Path,
    images_dir: Path | None,
    problems: Problems,
    classes: list[str] | None,
    decoded_dir: Callable[[], Path],
) -> ImageRecord | None:
    rel = path.relative_to(root).as_posix()
    shapes = data["shapes"]
    names = _image_names(rel, data.get("imagePath"))
    folders = [root] if images_dir is None else [root, images_dir]
    if images_dir is not None and names:
        names.append(posixpath.basename(names[-1]))
    embedded = data.get("imageData")
    if isinstance(embedded, str) and embedded and not resolve_image(folders, names, problems=None, where=rel, n_boxes=0):
        source = _decode_embedded(embedded, rel, folder=decoded_dir(), problems=problems, n_boxes=len(shapes))
    else:
        source = resolve_image(folders, names or [str(data.get("imagePath"))], problems=problems, where=rel, n_boxes=len(shapes))
    if source is None:
        return None
    declared = (data.get("imageWidth"), data.get("imageHeight"))
    frame = probe_frame(source, declared=declared, problems=problems, where=rel, n_boxes=len(shapes))
    if frame is None:
        return None
    boxes: list[Box] = []
    for n, shape in enumerate(shapes):
        where = f"{rel} shape {n + 1}"
        kind = shape.get("shape_type", "polygon") if isinstance(shape, dict) else None
        if kind != "rectangle":
            problems.add("box_not_rectangle", f"{where}: {kind or 'not an object'}")
            problems.count_box("dropped")
            continue
        box = make_box(_corners(shape.get("points")), shape.get("label"), frame, classes=classes, problems=problems, where=where)
        if box is not None:
            boxes.append(box)
    return image_record(frame, boxes, file_name=source.name, origin=rel, split=split_of_path(rel), problems=problems)


_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif", "WEBP": ".webp"}


def _decode_embedded(text: str, rel: str, *, folder: Path, problems: Problems, n_boxes: int) -> Path | None:
    """Write a LabelMe file's base64 imageData as folder/<the JSON's path with the image's suffix>
    (atomically; nothing in the JSON decides the name) once its header passed the pixel cap.
    None, counted with its boxes, when it is not an image odorch reads."""
    import base64
    import binascii
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(text)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # reported below
            with Image.open(io.BytesIO(raw)) as im:
                fmt, (width, height) = im.format, im.size
    except Image.DecompressionBombError as e:
        return _drop(problems, "image_too_large", f"{rel}: imageData {e}", n_boxes)
    except (binascii.Error, UnidentifiedImageError):
        return _drop(problems, "image_unreadable", f"{rel}: imageData is not an image", n_boxes)
    except (ValueError, OSError, SyntaxError) as e:  # a header PIL recognises but cannot read
        return _drop(problems, "image_unreadable", f"{rel}: imageData is not a readable image ({e})", n_boxes)
    if width * height > MAX_PIXELS:
        return _drop(problems, "image_too_large", f"{rel}: imageData is {width}x{height}, over {MAX_PIXELS:,} pixels; downscale it", n_boxes)
    if fmt not in _SUFFIXES:
        return _drop(problems, "image_unreadable", f"{rel}: imageData is a {fmt} image; odorch reads {', '.join(_SUFFIXES)}", n_boxes)
    path = folder / PurePosixPath(rel).with_suffix(_SUFFIXES[fmt])
    atomic_write_bytes(path, raw)
    problems.add("image_embedded", f"{rel} -> {path.name}")
    return path


def _drop(problems: Problems, reason: str, where: str, n_boxes: int) -> None:
    problems.add(reason, where)
    problems.drop_boxes(n_boxes)
    return None


def _new_embedded_dir() -> Path:
    """Where one read's decoded imageData lies until the writer links or copies it into
    OUT/images: a temporary folder, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="odorch-labelme-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def read_labelme(src: Path, *, images_dir: Path | None = None, classes: list[str] | None = None) -> Dataset:
    """Read every LabelMe JSON under SRC (a folder, at any depth); JSONs of other kinds are
    counted as skipped. Splits come from train/val/test folder names."""
    src = Path(src)
    root = src if src.is_dir() else src.parent
    files = [src] if src.is_file() else json_files(src)
    problems = Problems()
    images: list[ImageRecord] = []
    decoded_dir = functools.cache(_new_embedded_dir)  # one folder for this read, made on first use
    for path in files:
        data = load_json_file(path, what="LabelMe JSON")
        if not is_labelme(data):
            problems.add("file_not_annotation", f"{path.relative_to(root).as_posix()} (no 'shapes' and 'imagePath')")
            continue
        image = _read_one(path, data, root, images_dir, problems, classes, decoded_dir)
        if image is not None:
            images.append(image)
    if not files or not images and problems.counts.get("file_not_annotation") == len(files):
        raise DatasetError(f"{src}: no LabelMe JSON (a .json with 'shapes' and 'imagePath'); give the folder of LabelMe files")
    return finish_dataset(images, classes=classes, problems=problems, source=str(src))

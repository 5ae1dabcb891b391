"""YOLO txt datasets (Ultralytics, Roboflow, CVAT and darknet exports) in and out.

A label file holds one ``class cx cy w h`` line per box, normalized to the image as shown
(EXIF orientation applied, as Ultralytics reads it); a line of more than 5 numbers is a
polygon (Ultralytics segments), whose enclosing box is taken. An image's label file is found
as Ultralytics finds it (the last ``images`` folder of its path replaced by ``labels``) or
beside the image (darknet).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from odorch.converters.dataset import Box, Dataset, DatasetError, ImageRecord, Problems
from odorch.converters.fsutil import UnsafePath, atomic_write_bytes, inside
from odorch.converters.images import IMAGE_EXTENSIONS
from odorch.converters.reading import (
    Frame,
    finish_dataset,
    image_record,
    load_yaml_file,
    make_box,
    number,
    probe_frame,
    scale,
    split_of_path,
)

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
CLASS_FILES = ("classes.txt", "obj.names", "classes.names", "coco.names")
SPLIT_KEYS = {"train": "train", "val": "val", "test": "test"}


def find_config(root: Path) -> Path | None:
    """data.yaml (or another yaml with `names`), else classes.txt / obj.names, in `root`."""
    for name in YAML_NAMES + CLASS_FILES:
        if (root / name).is_file():
            return root / name
    return None


def _load_yaml(path: Path) -> dict[str, Any]:
    data = load_yaml_file(path)
    if not isinstance(data, dict) or ("names" not in data and not isinstance(data.get("nc"), int)):
        raise DatasetError(f"{path}: not a YOLO data.yaml (needs 'names': a list, or a map of index to name)")
    return data


def _yaml_names(path: Path, data: dict[str, Any]) -> list[str]:
    """Class names of data.yaml; with `nc` only, class_0..class_{nc-1} as Ultralytics names them."""
    nc = data.get("nc")
    if "names" not in data:
        if not 0 < nc <= 100_000:
            raise DatasetError(f"{path}: nc {nc} is not a class count; give 'names'")
        return [f"class_{i}" for i in range(nc)]
    names = _names(path, data["names"])
    if nc is not None and nc != len(names):
        raise DatasetError(f"{path}: nc is {nc!r} but 'names' has {len(names)} classes; make them agree")
    return names


def _names(path: Path, names: Any) -> list[str]:
    """`names` as a list indexed by class id: a list, or a map {0: name, ...} with ids 0..K-1."""
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{path}: 'names' keys must be class indexes 0, 1, ...") from e
        if ids != list(range(len(ids))):
            raise DatasetError(f"{path}: 'names' indexes must be 0..{len(ids) - 1} with none missing, got {ids[:10]}")
        names = [names[k] if k in names else names[str(k)] for k in ids]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: 'names' must be a non-empty list or map of class names")
    out = [str(n).strip() if n is not None else "" for n in names]
    if not all(out):
        raise DatasetError(f"{path}: class index {out.index('')} has an empty name; give every class a name")
    return out


def _split_dirs(config: Path, data: dict[str, Any]) -> dict[str, list[str]]:
    """split -> image folders or list files of data.yaml, as paths relative to its folder.

    Roboflow writes ``train: ../train/images`` beside data.yaml; a leading ``../`` whose
    target is missing is read from the yaml's own folder, as Ultralytics' fallback does.
    """
    root = config.parent
    out: dict[str, list[str]] = {}
    base = data.get("path")
    base_rel = "" if base in (None, "", ".") or not isinstance(base, str) or os.path.isabs(base) else base
    for key, split in SPLIT_KEYS.items():
        entries = data.get(key)
        if entries in (None, ""):
            continue
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, str):
                raise DatasetError(f"{config}: '{key}' must be a folder path or a list of them, got {entry!r}")
            rel = str(PurePosixPath(base_rel) / entry.replace("\\", "/"))
            while rel.startswith("../") and not _exists(root, rel):
                rel = rel[3:]
            try:
                inside(root, rel)
            except UnsafePath as e:
                raise DatasetError(
                    f"{config}: '{key}: {entry}' {e}; keep the split folders inside the dataset folder"
                ) from e
            out.setdefault(split, []).append(rel)
    return out


def _exists(root: Path, rel: str) -> bool:
    try:
        return inside(root, rel).exists()
    except UnsafePath:
        return False


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d.lower() != "labels")
        found += [Path(dirpath, f) for f in sorted(filenames) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return found


def label_path(image: Path, root: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`; else beside the image."""
    parts = list(image.relative_to(root).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return root.joinpath(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _list_images(root: Path, config: Path, split_dirs: dict[str, list[str]]) -> list[tuple[Path, str | None]]:
    """(image, split) for every image of the dataset; a split's entry may be a folder or a .txt list."""
    if not split_dirs:
        return [(p, split_of_path(p.relative_to(root).as_posix())) for p in _images_under(root)]
    out: list[tuple[Path, str | None]] = []
    for split, rels in split_dirs.items():
        for rel in rels:
            target = inside(root, rel)
            if target.is_dir():
                out += [(p, split) for p in _images_under(target)]
            elif target.is_file() and target.suffix == ".txt":
                out += [(p, split) for p in _listed_images(root, target)]
            else:
                raise DatasetError(f"{config}: '{split}: {rel}' is not a folder or a .txt list of images in {root}")
    return out


def _one_split_each(listed: list[tuple[Path, str | None]], problems: Problems) -> list[tuple[Path, str | None]]:
    """Each image once. One listed by several splits (``train: images`` and ``val: images``, as
    quick setups and odorch's unsplit output write) gets no split, so the source's splits are
    not used: an image in two splits would leak between them."""
    splits: dict[Path, list[str | None]] = {}
    for path, split in listed:
        splits.setdefault(path, []).append(split)
    out = []
    for path, names in splits.items():
        if len(set(names)) > 1:
            problems.add("image_several_splits", f"{path.name}: {', '.join(dict.fromkeys(str(n) for n in names))}")
        out.append((path, names[0] if len(set(names)) == 1 else None))
    return out


def _listed_images(root: Path, listing: Path) -> list[Path]:
    """Images named in a split list (one path a line, relative to the dataset folder)."""
    out = []
    for n, line in enumerate(_read(listing).splitlines()):
        name = line.strip().removeprefix("./")
        if not name:
            continue
        try:
            out.append(inside(root, name))
        except UnsafePath as e:
            raise DatasetError(f"{listing}:{n + 1}: {e}; list images inside {root}") from e
    return out


def _read_labels(
    name: str, lines: list[tuple[int, list[str]]], names: list[str], frame: Frame, problems: Problems, classes: list[str] | None
) -> list[Box]:
    boxes = []
    for n, fields in lines:
        where = f"{name} line {n}"
        value = number(fields[0])  # "0" or, from some converters, "0.0"
        class_id = int(value) if value.is_integer() else -1
        if not 0 <= class_id < len(names):
            problems.add("box_bad_class_id", f"{where}: class {fields[0]!r} (names has {len(names)})")
            problems.count_box("dropped")
            continue
        values = [number(v) for v in fields[1:]]
        if len(values) == 4:
            cx, cy, w, h = values
            rel = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            rel = [min(xs), min(ys), max(xs), max(ys)]
        else:
            rel = [float("nan")] * 4  # counted as bad coordinates
        corners = scale(rel, frame.width, frame.height)
        box = make_box(corners, names[class_id], frame, classes=classes, problems=problems, where=where)
        if box is not None:
            boxes.append(box)
    return boxes


def read_yolo(src: Path, *, classes: list[str] | None = None) -> Dataset:
    """Read a YOLO dataset: SRC is its folder (holding data.yaml or classes.txt) or the data.yaml.

    Splits come from data.yaml's train/val/test, else from train/val/test folder names.
    """
    src = Path(src)
    config = src if src.is_file() else find_config(src) if src.is_dir() else None
    if config is None:
        raise DatasetError(
            f"{src}: no data.yaml or classes.txt; give the YOLO dataset folder holding one (or the data.yaml itself)"
        )
    root = config.parent
    if config.suffix in (".yaml", ".yml"):
        data = _load_yaml(config)
        names = _yaml_names(config, data)
        split_dirs = _split_dirs(config, data)
    else:
        lines = [line.strip() for line in _read(config).splitlines()]
        names = _names(config, [line for line in lines if line])
        split_dirs = {}
    problems = Problems()
    images: list[ImageRecord] = []
    used_labels: set[Path] = set()
    for image_path, split in _one_split_each(_list_images(root, config, split_dirs), problems):
        labels = label_path(image_path, root)
        where = image_path.relative_to(root).as_posix()
        lines = _lines(labels) if labels.is_file() else None
        frame = probe_frame(image_path, declared=None, problems=problems, where=where, n_boxes=len(lines or ()))
        if lines is not None:
            used_labels.add(labels)
        if frame is None:
            continue
        if lines is not None:
            boxes = _read_labels(labels.name, lines, names, frame, problems, classes)
        else:
            problems.add("label_file_missing", where)
            boxes = []
        images.append(image_record(frame, boxes, file_name=image_path.name, origin=where, split=split, problems=problems))
    _count_orphan_labels(root, used_labels, problems)
    return finish_dataset(images, classes=classes, problems=problems, source=str(src), order=names)


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line of a label file: each is a box to account for."""
    return [(n, fields) for n, line in enumerate(_read(path).splitlines(), start=1) if (fields := line.split())]


def _read(path: Path) -> str:
    """A text file as tools write them (a UTF-8 BOM, CRLF); undecodable bytes become U+FFFD and
    fail the line's parse, so they are counted, not raised."""
    try:
        return path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from e


def _count_orphan_labels(root: Path, used: set[Path], problems: Problems) -> None:
    """Label files under a `labels` folder whose image is missing: their boxes are lost, so say so."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "labels" not in Path(dirpath).relative_to(root).parts:
            continue
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if name.endswith(".txt") and path not in used and name not in CLASS_FILES:
                problems.add("image_missing", f"{path.relative_to(root).as_posix()}: label file without an image")
                problems.drop_boxes(len(_lines(path)))


def yolo_lines(image: ImageRecord, boxes: list[Box], classes: list[str]) -> str:
    """``class cx cy w h`` lines, normalized to the image, 6 decimals (sub-pixel up to 1e6 px)."""
    out = []
    for box in boxes:
        cx = (box.x0 + box.x1) / 2 / image.width
        cy = (box.y0 + box.y1) / 2 / image.height
        out.append(f"{classes.index(box.label)} {cx:.6f} {cy:.6f} {box.width / image.width:.6f} {box.height / image.height:.6f}")
    return "".join(line + "\n" for line in out)


def drop_crowd(dataset: Dataset) -> None:
    """YOLO cannot say 'crowd': such boxes are dropped and counted (before --strict is checked)."""
    for image in dataset.images:
        kept = []
        for box in image.boxes:
            if box.iscrowd:
                dataset.problems.drop_box(box, "box_crowd", f"{image.origin} (YOLO)")
            else:
                kept.append(box)
        image.boxes = kept


def write_yolo(dataset: Dataset, out: Path, splits: dict[str, list[ImageRecord]]) -> dict[str, Any]:
    """Write OUT/images/<split>/, OUT/labels/<split>/ and OUT/data.yaml (last), Ultralytics' layout.

    Run drop_crowd first. An image without boxes gets an empty label file (a negative example,
    as Ultralytics reads it). An EXIF-oriented image is written upright (darknet and others ignore EXIF). With one split only ('all'), images/ and labels/ are flat and
    data.yaml names them for train and val.
    """
    import yaml

    from odorch.converters.coco import place_image

    out = Path(out)
    written: dict[str, dict[str, int]] = {}
    flat = list(splits) == ["all"]
    for split, images in splits.items():
        sub = "" if flat else f"/{split}"
        taken: set[str] = set()
        boxes_written = 0
        for image in images:
            stem, ext = os.path.splitext(os.path.basename(image.file_name))
            name, n = stem, 1
            while name.casefold() in taken:  # a.jpg and a.png would share a.txt
                n += 1
                name = f"{stem}_{n}"
            taken.add(name.casefold())
            image.file_name = f"{name}{ext}"
            place_image(image, out / f"images{sub}", upright=True)  # for YOLO tools that ignore EXIF
            atomic_write_bytes(out / f"labels{sub}" / f"{name}.txt", yolo_lines(image, image.boxes, dataset.classes).encode())
            boxes_written += len(image.boxes)
        written[split] = {"images": len(images), "boxes": boxes_written}
    config: dict[str, Any] = {"path": "."}
    if flat:
        config.update(train="images", val="images")
    else:
        config.update({split: f"images/{split}" for split in splits})
    config["nc"] = len(dataset.classes)
    config["names"] = dict(enumerate(dataset.classes))
    atomic_write_bytes(out / "data.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True).encode())
    return {"classes": dataset.classes, "splits": written, "flat": flat}

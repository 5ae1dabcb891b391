"""COCO reader (any COCO json: Roboflow exports, sparse ids, id 0, iscrowd) and the
odorch layout writer: ``OUT/annotations/<split>.json`` + ``OUT/images/``."""

from __future__ import annotations

import array
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import operator
import os
import posixpath
import struct
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from importlib.metadata import version
from multiprocessing.connection import Connection
from operator import attrgetter
from pathlib import Path
from typing import Any

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
    gc_paused,
    image_frame,
    orient_box,
    parse_flag,
)
from odorch.converters.fsutil import UnsafePath, atomic_write_bytes, atomic_write_json, inside, place_file
from odorch.converters.images import ImageProblem, probe_image
from odorch.converters.split import choose_splits

SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: not found") from e
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg}); fix or re-export the file") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-export it as UTF-8 JSON") from e
    except RecursionError as e:
        raise DatasetError(f"{path}: JSON nested too deeply to be a COCO file; fix or re-export the file") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO file (needs an 'images' list, 'annotations' and 'categories')")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DatasetError(f"{path}: '{key}' must be a list")
    return data


def split_of_file(path: Path) -> str | None:
    """'train' for instances_train2017.json or train/_annotations.coco.json, etc."""
    for part in (path.stem, path.parent.name):
        for word in part.lower().replace("-", "_").replace(".", "_").split("_"):
            word = word.rstrip("0123456789")
            if word in SPLIT_WORDS:
                return SPLIT_WORDS[word]
    return None


def find_images_dir(json_path: Path, images: list[dict[str, Any]]) -> Path:
    """Where the file names of a COCO json live: beside it (Roboflow), ../images (odorch),
    ../<split>2017 (COCO), or the parent folder."""
    parent = json_path.parent
    candidates = [parent, parent.parent / "images"]
    stem = json_path.stem
    if "_" in stem:
        candidates.append(parent.parent / stem.split("_", 1)[1])
    candidates.append(parent.parent)
    names = [im["file_name"] for im in images[:5] if isinstance(im, dict) and isinstance(im.get("file_name"), str)]
    if not names:
        return parent
    for folder in candidates:
        try:
            if all(inside(folder, name).exists() for name in names):
                return folder
        except UnsafePath:
            return parent  # each image's path is refused and counted when it is read
    raise DatasetError(
        f"{json_path}: cannot find its images (looked for {names[0]} in "
        f"{', '.join(str(c) for c in candidates)}); pass --images DIR"
    )


def _category_names(path: Path, data: dict[str, Any], problems: Problems) -> dict[Any, str]:
    names: dict[Any, str] = {}
    ids_of_name: dict[str, list[Any]] = defaultdict(list)
    for cat in data.get("categories", []):
        if not isinstance(cat, dict) or not _is_id(cat.get("id")) or not str(cat.get("name", "")).strip():
            raise DatasetError(f"{path}: category {_short(cat)} needs an 'id' (a number or string) and a 'name'")
        name = str(cat["name"]).strip()
        if cat["id"] in names and names[cat["id"]] != name:
            raise DatasetError(
                f"{path}: category id {cat['id']} is both {names[cat['id']]!r} and {name!r}; give each id one name"
            )
        names[cat["id"]] = name
        ids_of_name[name].append(cat["id"])
    for name, ids in ids_of_name.items():
        if len(set(ids)) > 1:
            problems.add("category_merged", f"{path.name}: {name!r} ids {sorted(set(ids))}")
    return names


def _read_one(
    path: Path,
    data: dict[str, Any],
    images_dir: Path,
    *,
    split: str | None,
    classes: list[str] | None,
    problems: Problems,
) -> tuple[list[ImageRecord], list[str]]:
    """Images of one COCO file and its category names in id order."""
    names = _category_names(path, data, problems)
    seen_ids: set[Any] = set()
    dupes = []
    for im in data["images"]:
        if not isinstance(im, dict) or not _is_id(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise DatasetError(
                f"{path}: image entry {_short(im)} needs an 'id' (a number or string) and a 'file_name' (a string)"
            )
        if im["id"] in seen_ids:
            dupes.append(im["id"])
        seen_ids.add(im["id"])
    if dupes:
        raise DatasetError(
            f"{path}: duplicate image ids {sorted(set(dupes), key=str)[:10]}; every image needs its own id "
            "(annotations would be ambiguous)"
        )
    anns_of: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for n, ann in enumerate(data.get("annotations", [])):
        where = f"{path.name} annotation {ann.get('id', n) if isinstance(ann, dict) else n}"
        if not isinstance(ann, dict) or not _is_id(ann.get("image_id")) or ann["image_id"] not in seen_ids:
            problems.add("box_unknown_image", where)
            problems.drop_boxes(1)
        elif not _is_id(ann.get("category_id")) or ann["category_id"] not in names:
            problems.add("box_unknown_category", f"{where} (category_id {ann.get('category_id')!r})")
            problems.drop_boxes(1)
        else:
            anns_of[ann["image_id"]].append(ann)

    images = []
    for im in data["images"]:
        anns = anns_of.get(im["id"], [])
        where = f"{path.name} image {im['id']} ({im['file_name']!r})"
        try:
            source = inside(images_dir, im["file_name"])
            info = probe_image(source)
        except UnsafePath as e:
            problems.add("image_path_outside", f"{path.name} image {im['id']}: {e}")
            problems.drop_boxes(len(anns))
            continue
        except ImageProblem as e:
            problems.add(e.reason, str(e))
            problems.drop_boxes(len(anns))
            continue
        width, height, turn = image_frame(info, (im.get("width"), im.get("height")), problems, where)
        boxes = [
            box
            for box in (_box(ann, names, width, height, classes, problems, where, turn=turn, stored=info) for ann in anns)
            if box
        ]
        image = ImageRecord(
            source=source,
            file_name=posixpath.normpath(im["file_name"].replace("\\", "/")),
            width=width,
            height=height,
            mode=info.mode,
            boxes=boxes,
            origin=where,
            split=split,
            orientation=info.orientation,
        )
        check_image_mode(image, problems)
        images.append(image)
    order = [names[k] for k in sorted(names, key=lambda k: (str(type(k)), k))]
    return images, list(dict.fromkeys(order))


def _is_id(value: Any) -> bool:
    """COCO ids are numbers or strings; anything else (a list, an object) cannot key a lookup."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _box(
    ann: dict[str, Any],
    names: dict[Any, str],
    width: int,
    height: int,
    classes: list[str] | None,
    problems: Problems,
    where: str,
    *,
    turn: int = 1,
    stored: Any = None,
) -> Box | None:
    """One annotation as a Box; `turn` (with the `stored` ImageInfo) moves boxes drawn on an EXIF
    image's stored pixels into the frame the loaders show."""
    where = f"{where} annotation {_short(ann.get('id', '?'))}"
    label = names[ann["category_id"]]
    if not accept_label(label, classes, problems, where):
        return None
    flags = {key: parse_flag(ann.get(key, 0)) for key in ("iscrowd", "ignore")}
    bad = [f"{key}={ann.get(key)!r}" for key, value in flags.items() if value is None]
    if bad:
        problems.add("box_bad_flag", f"{where}: {', '.join(bad)}")
        problems.count_box("dropped")
        return None
    bbox = ann.get("bbox")
    try:
        x, y, w, h = (float(v) for v in bbox) if isinstance(bbox, list) else (math.nan,) * 4
    except (TypeError, ValueError, OverflowError):
        x = y = w = h = math.nan
    corners = orient_box([x, y, x + w, y + h], turn, stored.width, stored.height) if turn != 1 else [x, y, x + w, y + h]
    fixed = fix_box(*corners, width=width, height=height, problems=problems, where=where)
    if fixed is None:
        return None
    repaired = list(fixed) != [x, y, x + w, y + h]
    attributes = ann.get("attributes") or {}
    if not isinstance(attributes, dict):
        problems.add("box_bad_attributes", f"{where}: {_short(attributes)}")
        attributes = {}
    area = ann.get("area")
    return Box(
        *fixed,
        label=label,
        iscrowd=flags["iscrowd"],
        ignore=flags["ignore"],
        attributes=dict(attributes),
        area=None if repaired or not _finite_number(area) else area,
        segmentation=ann.get("segmentation"),
        repaired=repaired,
    )


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_coco(
    json_paths: list[Path],
    *,
    images_dirs: list[Path] | None = None,
    classes: list[str] | None = None,
) -> Dataset:
    """Read one or more COCO files into one dataset with one class map by name.

    `images_dirs` is one folder for all files or one per file; by default each file's
    folder is found next to it. With several files, each file's split (train/val/test)
    is taken from its name when it has one.
    """
    json_paths = [Path(p) for p in json_paths]
    if not json_paths:
        raise DatasetError("no COCO json given")
    if images_dirs and len(images_dirs) not in (1, len(json_paths)):
        raise DatasetError(f"--images given {len(images_dirs)} times for {len(json_paths)} files: give it once or once per file")
    problems = Problems()
    images: list[ImageRecord] = []
    order: list[str] = []
    for n, path in enumerate(json_paths):
        data = load_json(path)
        folder = Path(images_dirs[min(n, len(images_dirs) - 1)]) if images_dirs else find_images_dir(path, data["images"])
        split = split_of_file(path) if len(json_paths) > 1 else None
        file_images, file_order = _read_one(path, data, folder, split=split, classes=classes, problems=problems)
        images += file_images
        order += [name for name in file_order if name not in order]
    _check_same_source(images, problems)
    problems.raise_if_unusable()
    if not images:
        raise DatasetError(f"{', '.join(map(str, json_paths))}: no usable image; the dataset is empty", problems=problems)
    final = final_classes(images, classes, problems, order=order)
    if classes is None:
        for name in order:
            if name not in final:
                problems.add("category_unused", name)
    return Dataset(images=images, classes=final, problems=problems, source=", ".join(map(str, json_paths)))


def _check_same_source(images: list[ImageRecord], problems: Problems) -> None:
    first: dict[str, str] = {}
    for image in images:
        key = os.path.realpath(image.source)
        if key in first:
            problems.error(
                f"{image.origin}: the same image file as {first[key]}; an image listed twice would leak "
                "between splits: keep one entry"
            )
        first.setdefault(key, image.origin)


def coco_dict(images: list[ImageRecord], classes: list[str], *, first_image_id: int = 1, description: str = "") -> dict[str, Any]:
    """A COCO dict with category ids 1..K in class-map order and image/annotation ids from 1."""
    cat_id = {name: i + 1 for i, name in enumerate(classes)}
    out_images, annotations = _image_entries(images, first_image_id), []
    for image_id, image in enumerate(images, start=first_image_id):
        for box in image.boxes:
            w, h = box.width, box.height
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cat_id[box.label],
                "bbox": [box.x0, box.y0, round(w, 6), round(h, 6)],  # x1 - x0 may carry float noise
                "area": box.area if box.area is not None else w * h,
                "iscrowd": int(box.iscrowd),
                "ignore": int(box.ignore),
                "segmentation": box.segmentation or [],
            }
            if box.attributes:
                ann["attributes"] = box.attributes
            annotations.append(ann)
    return {
        "info": {"description": description, "version": version("odorch")},
        "licenses": [],
        "images": out_images,
        "annotations": annotations,
        "categories": [{"id": cat_id[name], "name": name, "supercategory": ""} for name in classes],
    }


def _image_entries(images: list[ImageRecord], first_image_id: int) -> list[dict[str, Any]]:
    return [
        {"id": image_id, "file_name": image.file_name, "width": image.width, "height": image.height}
        for image_id, image in enumerate(images, start=first_image_id)
    ]


_ANNOTATION = (
    '{"id": %d, "image_id": %d, "category_id": %d, "bbox": [%s, %s, %s, %s], "area": %s, "iscrowd": %d, '
    '"ignore": %d, "segmentation": %s}'
)


def coco_json(images: list[ImageRecord], classes: list[str], *, first_image_id: int = 1, description: str = "") -> str:
    """The text of ``json.dumps(coco_dict(...), ensure_ascii=False)``, made ~5x faster on 100k+
    boxes: each field of every box is gathered into a column by C-level map() calls (the numbers
    encoded by one json.dumps call per column), and all annotations are formatted by one
    %-operation on the columns, with no dict per box."""
    frame = coco_dict([], classes, description=description)
    frame["images"] = _image_entries(images, first_image_id)
    categories = frame.pop("categories")
    del frame["annotations"]
    cat_id = {name: i + 1 for i, name in enumerate(classes)}
    per_image = list(map(attrgetter("boxes"), images))
    boxes = list(itertools.chain.from_iterable(per_image))
    x0, y0, x1, y1, area = (list(map(attrgetter(name), boxes)) for name in ("x0", "y0", "x1", "y1", "area"))
    w, h = list(map(operator.sub, x1, x0)), list(map(operator.sub, y1, y0))
    wh = map(operator.mul, w, h)
    columns = (
        range(1, len(boxes) + 1),
        list(itertools.chain.from_iterable(map(itertools.repeat, itertools.count(first_image_id), map(len, per_image)))),
        list(map(cat_id.__getitem__, map(attrgetter("label"), boxes))),
        _number_texts(x0),
        _number_texts(y0),
        _number_texts(w, ndigits=6),  # x1 - x0 may carry float noise
        _number_texts(h, ndigits=6),
        _number_texts(list(wh) if area.count(None) == len(area) else [p if a is None else a for a, p in zip(area, wh)]),
        list(map(int, map(attrgetter("iscrowd"), boxes))),
        list(map(int, map(attrgetter("ignore"), boxes))),
        _segmentation_tails(boxes),
    )
    annotations = ", ".join([_ANNOTATION] * len(boxes)) % tuple(itertools.chain.from_iterable(zip(*columns)))
    return (
        f'{json.dumps(frame, ensure_ascii=False)[:-1]}, "annotations": [{annotations}], '
        f'"categories": {json.dumps(categories, ensure_ascii=False)}}}'
    )


_NEGATIVE_ZERO = struct.pack("d", -0.0)


def _number_texts(column: list[Any], *, ndigits: int | None = None) -> list[str]:
    """The JSON text of each number (rounded to `ndigits` first), as json.dumps writes it. When all
    are floats, each distinct value is encoded once (coordinates repeat a lot); not when a -0.0
    may be among them (it equals 0.0 as a key; a chance match of its bytes only costs time)."""
    if set(map(type, column)) == {float} and _NEGATIVE_ZERO not in array.array("d", column).tobytes():
        distinct = list(set(column))
        rounded = distinct if ndigits is None else list(map(round, distinct, itertools.repeat(ndigits)))
        text = dict(zip(distinct, json.dumps(rounded)[1:-1].split(", ")))  # a number's JSON never holds ", "
        return list(map(text.__getitem__, column))
    if ndigits is not None:
        column = list(map(round, column, itertools.repeat(ndigits)))
    return json.dumps(column)[1:-1].split(", ")


def _segmentation_tails(boxes: list[Box]) -> list[str]:
    """Each box's JSON from its segmentation on: the segmentation, then its attributes if any.
    Attributes are encoded once per dict object (readers share them between boxes) and per repr
    (which tells 1, 1.0 and True apart): there are few distinct ones."""
    attributes = list(map(attrgetter("attributes"), boxes))
    keys = list(map(id, attributes))  # the dicts stay alive meanwhile, so no id is reused
    by_repr: dict[str, str] = {}
    tail = {}
    for key, a in dict(zip(keys, attributes)).items():
        text = repr(a)
        if text not in by_repr:
            by_repr[text] = f', "attributes": {json.dumps(a, ensure_ascii=False)}' if a else ""
        tail[key] = by_repr[text]
    segmentations = list(map(attrgetter("segmentation"), boxes))
    if not any(segmentations):
        return list(map({key: "[]" + text for key, text in tail.items()}.__getitem__, keys))
    return [(json.dumps(s, ensure_ascii=False) if s else "[]") + tail[key] for s, key in zip(segmentations, keys)]


def place_image(image: ImageRecord, images_out: Path, *, upright: bool = False) -> None:
    """Link the image into images_out; a CMYK image is re-encoded as RGB (many decoders get it wrong),
    and so is an EXIF-oriented one when `upright` (for loaders that may ignore EXIF, not odorch's).

    The output name is checked again here: no name may place a file outside images_out."""
    try:
        dst = inside(images_out, image.file_name)
    except UnsafePath as e:
        raise DatasetError(f"{image.origin}: output name {e}") from e
    if image.mode != "CMYK" and not (upright and image.orientation != 1):
        place_file(image.source, dst)
        return
    atomic_write_bytes(dst, upright_rgb_bytes(image))


PLACE_IN_CHILD_MIN = 2000  # images; below this a child process costs more than it saves


@contextlib.contextmanager
def images_placed(images: list[ImageRecord], images_out: Path) -> Iterator[None]:
    """Every image placed into images_out (place_image) by the end of the with-block. Many images
    are linked by a forked child process while the block runs (10k links cost ~0.4 s, the json
    is made meanwhile), one by one (8 threads took 4x as long); few, or where the platform cannot
    fork safely (Windows, macOS), here before the block. An error of the child is raised here."""
    can_fork = "fork" in mp.get_all_start_methods() and sys.platform != "darwin"
    if len(images) < PLACE_IN_CHILD_MIN or (os.cpu_count() or 1) < 2 or not can_fork:
        for image in images:
            place_image(image, images_out)
        yield
        return
    context = mp.get_context("fork")  # the child gets the images without pickling them
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_place_all, args=(images, images_out, send), daemon=True)
    child.start()
    send.close()
    try:
        yield
    finally:
        try:
            error = receive.recv()
        except EOFError:  # the child died before it could answer
            child.join()
            error = OSError(f"{images_out}: the process linking the images stopped (exit code {child.exitcode})")
        receive.close()
        child.join()
    if error is not None:
        raise error


def _place_all(images: list[ImageRecord], images_out: Path, send: Connection) -> None:
    try:
        for image in images:
            place_image(image, images_out)
    except BaseException as e:  # raised by the parent (images_placed)
        send.send(e)
    else:
        send.send(None)


def upright_rgb_bytes(image: ImageRecord, *, resize: int | None = None, fmt: str | None = None) -> bytes:
    """The image re-encoded as RGB in the frame its boxes are in (EXIF orientation applied, the
    tag dropped), optionally with its longer side cut to `resize`; JPEG unless `fmt`."""
    import io

    from PIL import Image, ImageOps

    with Image.open(image.source) as im:
        out_format = fmt or (im.format if im.format in ("JPEG", "PNG", "TIFF", "BMP", "WEBP") else "JPEG")
        im = ImageOps.exif_transpose(im).convert("RGB")
        if resize is not None and max(im.size) > resize:
            scale = resize / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, format=out_format, quality=95)
    return buf.getvalue()


def _unique_file_names(images: list[ImageRecord]) -> None:
    """Give images from different folders that share a name (train/0001.jpg, test/0001.jpg)
    distinct output names by prefixing their folder's name."""
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for image in images:
        groups[image.file_name].append(image)
    taken = set(groups)
    for name, group in groups.items():
        if len(group) == 1:
            continue
        for image in group:
            candidate = f"{image.source.parent.name}/{name}"
            n = 1
            while candidate in taken:
                n += 1
                candidate = f"{image.source.parent.name}/{Path(name).stem}_{n}{Path(name).suffix}"
            taken.add(candidate)
            image.file_name = candidate


@gc_paused()  # a collection would walk every box of the dataset, ~0.1 s each on 137k boxes
def convert_dataset(dataset: Dataset, out: Path, *, what: str, split: dict[str, float] | str | None, seed: int,
                    strict: bool, command: str, echo: Callable[[str], None]) -> dict[str, Any]:
    """`odorch convert ...2coco` after reading: say what was read, split, report the problems
    (DatasetError if the data is unusable), write the layout and say what was written."""
    echo(f"read {len(dataset.images)} images, {dataset.num_boxes} boxes from {what}")
    splits = choose_splits(dataset.images, split, seed=seed, problems=dataset.problems)
    for line in dataset.problems.report_lines():
        echo(line)
    dataset.problems.raise_if_unusable(strict=strict)
    summary = write_layout(dataset, out, splits, command=command)
    classes = summary["classes"]
    echo(f"classes ({len(classes)}, category ids 1..{len(classes)}): {', '.join(classes)}")
    for name, s in summary["splits"].items():
        echo(f"wrote {Path(out) / 'annotations' / (name + '.json')}: {s['images']} images, {s['boxes']} boxes")
    return summary


@gc_paused()  # its collections would only walk the dataset's boxes again and again
def write_layout(dataset: Dataset, out: Path, splits: dict[str, list[ImageRecord]], *, command: str) -> dict[str, Any]:
    """Write OUT/images/ then OUT/annotations/<split>.json, then OUT/odorch.json last: a
    killed run leaves no json pointing at missing images, and a re-run relinks cheaply."""
    out = Path(out)
    if not dataset.classes:
        raise DatasetError(f"{dataset.source}: no box of any class is left; there is nothing to train on")
    every = [image for images in splits.values() for image in images]
    _unique_file_names(every)
    (out / "images").mkdir(parents=True, exist_ok=True)
    texts, first_id = {}, 1
    with images_placed(every, out / "images"):
        for split, images in splits.items():
            texts[split] = coco_json(images, dataset.classes, first_image_id=first_id, description=f"odorch {command}: {split}")
            first_id += len(images)
    summary: dict[str, Any] = {
        "format": "odorch-coco",
        "created_by": f"odorch {version('odorch')} {command}",
        "source": dataset.source,
        "classes": dataset.classes,
        "splits": {},
        **dataset.problems.as_dict(),
    }
    for split, images in splits.items():
        atomic_write_bytes(out / "annotations" / f"{split}.json", texts[split].encode())
        labels = Counter(map(attrgetter("label"), itertools.chain.from_iterable(map(attrgetter("boxes"), images))))
        summary["splits"][split] = {
            "images": len(images),
            "boxes": sum(len(im.boxes) for im in images),
            "per_class": {name: labels[name] for name in dataset.classes},
        }
    stale = sorted(p.stem for p in (out / "annotations").glob("*.json") if p.stem not in splits)
    for name in stale:
        (out / "annotations" / f"{name}.json").unlink()
    atomic_write_json(out / "odorch.json", summary, indent=2)
    return summary

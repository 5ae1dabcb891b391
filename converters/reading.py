"""What the YOLO, CVAT, Label Studio, LabelMe and Ground Truth readers share: loading a JSON
file with a clean error, finding an image without leaving its folder, turning one box into a
counted :class:`Box`, and closing a dataset."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from odorch.converters.coco import SPLIT_WORDS
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
    image_frame,
    orient_box,
)
from odorch.converters.fsutil import UnsafePath, inside
from odorch.converters.images import ImageInfo, ImageProblem, probe_image


def load_json_file(path: Path, *, what: str) -> Any:
    """The parsed file, or a DatasetError naming the file, the place and the fix."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg}); fix or re-export the {what}") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); re-export the {what} as UTF-8") from e
    except RecursionError as e:
        raise DatasetError(f"{path}: JSON nested too deeply to be a {what}; fix or re-export it") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from e


class YamlAliasError(ValueError):
    """A YAML alias (*name) in a file that must not have one; the message names file:line:column."""


def safe_load_yaml(text: str, *, source: Path | str) -> Any:
    """yaml.safe_load without aliases: a few hundred bytes of nested aliases (a "billion laughs")
    expand to gigabytes, and no dataset, config or search-space file needs them."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise YamlAliasError(
                    f"{source}:{mark.line + 1}:{mark.column + 1}: YAML aliases (*name) are not allowed; write the value out"
                )
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader)


def load_yaml_file(path: Path) -> Any:
    """The parsed YAML file (no aliases), or a DatasetError naming it."""
    import yaml

    try:
        return safe_load_yaml(path.read_text(encoding="utf-8-sig"), source=path)
    except YamlAliasError as e:
        raise DatasetError(str(e)) from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from e
    except (yaml.YAMLError, RecursionError) as e:
        raise DatasetError(f"{path}: invalid YAML ({str(e).splitlines()[0] if str(e) else 'nested too deeply'}); fix the file") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e})") from e


def split_of_path(rel: str | PurePosixPath) -> str | None:
    """'train', 'val' or 'test' from a folder name in a relative path (train/images/x.jpg,
    images/valid/x.jpg), else None."""
    for part in PurePosixPath(rel).parts[:-1]:
        split = SPLIT_WORDS.get(part.lower())
        if split:
            return split
    return None


@dataclass
class Frame:
    """An image found and probed, with the frame its boxes are read in."""

    source: Path
    info: ImageInfo
    width: int  # as the loaders show it (EXIF orientation applied)
    height: int
    turn: int  # EXIF orientation to apply to boxes drawn on the stored pixels (1: none)


def probe_frame(
    source: Path, *, declared: tuple[Any, Any] | None, problems: Problems, where: str, n_boxes: int
) -> Frame | None:
    """Probe `source`; None (the image and its `n_boxes` counted as dropped) when unusable.

    `declared` is the annotation's (width, height); None for formats whose coordinates are
    normalized to the image as shown (YOLO): then there is nothing to compare or turn.
    """
    try:
        info = probe_image(source)
    except ImageProblem as e:
        problems.add(e.reason, str(e))
        problems.drop_boxes(n_boxes)
        return None
    if declared is None:
        return Frame(source, info, *info.shown_size, 1)
    width, height, turn = image_frame(info, declared, problems, where)
    return Frame(source, info, width, height, turn)


def resolve_image(
    folders: list[Path], names: list[str], *, problems: Problems | None, where: str, n_boxes: int
) -> Path | None:
    """The first of `names` (paths read from a dataset, most specific first) that exists in one of
    `folders`. None, counted with its boxes, when none does or a name leaves its folder (not
    counted with `problems` None: the caller has another way to the image)."""
    refused = None
    for name in names:
        for folder in folders:
            try:
                path = inside(folder, name)
            except UnsafePath as e:
                refused = e
                continue
            if path.is_file():
                return path
    if problems is None:
        return None
    if refused is not None:
        problems.add("image_path_outside", f"{where}: {refused}")
    else:
        looked = ", ".join(str(f) for f in folders)
        problems.add("image_missing", f"{where}: {names[0] if names else '?'} (looked in {looked})")
    problems.drop_boxes(n_boxes)
    return None


def make_box(
    corners: list[float],
    label: Any,
    frame: Frame,
    *,
    classes: list[str] | None,
    problems: Problems,
    where: str,
    attributes: dict[str, Any] | None = None,
) -> Box | None:
    """One box in pixel corners of the frame it was drawn on, validated, repaired and counted."""
    label = label.strip() if isinstance(label, str) else ""
    if not label:
        problems.add("box_no_label", where)
        problems.count_box("dropped")
        return None
    if not accept_label(label, classes, problems, where):
        return None
    if frame.turn != 1:
        corners = orient_box(corners, frame.turn, frame.info.width, frame.info.height)
    fixed = fix_box(*corners, width=frame.width, height=frame.height, problems=problems, where=where)
    if fixed is None:
        return None
    return Box(*fixed, label=label, attributes=attributes or {}, repaired=list(fixed) != list(corners))


def number(value: Any) -> float:
    """A coordinate as a float; NaN (counted as bad coordinates by fix_box) for anything else."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


ROUNDING = 1e-6  # a 6-decimal writer's error on cx ± w/2 (Ultralytics, odorch): up to 7.5e-7


def scale(relative: list[float], width: float, height: float) -> list[float]:
    """Corners given as fractions of the image, in pixels. A fraction within ROUNDING outside
    [0, 1] is the writer's rounding, not a box leaving the image: it is taken as the edge; pixels
    are rounded to 1e-6 for the same reason (0.1 * 640 + 0.9 * 640 = 640.0000000000001)."""
    snapped = [0.0 if -ROUNDING < v < 0 else 1.0 if 1 < v < 1 + ROUNDING else v for v in relative]
    x0, y0, x1, y1 = snapped
    return [round(x0 * width, 6), round(y0 * height, 6), round(x1 * width, 6), round(y1 * height, 6)]


def image_record(frame: Frame, boxes: list[Box], *, file_name: str, origin: str, split: str | None, problems: Problems) -> ImageRecord:
    image = ImageRecord(
        source=frame.source,
        file_name=file_name,
        width=frame.width,
        height=frame.height,
        mode=frame.info.mode,
        boxes=boxes,
        origin=origin,
        split=split,
        orientation=frame.info.orientation,
    )
    check_image_mode(image, problems)
    return image


def finish_dataset(
    images: list[ImageRecord],
    *,
    classes: list[str] | None,
    problems: Problems,
    source: str,
    order: list[str] | None = None,
) -> Dataset:
    """Refuse an image annotated twice (it would leak between splits) or an empty dataset;
    otherwise the Dataset with its class map."""
    first: dict[str, str] = {}
    twice = []
    for image in images:
        key = os.path.realpath(image.source)
        if key in first:
            twice.append(f"{image.origin} is the same image file as {first[key]}")
        first.setdefault(key, image.origin)
    if twice:
        more = f" and {len(twice) - 3} more" if len(twice) > 3 else ""
        problems.error(f"{len(twice)} images annotated twice ({'; '.join(twice[:3])}{more}); keep one annotation per image")
    problems.raise_if_unusable()
    if not images:
        raise DatasetError(f"{source}: no usable image; the dataset is empty", problems=problems)
    return Dataset(
        images=images, classes=final_classes(images, classes, problems, order=order), problems=problems, source=source
    )

"""The in-memory dataset every reader produces and every writer consumes.

Readers (VOC, COCO) validate and repair while they read, and count every repair or
drop per reason in a :class:`Problems`, so a conversion can always show that
kept + repaired + dropped = total boxes.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odorch.converters.images import ImageInfo
from odorch.errors import OdorchError

# reason -> (what it is, what odorch did about it)
REASONS: dict[str, tuple[str, str]] = {
    "box_zero_area": ("zero-area box", "dropped"),
    "box_inverted": ("inverted box (min > max)", "corners swapped"),
    "box_clipped": ("box partly outside the image", "clipped to the image"),
    "box_outside": ("box entirely outside the image", "dropped"),
    "box_bad_coords": ("box with missing or non-numeric coordinates", "dropped"),
    "box_unknown_class": ("box of a class not in --classes", "dropped"),
    "box_unknown_image": ("annotation whose image_id is not in images", "dropped"),
    "box_unknown_category": ("annotation whose category_id is not in categories", "dropped"),
    "box_crowd": ("crowd (iscrowd=1) box, which this format cannot express", "dropped"),
    "box_bad_flag": ("box whose iscrowd/ignore/difficult is not a boolean (0/1, true/false)", "dropped"),
    "box_no_label": ("box with an empty class name", "dropped"),
    "box_bad_attributes": ("annotation whose 'attributes' is not an object", "attributes left out"),
    "box_not_rectangle": ("shape that is not an axis-aligned box (polygon, point, rotated box, …)", "dropped"),
    "box_bad_class_id": ("box whose class index or id is not in the class list", "dropped"),
    "box_second_annotation": ("box of a task's second annotation (Label Studio)", "dropped; the first is used"),
    "label_file_missing": ("image without a label file (YOLO)", "kept as an image without boxes"),
    "image_several_splits": ("image listed in more than one split", "kept once; the source's splits are not used"),
    "image_unlabelled": ("image the labeling job left without an answer (failed, skipped or cancelled)", "image dropped"),
    "file_not_annotation": ("file that is not an annotation of this format", "ignored"),
    "image_path_outside": ("image path that leaves the dataset folder (absolute, '..', empty or NUL)", "image and its boxes dropped"),
    "image_too_large": ("image above the pixel cap (a decompression bomb for the loaders)", "image and its boxes dropped"),
    "image_exif_stored_frame": (
        "EXIF-rotated image annotated on its stored (unrotated) pixels",
        "boxes turned into the displayed frame the loaders use",
    ),
    "image_exif_ambiguous": (
        "EXIF-oriented image whose annotation size cannot tell which frame it was drawn on",
        "taken as drawn on the displayed (EXIF-applied) image, as the loaders show it",
    ),
    "image_missing": ("image file not found", "image and its boxes dropped"),
    "image_embedded": (
        "image found only as base64 imageData in its LabelMe JSON",
        "decoded and written under the JSON's name with the image's suffix",
    ),
    "image_unreadable": ("image file unreadable or not an image", "image and its boxes dropped"),
    "image_truncated": ("truncated image file", "image and its boxes dropped"),
    "image_not_in_split": ("image listed in no ImageSets file", "image and its boxes dropped"),
    "image_without_boxes": ("image without boxes, which this format cannot express", "image dropped"),
    "image_size_mismatch": ("annotation's image size differs from the real image", "real size used"),
    "image_greyscale": ("greyscale image", "kept; loaders convert it to RGB"),
    "image_cmyk": ("CMYK image", "re-encoded as RGB JPEG"),
    "imageset_unknown_id": ("ImageSets id without an annotation file", "ignored"),
    "xml_not_voc": ("XML file that is not a Pascal VOC annotation (its root is not <annotation>)", "skipped"),
    "xml_unreadable": ("XML file that cannot be read (a broken link, a symlink loop, no permission)", "skipped"),
    "box_wrapped": ("<object> inside a wrapper element (e.g. <objects>), not directly in <annotation>", "read as a box"),
    "category_unused": ("category without any box", "dropped from the class map"),
    "category_merged": ("several category ids with one name", "merged by name"),
    "class_case_variants": ("class names that differ only by case", "kept apart; rename them to merge"),
    "class_without_boxes": ("--classes name with no box in the data", "kept in the class map"),
    "class_too_rare_to_split": ("class in fewer images than splits", "missing from some split"),
}

MAX_EXAMPLES = 5


class DatasetError(OdorchError):
    """The data is unusable; the message says what to fix."""

    def __init__(self, message: str, problems: Problems | None = None):
        super().__init__(message)
        self.problems = problems


@dataclass
class Problems:
    """Counts of everything repaired or dropped, per reason, with a few locations each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    boxes: Counter[str] = field(default_factory=Counter)  # total / kept / repaired / dropped

    def add(self, reason: str, where: str, n: int = 1) -> None:
        if reason not in REASONS:
            raise KeyError(f"unknown problem reason {reason!r}")
        self.counts[reason] += n
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(where)

    def merge(self, other: Problems) -> None:
        """Add another reader's findings (a worker process's chunk), keeping example order."""
        for reason, n in other.counts.items():
            self.counts[reason] += n
            shown = self.examples.setdefault(reason, [])
            shown += other.examples.get(reason, [])[: MAX_EXAMPLES - len(shown)]
        self.errors += other.errors
        self.boxes.update(other.boxes)

    def error(self, message: str) -> None:
        self.errors.append(message)

    def count_box(self, fate: str) -> None:
        self.boxes["total"] += 1
        self.boxes[fate] += 1

    def drop_boxes(self, n: int) -> None:
        """Count boxes lost with their image (the image's reason is counted separately)."""
        self.boxes["total"] += n
        self.boxes["dropped"] += n

    def drop_box(self, box: Box, reason: str, where: str) -> None:
        """Drop a box that was already counted as kept or repaired (a writer's format limit)."""
        self.add(reason, where)
        self.boxes["repaired" if box.repaired else "kept"] -= 1
        self.boxes["dropped"] += 1

    def raise_if_unusable(self, *, strict: bool = False) -> None:
        messages = list(self.errors)
        if strict:
            messages += [f"--strict: {line}" for line in self.lines()]
        if messages:
            raise DatasetError("\n".join(messages), problems=self)

    def lines(self) -> list[str]:
        out = []
        for reason, n in sorted(self.counts.items()):
            what, action = REASONS[reason]
            examples = ", ".join(self.examples.get(reason, []))
            more = " …" if n > MAX_EXAMPLES else ""
            out.append(f"{n} × {what}: {action} (e.g. {examples}{more})")
        return out

    def report_lines(self) -> list[str]:
        """The box counts and every problem, as `convert` and `inspect` print them."""
        out = []
        b = self.boxes
        if b.get("total"):
            out.append(f"boxes: {b['total']} total = {b['kept']} kept + {b['repaired']} repaired + {b['dropped']} dropped")
        lines = self.lines()
        if lines:
            out.append(f"problems ({sum(self.counts.values())}):")
            out += [f"  {line}" for line in lines]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "box_counts": {k: self.boxes.get(k, 0) for k in ("total", "kept", "repaired", "dropped")},
            "problems": {
                reason: {
                    "count": n,
                    "what": REASONS[reason][0],
                    "action": REASONS[reason][1],
                    "examples": self.examples.get(reason, []),
                }
                for reason, n in sorted(self.counts.items())
            },
            "errors": list(self.errors),
        }


@dataclass(slots=True)
class Box:
    """A box in absolute pixel-edge coordinates: x0 <= x1, 0 <= x0, x1 <= width."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    iscrowd: bool = False
    ignore: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)  # read-only: readers may share one dict between boxes
    area: float | None = None  # source area (a mask area for COCO) when the box is unchanged
    segmentation: Any = None
    repaired: bool = False

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def box_area(self) -> float:
        return self.width * self.height


@dataclass
class ImageRecord:
    source: Path  # the file to link or copy
    file_name: str  # path relative to the output images/ folder
    width: int
    height: int
    mode: str
    boxes: list[Box]
    origin: str  # where it was declared, for messages
    split: str | None = None  # split given by the source (ImageSets, a train/val/test file)
    orientation: int = 1  # EXIF orientation; width/height and boxes are already in the shown frame


@dataclass
class Dataset:
    images: list[ImageRecord]
    classes: list[str]
    problems: Problems
    source: str

    @property
    def num_boxes(self) -> int:
        return sum(len(im.boxes) for im in self.images)


def fix_box(
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    *,
    width: int,
    height: int,
    problems: Problems,
    where: str,
) -> tuple[float, float, float, float] | None:
    """Validate one box against its image; repair or drop it and count what happened.

    Returns the repaired corners, or None when the box is dropped.
    """
    if 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height:  # the common case, first (NaN fails it)
        problems.count_box("kept")
        return x0, y0, x1, y1
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        problems.add("box_bad_coords", where)
        problems.count_box("dropped")
        return None
    repaired = False
    if x0 > x1 or y0 > y1:
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        problems.add("box_inverted", where)
        repaired = True
    if x0 == x1 or y0 == y1:
        problems.add("box_zero_area", where)
        problems.count_box("dropped")
        return None
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        if cx0 >= cx1 or cy0 >= cy1:
            problems.add("box_outside", where)
            problems.count_box("dropped")
            return None
        problems.add("box_clipped", where)
        repaired = True
    problems.count_box("repaired" if repaired else "kept")
    return cx0, cy0, cx1, cy1


def image_frame(info: ImageInfo, declared: tuple[Any, Any], problems: Problems, where: str) -> tuple[int, int, int]:
    """(width, height, turn) of an image as the loaders show it (EXIF orientation applied).

    `declared` is the annotation's (width, height), None where absent. When it is the stored
    size of an image EXIF rotates by 90°, the boxes were drawn on the stored pixels: `turn` is
    then the orientation that `orient_box` applies to them (1: boxes are already shown-frame).
    A size that cannot tell (a flip or 180°, no size given) is reported, never guessed silently.
    """
    shown = info.shown_size
    stored = (info.width, info.height)
    try:
        size = None if declared[0] in (None, "") or declared[1] in (None, "") else (float(declared[0]), float(declared[1]))
    except (TypeError, ValueError):
        size = (math.nan, math.nan)
    if info.orientation == 1:
        if size is not None and size != stored:
            problems.add("image_size_mismatch", f"{where}: annotation {declared[0]}x{declared[1]}, image {stored[0]}x{stored[1]}")
        return stored[0], stored[1], 1
    if info.orientation >= 5 and size == stored:
        problems.add("image_exif_stored_frame", f"{where}: EXIF orientation {info.orientation}, annotation {stored[0]}x{stored[1]}")
        return shown[0], shown[1], info.orientation
    if size is not None and size != shown:
        problems.add(
            "image_size_mismatch", f"{where}: annotation {declared[0]}x{declared[1]}, image {shown[0]}x{shown[1]} shown"
        )
    elif info.orientation < 5 or size is None:
        problems.add("image_exif_ambiguous", f"{where}: EXIF orientation {info.orientation}")
    return shown[0], shown[1], 1


def orient_box(corners: list[float], turn: int, width: int, height: int) -> list[float]:
    """Corners [x0, y0, x1, y1] drawn on the stored pixels (width x height) moved to the frame PIL's
    ImageOps.exif_transpose shows for EXIF orientation `turn`."""
    if turn == 1 or not all(math.isfinite(v) for v in corners):
        return corners  # fix_box reports bad coordinates
    x0, y0, x1, y1 = corners
    w, h = width, height
    points = {
        1: lambda x, y: (x, y),
        2: lambda x, y: (w - x, y),
        3: lambda x, y: (w - x, h - y),
        4: lambda x, y: (x, h - y),
        5: lambda x, y: (y, x),
        6: lambda x, y: (h - y, x),
        7: lambda x, y: (h - y, w - x),
        8: lambda x, y: (y, w - x),
    }[turn]
    (ax, ay), (bx, by) = points(x0, y0), points(x1, y1)
    return [min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)]


def check_image_mode(image: ImageRecord, problems: Problems) -> None:
    check_mode(image.mode, image.origin, problems)


def check_mode(mode: str, where: str, problems: Problems) -> None:
    if mode in ("L", "LA", "1", "I;16", "I", "F"):
        problems.add("image_greyscale", where)
    elif mode == "CMYK":
        problems.add("image_cmyk", where)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while 100k+ small long-lived objects (boxes, their json) are made: its
    collections find nothing to free and made coco_dict ~3x slower on 137k boxes. On leaving,
    what was made is moved to the oldest generation (freeze, then unfreeze: no traversal), so the
    next young collection does not walk it all (~0.15 s for 137k boxes); only a full one will."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def accept_label(label: str, classes: list[str] | None, problems: Problems, where: str) -> bool:
    """False (and the box counted as dropped) when --classes is given and lacks this label."""
    if classes is None or label in classes:
        return True
    problems.add("box_unknown_class", f"{where}: {label!r}")
    problems.count_box("dropped")
    return False


def final_classes(
    images: list[ImageRecord],
    classes: list[str] | None,
    problems: Problems,
    *,
    order: list[str] | None = None,
) -> list[str]:
    """The class map: --classes order when given (reporting names with no box), else the
    names that have boxes, in the source's `order` (COCO category ids) or sorted (VOC).
    Names differing only by case are reported."""
    present = {box.label for image in images for box in image.boxes}
    if classes is None:
        result = [name for name in order if name in present] if order else sorted(present)
    else:
        for name in classes:
            if name not in present:
                problems.add("class_without_boxes", name)
        result = list(classes)
    report_case_variants(result, problems)
    return result


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def parse_flag(value: Any) -> bool | None:
    """A boolean as tools write it (true/false, 0/1, "0"/"1", "true"/"false", "yes"/"no", any case);
    None for anything else, which the caller refuses: bool("0") and bool("false") are True."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        try:
            number = float(text)
        except ValueError:
            return None
        return bool(number) if number in (0, 1) else None
    return None


def report_case_variants(classes: list[str], problems: Problems) -> None:
    """Names equal but for case (RBC, rbc) are two classes to a detector; say so once per group."""
    groups: dict[str, list[str]] = {}
    for name in classes:
        groups.setdefault(name.casefold(), []).append(name)
    for names in groups.values():
        if len(names) > 1:
            problems.add("class_case_variants", " / ".join(repr(n) for n in names))


def parse_classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise DatasetError("--classes is empty: give class names separated by commas, e.g. --classes RBC,WBC")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetError(f"--classes names {', '.join(dupes)} more than once: give each class once")
    return names

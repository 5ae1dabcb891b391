"""SageMaker input formats: RecordIO for the built-in Object Detection algorithm and the
JumpStart fine-tuning layout. Each has a plan step (pure: decides and counts every drop)
and a write step, so --strict can refuse before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odorch.converters.coco import place_image, upright_rgb_bytes
from odorch.converters.dataset import Dataset, ImageRecord
from odorch.converters.fsutil import atomic_write_bytes, atomic_write_json

HEADER_WIDTH = 2
LABEL_WIDTH = 5  # cls, xmin, ymin, xmax, ymax


def usable_boxes(dataset: Dataset, *, fmt: str) -> list[tuple[ImageRecord, list[Any]]]:
    """Images with the boxes the format can express: crowd boxes and images left without
    boxes are dropped and counted (neither SageMaker format has a way to say 'ignore')."""
    out = []
    for image in dataset.images:
        boxes = []
        for box in image.boxes:
            if box.iscrowd:
                dataset.problems.drop_box(box, "box_crowd", f"{image.origin} ({fmt})")
            else:
                boxes.append(box)
        if boxes:
            out.append((image, boxes))
        else:
            dataset.problems.add("image_without_boxes", f"{image.origin} ({fmt})")
    return out


def detection_labels(image: ImageRecord, boxes: list[Any], classes: list[str]) -> list[float]:
    """[2, 5, cls, xmin, ymin, xmax, ymax, ...] with 0-based classes and coordinates in [0, 1]."""
    labels: list[float] = [HEADER_WIDTH, LABEL_WIDTH]
    for box in boxes:
        labels += [
            classes.index(box.label),
            box.x0 / image.width,
            box.y0 / image.height,
            box.x1 / image.width,
            box.y1 / image.height,
        ]
    return labels


def _image_bytes(image: ImageRecord, resize: int | None) -> bytes:
    """The file's bytes unchanged, or re-encoded as JPEG (CMYK, --resize to a longer side, or an
    EXIF orientation, which the built-in algorithm's decoder does not apply)."""
    if resize is None and image.mode != "CMYK" and image.orientation == 1:
        return image.source.read_bytes()
    return upright_rgb_bytes(image, resize=resize, fmt="JPEG")


def write_recordio(
    dataset: Dataset, planned: list[tuple[ImageRecord, list[Any]]], out: Path, *, name: str, resize: int | None = None
) -> dict[str, Any]:
    """NAME.rec + NAME.idx (RecordIO) and NAME.lst (im2rec's text list) under out/,
    for the images `usable_boxes` planned."""
    from odorch.converters.recordio import RecordWriter, pack_detection

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lst_lines = []
    with RecordWriter(out / f"{name}.rec", out / f"{name}.idx") as writer:
        for key, (image, boxes) in enumerate(planned):
            labels = detection_labels(image, boxes, dataset.classes)
            writer.write(key, pack_detection(key, labels, _image_bytes(image, resize)))
            fields = [str(key)] + [_num(v) for v in labels] + [image.file_name]
            lst_lines.append("\t".join(fields) + "\n")
    atomic_write_bytes(out / f"{name}.lst", "".join(lst_lines).encode())
    max_boxes = max((len(boxes) for _, boxes in planned), default=0)
    result = {
        "rec": str(out / f"{name}.rec"),
        "records": len(planned),
        "boxes": sum(len(boxes) for _, boxes in planned),
        "max_boxes": max_boxes,
        "label_width": HEADER_WIDTH + LABEL_WIDTH * max_boxes,
        "classes": dataset.classes,
    }
    atomic_write_json(out / f"{name}.json", result, indent=2)
    return result


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"


def write_jumpstart(dataset: Dataset, planned: list[tuple[ImageRecord, list[Any]]], out: Path) -> dict[str, Any]:
    """OUT/images/ + OUT/annotations.json with pixel [xmin, ymin, xmax, ymax] boxes and
    0-based category ids, the layout JumpStart's object-detection fine-tuning reads."""
    out = Path(out)
    images, annotations = [], []
    for image_id, (image, boxes) in enumerate(planned):
        place_image(image, out / "images", upright=True)  # JumpStart's scripts are not known to apply EXIF
        images.append({"file_name": image.file_name, "height": image.height, "width": image.width, "id": image_id})
        for box in boxes:
            annotations.append(
                {
                    "image_id": image_id,
                    "bbox": [round(v, 3) for v in (box.x0, box.y0, box.x1, box.y1)],
                    "category_id": dataset.classes.index(box.label),
                }
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(dataset.classes)]
    atomic_write_json(out / "annotations.json", {"images": images, "annotations": annotations, "categories": categories})
    return {"images": len(images), "boxes": len(annotations)}

"""`odorch convert`, `odorch inspect` and `odorch demo-data`: datasets in, COCO layout out."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _fail_on_dataset_error(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a DatasetError's problem report before its message."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from odorch.converters.dataset import DatasetError

        try:
            return func(*args, **kwargs)
        except DatasetError as e:
            if e.problems is not None:
                print_problems(e.problems, err=True)
            raise  # odorch.cli's handler prints it

    return wrapper


def print_problems(problems: Any, *, err: bool = False) -> None:
    for line in problems.report_lines():
        click.echo(line, err=err)


def _finish(dataset: Any, *, strict: bool) -> None:
    print_problems(dataset.problems)
    dataset.problems.raise_if_unusable(strict=strict)


def _parsed_by(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback that checks an option before any data is read."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        from odorch.converters.dataset import DatasetError

        if value is None:
            return None
        try:
            return parse(value)
        except DatasetError as e:
            raise click.BadParameter(str(e)) from e

    return callback


def _ratios(text: str) -> dict[str, float] | str:
    from odorch.converters.split import parse_ratios

    return "source" if text.strip().lower() == "source" else parse_ratios(text)


def _classes(text: str) -> list[str] | None:
    from odorch.converters.dataset import parse_classes

    return parse_classes(text)


_split_options = [
    click.option(
        "--split",
        metavar="TRAIN,VAL,TEST|source",
        callback=_parsed_by(_ratios),
        help="Seeded split stratified over classes, e.g. 0.64,0.16,0.20 (two numbers: train,val); "
        "'source': the split the data declares (train/val/test folders or files, ImageSets).",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of --split."),
    click.option(
        "--classes", metavar="A,B,C", callback=_parsed_by(_classes), help="Class map in this order; boxes of other classes are dropped and counted."
    ),
    click.option("--strict", is_flag=True, help="Treat every repaired or dropped item as an error."),
]


def split_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_split_options):
        func = option(func)
    return func



@click.group()
def convert() -> None:
    """Validate, split and convert datasets (VOC, COCO, YOLO, CVAT, Label Studio, LabelMe, Ground Truth
    -> COCO layout; COCO -> YOLO, RecordIO, JumpStart)."""


@convert.command("voc2coco")
@click.argument("voc_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--imagesets", is_flag=True, help="Use ImageSets/Main/{train,val,test}.txt as the split.")
@click.option(
    "--images",
    "images_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder holding images, searched after the ones beside each XML (repeatable).",
)
@click.option(
    "--annotations",
    "annotations_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Read the .xml files under this folder (repeatable; default: every .xml under VOC_ROOT).",
)
@split_options
@_fail_on_dataset_error
def voc2coco(
    voc_root: Path,
    out: Path,
    imagesets: bool,
    images_dirs: tuple[Path, ...],
    annotations_dirs: tuple[Path, ...],
    split: dict[str, float] | None,
    seed: int,
    classes: list[str] | None,
    strict: bool,
) -> None:
    """Convert a Pascal VOC dataset to OUT/annotations/<split>.json + OUT/images/.

    Every .xml under VOC_ROOT is read, at any depth and in any folder name; each image is
    found by <filename>, <path> or the XML's name, beside the XML, in an image folder near it,
    or in --images. Without --split or --imagesets everything goes to OUT/annotations/all.json,
    unless every XML lies under a train/val/test folder: then those splits are kept.
    """
    from odorch.converters.coco import convert_dataset
    from odorch.converters.voc import read_voc

    if imagesets and split not in (None, "source"):
        raise click.UsageError("give --split or --imagesets, not both")
    imagesets = imagesets or (split == "source" and (voc_root / "ImageSets" / "Main").is_dir())
    dataset = read_voc(
        voc_root,
        classes=classes,
        imagesets=imagesets,
        images_dirs=list(images_dirs),
        annotations_dirs=list(annotations_dirs),
    )
    convert_dataset(dataset, out, what=f"{voc_root} (Pascal VOC)", split=split, seed=seed, strict=strict,
                    command="convert voc2coco", echo=click.echo)


@convert.command("coco2coco")
@click.argument("coco_json", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--images",
    "images_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Image folder: once for all files or once per file (default: found beside each json).",
)
@split_options
@_fail_on_dataset_error
def coco2coco(
    coco_json: tuple[Path, ...],
    out: Path,
    images_dirs: tuple[Path, ...],
    split: dict[str, float] | None,
    seed: int,
    classes: list[str] | None,
    strict: bool,
) -> None:
    """Normalize one or more COCO files (Roboflow, sparse ids, unused categories) into the
    odorch layout: one class map by name with ids 1..K.

    Files named for a split (train, valid, test) keep it unless --split re-splits them all.
    """
    from odorch.converters.coco import read_coco

    dataset = read_coco(list(coco_json), images_dirs=list(images_dirs), classes=classes)
    _to_coco(dataset, f"{len(coco_json)} COCO file(s)", out, split, seed, strict, "convert coco2coco")


@convert.command("coco2rec")
@click.argument("coco_json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Image folder (default: found beside the json).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--resize", type=int, metavar="PIXELS", help="Re-encode images as JPEG with this longer side.")
@click.option("--strict", is_flag=True, help="Treat every repaired or dropped item as an error.")
@_fail_on_dataset_error
def coco2rec(coco_json: Path, images_dir: Path | None, out: Path, resize: int | None, strict: bool) -> None:
    """Write NAME.rec/.idx/.lst for the SageMaker built-in Object Detection algorithm."""
    from odorch.converters.coco import read_coco
    from odorch.converters.sagemaker_formats import usable_boxes, write_recordio

    dataset = read_coco([coco_json], images_dirs=[images_dir] if images_dir else None)
    planned = usable_boxes(dataset, fmt="RecordIO")
    _finish(dataset, strict=strict)
    result = write_recordio(dataset, planned, out, name=coco_json.stem, resize=resize)
    click.echo(f"wrote {result['rec']} ({result['records']} images, {result['boxes']} boxes) + .idx + .lst")
    click.echo(
        f"label_width: {result['label_width']} (2 + 5 × {result['max_boxes']} boxes in the busiest image); "
        f"pass it to the training job (the algorithm's default is 350)"
    )


@convert.command("coco2jumpstart")
@click.argument("coco_json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Image folder (default: found beside the json).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--strict", is_flag=True, help="Treat every repaired or dropped item as an error.")
@_fail_on_dataset_error
def coco2jumpstart(coco_json: Path, images_dir: Path | None, out: Path, strict: bool) -> None:
    """Write OUT/images/ + OUT/annotations.json for SageMaker JumpStart fine-tuning."""
    from odorch.converters.coco import read_coco
    from odorch.converters.sagemaker_formats import usable_boxes, write_jumpstart

    dataset = read_coco([coco_json], images_dirs=[images_dir] if images_dir else None)
    planned = usable_boxes(dataset, fmt="JumpStart")
    _finish(dataset, strict=strict)
    result = write_jumpstart(dataset, planned, out)
    click.echo(f"wrote {out / 'annotations.json'}: {result['images']} images, {result['boxes']} boxes")


def _to_coco(dataset: Any, what: str, out: Path, split: Any, seed: int, strict: bool, command: str) -> None:
    from odorch.converters.coco import convert_dataset

    convert_dataset(dataset, out, what=what, split=split, seed=seed, strict=strict, command=command, echo=click.echo)


_out_option = click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
_images_option = click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder holding the images the annotations name (default: beside the annotation file).",
)
_label_attribute_option = click.option(
    "--label-attribute", help="Ground Truth: the manifest key of the labeling job's answer (when there are several)."
)


def _reader_command(name: str, module: str, title: str, *, src: click.Path, doc: str,
                    options: tuple[Callable[..., Any], ...] = (_images_option,)) -> click.Command:
    """`odorch convert NAME SRC --out DIR`: SRC read by odorch.converters.MODULE's read_MODULE (given
    --classes and the command's own OPTIONS), written in the COCO layout. The label-tool formats
    differ only in these."""

    def command(src: Path, out: Path, split: Any, seed: int, classes: list[str] | None, strict: bool,
                **reader_options: Any) -> None:
        import importlib

        read = getattr(importlib.import_module(f"odorch.converters.{module}"), f"read_{module}")
        _to_coco(read(src, classes=classes, **reader_options), f"{src} ({title})", out, split, seed, strict,
                 f"convert {name}")

    command.__doc__ = doc
    for decorator in reversed([click.argument("src", type=src), _out_option, *options, split_options,
                               _fail_on_dataset_error]):
        command = decorator(command)
    return convert.command(name)(command)


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_FILE_OR_FOLDER = click.Path(exists=True, path_type=Path)
yolo2coco = _reader_command("yolo2coco", "yolo", "YOLO", src=_FILE_OR_FOLDER, options=(), doc="""\
    Convert a YOLO dataset (its folder with data.yaml or classes.txt, or the data.yaml) to the COCO layout.

    Images and labels in Ultralytics' layouts (images/<split>/ + labels/<split>/, <split>/images/ +
    <split>/labels/) or side by side; the splits of data.yaml or of train/val/test folders are kept.
    """)
cvat2coco = _reader_command("cvat2coco", "cvat", "CVAT for images", src=_FILE_OR_FOLDER, doc=(
    "Convert a CVAT for images 1.1 XML (the file, or the export folder holding annotations.xml)."))
labelstudio2coco = _reader_command("labelstudio2coco", "labelstudio", "Label Studio", src=_FILE, doc=(
    "Convert a Label Studio JSON or JSON-MIN export (rectangle labels) to the COCO layout."))
labelme2coco = _reader_command("labelme2coco", "labelme", "LabelMe", src=_FILE_OR_FOLDER, doc=(
    "Convert a folder of LabelMe JSON files (rectangles; other shapes are counted and skipped)."))
groundtruth2coco = _reader_command(
    "groundtruth2coco", "groundtruth", "Ground Truth", src=_FILE, options=(_images_option, _label_attribute_option),
    doc="Convert a SageMaker Ground Truth bounding-box output manifest; s3:// images are found in --images.")


@convert.command("auto")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@_out_option
@click.option(
    "--images",
    "images_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder holding the images the annotations name (default: found beside them).",
)
@_label_attribute_option
@split_options
@_fail_on_dataset_error
def auto(
    src: Path, out: Path, images_dirs: tuple[Path, ...], label_attribute: str | None, split: Any, seed: int,
    classes: list[str] | None, strict: bool,
) -> None:  # fmt: skip
    """Detect the format of SRC (a dataset folder or annotation file), say what it is, and convert it.

    Knows Pascal VOC, COCO, YOLO, CVAT for images, Label Studio, LabelMe and Ground Truth manifests.
    """
    from odorch.converters.detect import detect, read_detected

    found = detect(src)
    click.echo(f"detected: {found.describe()} at {found.path}")
    dataset = read_detected(found, images_dirs=list(images_dirs), classes=classes, label_attribute=label_attribute)
    _to_coco(dataset, str(found.path), out, split, seed, strict, f"convert auto ({found.format})")


@convert.command("coco2yolo")
@click.argument("src", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@_out_option
@click.option(
    "--images",
    "images_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Image folder: once for all files or once per file (default: found beside each json).",
)
@split_options
@_fail_on_dataset_error
def coco2yolo(
    src: tuple[Path, ...], out: Path, images_dirs: tuple[Path, ...], split: Any, seed: int,
    classes: list[str] | None, strict: bool,
) -> None:  # fmt: skip
    """Write an Ultralytics YOLO dataset (OUT/data.yaml, OUT/images/<split>/, OUT/labels/<split>/)
    from COCO json files or a converted odorch folder.

    Files named for a split (train, val, test) keep it unless --split re-splits them all.
    """
    from odorch.converters.coco import read_coco
    from odorch.converters.inspect import read_any
    from odorch.converters.split import choose_splits
    from odorch.converters.yolo import drop_crowd, write_yolo

    if len(src) == 1 and src[0].is_dir():
        dataset = read_any(src[0], classes=classes, images_dirs=list(images_dirs) or None)
    else:
        dataset = read_coco(list(src), images_dirs=list(images_dirs), classes=classes)
    click.echo(f"read {len(dataset.images)} images, {dataset.num_boxes} boxes from {dataset.source}")
    splits = choose_splits(dataset.images, split, seed=seed, problems=dataset.problems)
    drop_crowd(dataset)
    _finish(dataset, strict=strict)
    result = write_yolo(dataset, out, splits)
    click.echo(f"classes ({len(result['classes'])}, class ids 0..{len(result['classes']) - 1}): {', '.join(result['classes'])}")
    for name, s in result["splits"].items():
        folder = out / "images" if result["flat"] else out / "images" / name
        click.echo(f"wrote {folder}: {s['images']} images, {s['boxes']} boxes")
    click.echo(f"wrote {out / 'data.yaml'}")


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option(
    "--images",
    "images_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder holding the images the annotations name (default: found beside them).",
)
@_fail_on_dataset_error
def inspect_cmd(path: Path, as_json: bool, images_dirs: tuple[Path, ...]) -> None:
    """Statistics and problems of a dataset in any format `convert auto` reads, or a converted folder."""
    from odorch.converters.inspect import dataset_stats, inspect_lines, read_any

    dataset = read_any(path, images_dirs=list(images_dirs) or None)
    if as_json:
        click.echo(json.dumps(dataset_stats(dataset), indent=2))
        return
    for line in inspect_lines(dataset):
        click.echo(line)


@click.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", type=click.IntRange(1), default=200, show_default=True)
@click.option("--classes", type=click.IntRange(1, 8), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-size", type=click.IntRange(32, 4096), default=256, show_default=True, help="Image width and height.")
def demo_data(out: Path, images: int, classes: int, seed: int, image_size: int) -> None:
    """Make a synthetic Pascal VOC dataset (shapes on textures) to try everything with no data."""
    from odorch.converters.demo import describe_demo, make_demo_voc

    click.echo(describe_demo(make_demo_voc(out, images=images, classes=classes, seed=seed, image_size=image_size)))

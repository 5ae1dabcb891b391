"""`odorch convert`, `odorch inspect` and `odorch demo-data`: datasets in, COCO layout out."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _fail_on_dataset_error(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DatasetError into its problem report and a non-zero exit, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from odorch.converters.dataset import DatasetError

        try:
            return func(*args, **kwargs)
        except DatasetError as e:
            if e.problems is not None:
                print_problems(e.problems, err=True)
            click.echo(f"error: {e}", err=True)
            sys.exit(1)

    return wrapper


def print_problems(problems: Any, *, err: bool = False) -> None:
    b = problems.boxes
    if b.get("total"):
        click.echo(
            f"boxes: {b['total']} total = {b['kept']} kept + {b['repaired']} repaired + {b['dropped']} dropped",
            err=err,
        )
    lines = problems.lines()
    if lines:
        click.echo(f"problems ({sum(problems.counts.values())}):", err=err)
        for line in lines:
            click.echo(f"  {line}", err=err)


def _finish(dataset: Any, *, strict: bool) -> None:
    print_problems(dataset.problems)
    dataset.problems.raise_if_unusable(strict=strict)


def _choose_splits(dataset: Any, split: dict[str, float] | None, seed: int) -> dict[str, list[Any]]:
    from odorch.converters.split import source_splits, stratified_split

    if split is None:
        return source_splits(dataset.images)
    return stratified_split(dataset.images, split, seed=seed, problems=dataset.problems)


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


def _ratios(text: str) -> dict[str, float]:
    from odorch.converters.split import parse_ratios

    return parse_ratios(text)


def _classes(text: str) -> list[str] | None:
    from odorch.converters.dataset import parse_classes

    return parse_classes(text)


def _print_written(out: Path, summary: dict[str, Any]) -> None:
    classes = summary["classes"]
    click.echo(f"classes ({len(classes)}, category ids 1..{len(classes)}): {', '.join(classes)}")
    for name, s in summary["splits"].items():
        click.echo(f"wrote {out / 'annotations' / (name + '.json')}: {s['images']} images, {s['boxes']} boxes")


_split_options = [
    click.option(
        "--split",
        metavar="TRAIN,VAL,TEST",
        callback=_parsed_by(_ratios),
        help="Seeded split stratified over classes, e.g. 0.64,0.16,0.20 (two numbers: train,val).",
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
    """Validate, split and convert datasets (VOC, COCO -> COCO layout, RecordIO, JumpStart)."""


@convert.command("voc2coco")
@click.argument("voc_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--imagesets", is_flag=True, help="Use ImageSets/Main/{train,val,test}.txt as the split.")
@split_options
@_fail_on_dataset_error
def voc2coco(
    voc_root: Path,
    out: Path,
    imagesets: bool,
    split: dict[str, float] | None,
    seed: int,
    classes: list[str] | None,
    strict: bool,
) -> None:
    """Convert a Pascal VOC dataset to OUT/annotations/<split>.json + OUT/images/.

    Without --split or --imagesets everything goes to OUT/annotations/all.json.
    """
    from odorch.converters.coco import write_layout
    from odorch.converters.voc import read_voc

    if imagesets and split:
        raise click.UsageError("give --split or --imagesets, not both")
    dataset = read_voc(voc_root, classes=classes, imagesets=imagesets)
    click.echo(f"read {len(dataset.images)} images, {dataset.num_boxes} boxes from {voc_root} (Pascal VOC)")
    splits = _choose_splits(dataset, split, seed)
    _finish(dataset, strict=strict)
    _print_written(out, write_layout(dataset, out, splits, command="convert voc2coco"))


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
    from odorch.converters.coco import read_coco, write_layout

    dataset = read_coco(list(coco_json), images_dirs=list(images_dirs), classes=classes)
    click.echo(f"read {len(dataset.images)} images, {dataset.num_boxes} boxes from {len(coco_json)} COCO file(s)")
    splits = _choose_splits(dataset, split, seed)
    _finish(dataset, strict=strict)
    _print_written(out, write_layout(dataset, out, splits, command="convert coco2coco"))


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


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@_fail_on_dataset_error
def inspect_cmd(path: Path, as_json: bool) -> None:
    """Statistics and problems of a VOC root, a COCO json or a converted folder."""
    from odorch.converters.inspect import dataset_stats, format_stats, read_any

    dataset = read_any(path)
    stats = dataset_stats(dataset)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    for line in format_stats(stats):
        click.echo(line)
    click.echo("")
    print_problems(dataset.problems)
    if not dataset.problems.counts:
        click.echo("no problems found")


@click.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", type=click.IntRange(1), default=200, show_default=True)
@click.option("--classes", type=click.IntRange(1, 8), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-size", type=click.IntRange(32, 4096), default=256, show_default=True, help="Image width and height.")
def demo_data(out: Path, images: int, classes: int, seed: int, image_size: int) -> None:
    """Make a synthetic Pascal VOC dataset (shapes on textures) to try everything with no data."""
    from odorch.converters.demo import make_demo_voc

    info = make_demo_voc(out, images=images, classes=classes, seed=seed, image_size=image_size)
    click.echo(
        f"wrote {info['images']} images, {info['objects']} boxes, classes {', '.join(info['classes'])} to {out} "
        f"(Pascal VOC; {info['greyscale']} greyscale, {info['png']} PNG, {info['empty']} without boxes)"
    )

"""The `odorch` command line. Heavy imports (torch, PIL, numpy) stay inside the commands
so that `odorch --help` starts fast."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrator import __version__


def _fail_on_dataset_error(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DatasetError into its problem report and a non-zero exit, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from converters.dataset import DatasetError

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
    from converters.split import source_splits, stratified_split

    if split is None:
        return source_splits(dataset.images)
    return stratified_split(dataset.images, split, seed=seed, problems=dataset.problems)


def _parsed_by(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback that checks an option before any data is read."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        from converters.dataset import DatasetError

        if value is None:
            return None
        try:
            return parse(value)
        except DatasetError as e:
            raise click.BadParameter(str(e)) from e

    return callback


def _ratios(text: str) -> dict[str, float]:
    from converters.split import parse_ratios

    return parse_ratios(text)


def _classes(text: str) -> list[str] | None:
    from converters.dataset import parse_classes

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="odorch")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Config file with defaults for any option (default: $ODORCH_CONFIG, else ./odorch.yaml if present).")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """odorch: fine-tune object detectors locally or on SageMaker, and find out which is best.

    Options of any command can be set in odorch.yaml (see `odorch config show`); flags win.
    """
    from orchestrator.config import default_map, find_config, read_config

    path = find_config(config_file)
    raw = read_config(path) if path else {}
    ctx.obj = {"config": path, "raw": raw}
    if path:
        ctx.default_map = default_map(raw, ctx.command, path)


@main.group("config")
def config_group() -> None:
    """Show the configuration in force (odorch.yaml merged with defaults and flags)."""


@config_group.command("show", context_settings={"ignore_unknown_options": True})
@click.argument("command_line", nargs=-1, type=click.UNPROCESSED, metavar="[COMMAND [OPTIONS...]]")
@click.pass_context
def config_show(ctx: click.Context, command_line: tuple[str, ...]) -> None:
    """Every option of COMMAND with its value and where it came from (config file, command line or
    default), e.g. `odorch config show train --epochs 3`; with no COMMAND, what the file sets."""
    from orchestrator.config import explain

    root = ctx.find_root()
    config, raw = root.obj["config"], root.obj["raw"]
    click.echo(f"config file: {config or 'none (no --config, $ODORCH_CONFIG or ./odorch.yaml)'}")
    if not command_line:
        for line in _config_lines(root.default_map or {}, []):
            click.echo(line)
        return
    parent, cmd, args = root, root.command, list(command_line)
    while isinstance(cmd, click.Group):
        if not args or args[0] not in cmd.commands:
            raise click.UsageError(f"{' '.join(command_line)}: name a command of odorch (e.g. train, tune, convert voc2coco)")
        name = args.pop(0)
        cmd = cmd.commands[name]
        if isinstance(cmd, click.Group):
            parent = click.Context(cmd, info_name=name, parent=parent)
    sub = cmd.make_context(name, args, parent=parent, resilient_parsing=True)
    rows = explain(sub, config, raw)
    widths = [max(len(row[i]) for row in rows) for i in (0, 1)]
    for option, value, where in rows:
        click.echo(f"  {option:<{widths[0]}}  {value:<{widths[1]}}  {where}")


def _config_lines(node: dict[str, Any], names: list[str]) -> list[str]:
    lines = []
    for key, value in node.items():
        if isinstance(value, dict):
            lines.extend(_config_lines(value, [*names, key]))
        else:
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            lines.append(f"  odorch {' '.join(names)} --{key.replace('_', '-')} {shown}")
    return lines


@main.group()
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
    from converters.coco import write_layout
    from converters.voc import read_voc

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
    from converters.coco import read_coco, write_layout

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
    from converters.coco import read_coco
    from converters.sagemaker_formats import usable_boxes, write_recordio

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
    from converters.coco import read_coco
    from converters.sagemaker_formats import usable_boxes, write_jumpstart

    dataset = read_coco([coco_json], images_dirs=[images_dir] if images_dir else None)
    planned = usable_boxes(dataset, fmt="JumpStart")
    _finish(dataset, strict=strict)
    result = write_jumpstart(dataset, planned, out)
    click.echo(f"wrote {out / 'annotations.json'}: {result['images']} images, {result['boxes']} boxes")


@main.command("inspect")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@_fail_on_dataset_error
def inspect_cmd(path: Path, as_json: bool) -> None:
    """Statistics and problems of a VOC root, a COCO json or a converted folder."""
    from converters.inspect import dataset_stats, format_stats, read_any

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


@main.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", type=click.IntRange(1), default=200, show_default=True)
@click.option("--classes", type=click.IntRange(1, 8), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-size", type=click.IntRange(32, 4096), default=256, show_default=True, help="Image width and height.")
def demo_data(out: Path, images: int, classes: int, seed: int, image_size: int) -> None:
    """Make a synthetic Pascal VOC dataset (shapes on textures) to try everything with no data."""
    from converters.demo import make_demo_voc

    info = make_demo_voc(out, images=images, classes=classes, seed=seed, image_size=image_size)
    click.echo(
        f"wrote {info['images']} images, {info['objects']} boxes, classes {', '.join(info['classes'])} to {out} "
        f"(Pascal VOC; {info['greyscale']} greyscale, {info['png']} PNG, {info['empty']} without boxes)"
    )


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("quickstart"), show_default=True,
              help="Folder for everything the tour makes (data, runs, report, export).")
@click.option("--fast", is_flag=True, help="A smoke run (~3 min): tiny data, 1-2 epochs per model.")
@click.option("--weights", default="none", show_default=True,
              help="Starting weights of every model: none (offline), coco or imagenet (downloaded by torchvision).")
@click.pass_context
def quickstart(ctx: click.Context, out: Path, fast: bool, weights: str) -> None:
    """The whole product in one command, on synthetic data, no GPU or AWS needed: demo data ->
    inspect -> convert -> train SSDlite and Faster R-CNN -> tune -> compare -> export the winner to
    OpenVINO INT8. Prints each step's odorch command; run it again to continue after a stop."""
    from orchestrator.quickstart import QuickstartError, closing_lines, make_plan, run_quickstart

    config = ctx.find_root().obj["config"]

    def invoke(args: list[str]) -> None:
        try:
            main.main(args=[*(["--config", str(config)] if config else []), *args], prog_name="odorch",
                      standalone_mode=False)
        except click.ClickException as e:
            raise QuickstartError(e.format_message()) from e
        except click.exceptions.Abort as e:
            raise QuickstartError("aborted") from e
        except SystemExit as e:
            if e.code not in (0, None):
                raise QuickstartError(f"exit status {e.code} (its error is printed above)") from e

    try:
        state = run_quickstart(out=out, plan=make_plan(fast=fast, weights=weights), invoke=invoke, echo=click.echo)
    except QuickstartError as e:
        raise click.ClickException(str(e)) from e
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: run `odorch quickstart --out {out}{' --fast' if fast else ''}` again to continue", err=True)
        sys.exit(130)
    for line in closing_lines(out, state):
        click.echo(line)


# ---------------------------------------------------------------- train / evaluate / predict

_runs_dir_option = click.option(
    "--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
    help="Folder holding one folder per job.",
)


def _with_shorthands(hp: dict[str, str], *, epochs: int | None, weights: str | None, local: bool) -> dict[str, str]:
    """--hp with --epochs/--weights folded in; for a local job a weights file given relative to
    here is made absolute (local jobs run in their own folder)."""
    out = dict(hp)
    if epochs is not None:
        out["epochs"] = str(epochs)
    if weights is not None:
        out["weights"] = weights
    value = out.get("weights")
    if local and value not in (None, "coco", "imagenet", "none") and Path(value).exists():
        out["weights"] = str(Path(value).resolve())
    return out


def _parse_hp(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """KEY=VALUE items as a dict; --hp flags add to (and win over) the config file's hp."""
    from click.core import ParameterSource

    out = {}
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        values = (*(ctx.lookup_default(param.name, call=False) or ()), *values)
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: write key=value, e.g. --hp lr=0.01")
        out[key.strip()] = value.strip()
    return out


@main.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert` (annotations/train.json, val.json + images/).")
@click.option("--model", default="ssdlite320_mobilenet_v3_large", show_default=True, help="torchvision detector.")
@click.option("--job-name", help="Name of the job folder under --runs-dir (default: MODEL-TIMESTAMP).")
@click.option("--epochs", type=click.IntRange(1), help="Shorthand for --hp epochs=N.")
@click.option("--weights", help="coco | imagenet | none | PATH (shorthand for --hp weights=...; default coco).")
@click.option("--hp", "hp", multiple=True, callback=_parse_hp, metavar="KEY=VALUE", help="Hyperparameter (repeatable).")
@_runs_dir_option
@click.option("--instance", metavar="TYPE", help="Train on SageMaker on this instance type (e.g. ml.g5.xlarge) instead of locally.")
@click.option("--bucket", help="S3 bucket for data, code and models (SageMaker).")
@click.option("--role", help="IAM role ARN SageMaker assumes (SageMaker).")
@click.option("--region", help="AWS region (default: boto3's, e.g. AWS_DEFAULT_REGION).")
@click.option("--spot", is_flag=True, help="Managed spot training (checkpoints resume after interruptions).")
@click.option("--max-wait", type=click.IntRange(1), metavar="S", help="Spot: seconds to wait for capacity + run (>= --max-run; default 2 × --max-run).")
@click.option("--max-run", type=click.IntRange(1), default=86400, show_default=True, metavar="S", help="SageMaker: max training seconds.")
@click.option("--instance-count", type=click.IntRange(1), default=1, show_default=True, help="SageMaker: number of instances.")
@click.option("--algorithm", type=click.Choice(["pytorch", "builtin-od"]), default="pytorch", show_default=True,
              help="pytorch: odorch's entrypoint; builtin-od: SageMaker's built-in Object Detection algorithm "
                   "(needs --instance; RecordIO channels made from --data; --hp takes its hyperparameters).")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True,
              help="Without --instance: run in this Python (local) or inside the training image under Docker, "
                   "with the job folder mounted as SageMaker's /opt/ml (SageMaker's local mode, without the SDK).")
@click.option("--image", default="odorch-train", show_default=True, metavar="IMAGE",
              help="--backend docker: the image built from infra/Dockerfile (see infra/README.md).")
def train(
    data: Path, model: str, job_name: str | None, epochs: int | None, weights: str | None, hp: dict[str, str], runs_dir: Path,
    instance: str | None = None, bucket: str | None = None, role: str | None = None, region: str | None = None,
    spot: bool = False, max_wait: int | None = None, max_run: int = 86400, instance_count: int = 1,
    algorithm: str = "pytorch", backend: str = "local", image: str = "odorch-train",
) -> None:
    """Fine-tune a detector locally through the same entrypoint a SageMaker job runs
    (--backend docker: inside the training image; with --instance: as a SageMaker training job).

    Re-running a local job that failed or was stopped resumes it from its last checkpoint.
    """
    import time

    import entrypoints
    from entrypoints.train import TrainingError, parse_hyperparameters
    from orchestrator.jobs import JobError
    from orchestrator.local import docker_available, run_local_job

    if backend == "docker" and (instance is not None or algorithm != "pytorch"):
        raise click.UsageError("--backend docker runs a local job: leave out --instance and --algorithm")
    if backend == "docker" and (why := docker_available()):
        click.echo(f"error: --backend docker needs a Docker engine: {why}; use --backend local", err=True)
        sys.exit(1)
    if algorithm == "builtin-od":
        _train_builtin_od(data=data, job_name=job_name, epochs=epochs, weights=weights, hp=hp, runs_dir=runs_dir,
                          instance=instance, bucket=bucket, role=role, region=region, spot=spot, max_wait=max_wait,
                          max_run=max_run, instance_count=instance_count)
        return
    hyperparameters = {"model": model, **_with_shorthands(hp, epochs=epochs, weights=weights, local=instance is None)}
    try:
        parse_hyperparameters(hyperparameters)  # fail here, before a job folder exists
    except TrainingError as e:
        raise click.UsageError(str(e)) from e
    job_name = job_name or f"{model.replace('_', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    if instance is not None:
        _train_sagemaker(data=data, model=model, job_name=job_name, hyperparameters=hyperparameters, runs_dir=runs_dir,
                         instance=instance, bucket=bucket, role=role, region=region, spot=spot, max_wait=max_wait,
                         max_run=max_run, instance_count=instance_count)
        return
    given = [name for name, value in (("--bucket", bucket), ("--role", role), ("--region", region), ("--spot", spot),
                                      ("--max-wait", max_wait)) if value]
    if given or instance_count != 1:
        raise click.UsageError(f"{', '.join(given) or '--instance-count'} only apply to SageMaker jobs: add --instance TYPE")
    try:
        record = run_local_job(
            job_name=job_name,
            runs_dir=runs_dir,
            entrypoint=Path(entrypoints.__file__).parent / "train.py",
            channels={"train": data, "validation": data},
            hyperparameters=hyperparameters,
            model=model,
            image=image if backend == "docker" else None,
        )
    except JobError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"stopped: {runs_dir / job_name} keeps its checkpoint; run the same command to resume", err=True)
        sys.exit(130)
    best = (record.get("best") or {}).get("validation:mAP")
    if record["status"] != "Completed":
        click.echo(f"job {job_name} {record['status']}: {record.get('failure_reason') or ''}", err=True)
        sys.exit(1)
    click.echo(f"job {job_name} Completed in {_duration(record)}; best validation:mAP {best}")
    click.echo(f"model: {record['model_dir']}")
    click.echo(f"next: odorch evaluate {runs_dir / job_name} --data {data} --split test")


def _train_builtin_od(*, data: Path, job_name: str | None, epochs: int | None, weights: str | None, hp: dict[str, str],
                      runs_dir: Path, instance: str | None, **sagemaker: Any) -> None:
    """--algorithm builtin-od: SageMaker only, its own hyperparameters (checked in preflight)."""
    import time

    from orchestrator.builtin_od import hyperparameter_problems

    if instance is None:
        raise click.UsageError("--algorithm builtin-od runs only on SageMaker: add --instance TYPE (e.g. ml.p3.2xlarge)")
    if weights is not None:
        raise click.UsageError("--weights is for the PyTorch entrypoint; builtin-od takes --hp use_pretrained_model=0|1")
    hyperparameters = dict(hp)
    if epochs is not None:
        hyperparameters["epochs"] = str(epochs)
    problems = hyperparameter_problems(hyperparameters)
    if problems:
        raise click.UsageError("; ".join(problems))
    job_name = job_name or f"builtin-od-{time.strftime('%Y%m%d-%H%M%S')}"
    _train_sagemaker(data=data, model="builtin-od", job_name=job_name, hyperparameters=hyperparameters,
                     runs_dir=runs_dir, instance=instance, algorithm="builtin-od", **sagemaker)


def _train_sagemaker(*, data: Path, model: str, job_name: str, hyperparameters: dict[str, str], runs_dir: Path,
                     instance: str, bucket: str | None, role: str | None, region: str | None, spot: bool,
                     max_wait: int | None, max_run: int, instance_count: int, algorithm: str = "pytorch") -> None:
    from orchestrator.jobs import JobError
    from orchestrator.sagemaker import AwsClients, run_sagemaker_job

    missing = [name for name, value in (("--bucket", bucket), ("--role", role)) if not value]
    if missing:
        raise click.UsageError(f"a SageMaker job (--instance) needs {' and '.join(missing)}")
    try:
        record = run_sagemaker_job(
            AwsClients.from_env(region), job_name=job_name, runs_dir=runs_dir, data_dir=data, bucket=str(bucket),
            role_arn=str(role), hyperparameters=hyperparameters, model=model, instance_type=instance,
            instance_count=instance_count, spot=spot, max_run=max_run, max_wait=max_wait, echo=click.echo,
            algorithm=algorithm,
        )
    except JobError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the job record is {runs_dir / job_name / 'job.json'}", err=True)
        sys.exit(130)
    cost = record.get("estimated_cost_usd")
    billed = f"{record.get('billable_seconds')} s billed" + (f", about ${cost:.2f}" if cost is not None else "")
    if record["status"] != "Completed":
        reason = record.get("failure_reason") or record.get("stop_reason") or ""
        click.echo(f"job {job_name} {record['status']} ({billed}): {reason}", err=True)
        sys.exit(130 if record.get("stop_reason") == "interrupted (Ctrl-C)" else 1)
    if record.get("model_error"):
        click.echo(f"job {job_name} Completed but {record['model_error']}", err=True)
        sys.exit(1)
    best = (record.get("best") or {}).get("validation:mAP")
    click.echo(f"job {job_name} Completed on SageMaker ({billed}); best validation:mAP {best}")
    click.echo(f"model: {record['model_dir']}")
    if algorithm == "builtin-od":
        click.echo("the model is MXNet (built-in Object Detection): odorch evaluate/predict cannot load it locally")
        return
    click.echo(f"next: odorch evaluate {runs_dir / job_name} --data {data} --split test")


def _load_run(run: Path) -> tuple[Any, dict[str, Any], Path]:
    """(model, config, folder for outputs) from a job folder or a model folder/file."""
    from entrypoints.models import ModelError, load_trained

    model_path = run / "model" if (run / "model").is_dir() else run
    try:
        model, config = load_trained(model_path)
    except ModelError as e:
        raise click.ClickException(str(e)) from e
    return model, config, run if run.is_dir() else run.parent


@main.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert`.")
@click.option("--split", default="test", show_default=True, help="Which annotations/<split>.json to evaluate on.")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True,
              help="Images per forward pass; 1 gives exactly the numbers compare and serve get (batched convolutions round differently).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(run: Path, data: Path, split: str, batch_size: int, as_json: bool) -> None:
    """COCO mAP (the 12 COCO stats, per-class AP and AP50) of a trained model on a split.

    Writes RUN/eval-SPLIT.json. Difficult (ignore=1) boxes count as neither hit nor miss.
    """
    from orchestrator.evaluate import evaluate_model

    model, config, out_dir = _load_run(run)
    try:
        result = evaluate_model(model, config, data, split, batch_size=batch_size)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    from converters.fsutil import atomic_write_json
    from entrypoints.evaluation import format_table

    atomic_write_json(out_dir / f"eval-{split}.json", result, indent=2)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{config['model']} on {result['annotations']} ({result['images']} images)")
    for line in format_table(result):
        click.echo(line)
    click.echo(f"wrote {out_dir / f'eval-{split}.json'}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path), metavar="[RUN] IMAGES...")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for drawn images.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.3, show_default=True, help="Draw boxes above this score.")
@click.option("--endpoint", metavar="NAME", help="Ask this SageMaker endpoint (odorch deploy) instead of a local model; RUN is optional.")
@click.option("--region", help="AWS region of --endpoint (default: boto3's).")
def predict(paths: tuple[Path, ...], out: Path, min_score: float, endpoint: str | None = None, region: str | None = None) -> None:
    """Draw a trained model's boxes on images (OUT/<name>.png) and write OUT/predictions.json.

    RUN is a job folder (or model folder); with --endpoint the endpoint detects and RUN may be left out.
    """
    from converters.fsutil import atomic_write_json
    from entrypoints.predict import draw

    args = list(paths)
    if endpoint is not None:
        if args and args[0].is_dir():
            args = args[1:]
        images = args
    else:
        if len(args) < 2:
            raise click.UsageError("give RUN and at least one image (or --endpoint NAME and images)")
        run, images = args[0], args[1:]
    if not images:
        raise click.UsageError("give at least one image")
    bad = [str(p) for p in images if not p.is_file()]
    if bad:
        raise click.UsageError(f"not an image file: {', '.join(bad)}")
    if endpoint is not None:
        results, class_lists = _predict_endpoint(endpoint, images, region)
    else:
        from entrypoints.predict import detect_files

        model, config, _ = _load_run(run)
        results = detect_files(model, list(images))
        class_lists = [list(config["classes"])] * len(images)
    records = []
    for path, result, classes in zip(images, results, class_lists):
        drawn = draw(path, result, classes, out / f"{path.stem}.png", min_score=min_score)
        click.echo(f"{path}: {drawn} boxes ≥ {min_score} -> {out / (path.stem + '.png')}")
        records.append({
            "image": str(path),
            "detections": [
                {"box": box, "label": classes[label - 1], "score": score}
                for box, label, score in zip(result["boxes"], result["labels"], result["scores"])
            ],
        })  # fmt: skip
    atomic_write_json(out / "predictions.json", records, indent=2)


def _predict_endpoint(endpoint: str, images: list[Path], region: str | None) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Detections per image from the endpoint, and per image a class list indexed by label - 1
    (built from the response's labels and classes)."""
    from orchestrator.deploy import invoke_endpoint
    from orchestrator.sagemaker import AwsClients, SageMakerError

    try:
        clients = AwsClients.from_env(region)
        results, class_lists = [], []
        for path in images:
            pred = invoke_endpoint(clients, endpoint, path)["predictions"][0]
            classes = [str(i) for i in range(1, max(pred["labels"], default=0) + 1)]
            for label, name in zip(pred["labels"], pred["classes"]):
                classes[label - 1] = name
            results.append(pred)
            class_lists.append(classes)
    except (SageMakerError, KeyError, IndexError, TypeError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    return results, class_lists


# ---------------------------------------------------------------- serve / compare


@main.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than loopback lets the network call the model (no authentication).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: a free one, printed).")
@click.option("--max-body-mb", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="Refuse larger request bodies (413) without reading them.")
def serve(run: Path, host: str, port: int, max_body_mb: float) -> None:
    """Serve RUN's model on a local endpoint with SageMaker's contract: GET /ping, POST /invocations.

    RUN is a job folder, a model folder or an exported OpenVINO folder. Requests and responses are
    those of `odorch deploy`'s endpoint (same handler: entrypoints/inference.py). Ctrl-C stops it.
    """
    from entrypoints.models import ModelError
    from orchestrator.deploy import model_dir_of
    from orchestrator.serve import LOOPBACK, make_server

    if host not in LOOPBACK:
        click.echo(f"warning: listening on {host}: whoever reaches this machine can call the model (no authentication)",
                   err=True)
    try:
        server = make_server(model_dir_of(run), host=host, port=port, max_body_mb=max_body_mb)
    except ModelError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port} ({e.strerror or e}); "
                                   "choose another --port (0: a free one)") from e
    click.echo(f"serving {server.model['config']['model']} ({', '.join(server.model['classes'])}) from {run} on {server.url}")
    click.echo(f"try: curl -H 'Content-Type: image/jpeg' --data-binary @IMAGE.jpg {server.url}/invocations")
    click.echo("Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()


@main.command("compare")
@click.argument("candidates", nargs=-1, required=True, metavar="[NAME=]CANDIDATE...")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert`.")
@click.option("--split", default="test", show_default=True, help="Which annotations/<split>.json to compare on.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.json, report.md, report.html and the PNGs.")
@_runs_dir_option
@click.option("--region", help="AWS region of SageMaker endpoint candidates (default: boto3's).")
def compare_cmd(candidates: tuple[str, ...], data: Path, split: str, out: Path, runs_dir: Path, region: str | None) -> None:
    """Evaluate candidate models on the same images of a split; write a report that names the best.

    A CANDIDATE is a job, model or exported OpenVINO folder, a tuning study (RUNS_DIR/tune-S or
    tune:S: its best job), a local endpoint URL (http://127.0.0.1:8080, `odorch serve`) or a
    SageMaker endpoint name; NAME=CANDIDATE names it. The report has COCO's 12 statistics, AP and
    AP50 per class, the best F1 and its threshold, latency p50/p95 per image, model size, training
    time and cost, precision-recall curves and one test image per class with every candidate's boxes.
    """
    from rich.console import Console
    from rich.table import Table

    from orchestrator.compare import CompareError, compare, parse_candidates
    from orchestrator.report import tables, write_report

    try:
        report = compare(parse_candidates(list(candidates), runs_dir=runs_dir), data=data, split=split,
                         runs_dir=runs_dir, region=region, echo=click.echo)
    except CompareError as e:
        raise click.ClickException(str(e)) from e
    try:
        written = write_report(out, report)
    except OSError as e:
        raise click.ClickException(f"cannot write the report to {out}: {e}") from e
    _, header, rows = tables(report)[0]
    table = Table(box=None, pad_edge=False)
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    click.echo(report["summary"])
    Console(width=160).print(table)
    click.echo(f"wrote {', '.join(str(p) for p in written)}")


# ---------------------------------------------------------------- jobs



def _job_dir_or_exit(runs_dir: Path, job_name: str) -> Path:
    from orchestrator.jobs import JobError, find_job

    try:
        return find_job(runs_dir, job_name)
    except JobError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


def _duration(record: dict[str, Any]) -> str:
    from datetime import datetime, timezone

    from orchestrator.jobs import parse_iso

    seconds = record.get("duration_s")
    if seconds is None and record.get("status") == "InProgress":
        started = parse_iso(record.get("started"))
        seconds = (datetime.now(timezone.utc) - started).total_seconds() if started else None
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@main.group()
def jobs() -> None:
    """List training jobs and show their records and logs."""


@jobs.command("list")
@_runs_dir_option
def jobs_list(runs_dir: Path) -> None:
    """A table of the jobs in --runs-dir (a job whose process is gone is marked Failed)."""
    from entrypoints.metrics import OBJECTIVE
    from orchestrator.jobs import list_jobs

    records = list_jobs(runs_dir)
    if not records:
        click.echo(f"no jobs in {runs_dir}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("name", "status", "model", f"best {OBJECTIVE}", "epochs", "duration", "created"):
        table.add_column(column, no_wrap=column != "model")
    for r in records:
        best = (r.get("best") or {}).get(OBJECTIVE)
        best_text = f"{best:.4f} (epoch {r['best'].get('epoch')})" if best is not None else ""
        epochs = f"{r.get('epoch')}/{r.get('epochs')}" if r.get("epoch") is not None else ""
        created = str(r.get("created") or "")[:16].replace("T", " ")
        table.add_row(str(r.get("job_name")), str(r.get("status")), str(r.get("model") or ""), best_text, epochs,
                      _duration(r), created)
    console = Console()
    if not console.is_terminal:  # piped: don't squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)


@jobs.command("describe")
@click.argument("job_name")
@_runs_dir_option
def jobs_describe(job_name: str, runs_dir: Path) -> None:
    """The job's record (job.json), as JSON."""
    from orchestrator.jobs import load_job, refresh_status

    job_dir = _job_dir_or_exit(runs_dir, job_name)
    click.echo(json.dumps(refresh_status(load_job(job_dir), job_dir=job_dir), indent=2))


@jobs.command("logs")
@click.argument("job_name")
@_runs_dir_option
@click.option("--tail", type=click.IntRange(0), metavar="N", help="Only the last N lines.")
def jobs_logs(job_name: str, runs_dir: Path, tail: int | None) -> None:
    """The job's output (logs.txt): everything the entrypoint printed, all attempts."""
    from collections import deque

    from orchestrator.jobs import LOG_FILE

    path = _job_dir_or_exit(runs_dir, job_name) / LOG_FILE
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = deque(f, maxlen=tail) if tail is not None else f.readlines()
    click.echo("".join(lines), nl=False)


# ---------------------------------------------------------------- deploy / endpoints


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--instance", required=True, metavar="TYPE", help="Endpoint instance type, e.g. ml.g4dn.xlarge (ml. may be left out).")
@click.option("--bucket", required=True, help="S3 bucket for model.tar.gz (in the endpoint's region).")
@click.option("--role", required=True, help="IAM role ARN SageMaker assumes to pull the model.")
@click.option("--region", help="AWS region (default: boto3's, e.g. AWS_DEFAULT_REGION).")
@click.option("--endpoint-name", help="Endpoint name (default: odorch-<job>).")
@click.option("--no-wait", is_flag=True, help="Return once the endpoint is being created.")
def deploy(run: Path, instance: str, bucket: str, role: str, region: str | None, endpoint_name: str | None, no_wait: bool) -> None:
    """Serve RUN's model on a SageMaker real-time endpoint (it bills per hour until deleted).

    Writes RUN/endpoint.json. Anything created is deleted again if the deploy fails or is interrupted.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from orchestrator import deploy as backend
    from orchestrator.sagemaker import AwsClients, SageMakerError

    try:
        clients = AwsClients.from_env(region)
        region = region or clients.region
        backend.preflight_deploy(clients, run, instance_type=instance, bucket=bucket, role=role, region=region)
        record = backend.deploy(clients, run, instance_type=instance, bucket=bucket, role=role, region=region,
                                endpoint_name=endpoint_name, wait=not no_wait, echo=click.echo)
    except (SageMakerError, ClientError, BotoCoreError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted: what was created has been deleted", err=True)
        sys.exit(130)
    click.echo(f"endpoint {record['name']} {record['status']} on {record['instance']} ({record['arn']})")
    click.echo(f"wrote {run / backend.ENDPOINT_FILE}")
    click.echo(f"next: odorch predict --endpoint {record['name']} IMAGE... --out DIR")
    click.echo(f"it bills until deleted: odorch endpoints delete {record['name']}")


@main.group()
def endpoints() -> None:
    """List and delete SageMaker endpoints made by `odorch deploy`."""


@endpoints.command("list")
@click.option("--all", "all_endpoints", is_flag=True, help="Also endpoints without the odorch:job tag.")
@click.option("--region", help="AWS region (default: boto3's).")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def endpoints_list(all_endpoints: bool, region: str | None, as_json: bool) -> None:
    """Endpoints with status, instance type, creation time and job."""
    from botocore.exceptions import BotoCoreError, ClientError

    from orchestrator.deploy import list_endpoints
    from orchestrator.sagemaker import AwsClients, SageMakerError

    try:
        rows = list_endpoints(AwsClients.from_env(region), all_endpoints=all_endpoints)
    except (SageMakerError, ClientError, BotoCoreError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no endpoints")
        return
    header = ("name", "status", "instance", "created", "job")
    table = [header] + [tuple(str(r.get(k) or "") for k in header) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@endpoints.command("delete")
@click.argument("name")
@click.option("--region", help="AWS region (default: boto3's).")
def endpoints_delete(name: str, region: str | None) -> None:
    """Delete endpoint NAME, its endpoint config and its model (what is already gone is skipped)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from orchestrator.deploy import delete_endpoint
    from orchestrator.sagemaker import AwsClients, SageMakerError

    try:
        deleted = delete_endpoint(AwsClients.from_env(region), name)
    except (SageMakerError, ClientError, BotoCoreError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if not deleted:
        click.echo(f"nothing to delete: no endpoint {name}")
        return
    for item in deleted:
        click.echo(f"deleted {item}")


# ---------------------------------------------------------------- tune


@main.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert` (annotations/train.json, val.json + images/).")
@click.option("--model", default="ssdlite320_mobilenet_v3_large", show_default=True, help="torchvision detector.")
@click.option("--study", help="Study name (default: the model's name); its files are RUNS_DIR/tune-STUDY/.")
@click.option("--max-jobs", type=click.IntRange(1), default=20, show_default=True, help="Trials to finish (complete or pruned).")
@click.option("--max-parallel-jobs", type=click.IntRange(1), default=1, show_default=True, help="Trials running at once.")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True, help="Local: Optuna sampler.")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median", show_default=True,
              help="Local: Optuna pruner (a pruned trial's job gets SIGTERM and keeps its checkpoint).")
@click.option("--storage", metavar="URL", help="Local: SQLAlchemy URL of the study (default sqlite:///RUNS_DIR/tune-STUDY/study.db).")
@click.option("--seed", type=int, help="Local: seed of the sampler (a fixed seed repeats the same trials).")
@click.option("--space", "space_file", type=click.Path(dir_okay=False, path_type=Path), help="Search space YAML (default: the model's).")
@click.option("--hp", "hp", multiple=True, callback=_parse_hp, metavar="KEY=VALUE", help="Fixed hyperparameter (repeatable).")
@click.option("--epochs", type=click.IntRange(1), help="Shorthand for --hp epochs=N.")
@click.option("--weights", help="Shorthand for --hp weights=...")
@_runs_dir_option
@click.option("--report", "report", metavar="STUDY", help="Print the summary of study STUDY again and exit.")
@click.option("--instance", metavar="TYPE", help="Tune on SageMaker (Automatic Model Tuning) on this instance type.")
@click.option("--bucket", help="S3 bucket (SageMaker).")
@click.option("--role", help="IAM role ARN SageMaker assumes (SageMaker).")
@click.option("--region", help="AWS region (SageMaker).")
@click.option("--strategy", type=click.Choice(["Bayesian", "Random", "Hyperband", "Grid"]), default="Bayesian", show_default=True,
              help="SageMaker AMT strategy.")
@click.option("--early-stopping", type=click.Choice(["Auto", "Off"]), default="Off", show_default=True, help="SageMaker AMT early stopping.")
@click.option("--warm-start", metavar="TUNING_JOB", help="SageMaker AMT: warm start from this tuning job.")
@click.option("--algorithm", type=click.Choice(["pytorch", "builtin-od"]), default="pytorch", show_default=True,
              help="SageMaker AMT: odorch's entrypoint or the built-in Object Detection algorithm.")
def tune(
    data: Path | None, model: str, study: str | None, max_jobs: int, max_parallel_jobs: int, sampler: str, pruner: str,
    storage: str | None, space_file: Path | None, hp: dict[str, str], epochs: int | None, weights: str | None,
    runs_dir: Path, report: str | None, instance: str | None, bucket: str | None, role: str | None, region: str | None,
    strategy: str, early_stopping: str, warm_start: str | None, algorithm: str, seed: int | None = None,
) -> None:
    """Tune hyperparameters: locally with Optuna (each trial a local training job, pruned by its
    validation:mAP), or with --instance as a SageMaker Automatic Model Tuning job.

    Re-running the same command continues the study. Results: RUNS_DIR/tune-STUDY/summary.json,
    best -> the best trial's job, history.png, importance.png.
    """
    if report is not None:
        from hpo.summary import format_summary, read_summary

        tune_dir = runs_dir / f"tune-{report}"
        try:
            summary = read_summary(tune_dir)
        except (OSError, ValueError) as e:
            click.echo(f"error: no summary of study {report!r} in {tune_dir}: {e}", err=True)
            sys.exit(1)
        for line in format_summary(summary):
            click.echo(line)
        return
    if data is None:
        raise click.UsageError("Missing option '--data' (or give --report STUDY)")
    from entrypoints.train import HYPERPARAMETERS, TrainingError, parse_hyperparameters
    from hpo.space import SpaceError, check_names, default_space, grid, load_space
    from orchestrator.jobs import JobError, check_job_name

    if max_parallel_jobs > max_jobs:
        raise click.UsageError(f"--max-parallel-jobs ({max_parallel_jobs}) is more than --max-jobs ({max_jobs})")
    study = study or model.replace("_", "-")
    try:
        check_job_name(f"tune-{study}-trial-9999")
    except JobError as e:
        raise click.UsageError(f"--study {study!r}: {e}") from e
    fixed = _with_shorthands(hp, epochs=epochs, weights=weights, local=instance is None)
    try:
        if space_file is not None:
            space = load_space(space_file)
        elif algorithm == "builtin-od":
            space = None
        else:  # the model's default space, less what --hp fixes
            space = {k: v for k, v in default_space(model).items() if k not in fixed}
        if space is not None and algorithm == "pytorch":
            check_names(space, valid=HYPERPARAMETERS, fixed=fixed)
        if sampler == "grid" and instance is None and space is not None:
            grid(space)
    except SpaceError as e:
        raise click.UsageError(str(e)) from e
    if algorithm == "pytorch":
        try:
            parse_hyperparameters({**fixed, "model": model})
        except TrainingError as e:
            raise click.UsageError(str(e)) from e
    if instance is not None:
        from hpo import amt

        amt.run_amt_tuning(
            data=data, model=model, space=space, fixed=fixed, study=study, max_jobs=max_jobs,
            max_parallel_jobs=max_parallel_jobs, instance=instance, bucket=bucket, role=role, region=region,
            strategy=strategy, early_stopping=early_stopping, warm_start=warm_start, runs_dir=runs_dir,
            algorithm=algorithm,
        )
        return
    if algorithm != "pytorch":
        raise click.UsageError("--algorithm builtin-od runs only on SageMaker: add --instance TYPE")
    given = [n for n, v in (("--bucket", bucket), ("--role", role), ("--region", region), ("--warm-start", warm_start)) if v]
    if given:
        raise click.UsageError(f"{', '.join(given)} only apply to SageMaker tuning: add --instance TYPE")
    from hpo.local import TuneError, run_local_tuning
    from hpo.summary import format_summary

    try:
        summary = run_local_tuning(
            data=data, model=model, space=space or {}, fixed=fixed, study=study, max_jobs=max_jobs,
            max_parallel_jobs=max_parallel_jobs, sampler=sampler, pruner=pruner, storage=storage, runs_dir=runs_dir,
            echo=click.echo, seed=seed,
        )
    except TuneError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command to continue the study", err=True)
        sys.exit(130)
    for line in format_summary(summary):
        click.echo(line)
    click.echo(f"summary: {runs_dir / f'tune-{study}' / 'summary.json'}")


# ---------------------------------------------------------------- export


@main.command("export")
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert`: the IR is checked and evaluated on --split of it.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Export folder.")
@click.option("--format", "formats", multiple=True, type=click.Choice(["openvino", "onnx"]), default=("openvino",),
              show_default=True, help="Repeatable: --format openvino --format onnx.")
@click.option("--split", default="test", show_default=True, help="Split of --data to check, evaluate and time on.")
@click.option("--int8", is_flag=True, help="Also an INT8 IR, by NNCF post-training quantization.")
@click.option("--calibration-data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="--int8: a folder written by `odorch convert` whose train split calibrates (default: --data).")
@click.option("--calibration-size", type=click.IntRange(1), default=300, show_default=True,
              help="--int8: calibration images (the first N).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
def export_cmd(run: Path, data: Path, out: Path, formats: tuple[str, ...], split: str, int8: bool,
               calibration_data: Path | None, calibration_size: int, as_json: bool) -> None:
    """Export RUN's model to OpenVINO (FP32; INT8 with --int8) and/or ONNX, check it against
    PyTorch on real images, evaluate it as `odorch evaluate` does and time it against PyTorch.

    Writes OUT/fp32/, OUT/int8/, OUT/onnx/ (model + config.json) and OUT/metrics.json, replacing
    those of an earlier export to OUT. Each model folder, and OUT itself (its INT8 model if there
    is one, else FP32), is a model for `odorch evaluate`, `predict`, `serve` and `compare`.
    """
    from orchestrator.export import ExportError, export_model, format_summary

    if calibration_data is not None and not int8:
        raise click.UsageError("--calibration-data is for --int8")
    model, config, _ = _load_run(run)
    try:
        metrics = export_model(model, config, source=run.resolve(), data=data, out=out,
                               formats=tuple(dict.fromkeys(formats)), split=split, int8=int8,
                               calibration_data=calibration_data, calibration_size=calibration_size,
                               echo=lambda line: click.echo(line, err=as_json))
    except ExportError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    click.echo(f"{config['model']} on {split} of {data}:")
    for line in format_summary(metrics):
        click.echo(f"  {line}")
    click.echo(f"wrote {out / 'metrics.json'}")

"""`odorch evaluate`, `odorch predict` and `odorch compare`: models on images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from odorch.cli.common import device_option, load_run, mlflow_option, pick_device, runs_dir_option


@click.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert`.")
@click.option("--split", default="test", show_default=True, help="Which annotations/<split>.json to evaluate on.")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True,
              help="Images per forward pass; 1 gives exactly the numbers compare and serve get (batched convolutions round differently).")
@click.option("--score-threshold", type=click.FloatRange(0, 1), default=None,
              help="Score at which errors are counted (confusion matrix, precision/recall/F1 per class, worst images)  [default: the best-F1 threshold]")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@mlflow_option
def evaluate(run: Path, data: Path, split: str, batch_size: int, score_threshold: float | None, device: str,
             as_json: bool, mlflow_uri: str | None = None) -> None:
    """COCO mAP (the 12 COCO stats, per-class AP and AP50) of a trained model on a split, and its
    errors at IoU 0.5: best F1, precision/recall/F1 per class, a confusion matrix with the
    background, and the worst images.

    Writes RUN/eval-SPLIT.json. Difficult (ignore=1) boxes count as neither hit nor miss.
    """
    from odorch.evaluate import evaluate_model

    where = pick_device(device)
    model, config, out_dir = load_run(run, device=where)
    try:
        result = evaluate_model(model, config, data, split, batch_size=batch_size, score_threshold=score_threshold,
                                device=where)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    from odorch.converters.fsutil import atomic_write_json
    from odorch.runtime.evaluation import format_errors, format_table

    atomic_write_json(out_dir / f"eval-{split}.json", result, indent=2)
    from odorch.tracking import log_evaluation

    log_evaluation(out_dir, out_dir / f"eval-{split}.json", split=split, stats=result["stats"], mlflow_uri=mlflow_uri,
                   echo=lambda text: click.echo(text, err=True))  # a job tracked in MLflow: its run gets it
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{config['model']} on {result['annotations']} ({result['images']} images)")
    for line in [*format_table(result), *format_errors(result["errors"])]:
        click.echo(line)
    click.echo(f"wrote {out_dir / f'eval-{split}.json'}")


@click.command()
@click.argument("sources", nargs=-1, required=True, metavar="[RUN] SOURCES...")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the drawn images and videos, predictions.json and results.json.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.3, show_default=True, help="Draw boxes above this score.")
@click.option("--recursive", is_flag=True, help="Look in the subfolders of a folder too (and let ** in a glob cross folders).")
@click.option("--allow-url", is_flag=True, help="Fetch http(s):// image URLs among SOURCES (off: a URL is refused).")
@click.option("--save-json", is_flag=True,
              help="Also write OUT/results.json: every detection in COCO results format (image_id, category_id, bbox [x, y, w, h], score).")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True, help="Images or video frames per forward pass.")
@device_option
@click.option("--endpoint", metavar="NAME", help="Ask this SageMaker endpoint (odorch deploy) instead of a local model; RUN is optional.")
@click.option("--region", help="AWS region of --endpoint (default: boto3's).")
def predict(sources: tuple[str, ...], out: Path, min_score: float, recursive: bool = False, allow_url: bool = False,
            save_json: bool = False, batch_size: int = 4, device: str = "auto", endpoint: str | None = None,
            region: str | None = None) -> None:
    """Draw a trained model's boxes on images and videos (OUT/<name>.png, OUT/<name>.mp4) and
    write OUT/predictions.json.

    RUN is a job folder (or model folder); with --endpoint the endpoint detects and RUN may be left
    out. A SOURCE is an image or video file, a folder of them (--recursive: and its subfolders), a
    quoted glob that odorch expands ('photos/*.jpg', 'data/**/*.png' with --recursive) or, with
    --allow-url, an http(s):// image URL. Files of other kinds in folders and globs are skipped and counted.
    """
    from odorch.converters.fsutil import atomic_write_json
    from odorch.predict import PredictError, collect_sources

    args = list(sources)
    if endpoint is not None:
        if args and _is_run(Path(args[0])):
            args = args[1:]
    else:
        if len(args) < 2:
            raise click.UsageError("give RUN and at least one image, video, folder or glob (or --endpoint NAME and images)")
        run, args = Path(args[0]), args[1:]
        if not run.exists():
            raise click.UsageError(f"RUN {run}: no such job or model folder")
    if not args:
        raise click.UsageError("give at least one image, video, folder or glob")
    try:
        found, skipped = collect_sources(args, recursive=recursive, allow_url=allow_url)
    except PredictError as e:
        raise click.UsageError(str(e)) from e
    if skipped:
        click.echo(f"skipped {skipped} file(s) that are neither images nor videos", err=True)
    if endpoint is not None:
        records, results = _predict_endpoint_images(endpoint, found, out, min_score, region)
    else:
        from odorch.predict import predict_sources

        where = pick_device(device)
        model, config, _ = load_run(run, device=where)
        try:
            records, results = predict_sources(model, list(config["classes"]), found, out=out, device=where,
                                               batch_size=batch_size, min_score=min_score, echo=click.echo)
        except PredictError as e:
            raise click.ClickException(str(e)) from e
    atomic_write_json(out / "predictions.json", records, indent=2)
    if save_json:
        atomic_write_json(out / "results.json", results)
        click.echo(f"wrote {out / 'results.json'} ({len(results)} detections, COCO results format)")
    failed = [r for r in records if "error" in r]
    for record in failed:
        click.echo(f"skipped: {record['error']}", err=True)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(records)} input(s) could not be read; the others are in "
                                   f"{out / 'predictions.json'}")


def _is_run(path: Path) -> bool:
    """A job or model folder (not a folder of images)."""
    from odorch.runs import JOB_FILE, MODEL_DIR
    from odorch.runtime.models import MODEL_FILE

    return path.is_dir() and any((path / name).exists() for name in (JOB_FILE, MODEL_DIR, MODEL_FILE))


def _predict_endpoint_images(endpoint: str, found: list[Any], out: Path, min_score: float,
                             region: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The endpoint's detections drawn on image files, as predictions.json records and COCO results."""
    from odorch.predict import coco_results
    from odorch.runtime.predict import draw

    other = [s.location for s in found if s.kind != "image"]
    if other:
        raise click.UsageError(f"--endpoint takes image files only (not videos or URLs): {', '.join(other)}")
    images = [Path(s.location) for s in found]
    predictions, class_lists = _predict_endpoint(endpoint, images, region)
    records, results = [], []
    for image_id, (source, path, result, classes) in enumerate(zip(found, images, predictions, class_lists), start=1):
        written = out / f"{source.name}.png"
        drawn = draw(path, result, classes, written, min_score=min_score)
        click.echo(f"{path}: {drawn} boxes ≥ {min_score} -> {written}")
        records.append({
            "image": str(path), "image_id": image_id, "output": str(written),
            "detections": [
                {"box": box, "label": classes[label - 1], "score": score}
                for box, label, score in zip(result["boxes"], result["labels"], result["scores"])
            ],
        })  # fmt: skip
        results += coco_results(image_id, result)
    return records, results


def _predict_endpoint(endpoint: str, images: list[Path], region: str | None) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Detections per image from the endpoint, and per image a class list indexed by label - 1
    (built from the response's labels and classes)."""
    from odorch.aws import AwsClients
    from odorch.deploy import endpoint_algorithm, invoke_endpoint

    clients = AwsClients.from_env(region)
    algorithm = endpoint_algorithm(clients, endpoint)  # the request and reply format it speaks
    results, class_lists = [], []
    for path in images:
        response = invoke_endpoint(clients, endpoint, path, algorithm=algorithm)
        try:
            pred = response["predictions"][0]
            classes = [str(i) for i in range(1, max(pred["labels"], default=0) + 1)]
            for label, name in zip(pred["labels"], pred["classes"]):
                classes[label - 1] = name
        except (KeyError, IndexError, TypeError) as e:
            raise click.ClickException(f"endpoint {endpoint}: not an odorch endpoint's reply for {path} "
                                       f"({type(e).__name__}: {e})") from e
        results.append(pred)
        class_lists.append(classes)
    return results, class_lists


# ---------------------------------------------------------------- serve / compare



@click.command("compare")
@click.argument("candidates", nargs=-1, required=True, metavar="[NAME=]CANDIDATE...")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert`.")
@click.option("--split", default="test", show_default=True, help="Which annotations/<split>.json to compare on.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.json, report.md, report.html and the PNGs.")
@runs_dir_option
@click.option("--region", help="AWS region of SageMaker endpoint candidates (default: boto3's).")
@device_option
def compare_cmd(candidates: tuple[str, ...], data: Path, split: str, out: Path, runs_dir: Path, region: str | None,
                device: str) -> None:
    """Evaluate candidate models on the same images of a split; write a report that names the best.

    A CANDIDATE is a job, model or exported OpenVINO folder, a tuning study (RUNS_DIR/tune-S or
    tune:S: its best job), a local endpoint URL (http://127.0.0.1:8080, `odorch serve`) or a
    SageMaker endpoint name; NAME=CANDIDATE names it. The report has COCO's 12 statistics, AP and
    AP50 per class, the best F1 and its threshold, latency p50/p95 per image, model size, training
    time and cost, precision-recall curves, errors at each candidate's best-F1 threshold (precision,
    recall and F1 per class, a confusion matrix with the background) and a grid of test images (one
    per class, then the worst ones) with every candidate's boxes.
    """
    from odorch.compare import CompareError
    from odorch.report import compare_and_report

    try:
        compare_and_report(list(candidates), data=data, split=split, out=out, runs_dir=runs_dir, region=region,
                           device=str(pick_device(device)), echo=click.echo)
    except CompareError as e:
        raise click.ClickException(str(e)) from e


# ---------------------------------------------------------------- jobs

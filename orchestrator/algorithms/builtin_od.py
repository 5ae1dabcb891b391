"""The SageMaker built-in Object Detection algorithm (`odorch train --algorithm builtin-od`):
its hyperparameters (table, defaults, validation) and its input, RecordIO channels made from an
odorch converted folder exactly as `odorch convert coco2rec` makes them.

    annotations/train.json -> train/train.rec (+ .idx/.lst/.json beside it, locally)
    annotations/val.json   -> validation/validation.rec

Only the .rec files are uploaded (s3://B/odorch/datasets/<hash>-rec/{train,validation}/), as
AWS's examples do: in File mode the algorithm reads every object of the channel as RecordIO.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from odorch.algorithms.base import Algorithm, AlgorithmError, Prepared

ALGORITHM = "builtin-od"
CHANNELS = {"train": "train", "validation": "val"}  # channel -> annotations/<split>.json
CONTENT_TYPE = "application/x-recordio"
DEFAULT_LABEL_WIDTH = 350
LABEL_WIDTH_STEP = 10


class BuiltinOdError(AlgorithmError):
    """A hyperparameter or dataset the built-in algorithm cannot take; the message says why."""


def _int(low: int | None = None) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        try:
            n = int(value)
        except ValueError:
            return "must be an integer"
        return f"must be at least {low}" if low is not None and n < low else None
    return check


def _float(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        try:
            x = float(value)
        except ValueError:
            return "must be a number"
        ok = math.isfinite(x) and (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
        return None if ok else f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return check


def _choice(*choices: str) -> Callable[[str], str | None]:
    return lambda value: None if value in choices else f"use one of {', '.join(choices)}"


def _int_list(value: str) -> str | None:
    parts = value.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return "must be comma-separated positive epochs, e.g. 20,40"
    return None


def _any(value: str) -> str | None:
    return None if value else "must not be empty"


# name -> (check, AWS's default or None when the algorithm requires it / odorch computes it)
HYPERPARAMETERS: dict[str, tuple[Callable[[str], str | None], str | None]] = {
    "num_classes": (_int(1), None),
    "num_training_samples": (_int(1), None),
    "base_network": (_choice("vgg-16", "resnet-50"), "vgg-16"),
    "use_pretrained_model": (_choice("0", "1"), "1"),
    "mini_batch_size": (_int(1), "32"),
    "epochs": (_int(1), "30"),
    "learning_rate": (_float(0, 1, low_open=True), "0.001"),
    "optimizer": (_choice("sgd", "adam", "rmsprop", "adadelta"), "sgd"),
    "momentum": (_float(0, 1, low_open=True), "0.9"),  # ranges as the algorithm's documentation gives them
    "weight_decay": (_float(0, 1, low_open=True, high_open=True), "0.0005"),
    "image_shape": (_int(300), "300"),
    "label_width": (_int(7), str(DEFAULT_LABEL_WIDTH)),  # 2 + 5 × 1 box at least
    "early_stopping": (_choice("True", "False"), "False"),
    "early_stopping_min_epochs": (_int(1), "10"),
    "early_stopping_patience": (_int(1), "5"),
    "early_stopping_tolerance": (_float(0, 1), "0.0"),
    "lr_scheduler_step": (_int_list, None),
    "lr_scheduler_factor": (_float(0, 1, low_open=True, high_open=True), "0.1"),
    "freeze_layer_pattern": (_any, None),
    "nms_threshold": (_float(0, 1, low_open=True), "0.45"),
    "overlap_threshold": (_float(0, 1, low_open=True), "0.5"),
    "kv_store": (_choice("dist_sync", "dist_async"), None),  # several instances: how weights are synchronized
}


def needed_label_width(max_label_width: int) -> int:
    """What odorch passes: the data's longest label (2 + 5 × boxes) rounded up to a multiple of
    LABEL_WIDTH_STEP, and never below the algorithm's default 350."""
    return max(DEFAULT_LABEL_WIDTH, -(-int(max_label_width) // LABEL_WIDTH_STEP) * LABEL_WIDTH_STEP)


def hyperparameter_problems(raw: dict[str, Any]) -> list[str]:
    """Names and values alone (no data): unknown names, PyTorch-entrypoint names, bad values."""
    problems = []
    for name in raw:
        if name in HYPERPARAMETERS:
            error = HYPERPARAMETERS[name][0](str(raw[name]).strip())
            if error:
                problems.append(f"hyperparameter {name}={raw[name]!r}: {error}")
        elif (owner := BuiltinObjectDetection().owner_of(name)) is not None:
            problems.append(f"hyperparameter {name} belongs to {owner.title}, not --algorithm {ALGORITHM}; "
                            f"valid: {', '.join(HYPERPARAMETERS)}")
        else:
            problems.append(f"unknown hyperparameter {name} for --algorithm {ALGORITHM}; valid: {', '.join(HYPERPARAMETERS)}")
    return problems


def hyperparameters_for(raw: dict[str, Any], prepared: dict[str, Any]) -> dict[str, str]:
    """The HyperParameters to send (all strings): the user's, plus num_classes,
    num_training_samples and label_width from the data. Raises BuiltinOdError on any problem."""
    problems = hyperparameter_problems(raw)
    if problems:
        raise BuiltinOdError("; ".join(problems))
    hps = {k: str(v).strip() for k, v in raw.items()}
    for name in ("num_classes", "num_training_samples"):
        if name in hps and int(hps[name]) != prepared[name]:
            problems.append(f"hyperparameter {name}={hps[name]} but the data has {prepared[name]}: drop it (odorch sets it)")
        hps[name] = str(prepared[name])
    need = prepared["max_label_width"]
    if "label_width" in hps:
        if int(hps["label_width"]) < need:
            problems.append(f"hyperparameter label_width={hps['label_width']} is less than {need} "
                            f"(2 + 5 × {prepared['max_boxes']} boxes in the busiest image): raise it or drop it")
    else:
        hps["label_width"] = str(needed_label_width(need))
    if problems:
        raise BuiltinOdError("; ".join(problems))
    return hps


def prepare_recordio(data_dir: Path | str, out_dir: Path | str) -> dict[str, Any]:
    """train.json / val.json of a converted folder -> out_dir/<channel>/<channel>.rec (+ .idx,
    .lst, .json) as `convert coco2rec` writes them, with val read under train's class map.
    Returns {"channels": {channel: local .rec}, "num_classes", "num_training_samples",
    "max_label_width", "max_boxes", "classes", "records": {channel: n}}."""
    from odorch.converters.coco import read_coco
    from odorch.converters.sagemaker_formats import usable_boxes, write_recordio

    root, out = Path(data_dir), Path(out_dir)
    result: dict[str, Any] = {"channels": {}, "records": {}}
    classes = None
    widths, boxes = [], []
    for channel, split in CHANNELS.items():
        path = root / "annotations" / f"{split}.json"
        if not path.is_file():
            raise BuiltinOdError(f"{root}: no annotations/{split}.json; convert with --split (or --imagesets)")
        dataset = read_coco([path], images_dirs=[root / "images"], classes=classes)
        planned = usable_boxes(dataset, fmt="RecordIO")
        if not planned:
            raise BuiltinOdError(f"{path}: no image with a box; the built-in algorithm cannot train on it")
        classes = classes or dataset.classes
        written = write_recordio(dataset, planned, out / channel, name=channel)
        result["channels"][channel] = Path(written["rec"])
        result["records"][channel] = written["records"]
        widths.append(written["label_width"])
        boxes.append(written["max_boxes"])
    result.update(classes=classes, num_classes=len(classes or []), num_training_samples=result["records"]["train"],
                  max_label_width=max(widths), max_boxes=max(boxes))
    return result


def upload_recordio(clients: Any, prepared: dict[str, Any], data_dir: Path | str, bucket: str, *,
                    echo: Callable[[str], None] | None = None) -> dict[str, str]:
    """Each channel's .rec to s3://bucket/odorch/datasets/<hash>-rec/<channel>/ (skipped when an
    object of the same size is there); {channel: prefix uri}."""
    from odorch.aws import PREFIX, dataset_hash, existing_objects

    base = f"{PREFIX}/datasets/{dataset_hash(data_dir)}-rec"
    uris = {}
    for channel, rec in prepared["channels"].items():
        prefix = f"{base}/{channel}/"
        key = prefix + rec.name
        if existing_objects(clients.s3, bucket, prefix).get(key) != rec.stat().st_size:
            clients.s3.upload_file(str(rec), bucket, key)
            state = "uploaded"
        else:
            state = "already there"
        uris[channel] = f"s3://{bucket}/{prefix}"
        if echo:
            echo(f"{channel} channel s3://{bucket}/{key}: {prepared['records'][channel]} records, {state}")
    return uris


class BuiltinObjectDetection(Algorithm):
    """SageMaker's built-in Object Detection algorithm (MXNet SSD): SageMaker only, RecordIO
    channels, its own hyperparameters and metrics, an MXNet model odorch cannot load."""

    name = ALGORITHM
    title = f"--algorithm {ALGORITHM}"
    model_loadable = False
    model_kind = "MXNet (built-in Object Detection)"
    gpu_only = True  # "For training, the object detection algorithm supports GPU instances only" (AWS docs)

    def hyperparameter_names(self) -> Collection[str]:
        return HYPERPARAMETERS

    def job_hyperparameters(self, *, model: str, hp: dict[str, str]) -> dict[str, str]:
        return dict(hp)

    def check(self, hyperparameters: dict[str, Any]) -> list[str]:
        return hyperparameter_problems(hyperparameters)

    def prepare(self, data: Path, hyperparameters: dict[str, Any], work_dir: Path) -> tuple[Prepared | None, list[str]]:
        from odorch.converters.dataset import DatasetError

        try:
            made = prepare_recordio(data, work_dir)
        except (BuiltinOdError, DatasetError, OSError, ValueError, KeyError) as e:
            return None, [f"dataset (RecordIO for {ALGORITHM}): {e}"]
        if hyperparameter_problems(hyperparameters):
            return None, []  # reported by check()
        try:
            hps = hyperparameters_for(hyperparameters, made)
        except BuiltinOdError as e:
            return None, [str(e)]
        record = {"epochs": int(hps.get("epochs", HYPERPARAMETERS["epochs"][1])), "classes": made["classes"]}
        return Prepared(hps, dict(made["channels"]), record, detail=made), []

    def upload(self, clients: Any, prepared: Prepared, *, data: Path, bucket: str, job_name: str,
               echo: Callable[[str], None]) -> tuple[dict[str, str], str]:
        return upload_recordio(clients, prepared.detail, data, bucket, echo=echo), ""

    def image(self, region: str, instance_type: str) -> str:
        from odorch import aws_tables

        return aws_tables.builtin_od_image(region)

    def channel_options(self, channel: str) -> dict[str, str]:
        return {"ContentType": CONTENT_TYPE, "RecordWrapperType": "None"}

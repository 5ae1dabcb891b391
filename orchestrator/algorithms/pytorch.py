"""odorch's own training entrypoint (odorch.runtime.train): torchvision detectors, run by every
backend (a local process, the training image under Docker, the PyTorch DLC on SageMaker), one
dataset folder as both channels, odorch's metric lines as MetricDefinitions."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from odorch.algorithms.base import Algorithm, Prepared


class PyTorchEntrypoint(Algorithm):
    name = "pytorch"
    title = "the PyTorch entrypoint"
    runs_locally = True
    default_space = True

    def hyperparameter_names(self) -> Collection[str]:
        from odorch.runtime.train import HYPERPARAMETERS

        return HYPERPARAMETERS

    def job_hyperparameters(self, *, model: str, hp: dict[str, str]) -> dict[str, str]:
        return {"model": model, **hp}

    def default_job_name(self, model: str) -> str:
        return model.replace("_", "-")

    def entrypoint(self) -> Path:
        """The script the local and Docker backends run (SageMaker runs the same file from the archive)."""
        from odorch import runtime

        return Path(runtime.__file__).parent / "train.py"

    def check(self, hyperparameters: dict[str, Any]) -> list[str]:
        from odorch.runtime.train import TrainingError, parse_hyperparameters

        problems = self.foreign_names(hyperparameters)
        if problems:
            return problems
        try:
            parse_hyperparameters(hyperparameters)
        except TrainingError as e:
            return [f"hyperparameters: {e}"]
        return []

    def prepare(self, data: Path, hyperparameters: dict[str, Any], work_dir: Path) -> tuple[Prepared | None, list[str]]:
        from odorch.runs import hyperparameter_strings
        from odorch.runtime.data import DataError

        try:
            check_dataset(data)
        except (DataError, OSError, ValueError, KeyError) as e:
            return None, [f"dataset: {e}"]
        data = Path(data).absolute()
        return Prepared(hyperparameter_strings(hyperparameters), {"train": data, "validation": data}), []

    def upload(self, clients: Any, prepared: Prepared, *, data: Path, bucket: str, job_name: str,
               echo: Callable[[str], None]) -> tuple[dict[str, str], str]:
        from odorch.aws import upload_dataset, upload_source

        dataset_uri = upload_dataset(clients, data, bucket, echo=echo)
        return {"train": dataset_uri, "validation": dataset_uri}, upload_source(clients, bucket, job_name)

    def code_hyperparameters(self, source_uri: str, region: str) -> dict[str, str]:
        """The SageMaker training toolkit's: run train.py from the uploaded archive."""
        return {"sagemaker_program": "train.py", "sagemaker_submit_directory": source_uri, "sagemaker_region": region}

    def image(self, region: str, instance_type: str) -> str:
        from odorch import aws_tables

        return aws_tables.training_image(region, instance_type)

    def metric_definitions(self) -> list[dict[str, str]] | None:
        from odorch.runtime.metrics import metric_definitions

        return metric_definitions()


def check_dataset(data_dir: Path | str) -> None:
    """annotations/train.json + val.json with the same classes, every image file present."""
    from odorch.runtime.data import (
        CocoDetection,
        DataError,
        class_names,
        load_coco_split,
    )

    root = Path(data_dir)
    classes = None
    for split in ("train", "val"):
        if not (root / "annotations" / f"{split}.json").is_file():
            raise DataError(f"{root}: no annotations/{split}.json; convert with --split (or --imagesets) so train and val exist")
        coco = load_coco_split(root, split)
        names = class_names(coco)
        if classes is not None and names != classes:
            raise DataError(f"{root}: val has classes {names} but train has {classes}: convert both together")
        classes = names
        images = CocoDetection(coco, root / "images", None)
        missing = [im["file_name"] for im in images.images if not (images.images_dir / im["file_name"]).is_file()]
        if missing:
            raise DataError(f"{root}: {len(missing)} image(s) of {split} missing from images/ (e.g. {missing[0]}); convert again")


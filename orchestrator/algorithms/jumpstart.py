"""SageMaker JumpStart fine-tuning (`odorch train --algorithm jumpstart --model MODEL_ID[@VERSION]`):
a JumpStart object-detection model trained by its own script in its own image, as the `sagemaker`
SDK's JumpStartEstimator runs it, without the SDK. The rules come from the model's published spec
(odorch.jumpstart reads it from the region's JumpStart bucket), so the algorithm is built per
--model by ``for_model``; the unbound one in ALGORITHMS only names it.

    training channel  s3://B/odorch/datasets/<hash>-jumpstart/   images/ + annotations.json (pixel
                      xyxy, 0-based ids) made from annotations/train.json + val.json: the script
                      splits 80/20 itself, so test stays out for `odorch compare`
    model channel     s3://<jumpstart bucket>/<training_artifact_key>  the pretrained model
    code              s3://<jumpstart bucket>/<training(_prepacked)_script_key>, transfer_learning.py

Its endpoint (``hosting``) serves the fine-tuned model.tar.gz repacked with the spec's hosting
script under code/, as the SDK repacks it; it takes ``application/x-image`` and answers
``Accept: application/json;verbose`` with normalized boxes, class indices and the class names.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from odorch.algorithms.base import Algorithm, AlgorithmError, Prepared
from odorch.runs import JobRecord

ALGORITHM = "jumpstart"
CHANNEL = "training"
ENDPOINT_CONTENT_TYPE = "application/x-image"
ENDPOINT_ACCEPT = "application/json;verbose"


class JumpStart(Algorithm):
    """A JumpStart model's fine-tuning: SageMaker only, its spec's hyperparameters and metrics,
    a model odorch cannot load (it serves from its own image)."""

    name = ALGORITHM
    title = f"--algorithm {ALGORITHM}"
    model_loadable = False
    model_kind = "a JumpStart model (served by its own image: odorch deploy)"
    serves_itself = True

    def __init__(self, spec: dict[str, Any] | None = None, *, region: str = "") -> None:
        self.spec, self.region = spec, region

    def for_model(self, model: str, *, clients: Any) -> JumpStart:
        """The spec of MODEL (MODEL_ID or MODEL_ID@VERSION; the newest version by default). A
        deprecated version is refused unless named explicitly with @VERSION."""
        from odorch.jumpstart import JumpStartError, read_spec

        model_id, _, version = model.partition("@")
        try:
            spec = read_spec(clients.s3, clients.region, model_id, version or None, allow_deprecated=bool(version))
            return JumpStart(spec, region=clients.region)
        except JumpStartError as e:
            raise AlgorithmError(str(e)) from e

    def _spec(self) -> dict[str, Any]:
        if self.spec is None:
            raise AlgorithmError(f"{self.title} needs --model MODEL_ID and --instance (its rules come from the model's spec)")
        return self.spec

    def hyperparameter_names(self) -> Collection[str]:
        """{name: (None, default)} of the spec's algorithm hyperparameters (the default second, as the other tables)."""
        return {h["name"]: (None, h.get("default")) for h in (self.spec or {}).get("hyperparameters", [])
                if h.get("scope", "algorithm") == "algorithm"}

    def job_hyperparameters(self, *, model: str, hp: dict[str, str]) -> dict[str, str]:
        return dict(hp)

    def default_job_name(self, model: str) -> str:
        return model.partition("@")[0][:48]

    def check(self, hyperparameters: dict[str, Any]) -> list[str]:
        from odorch.jumpstart import hyperparameters as spec_hyperparameters

        if self.spec is None:
            return []  # unbound: the backend says it runs on SageMaker only
        return spec_hyperparameters(self.spec, hyperparameters)[1]

    def prepare(self, data: Path, hyperparameters: dict[str, Any], work_dir: Path) -> tuple[Prepared | None, list[str]]:
        from odorch.converters.coco import read_coco
        from odorch.converters.dataset import DatasetError
        from odorch.converters.sagemaker_formats import usable_boxes, write_jumpstart
        from odorch.jumpstart import hyperparameters as spec_hyperparameters

        spec = self._spec()
        hps, problems = spec_hyperparameters(spec, hyperparameters)
        if problems:
            return None, []  # reported by check()
        paths = [Path(data) / "annotations" / f"{split}.json" for split in ("train", "val")]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            return None, [f"dataset: {missing[0]} is missing; convert with --split (or --imagesets)"]
        try:
            dataset = read_coco(paths, images_dirs=[Path(data) / "images"])
            planned = usable_boxes(dataset, fmt="JumpStart")
            if not planned:
                return None, [f"dataset {data}: no image with a box; JumpStart cannot train on it"]
            written = write_jumpstart(dataset, planned, Path(work_dir) / CHANNEL)
        except (DatasetError, OSError, ValueError, KeyError) as e:
            return None, [f"dataset (JumpStart layout): {e}"]
        record = {"classes": dataset.classes, "model": f"{spec['model_id']}@{spec['version']}"}  # for_model takes it back
        if str(hps.get("epochs", "")).isdigit():
            record["epochs"] = int(hps["epochs"])
        detail = {**written, "problems": dataset.problems.lines()}
        return Prepared(hps, {CHANNEL: Path(work_dir) / CHANNEL}, record, detail=detail), []

    def upload(self, clients: Any, prepared: Prepared, *, data: Path, bucket: str, job_name: str,
               echo: Callable[[str], None]) -> tuple[dict[str, str], str]:
        """The training channel to s3://bucket/odorch/datasets/<hash>-jumpstart/ (same-size
        objects skipped: the prefix is content-addressed); the model channel and the code are the
        JumpStart bucket's."""
        from odorch.aws import PREFIX, dataset_hash, existing_objects
        from odorch.jumpstart import artifact_uri, script_uri

        spec = self._spec()
        folder = prepared.channels[CHANNEL]
        prefix = f"{PREFIX}/datasets/{dataset_hash(data)}-jumpstart/"
        existing = existing_objects(clients.s3, bucket, prefix)
        uploaded = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = prefix + path.relative_to(folder).as_posix()
            if existing.get(key) != path.stat().st_size:
                clients.s3.upload_file(str(path), bucket, key)
                uploaded += 1
        detail = prepared.detail
        echo(f"{CHANNEL} channel s3://{bucket}/{prefix}: {detail['images']} images, {detail['boxes']} boxes "
             f"(from train + val; the script splits 80/20), {uploaded} file(s) uploaded")
        for line in detail["problems"]:  # what the layout left out or repaired, counted
            echo(f"  {line}")
        return {CHANNEL: f"s3://{bucket}/{prefix}", "model": artifact_uri(spec, self.region)}, script_uri(spec, self.region)

    def code_hyperparameters(self, source_uri: str, region: str) -> dict[str, str]:
        from odorch.jumpstart import PROGRAM

        return {"sagemaker_program": PROGRAM, "sagemaker_submit_directory": source_uri, "sagemaker_region": region}

    def image(self, region: str, instance_type: str) -> str:
        from odorch.jumpstart import JumpStartError, training_image

        try:
            return training_image(self._spec(), region, instance_type)
        except JumpStartError as e:
            raise AlgorithmError(str(e)) from e

    def metric_definitions(self) -> list[dict[str, str]] | None:
        return [{"Name": m["Name"], "Regex": m["Regex"]} for m in self._spec().get("metrics", [])]

    def channel_options(self, channel: str) -> dict[str, str]:
        from odorch.jumpstart import MODEL_CONTENT_TYPE

        return {"ContentType": MODEL_CONTENT_TYPE} if channel == "model" else {}

    def tags(self) -> list[dict[str, str]]:
        from odorch.jumpstart import sdk_tags

        return sdk_tags(self._spec())

    def objective(self) -> dict[str, str]:
        """A validation metric of the spec when it has one (else its first), minimized when it is a loss."""
        metrics = [m["Name"] for m in self._spec().get("metrics", [])]
        if not metrics:
            raise AlgorithmError(f"--model {self._spec()['model_id']}: its spec defines no metrics to tune on")
        name = next((m for m in metrics if "val" in m.lower()), metrics[0])
        return {"Type": "Minimize" if "loss" in name.lower() else "Maximize", "MetricName": name}

    def hosting(self, clients: Any, record: JobRecord, *, instance_type: str, bucket: str,
                key: str) -> dict[str, Any] | None:
        """The fine-tuned model.tar.gz repacked with the spec's hosting script under code/ (as the
        SDK repacks it) at s3://bucket/KEY, served by the spec's hosting image and environment."""
        from odorch.aws import split_s3
        from odorch.jumpstart import JumpStartError, hosting_container, hosting_script_uri

        spec = self._spec()
        if not record.extra.get("model_s3_uri"):
            raise AlgorithmError(f"job {record.job_name}: no model.tar.gz on S3 (model_s3_uri); did it complete?")
        try:
            container = hosting_container(spec, self.region, instance_type, f"s3://{bucket}/{key}")
            script = hosting_script_uri(spec, self.region)
        except JumpStartError as e:
            raise AlgorithmError(str(e)) from e
        with tempfile.TemporaryDirectory(prefix="odorch-repack-") as tmp:
            root = Path(tmp)
            _extract_s3(clients, record.extra["model_s3_uri"], root / "model")
            _extract_s3(clients, script, root / "model" / "code")
            _tar_folder(root / "model", root / "model.tar.gz")
            clients.s3.upload_file(str(root / "model.tar.gz"), *split_s3(f"s3://{bucket}/{key}"))
        return container

    def endpoint_request(self) -> tuple[str | None, str]:
        return ENDPOINT_CONTENT_TYPE, ENDPOINT_ACCEPT

    def endpoint_detections(self, reply: Any, *, width: int, height: int) -> Any:
        """The verbose reply ({normalized_boxes, classes: indices, scores, labels: names}) as
        odorch's ({"predictions": [{boxes in pixels, labels 1-based, classes: names, scores}]})."""
        try:
            names = [str(n) for n in reply["labels"]]
            indices = [int(c) for c in reply["classes"]]
            boxes = [[float(x0) * width, float(y0) * height, float(x1) * width, float(y1) * height]
                     for x0, y0, x1, y1 in reply["normalized_boxes"]]
            scores = [float(s) for s in reply["scores"]]
            classes = [names[i] for i in indices]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise AlgorithmError(f"not a JumpStart detection reply ({{normalized_boxes, classes, scores, labels}}): {e!r}") from e
        if not len(boxes) == len(scores) == len(indices):
            raise AlgorithmError(f"JumpStart reply: {len(boxes)} boxes, {len(indices)} classes, {len(scores)} scores")
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return {"predictions": [{"boxes": [boxes[i] for i in order], "labels": [indices[i] + 1 for i in order],
                                 "classes": [classes[i] for i in order], "scores": [scores[i] for i in order]}]}


def _extract_s3(clients: Any, uri: str, dest: Path) -> None:
    from odorch.archive import safe_extract
    from odorch.aws import split_s3

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".tar.gz", dir=dest.parent) as f:
        clients.s3.download_file(*split_s3(uri), f.name)
        safe_extract(f.name, dest)


def _tar_folder(folder: Path, out: Path) -> None:
    import tarfile

    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(folder).as_posix())

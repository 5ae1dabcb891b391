"""`odorch train --algorithm builtin-od`: the SageMaker built-in Object Detection algorithm on
RecordIO channels made from an odorch folder, against moto on loopback (tests/aws_harness.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odorch.runtime.metrics import BUILTIN_OD_METRICS, METRICS, parse_epoch, parse_metrics
from tests.aws_harness import ROLE, tar_dir
from tests.helpers import invoke

BUCKET = "odorch-test"
SM = ["--instance", "ml.p3.2xlarge", "--bucket", BUCKET, "--role", ROLE, "--algorithm", "builtin-od"]
MAP_LINES = [f"#quality_metric: host=algo-1, epoch={e}, validation mAP <score>=({v})" for e, v in
             enumerate((0.1, 0.25, 0.2))]
CANNED = [
    "[11/22/2026 08:00:00 INFO 140] #progress_metric: host=algo-1, completed 33 % of epochs",
    "[11/22/2026 08:00:01 INFO 140] #quality_metric: host=algo-1, epoch=0, batch=3 train cross_entropy <loss>=(1.2)",
    f"[11/22/2026 08:00:02 INFO 140] {MAP_LINES[0]}",
    MAP_LINES[1],
    MAP_LINES[2],
]


@pytest.fixture
def sm(aws, monkeypatch):
    import odorch.backends.sagemaker as backend

    monkeypatch.setattr(backend, "POLL_S", 0.05)
    aws.make_bucket(BUCKET)
    return aws


def _mxnet_tar(tmp_path: Path) -> bytes:
    folder = tmp_path / "mx"
    folder.mkdir()
    (folder / "model_algo_1-symbol.json").write_text("{}")
    (folder / "model_algo_1-0000.params").write_bytes(b"\0" * 16)
    (folder / "hyperparams.json").write_text("{}")
    return tar_dir(folder)


def _keys(aws) -> list[str]:
    return sorted(o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def _boxed_images(data: Path, split: str) -> int:
    coco = json.loads((data / "annotations" / f"{split}.json").read_text())
    return len({a["image_id"] for a in coco["annotations"] if not a.get("iscrowd")})


def test_metrics_parse_both_formats():
    assert parse_metrics("epoch=3/10 train:loss=0.812300 validation:mAP=0.412300") == {
        "train:loss": 0.8123, "validation:mAP": 0.4123}
    assert parse_epoch("epoch=3/10 validation:mAP=0.4") == (3, 10)
    line = "[08:00 INFO 140] #quality_metric: host=algo-1, epoch=3, validation mAP <score>=(0.412)"
    assert parse_metrics(line) == {"validation:mAP": 0.412} and parse_epoch(line) == (3, None)
    assert parse_metrics("#quality_metric: host=algo-1, epoch=0, batch=3 train cross_entropy <loss>=(1.2)") == {}
    assert parse_epoch("#progress_metric: host=algo-1, completed 33 % of epochs") is None
    assert set(BUILTIN_OD_METRICS) <= set(METRICS)


def test_builtin_od_job_end_to_end(sm, tmp_path, tiny_data, runner):
    from odorch.aws_tables import builtin_od_image
    from odorch.converters.recordio import read_records, unpack

    tar = _mxnet_tar(tmp_path)
    sm.on_create = lambda name, request: sm.run_job(name, logs=CANNED, model_tar=tar, billable=60)
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "bod", *SM, "--epochs", 3,
                    "--hp", "base_network=resnet-50", "--hp", "mini_batch_size=4", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert "MXNet" in result.output

    request = sm.requests["bod"]
    spec = request["AlgorithmSpecification"]
    assert spec == {"TrainingImage": builtin_od_image("us-east-1"), "TrainingInputMode": "File"}  # no MetricDefinitions
    train_n, val_n = _boxed_images(tiny_data, "train"), _boxed_images(tiny_data, "val")
    classes = json.loads((tiny_data / "annotations" / "train.json").read_text())["categories"]
    hps = request["HyperParameters"]
    assert all(isinstance(v, str) for v in hps.values())
    assert hps["num_classes"] == str(len(classes)) and hps["num_training_samples"] == str(train_n)
    assert hps["label_width"] == "350"  # 2 + 5 × (few boxes) rounded up, at least the default
    assert (hps["epochs"], hps["base_network"], hps["mini_batch_size"]) == ("3", "resnet-50", "4")
    assert not any(k.startswith("sagemaker_") or k == "model" for k in hps)

    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert list(channels) == ["train", "validation"]
    for name, channel in channels.items():
        assert channel["ContentType"] == "application/x-recordio" and channel["RecordWrapperType"] == "None"
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        assert uri.startswith(f"s3://{BUCKET}/odorch/datasets/") and uri.endswith(f"-rec/{name}/")
    keys = _keys(sm)
    recs = [k for k in keys if k.startswith("odorch/datasets/")]
    assert len(recs) == 2 and all(k.endswith(".rec") for k in recs), keys
    assert not any("/source/" in k for k in keys)  # no entrypoint package for a built-in algorithm

    for name, expected in (("train", train_n), ("validation", val_n)):
        key = next(k for k in recs if k.endswith(f"/{name}/{name}.rec"))
        local = tmp_path / f"{name}.rec"
        sm.s3.download_file(BUCKET, key, str(local))
        records = list(read_records(local))
        assert len(records) == expected
        header, labels, image = unpack(records[0][1])
        assert labels[:2] == [2, 5] and 0 <= labels[2] < len(classes) and (image[:2] == b"\xff\xd8" or image[:4] == b"\x89PNG")

    job = json.loads((runs / "bod" / "job.json").read_text())
    assert job["status"] == "Completed" and job["algorithm"] == "builtin-od" and job["model"] == "builtin-od"
    assert job["best"] == {"validation:mAP": 0.25, "epoch": 1} and job["epochs"] == 3
    metrics = [json.loads(line) for line in (runs / "bod" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["epoch"], m["metrics"]) for m in metrics] == [
        (0, {"validation:mAP": 0.1}), (1, {"validation:mAP": 0.25}), (2, {"validation:mAP": 0.2})]
    assert (runs / "bod" / "model" / "model_algo_1-symbol.json").is_file()

    # evaluate/predict cannot load an MXNet model: they say so
    result = runner.invoke(__import__("odorch.cli", fromlist=["main"]).main,
                           ["evaluate", str(runs / "bod"), "--data", str(tiny_data)])
    assert result.exit_code != 0 and "built-in Object Detection" in result.output and "cannot load" in result.output


def test_load_trained_refuses_a_builtin_od_model(tmp_path):
    from odorch.runtime.models import ModelError, load_trained

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model_algo_1-symbol.json").write_text("{}")
    with pytest.raises(ModelError, match="MXNet model of the SageMaker built-in Object Detection"):
        load_trained(tmp_path / "model")


@pytest.mark.parametrize(
    "extra, fix",
    [
        (["--hp", "label_width=7"], "label_width=7 is less than"),
        (["--hp", "head_lr_mult=2"], "head_lr_mult belongs to the PyTorch entrypoint"),
        (["--hp", "model=ssd300_vgg16"], "model belongs to the PyTorch entrypoint"),
        (["--hp", "colour=red"], "unknown hyperparameter colour"),
        (["--hp", "optimizer=adamw"], "optimizer='adamw': use one of sgd, adam, rmsprop, adadelta"),
        (["--hp", "num_classes=99"], "num_classes=99 but the data has"),
    ],
)
def test_refused_before_any_job(sm, tmp_path, tiny_data, runner, extra, fix):
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "no", *SM, *extra, "--runs-dir", runs)
    assert result.exit_code != 0 and fix in result.output, result.output
    assert sm.requests == {} and _keys(sm) == [] and not (runs / "no").exists()


def test_preflight_label_width_from_the_data(sm, tmp_path, tiny_data):
    """label_width too small for the busiest image is refused in preflight itself (no CLI)."""
    from odorch.aws import AwsClients
    from odorch.backends.sagemaker import preflight
    from odorch.errors import PreflightError

    prepared = preflight(AwsClients.from_env(), role_arn=ROLE, bucket=BUCKET, instance_type="p3.2xlarge",
                         data_dir=tiny_data, hyperparameters={}, algorithm="builtin-od", work_dir=tmp_path / "rec")
    assert prepared is not None and (tmp_path / "rec" / "train" / "train.rec").is_file()
    need = prepared.detail["max_label_width"]
    assert need == 2 + 5 * prepared.detail["max_boxes"] >= 7
    with pytest.raises(PreflightError, match=f"label_width={need - 1} is less than {need}"):
        preflight(AwsClients.from_env(), role_arn=ROLE, bucket=BUCKET, instance_type="p3.2xlarge", data_dir=tiny_data,
                  hyperparameters={"label_width": str(need - 1)}, algorithm="builtin-od", work_dir=tmp_path / "rec2")
    assert sm.requests == {}


def test_pytorch_job_refuses_a_builtin_only_hyperparameter(sm, tiny_data, tmp_path):
    from odorch.aws import AwsClients
    from odorch.backends.sagemaker import preflight
    from odorch.errors import PreflightError

    with pytest.raises(PreflightError, match="nms_threshold belongs to --algorithm builtin-od"):
        preflight(AwsClients.from_env(), role_arn=ROLE, bucket=BUCKET, instance_type="p3.2xlarge", data_dir=tiny_data,
                  hyperparameters={"model": "ssdlite320_mobilenet_v3_large", "nms_threshold": "0.4"})


def test_builtin_od_needs_sagemaker(tmp_path, tiny_data, runner):
    result = invoke(runner, "train", "--data", tiny_data, "--algorithm", "builtin-od", "--runs-dir", tmp_path)
    assert result.exit_code != 0 and "add --instance" in result.output

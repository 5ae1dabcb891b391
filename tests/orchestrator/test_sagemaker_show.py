"""SageMaker shown end to end against moto on loopback (tests/aws_harness.py): train with the REAL
entrypoint -> metrics -> model -> deploy -> predict -> delete; the CreateTrainingJob requests
checked against botocore's own service model; a built-in algorithm job from real BCCD RecordIO;
throttling, an unknown region and an outside StopTrainingJob."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from odorch.runtime.metrics import metric_definitions
from tests.aws_harness import LOG_GROUP, ROLE, tar_dir
from tests.helpers import invoke, shared_path

BUCKET = "odorch-show"
FAST_HP = ["--weights", "none", "--hp", "batch_size=4", "--hp", "image_size=128", "--hp", "num_threads=2"]
CANNED_BUILTIN = [
    "[11/22/2026 08:00:00 INFO 140] #progress_metric: host=algo-1, completed 100 % of epochs",
    "[11/22/2026 08:00:01 INFO 140] #quality_metric: host=algo-1, epoch=0, validation mAP <score>=(0.05)",
]


@pytest.fixture
def sm(aws, monkeypatch):
    import odorch.backends.sagemaker as backend
    import odorch.deploy as deploy_backend

    monkeypatch.setattr(backend, "POLL_S", 0.05)
    monkeypatch.setattr(deploy_backend, "POLL_S", 0.01)
    aws.make_bucket(BUCKET)
    return aws


def _sm_args(instance: str = "ml.g5.xlarge") -> list[str]:
    return ["--instance", instance, "--bucket", BUCKET, "--role", ROLE]


def _keys(aws) -> list[str]:
    return [o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def _validate(request: dict) -> str:
    """Errors of botocore's own validator for CreateTrainingJob ('' when valid)."""
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model("CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    return report.generate_report() if report.has_errors() else ""


def _cloudwatch_lines(aws, job: str) -> list[str]:
    streams = aws.logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job}/")["logStreams"]
    assert len(streams) == 1
    return [e["message"] for e in aws.logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=streams[0]["logStreamName"],
                                                          startFromHead=True)["events"]]


def _by_definitions(lines: list[str], definitions: list[dict]) -> list[dict[str, float]]:
    """Each line's metrics by the MetricDefinitions regexes alone (SageMaker's reading), lines without any left out."""
    out = []
    for line in lines:
        values = {}
        for d in definitions:
            match = re.search(d["Regex"], line)
            if match:
                values[d["Name"]] = float(match.group(1))
        if values:
            out.append(values)
    return out


# ---------------------------------------------------------------- 1 + 2: end to end, request valid


def test_train_deploy_predict_delete_end_to_end(sm, tmp_path, tiny_data, runner):
    from odorch.cli import main

    sm.on_create = sm.run_entrypoint
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "show", "--epochs", 1, *FAST_HP, *_sm_args(),
                    "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    job = runs / "show"
    record = json.loads((job / "job.json").read_text())
    assert record["status"] == "Completed" and record["instance_type"] == "ml.g5.xlarge"

    # the request as sent is valid for botocore's model; its regexes read the entrypoint's real output
    request = sm.requests["show"]
    assert _validate(request) == ""
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()
    printed = _cloudwatch_lines(sm, "show")
    assert (job / "logs.txt").read_text().splitlines() == printed
    parsed = _by_definitions(printed, request["AlgorithmSpecification"]["MetricDefinitions"])
    metrics = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert [m["metrics"] for m in metrics] == parsed
    assert any("validation:mAP" in p for p in parsed) and any("train:loss" in p for p in parsed)
    assert metrics[-1]["epoch"] == 1

    # model downloaded -> deploy -> predict through the endpoint -> delete
    assert (job / "model" / "model.pth").is_file()
    deployed = runner.invoke(main, ["deploy", str(job), "--instance", "ml.g4dn.xlarge", "--bucket", BUCKET, "--role", ROLE])
    assert deployed.exit_code == 0, deployed.output
    endpoint = json.loads((job / "endpoint.json").read_text())["name"]
    assert endpoint == "odorch-show"
    image = next(p for p in sorted((tiny_data / "images").rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg"))
    assert image.read_bytes()[:2] == b"\xff\xd8"
    out = tmp_path / "pred"
    predicted = runner.invoke(main, ["predict", "--endpoint", endpoint, str(image), "--out", str(out), "--min-score", "0"])
    assert predicted.exit_code == 0, predicted.output
    assert [i["content_type"] for i in sm.invocations] == ["image/jpeg"]
    records = json.loads((out / "predictions.json").read_text())
    assert [r["image"] for r in records] == [str(image)]
    detections = records[0]["detections"]
    assert isinstance(detections, list) and detections, "an untrained ssdlite at min-score 0 still proposes boxes"
    for d in detections:
        assert set(d) == {"box", "label", "score"} and len(d["box"]) == 4 and d["label"] in ("circle", "square")
        assert 0.0 <= d["score"] <= 1.0

    deleted = runner.invoke(main, ["endpoints", "delete", endpoint])
    assert deleted.exit_code == 0, deleted.output
    assert sm.sagemaker.list_endpoints()["Endpoints"] == []
    assert sm.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.sagemaker.list_models()["Models"] == []


def test_spot_pytorch_and_builtin_requests_validate_against_botocore(sm, tmp_path, tiny_data, runner):
    tar = tar_dir(_folder(tmp_path / "m", {"config.json": "{}"}))
    sm.on_create = lambda name, request: sm.run_job(name, logs=["epoch=1/1 validation:mAP=0.100000"], model_tar=tar)
    runs = tmp_path / "runs"
    spot = invoke(runner, "train", "--data", tiny_data, "--job-name", "spot", *FAST_HP, *_sm_args("ml.p3.2xlarge"),
                  "--spot", "--max-run", 3600, "--max-wait", 7200, "--runs-dir", runs)
    assert spot.exit_code == 0, spot.output
    request = sm.requests["spot"]
    assert request["EnableManagedSpotTraining"] is True and request["CheckpointConfig"]["S3Uri"].endswith("/spot/checkpoints")
    assert _validate(request) == ""

    sm.on_create = lambda name, request: sm.run_job(name, logs=CANNED_BUILTIN, model_tar=tar)
    builtin = invoke(runner, "train", "--data", tiny_data, "--job-name", "bod", "--algorithm", "builtin-od",
                     *_sm_args("ml.p3.2xlarge"), "--epochs", 1, "--runs-dir", runs)
    assert builtin.exit_code == 0, builtin.output
    assert _validate(sm.requests["bod"]) == ""
    # the validator is not a rubber stamp
    broken = {**request, "ResourceConfig": {**request["ResourceConfig"], "InstanceCount": "1"}}
    assert "InstanceCount" in _validate(broken)


def _folder(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


# ---------------------------------------------------------------- 3: built-in algorithm on BCCD


def test_builtin_od_request_from_bccd_recordio(sm, tmp_path, runner):
    from odorch.aws_tables import builtin_od_image

    voc = shared_path("datasets", "bccd", "BCCD")
    data = tmp_path / "bccd"
    converted = invoke(runner, "convert", "voc2coco", voc, "--out", data, "--imagesets")
    assert converted.exit_code == 0, converted.output
    stems = (voc / "ImageSets" / "Main" / "train.txt").read_text().split()
    boxes = [len(ET.parse(voc / "Annotations" / f"{s}.xml").getroot().findall("object")) for s in stems]
    assert len(stems) == 205 and min(boxes) > 0

    tar = tar_dir(_folder(tmp_path / "mx", {"model_algo_1-symbol.json": "{}", "hyperparams.json": "{}"}))
    sm.on_create = lambda name, request: sm.run_job(name, logs=CANNED_BUILTIN, model_tar=tar, billable=30)
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", data, "--job-name", "bccd", "--algorithm", "builtin-od",
                    *_sm_args("ml.p3.2xlarge"), "--epochs", 1, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    request = sm.requests["bccd"]
    assert _validate(request) == ""
    assert request["AlgorithmSpecification"]["TrainingImage"] == builtin_od_image("us-east-1")
    assert "MetricDefinitions" not in request["AlgorithmSpecification"]
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert list(channels) == ["train", "validation"]
    assert all(c["ContentType"] == "application/x-recordio" for c in channels.values())
    hps = request["HyperParameters"]
    assert hps["num_classes"] == "3" and hps["num_training_samples"] == "205"
    assert int(hps["label_width"]) >= 2 + 5 * max(boxes)
    assert json.loads((runs / "bccd" / "job.json").read_text())["status"] == "Completed"


# ---------------------------------------------------------------- 4: failure paths


@pytest.mark.parametrize("times", [1, 2])
def test_throttled_describe_is_retried(sm, tmp_path, tiny_data, runner, times):
    tar = tar_dir(_folder(tmp_path / "m", {"config.json": "{}"}))

    def play(name, request):
        sm.throttles["describe_training_job"] = times  # from here on, while odorch polls
        sm.run_job(name, logs=["epoch=1/1 validation:mAP=0.300000"], model_tar=tar)

    sm.on_create = play
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "thr", *FAST_HP, *_sm_args(), "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert sm.throttled == ["describe_training_job"] * times and sm.throttles["describe_training_job"] == 0
    record = json.loads((runs / "thr" / "job.json").read_text())
    assert record["status"] == "Completed" and record["best"]["validation:mAP"] == 0.3


def test_unknown_region_fails_preflight_and_creates_nothing(sm, tmp_path, tiny_data, runner):
    from moto.sagemaker.models import sagemaker_backends

    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "mars", *FAST_HP, *_sm_args(),
                    "--region", "mars-east-9", "--runs-dir", runs)
    assert result.exit_code != 0, result.output
    assert "mars-east-9" in result.output and "known regions" in result.output and "us-east-1" in result.output
    assert sm.requests == {} and _keys(sm) == [] and not (runs / "mars").exists()
    assert all(not backend.training_jobs for region, backend in sagemaker_backends["123456789012"].items())


def test_job_stopped_from_outside(sm, tmp_path, tiny_data, runner):
    def stopped_from_console(name, request):
        sm.set_secondary(name, "Training", "Training in progress.")
        sm.put_logs(sm.log_stream(name), ["epoch=1/5 train:loss=2.000000 validation:mAP=0.050000"])
        sm.sagemaker.stop_training_job(TrainingJobName=name)  # someone else, over HTTP
        sm._finish(name, "Stopped", billable=5)

    sm.on_create = stopped_from_console
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "stp", *FAST_HP, *_sm_args(), "--runs-dir", runs)
    assert result.exit_code == 1, result.output
    assert "job stp Stopped" in result.output
    assert sm.stop_calls == ["stp"]
    record = json.loads((runs / "stp" / "job.json").read_text())
    assert record["status"] == "Stopped" and record.get("stop_reason") is None and record["billable_seconds"] == 5
    assert not (runs / "stp" / "model").exists()
    assert sm.sagemaker.describe_training_job(TrainingJobName="stp")["TrainingJobStatus"] == "Stopped"

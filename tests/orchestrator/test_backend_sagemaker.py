"""The SageMaker backend against moto on loopback (tests/aws_harness.py): request, uploads,
source package, the real entrypoint end to end through CloudWatch, failures, preflight, Ctrl-C."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from odorch.aws_tables import price_per_hour, training_image
from odorch.runtime.metrics import metric_definitions, parse_epoch, parse_metrics
from tests.aws_harness import ROLE, tar_dir
from tests.helpers import invoke

BUCKET = "odorch-test"
FAST_HP = ["--weights", "none", "--hp", "batch_size=4", "--hp", "image_size=128", "--hp", "num_threads=2"]


@pytest.fixture
def sm(aws, monkeypatch):
    """The harness with a bucket and fast polling."""
    import odorch.backends.sagemaker as backend

    monkeypatch.setattr(backend, "POLL_S", 0.05)
    aws.make_bucket(BUCKET)
    return aws


def _clients():
    from odorch.aws import AwsClients

    return AwsClients.from_env()


def _model_tar(tmp_path: Path) -> bytes:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    return tar_dir(tmp_path / "m")


def _keys(aws) -> list[str]:
    return [o["Key"] for o in aws.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_create_training_job_request(sm, tmp_path, tiny_data):
    from odorch.backends.sagemaker import run_sagemaker_job

    tar = _model_tar(tmp_path)
    lines = ["epoch=1/2 train:loss=1.500000 validation:mAP=0.100000", "epoch=2/2 train:loss=1.000000 validation:mAP=0.200000"]
    sm.on_create = lambda name, request: sm.run_job(name, logs=lines, model_tar=tar, billable=100)
    record = run_sagemaker_job(
        _clients(), job_name="req", runs_dir=tmp_path / "runs", data_dir=tiny_data, bucket=BUCKET, role_arn=ROLE,
        hyperparameters={"model": "ssdlite320_mobilenet_v3_large", "epochs": 2, "lr": 0.01, "flip": False},
        model="ssdlite320_mobilenet_v3_large", instance_type="p3.2xlarge", spot=True, max_run=3600, max_wait=7200, echo=None,
    )
    request = sm.requests["req"]
    spec = request["AlgorithmSpecification"]
    assert spec["MetricDefinitions"] == metric_definitions()
    assert spec["TrainingInputMode"] == "File" and spec["TrainingImage"] == training_image("us-east-1", "ml.p3.2xlarge")
    assert "-gpu-" in spec["TrainingImage"]
    hps = request["HyperParameters"]
    assert {k: hps[k] for k in ("model", "epochs", "lr", "flip")} == {
        "model": "ssdlite320_mobilenet_v3_large", "epochs": "2", "lr": "0.01", "flip": "false"}
    assert hps["sagemaker_program"] == "train.py" and hps["sagemaker_region"] == "us-east-1"
    assert hps["sagemaker_submit_directory"] == f"s3://{BUCKET}/odorch/jobs/req/source/sourcedir.tar.gz"
    assert all(isinstance(v, str) for v in hps.values())
    dataset = record.channels["train"]
    assert dataset.startswith(f"s3://{BUCKET}/odorch/datasets/") and dataset.endswith("/")
    assert [(c["ChannelName"], c["DataSource"]["S3DataSource"]) for c in request["InputDataConfig"]] == [
        (name, {"S3DataType": "S3Prefix", "S3Uri": dataset, "S3DataDistributionType": "FullyReplicated"})
        for name in ("train", "validation")
    ]
    assert request["RoleArn"] == ROLE
    assert request["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/odorch/jobs/req/output"}
    # 30 GB for code, checkpoints and model + both channels' download (24 small images: rounded up to 1 GiB)
    assert request["ResourceConfig"] == {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 31}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/odorch/jobs/req/checkpoints", "LocalPath": "/opt/ml/checkpoints"}
    assert {t["Key"]: t["Value"] for t in request["Tags"]} == {
        "odorch:job": "req", "odorch:model": "ssdlite320_mobilenet_v3_large", "odorch:version": "0.1.0"}
    # the record: spot priced by billable time (already net of the spot saving) at the on-demand rate
    assert record.status == "Completed" and record.extra["spot"] is True and record.extra["instance_type"] == "ml.p3.2xlarge"
    assert record.extra["billable_seconds"] == 100 and record.extra["estimated_cost_usd"] == round(100 / 3600 * price_per_hour("ml.p3.2xlarge"), 4)
    assert record.best == {"validation:mAP": 0.2, "epoch": 2} and record.epochs == 2
    assert json.loads((tmp_path / "runs/req/job.json").read_text())["training_job_arn"] == record.extra["training_job_arn"]


def test_on_demand_request_has_no_spot_fields_but_a_checkpoint(sm, tmp_path):
    from odorch.backends.sagemaker import training_job_request

    request = training_job_request(job_name="j", region="eu-west-1", role_arn=ROLE, bucket="b", dataset_uri="s3://b/d/",
                                   source_uri="s3://b/s.tar.gz", hyperparameters={}, model="m",
                                   instance_type="ml.g5.xlarge", instance_count=2)
    assert "EnableManagedSpotTraining" not in request
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400}
    assert request["CheckpointConfig"]["S3Uri"] == "s3://b/odorch/jobs/j/checkpoints"
    assert request["ResourceConfig"]["InstanceCount"] == 2 and request["HyperParameters"]["sagemaker_region"] == "eu-west-1"


def test_dataset_upload_is_skipped_the_second_time(sm, tmp_path, tiny_data):
    from odorch.aws import dataset_files, upload_dataset

    clients = _clients()
    puts = []
    clients.s3.meta.events.register("provide-client-params.s3.PutObject", lambda params, **kw: puts.append(params["Key"]))
    uri = upload_dataset(clients, tiny_data, BUCKET)
    files = dataset_files(tiny_data)
    assert len(puts) == len(files) and any(k.endswith("annotations/train.json") for k in puts)
    assert sorted(_keys(sm)) == sorted(uri[len(f"s3://{BUCKET}/"):] + rel for rel, _ in files)
    puts.clear()
    assert upload_dataset(clients, tiny_data, BUCKET) == uri
    assert puts == []
    # one changed byte: another prefix
    copy = shutil.copytree(tiny_data, tmp_path / "copy")
    ann = copy / "annotations" / "val.json"
    ann.write_text(ann.read_text() + " ")
    assert upload_dataset(clients, copy, BUCKET) != uri and len(puts) == len(files)


def test_source_package_is_deterministic_and_its_shim_runs(tmp_path):
    from odorch.archive import package_source

    data = package_source()
    assert data == package_source()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names == sorted(names)
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
        tar.extractall(tmp_path, filter="data")
    assert "train.py" in names and "odorch/__init__.py" in names and "odorch/runtime/train.py" in names
    assert {"odorch/runtime/metrics.py", "odorch/runtime/data.py", "odorch/runtime/models.py"} <= set(names)
    assert not any(n.startswith("odorch/") and not n.startswith(("odorch/runtime/", "odorch/__init__")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert (tmp_path / "train.py").read_text() == "from odorch.runtime.train import main\n\nraise SystemExit(main())\n"
    # the shim imports the packaged entrypoints (not the installed ones) and runs main()
    env = {"SM_HPS": json.dumps({"epochs": "ten"}), "SM_OUTPUT_DIR": str(tmp_path / "out"), "PATH": "/usr/bin:/bin"}
    probe = subprocess.run([sys.executable, "-c", "import odorch.runtime.train; print(odorch.runtime.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env=env)
    assert probe.returncode == 0 and Path(probe.stdout.strip()).parent == tmp_path / "odorch" / "runtime", probe.stderr
    run = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1 and "epochs='ten'" in run.stderr
    assert "epochs='ten'" in (tmp_path / "out" / "failure").read_text()


def test_end_to_end_real_entrypoint_through_cloudwatch(sm, tmp_path, tiny_data, runner):
    from odorch.runs import read_metrics
    from odorch.runtime.models import load_trained

    sm.on_create = sm.run_entrypoint
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "e2e", "--epochs", 2, *FAST_HP,
                    "--instance", "ml.p3.2xlarge", "--bucket", BUCKET, "--role", ROLE, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    assert "job e2e Completed on SageMaker" in result.output and "InProgress / Training" in result.output
    record = json.loads((runs / "e2e/job.json").read_text())
    assert record["status"] == "Completed" and record["backend"] == "sagemaker" and record["failure_reason"] is None
    assert record["training_job_arn"] == "arn:aws:sagemaker:us-east-1:123456789012:training-job/e2e"
    assert record["billable_seconds"] >= 1
    assert record["estimated_cost_usd"] == round(record["billable_seconds"] / 3600 * price_per_hour("ml.p3.2xlarge"), 4)
    # what the entrypoint printed == CloudWatch == logs.txt; its metric lines == metrics.jsonl
    stream = sm.logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="e2e/")
    name = stream["logStreams"][0]["logStreamName"]
    assert name.startswith("e2e/algo-1-")
    printed = [e["message"] for e in sm.logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                             logStreamName=name, startFromHead=True)["events"]]
    assert (runs / "e2e/logs.txt").read_text().splitlines() == printed
    expected = [(e[0] if (e := parse_epoch(line)) else None, parse_metrics(line)) for line in printed if parse_metrics(line)]
    got = [(m["epoch"], m["metrics"]) for m in read_metrics(runs / "e2e")]
    assert got == expected and [e for e, m in expected if "validation:mAP" in m] == [1, 2]
    assert record["epoch"] == 2 and record["epochs"] == 2
    assert record["metrics_final"]["validation:mAP"] == expected[-1][1]["validation:mAP"]
    final = {m["MetricName"]: m["Value"] for m in sm.sagemaker.describe_training_job(TrainingJobName="e2e")["FinalMetricDataList"]}
    assert final["validation:mAP"] == record["metrics_final"]["validation:mAP"]
    model, config = load_trained(runs / "e2e/model")
    assert config["classes"] == ["circle", "square"] and config["image_size"] == 128


def test_failed_job_records_failure_reason_and_exits_1(sm, tmp_path, tiny_data, runner):
    reason = "AlgorithmError: out of memory with batch_size=64: lower batch_size"
    sm.on_create = lambda name, request: sm.run_job(name, logs=["error: out of memory"], outcome="Failed",
                                                    failure_reason=reason, billable=7)
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "bad", *FAST_HP,
                    "--instance", "ml.g5.xlarge", "--bucket", BUCKET, "--role", ROLE, "--runs-dir", runs)
    assert result.exit_code == 1 and reason in result.output
    record = json.loads((runs / "bad/job.json").read_text())
    assert record["status"] == "Failed" and record["failure_reason"] == reason and record["billable_seconds"] == 7
    assert record["training_job_arn"].endswith("training-job/bad")
    assert not (runs / "bad/model").exists()
    assert (runs / "bad/logs.txt").read_text() == "error: out of memory\n"


@pytest.mark.parametrize(
    ("overrides", "extra", "fix"),
    [
        ({"--role": "odorch-role"}, [], "arn:aws:iam::<12-digit account>:role/<name>"),
        ({"--bucket": "no-such-bucket"}, [], "aws s3 mb s3://no-such-bucket"),
        ({"--instance": "ml.x9.huge"}, [], "use one like ml.g5.xlarge"),
        ({}, ["--hp", "lr=-1"], "must be positive"),
        ({}, ["--spot", "--max-run", "3600", "--max-wait", "600"], "raise --max-wait to at least 3600"),
        ({}, ["--max-wait", "600"], "add --spot"),
    ],
)
def test_preflight_errors_name_the_fix_and_create_no_job(sm, tmp_path, tiny_data, runner, overrides, extra, fix):
    options = {"--instance": "ml.p3.2xlarge", "--bucket": BUCKET, "--role": ROLE, **overrides}
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "pre", *FAST_HP,
                    *[x for kv in options.items() for x in kv], *extra, "--runs-dir", runs)
    assert result.exit_code != 0 and fix in result.output, result.output
    assert sm.requests == {} and _keys(sm) == [] and not (runs / "pre").exists()


def test_preflight_refuses_a_bad_hyperparameter_and_dataset(sm, tmp_path, tiny_data):
    from odorch.backends.sagemaker import preflight
    from odorch.errors import PreflightError

    bad = shutil.copytree(tiny_data, tmp_path / "bad")
    (bad / "annotations" / "val.json").unlink()
    with pytest.raises(PreflightError) as e:
        preflight(_clients(), role_arn=ROLE, bucket=BUCKET, instance_type="p3.2xlarge", data_dir=bad,
                  hyperparameters={"lr_decay": "2"})
    assert "unknown hyperparameter(s) lr_decay" in str(e.value) and "no annotations/val.json" in str(e.value)


def test_ctrl_c_stops_the_job(sm, tmp_path, tiny_data, runner, monkeypatch):
    import odorch.backends.sagemaker as backend

    def until_stopped(name, request):
        sm.set_secondary(name, "Training", "Training in progress.")
        sm.put_logs(sm.log_stream(name), ["epoch=1/5 train:loss=2.000000 validation:mAP=0.050000"])
        deadline = time.time() + 60
        while sm.job(name).training_job_status != "Stopping" and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # SageMaker takes a while to stop: the backend has to keep waiting
        sm._finish(name, "Stopped", billable=3)

    calls = []

    def sleep(seconds):
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt
        time.sleep(seconds)

    sm.on_create = until_stopped
    monkeypatch.setattr(backend, "_sleep", sleep)
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", "cc", *FAST_HP,
                    "--instance", "ml.p3.2xlarge", "--bucket", BUCKET, "--role", ROLE, "--runs-dir", runs)
    assert result.exit_code == 130, result.output
    assert sm.stop_calls == ["cc"]
    record = json.loads((runs / "cc/job.json").read_text())
    assert record["status"] == "Stopped" and record["stop_reason"] == "interrupted (Ctrl-C)"
    assert record["training_job_arn"].endswith("training-job/cc") and record["billable_seconds"] == 3
    assert len(calls) > 2  # kept polling after the stop until Stopped


def test_declining_to_stop_leaves_the_job_known(sm, tmp_path, tiny_data):
    from odorch.backends.sagemaker import run_sagemaker_job, stop_job

    def interrupt(seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sagemaker_job(_clients(), job_name="keep", runs_dir=tmp_path, data_dir=tiny_data, bucket=BUCKET,
                          role_arn=ROLE, hyperparameters={"weights": "none"}, model="ssdlite320_mobilenet_v3_large",
                          instance_type="ml.p3.2xlarge", echo=None, confirm=lambda q: False, sleep=interrupt)
    record = json.loads((tmp_path / "keep/job.json").read_text())
    assert record["status"] == "InProgress" and record["training_job_arn"].endswith("training-job/keep")
    assert sm.stop_calls == []
    assert stop_job(_clients(), "keep")["TrainingJobStatus"] == "Stopped" and sm.stop_calls == ["keep"]


def test_safe_extract_refuses_path_traversal(tmp_path):
    from odorch.archive import safe_extract
    from odorch.errors import SageMakerError

    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("model.pth", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(SageMakerError, match="refusing to extract"):
        safe_extract(path, tmp_path / "out" / "model")
    assert not (tmp_path / "out" / "escaped.txt").exists() and not (tmp_path / "out" / "model" / "model.pth").exists()


def test_sagemaker_options_need_instance_and_instance_needs_bucket_and_role(tmp_path, tiny_data, runner):
    result = invoke(runner, "train", "--data", tiny_data, "--bucket", BUCKET, "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "--bucket only apply to SageMaker jobs: add --instance TYPE" in result.output
    result = invoke(runner, "train", "--data", tiny_data, "--instance", "ml.g5.xlarge", "--runs-dir", tmp_path)
    assert result.exit_code == 2 and "needs --bucket and --role" in result.output
    assert not any(tmp_path.iterdir())

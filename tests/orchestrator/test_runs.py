"""odorch.runs: job.json through JobRecord (read_job / write_job) keeps its keys, values and order,
so runs folders written by earlier versions load and `odorch jobs describe` prints what it printed."""

import json
import re

import pytest

from odorch.runs import JOB_FILE, JobError, JobRecord, list_jobs, read_job, write_job
from tests.helpers import invoke

# job.json files copied verbatim from runs of today's code (2026-11-30). LOCAL: the quickstart's
# ssdlite job. SAGEMAKER and AMT_CHILD: a training job and an AMT child of the moto harness
# (tests/aws_harness.py: SageMaker itself cannot be reached here) with the backend's own keys
# (ARN, instance, cost, CloudWatch metrics, TensorBoard/MLflow notes).
LOCAL = '''{
  "job_name": "ssdlite",
  "backend": "local",
  "status": "Completed",
  "failure_reason": null,
  "stop_reason": null,
  "created": "2026-11-30T12:31:45+00:00",
  "started": "2026-11-30T12:31:45+00:00",
  "ended": "2026-11-30T12:43:28+00:00",
  "duration_s": 703.1,
  "hyperparameters": {
    "model": "ssdlite320_mobilenet_v3_large",
    "image_size": "256",
    "epochs": "12",
    "weights": "none"
  },
  "model": "ssdlite320_mobilenet_v3_large",
  "channels": {
    "train": "/tmp/qsfull/quickstart/data",
    "validation": "/tmp/qsfull/quickstart/data"
  },
  "job_dir": "/tmp/qsfull/quickstart/runs/ssdlite",
  "model_dir": "/tmp/qsfull/quickstart/runs/ssdlite/model",
  "checkpoint_dir": "/tmp/qsfull/quickstart/runs/ssdlite/checkpoints",
  "log_file": "/tmp/qsfull/quickstart/runs/ssdlite/logs.txt",
  "pid": 6394,
  "pid_start": "1558124",
  "orchestrator_pid": 6234,
  "exit_code": 0,
  "attempts": 1,
  "epoch": 12,
  "epochs": 12,
  "metrics_final": {
    "train:progress": 100.0,
    "validation:mAP": 0.240528,
    "validation:mAP50": 0.392461,
    "train:loss": 2.964454
  },
  "best": {
    "validation:mAP": 0.243984,
    "epoch": 10
  },
  "tensorboard_dir": "/tmp/qsfull/quickstart/runs/ssdlite/tensorboard",
  "command": [
    "/work/main/.venv/bin/python3",
    "/work/main/entrypoints/train.py"
  ]
}
'''
SAGEMAKER = '''{
  "job_name": "tb",
  "backend": "sagemaker",
  "status": "Completed",
  "failure_reason": null,
  "stop_reason": null,
  "created": "2026-11-30T10:49:08+00:00",
  "started": "2026-11-30T10:49:08+00:00",
  "ended": "2026-11-30T10:49:08+00:00",
  "duration_s": 0.1,
  "hyperparameters": {
    "model": "ssdlite320_mobilenet_v3_large",
    "epochs": "3"
  },
  "model": "ssdlite320_mobilenet_v3_large",
  "channels": {
    "train": "s3://odorch-tb/odorch/datasets/4a4f3675f617dd68/",
    "validation": "s3://odorch-tb/odorch/datasets/4a4f3675f617dd68/"
  },
  "job_dir": "/tmp/pytest-of-root/pytest-203/test_sagemaker_job_event_files0/runs/tb",
  "model_dir": "/tmp/pytest-of-root/pytest-203/test_sagemaker_job_event_files0/runs/tb/model",
  "checkpoint_dir": "/tmp/pytest-of-root/pytest-203/test_sagemaker_job_event_files0/runs/tb/checkpoints",
  "log_file": "/tmp/pytest-of-root/pytest-203/test_sagemaker_job_event_files0/runs/tb/logs.txt",
  "pid": null,
  "pid_start": null,
  "orchestrator_pid": 16738,
  "exit_code": null,
  "attempts": 0,
  "epoch": 3,
  "epochs": 3,
  "metrics_final": {
    "validation:mAP": 0.3,
    "train:loss": 0.8,
    "train:progress": 50.0
  },
  "best": {
    "validation:mAP": 0.3,
    "epoch": 3
  },
  "algorithm": "pytorch",
  "training_job_arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/tb",
  "region": "us-east-1",
  "instance_type": "ml.g5.xlarge",
  "instance_count": 1,
  "spot": false,
  "billable_seconds": 42,
  "estimated_cost_usd": 0.0164,
  "sagemaker_status": "Completed",
  "secondary_status": "Completed",
  "source_s3_uri": "s3://odorch-tb/odorch/jobs/tb/source/sourcedir.tar.gz",
  "output_s3_uri": "s3://odorch-tb/odorch/jobs/tb/output",
  "checkpoint_s3_uri": "s3://odorch-tb/odorch/jobs/tb/checkpoints",
  "tensorboard_dir": "/tmp/pytest-of-root/pytest-203/test_sagemaker_job_event_files0/runs/tb/tensorboard",
  "final_metric_data": {
    "validation:mAP": 0.3,
    "train:loss": 0.8,
    "train:progress": 50.0
  },
  "model_s3_uri": "s3://odorch-tb/odorch/jobs/tb/output/tb/output/model.tar.gz",
  "model_error": "cannot download s3://odorch-tb/odorch/jobs/tb/output/tb/output/model.tar.gz: An error occurred (404) when calling the HeadObject operation: Not Found",
  "tensorboard_s3_uri": "s3://odorch-tb/odorch/jobs/tb/tensorboard"
}
'''
AMT_CHILD = '''{
  "job_name": "amt1-001-59babb1c",
  "backend": "sagemaker",
  "status": "Completed",
  "failure_reason": null,
  "stop_reason": null,
  "created": "2026-11-30T10:50:24+00:00",
  "started": "2026-11-30T10:50:23+00:00",
  "ended": "2026-11-30T10:50:24+00:00",
  "duration_s": 0.1,
  "hyperparameters": {
    "model": "ssdlite320_mobilenet_v3_large",
    "weights": "none",
    "image_size": "128",
    "num_threads": "2",
    "flip": "false",
    "sagemaker_program": "train.py",
    "sagemaker_submit_directory": "s3://odorch-test/odorch/jobs/amt1/source/sourcedir.tar.gz",
    "sagemaker_region": "us-east-1",
    "lr": "0.01169970382",
    "momentum": "0.8423880911",
    "epochs": "2",
    "optimizer": "adamw",
    "batch_size": "4",
    "_tuning_objective_metric": "validation:mAP"
  },
  "model": "ssdlite320_mobilenet_v3_large",
  "channels": {},
  "job_dir": "/tmp/pytest-of-root/pytest-203/test_amt_study_is_a_parent_run0/runs/tune-amt1/trials/amt1-001-59babb1c",
  "model_dir": "/tmp/pytest-of-root/pytest-203/test_amt_study_is_a_parent_run0/runs/tune-amt1/trials/amt1-001-59babb1c/model",
  "checkpoint_dir": "/tmp/pytest-of-root/pytest-203/test_amt_study_is_a_parent_run0/runs/tune-amt1/trials/amt1-001-59babb1c/checkpoints",
  "log_file": "/tmp/pytest-of-root/pytest-203/test_amt_study_is_a_parent_run0/runs/tune-amt1/trials/amt1-001-59babb1c/logs.txt",
  "pid": null,
  "pid_start": null,
  "orchestrator_pid": null,
  "exit_code": null,
  "attempts": 0,
  "epoch": 2,
  "epochs": 2,
  "metrics_final": {
    "validation:mAP": 0.608543,
    "validation:mAP50": 0.912814,
    "train:loss": 0.5
  },
  "best": {
    "validation:mAP": 0.608543,
    "epoch": 2
  },
  "training_job_arn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/amt1-001-59babb1c",
  "region": "us-east-1",
  "instance_type": "ml.g5.xlarge",
  "instance_count": 1,
  "tuning_job": "amt1",
  "billable_seconds": 480,
  "estimated_cost_usd": 0.1877,
  "sagemaker_status": "Completed",
  "secondary_status": "Completed",
  "final_metric_data": {
    "validation:mAP": 0.608543,
    "validation:mAP50": 0.912814,
    "train:loss": 0.5
  },
  "model_s3_uri": "s3://odorch-test/odorch/jobs/amt1/output/amt1-001-59babb1c/output/model.tar.gz",
  "tensorboard_dir": "/tmp/pytest-of-root/pytest-203/test_amt_study_is_a_parent_run0/runs/tune-amt1/tensorboard/amt1-001-59babb1c",
  "mlflow": {
    "tracking_uri": "sqlite:////tmp/pytest-of-root/pytest-203/mlflow0/mlflow.db",
    "experiment": "tests",
    "run_id": "aaf49427965f4966b782faedb6999507",
    "parent_run_id": "bc825d4f6d064d959569392107b39aa0",
    "failed_calls": 0
  }
}
'''
# LOCAL as the first local backend (commit 900a21e, before odorch.tracking) wrote it: no tensorboard_dir.
OLD = re.sub(r'\n  "tensorboard_dir": "[^"]*",', "", LOCAL, count=1)
assert OLD != LOCAL


def put(folder, text):
    folder.mkdir(parents=True)
    (folder / JOB_FILE).write_text(text)
    return folder


@pytest.mark.parametrize("text", [LOCAL, SAGEMAKER, AMT_CHILD, OLD], ids=["local", "sagemaker", "amt-child", "old"])
def test_job_json_round_trips_byte_equal(tmp_path, text):
    record = read_job(put(tmp_path / "a", text))
    (tmp_path / "b").mkdir()
    write_job(tmp_path / "b", record)
    assert (tmp_path / "b" / JOB_FILE).read_text() == text  # same keys, values and order


def test_fields_are_typed_and_a_backends_keys_are_extra():
    local = JobRecord.from_json(json.loads(LOCAL))
    assert local.status == "Completed" and local.epochs == 12 and local.best_value == 0.243984
    assert local.hyperparameters["epochs"] == "12" and local.pid == 6394
    assert list(local.extra) == ["tensorboard_dir", "command"]
    sagemaker = JobRecord.from_json(json.loads(SAGEMAKER))
    assert sagemaker.backend == "sagemaker" and sagemaker.extra["estimated_cost_usd"] == 0.0164
    assert sagemaker.extra["training_job_arn"].endswith(":training-job/tb") and "status" not in sagemaker.extra
    assert JobRecord.from_json(json.loads(AMT_CHILD)).extra["mlflow"]["failed_calls"] == 0
    assert "tensorboard_dir" not in JobRecord.from_json(json.loads(OLD)).extra


def test_missing_fields_take_their_defaults_and_a_non_record_is_a_job_error(tmp_path):
    minimal = {"job_name": "m", "status": "Failed", "created": "2026-11-22T07:38:41+00:00"}
    record = read_job(put(tmp_path / "m", json.dumps(minimal)))
    assert record.best == {"validation:mAP": None, "epoch": None} and record.metrics_final == {}
    assert record.attempts == 0 and record.extra == {} and record.best_value is None
    write_job(tmp_path / "m", record)
    assert json.loads((tmp_path / "m" / JOB_FILE).read_text()) == {**JobRecord().to_json(), **minimal}
    put(tmp_path / "list", "[1, 2]")
    with pytest.raises(JobError, match=r"list/job.json: not a json object"):
        read_job(tmp_path / "list")


def test_jobs_cli_prints_job_json_as_it_is_on_disk(tmp_path, runner):
    runs = tmp_path / "runs"
    for name, text in (("ssdlite", LOCAL), ("tb", SAGEMAKER), ("old", OLD)):
        put(runs / name, text)
    result = invoke(runner, "jobs", "describe", "tb", "--runs-dir", runs)
    assert result.exit_code == 0 and result.output == SAGEMAKER
    assert invoke(runner, "jobs", "describe", "old", "--runs-dir", runs).output == OLD
    assert [r.job_name for r in list_jobs(runs)] == ["tb", "ssdlite", "ssdlite"]  # oldest first (OLD is a copy)
    rows = invoke(runner, "jobs", "list", "--runs-dir", runs).output.splitlines()[1:]
    assert [row.split()[:5] for row in rows[:2]] == [
        ["tb", "Completed", "ssdlite320_mobilenet_v3_large", "0.3000", "(epoch"],
        ["ssdlite", "Completed", "ssdlite320_mobilenet_v3_large", "0.2440", "(epoch"]]


def test_a_field_of_the_wrong_type_is_a_job_error_and_listed_as_unreadable(tmp_path, runner):
    runs = tmp_path / "runs"
    put(runs / "ok", LOCAL.replace('"duration_s": 703.1', '"duration_s": 703'))  # an int is a float too
    edited = json.loads(SAGEMAKER)
    edited.update(job_name="edited", created=None, attempts=True)
    put(runs / "edited", json.dumps(edited))
    with pytest.raises(JobError) as e:
        read_job(runs / "edited")
    assert str(e.value) == (f"cannot read job record {runs / 'edited' / JOB_FILE}: created is null, not str; "
                            "attempts is true, not int; correct the file or remove the job's folder")
    assert [(r.job_name, r.status) for r in list_jobs(runs)] == [("edited", "Unreadable"), ("ssdlite", "Completed")]
    result = invoke(runner, "jobs", "list", "--runs-dir", runs)
    assert result.exit_code == 0 and "Unreadable" in result.output
    result = invoke(runner, "jobs", "describe", "edited", "--runs-dir", runs)
    assert result.exit_code == 1 and result.output.startswith("error: cannot read job record") and "created is null" in result.output
    assert len(result.output.splitlines()) == 1

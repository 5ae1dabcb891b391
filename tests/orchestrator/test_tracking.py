"""Experiment tracking: TensorBoard event files and MLflow runs, fed from the metric records.

Event files are read back with TensorBoard's own reader (EventAccumulator). The fast tests run
tests/orchestrator/fake_entrypoint.py; the MLflow tests log to a real MLflow store (a SQLite
file, in this process) and, in test_mlflow_server_train_and_tune, to a real `mlflow server`.
"""

import json
from pathlib import Path

import pytest

from odorch.runs import read_metrics
from odorch.tracking import TrackingError, TrackingOptions, check_mlflow, redact
from tests.helpers import run_fake_job


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} read by TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    tags = acc.Tags()["tensors"] + acc.Tags()["scalars"]
    out = {}
    for tag in tags:
        if tag in acc.Tags()["scalars"]:
            out[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
        else:  # tensorboard.summary.Writer writes scalars as rank-0 tensors
            from tensorboard.util import tensor_util

            out[tag] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
    return out


def epoch_records(job_dir: Path) -> dict[int, dict[str, float]]:
    return {e["epoch"]: e["metrics"] for e in read_metrics(job_dir) if e["epoch"] is not None}


def test_event_files_hold_every_epoch_of_metrics_jsonl(tmp_path, channels):
    record = run_fake_job(tmp_path / "runs", channels, epochs=4, maps="0.1,0.3,0.2")
    job_dir = tmp_path / "runs" / "job1"
    assert record.extra["tensorboard_dir"] == str(job_dir / "tensorboard")
    got = scalars(job_dir / "tensorboard")
    expected = epoch_records(job_dir)
    assert sorted(expected) == [1, 2, 3, 4]
    assert "validation/mAP" in got and "train/progress" not in got
    assert [step for step, _ in got["validation/mAP"]] == [1, 2, 3, 4]
    for step, value in got["validation/mAP"]:
        assert value == pytest.approx(expected[step]["validation:mAP"], abs=1e-6)


def test_a_resumed_job_appends_to_the_same_folder(tmp_path, channels):
    run_fake_job(tmp_path / "runs", channels, epochs=2, fail_with="boom")
    run_fake_job(tmp_path / "runs", channels, epochs=4)  # re-run resumes after epoch 2
    got = scalars(tmp_path / "runs" / "job1" / "tensorboard")
    assert [step for step, _ in got["validation/mAP"]] == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def sqlite_mlflow(tmp_path_factory):
    """A real MLflow store in a SQLite file (its schema is made once: slow), with the experiments
    the tests use made beforehand so their artifacts land here, not in ./mlruns."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    for name in ("tests", "odorch"):
        client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())
    return uri


@pytest.mark.slow  # the SQLite store's schema takes ~10-50 s to make, once for both
def test_mlflow_run_of_a_local_job(tmp_path, channels, sqlite_mlflow):
    """A real MLflow store (SQLite, in this process): params, per-epoch metrics, artifacts, status."""
    from mlflow.tracking import MlflowClient

    uri = sqlite_mlflow
    options = TrackingOptions(mlflow_uri=uri, experiment="tests")
    check_mlflow(options)
    record = run_fake_job(tmp_path / "runs", channels, tracking=options, epochs=3, maps="0.2,0.5,0.4")
    run_id = record.extra["mlflow"]["run_id"]
    saved = json.loads((tmp_path / "runs" / "job1" / "job.json").read_text())
    assert saved["mlflow"]["run_id"] == run_id and saved["mlflow"]["failed_calls"] == 0
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "job1"
    assert run.data.params["maps"] == "0.2,0.5,0.4" and run.data.params["epochs"] == "3"
    history = client.get_metric_history(run_id, "validation:mAP")
    assert [(m.step, m.value) for m in history] == [(1, 0.2), (2, 0.5), (3, 0.4)]
    assert "train:progress" not in run.data.metrics
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"model", "job.json", "metrics.jsonl"} <= names
    assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/model.txt"]


@pytest.mark.slow  # the SQLite store's schema takes ~10-50 s to make, once for both
def test_mlflow_failed_job_is_a_failed_run_and_rerun_continues_it(tmp_path, channels, sqlite_mlflow):
    from mlflow.tracking import MlflowClient

    uri = sqlite_mlflow
    options = TrackingOptions(mlflow_uri=uri)
    first = run_fake_job(tmp_path / "runs", channels, tracking=options, epochs=2, fail_with="boom")
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(first.extra["mlflow"]["run_id"]).info.status == "FAILED"
    second = run_fake_job(tmp_path / "runs", channels, tracking=options, epochs=3)
    assert second.extra["mlflow"]["run_id"] == first.extra["mlflow"]["run_id"]
    run_id = second.extra["mlflow"]["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "odorch"
    steps = [m.step for m in client.get_metric_history(run_id, "validation:mAP")]
    assert steps == [1, 2, 3]


def test_unreachable_mlflow_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(TrackingError, match=r"cannot use MLflow at http://\*\*\*@127\.0\.0\.1:9/"):
        check_mlflow(TrackingOptions(mlflow_uri="http://user:secret@127.0.0.1:9/"))


def test_redact_keeps_no_password():
    assert redact("https://u:p@mlflow.example.com:5000/x") == "https://***@mlflow.example.com:5000/x"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    arn = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/odorch"
    assert redact(arn) == arn


def test_a_sagemaker_mlflow_arn_resolves_to_the_plugins_store():
    """What can run here of a managed MLflow server (no request is sent): the ARN is a tracking
    URI the sagemaker-mlflow plugin serves (its store, pointed at the region's endpoint), and its
    request header names that server (the plugin reads it from MLflow's global URI)."""
    import mlflow
    from sagemaker_mlflow.mlflow_sagemaker_request_header_provider import MlflowSageMakerRequestHeaderProvider
    from sagemaker_mlflow.mlflow_sagemaker_store import MlflowSageMakerStore

    from odorch.tracking import mlflow_client

    arn = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/odorch"
    try:
        store = mlflow_client(arn)._tracking_client.store
        assert isinstance(store, MlflowSageMakerStore)
        assert "eu-west-1" in store.get_host_creds().host
        assert MlflowSageMakerRequestHeaderProvider().request_headers() == {"x-mlflow-sm-tracking-server-arn": arn}
    finally:
        mlflow.set_tracking_uri(None)  # also unsets the MLFLOW_TRACKING_URI it exported


def test_sagemaker_job_event_files_go_to_its_tensorboard_output_config(aws, monkeypatch, tmp_path, tiny_data):
    """A SageMaker job (moto on loopback) read through CloudWatch: its request carries a
    TensorBoardOutputConfig that botocore's service model accepts, and the event files written
    from its metric lines are at that S3 path; downloaded, TensorBoard reads every epoch."""
    import botocore.session
    from botocore.validate import ParamValidator

    import odorch.backends.sagemaker as backend
    from odorch.aws import AwsClients
    from tests.aws_harness import ROLE

    monkeypatch.setattr(backend, "POLL_S", 0.05)
    aws.make_bucket("odorch-tb")
    lines = ["epoch=1/3 train:loss=1.5 validation:mAP=0.1", "train:progress=50.0",
             "epoch=2/3 train:loss=1.0 validation:mAP=0.25", "epoch=3/3 train:loss=0.8 validation:mAP=0.3"]
    aws.on_create = lambda name, request: aws.run_job(name, logs=lines)
    record = backend.run_sagemaker_job(
        AwsClients.from_env(), job_name="tb", runs_dir=tmp_path / "runs", data_dir=tiny_data, bucket="odorch-tb",
        role_arn=ROLE, hyperparameters={"model": "ssdlite320_mobilenet_v3_large", "epochs": 3},
        model="ssdlite320_mobilenet_v3_large", instance_type="ml.g5.xlarge", echo=None,
    )
    request = aws.requests["tb"]
    uri = "s3://odorch-tb/odorch/jobs/tb/tensorboard"
    assert request["TensorBoardOutputConfig"] == {"S3OutputPath": uri, "LocalPath": "/opt/ml/output/tensorboard"}
    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model("CreateTrainingJob").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    assert record.extra["tensorboard_s3_uri"] == uri
    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket="odorch-tb", Prefix="odorch/jobs/tb/tensorboard/")["Contents"]]
    assert keys and all(k.split("/")[-1].startswith("events.out.tfevents.") for k in keys)
    down = tmp_path / "downloaded"
    down.mkdir()
    for key in keys:
        aws.s3.download_file("odorch-tb", key, str(down / key.split("/")[-1]))
    got = scalars(down)
    assert got["validation/mAP"] == [(1, pytest.approx(0.1)), (2, pytest.approx(0.25)), (3, pytest.approx(0.3))]
    assert [s for s, _ in got["train/loss"]] == [1, 2, 3] and "train/progress" not in got


def test_odorch_train_writes_every_epoch_to_tensorboard(trained_runs):
    """`odorch train` (the trained_runs fixture: 3 real epochs): TensorBoard's reader finds every
    epoch's train:loss, validation:mAP and validation:mAP50, equal to metrics.jsonl."""
    job_dir = trained_runs["small-a"]
    got = scalars(job_dir / "tensorboard")
    expected = epoch_records(job_dir)
    assert sorted(expected) == [1, 2, 3]
    for name in ("train:loss", "validation:mAP", "validation:mAP50"):
        tag = name.replace(":", "/")
        assert [step for step, _ in got[tag]] == [1, 2, 3], tag
        assert [v for _, v in got[tag]] == pytest.approx([expected[e][name] for e in (1, 2, 3)], abs=1e-5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, artifacts proxied to a local folder);
    stopped (its whole process group) at the end."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600  # its first start creates the schema: minutes on a busy 2-core box
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            assert time.time() < deadline, "mlflow server did not answer in 10 minutes"
            time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_mlflow_server_train_and_tune(mlflow_server, tiny_data, tmp_path, runner, monkeypatch):
    """`odorch train` and a 2-trial `odorch tune` against a real tracking server, read back with
    MlflowClient: params, per-epoch metrics, artifacts, the study as parent of its trials."""
    from mlflow.tracking import MlflowClient

    from tests.helpers import invoke

    runs = tmp_path / "runs"
    fast = ["--weights", "none", "--hp", "image_size=128", "--hp", "batch_size=4", "--runs-dir", runs]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # train: from the environment
    result = invoke(runner, "train", "--data", tiny_data, "--epochs", 2, "--job-name", "ml-train", *fast)
    assert result.exit_code == 0, result.output
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    result = invoke(runner, "evaluate", runs / "ml-train", "--data", tiny_data, "--split", "test")
    assert result.exit_code == 0, result.output
    result = invoke(runner, "tune", "--data", tiny_data, "--study", "ml", "--max-jobs", 2, "--epochs", 2,
                    "--sampler", "random", "--pruner", "none", "--seed", 1, "--mlflow", mlflow_server, *fast)
    assert result.exit_code == 0, result.output

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("odorch")
    runs_by_name = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs_by_name) == {"ml-train", "tune-ml", "tune-ml-trial-0", "tune-ml-trial-1"}

    train = runs_by_name["ml-train"]
    record = json.loads((runs / "ml-train" / "job.json").read_text())
    assert record["mlflow"]["run_id"] == train.info.run_id and train.info.status == "FINISHED"
    assert {k: train.data.params[k] for k in ("model", "epochs", "image_size", "batch_size", "weights")} == {
        "model": "ssdlite320_mobilenet_v3_large", "epochs": "2", "image_size": "128", "batch_size": "4", "weights": "none"}
    expected = epoch_records(runs / "ml-train")
    for name in ("train:loss", "validation:mAP", "validation:mAP50"):
        history = client.get_metric_history(train.info.run_id, name)
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx([expected[1][name], expected[2][name]], abs=1e-6)
    names = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"model", "job.json", "metrics.jsonl", "eval-test.json"} <= names
    assert {a.path for a in client.list_artifacts(train.info.run_id, "model")} >= {"model/model.pth", "model/config.json"}
    local = tmp_path / "back"
    client.download_artifacts(train.info.run_id, "eval-test.json", str(local))
    evaluation = json.loads((local / "eval-test.json").read_text())
    assert evaluation == json.loads((runs / "ml-train" / "eval-test.json").read_text())
    assert train.data.metrics == {**train.data.metrics, "test:AP": pytest.approx(evaluation["stats"]["AP"])}

    parent = runs_by_name["tune-ml"]
    assert parent.info.status == "FINISHED" and parent.data.params["sampler"] == "random"
    summary = json.loads((runs / "tune-ml" / "summary.json").read_text())
    assert parent.data.metrics["best:validation:mAP"] == pytest.approx(summary["best"]["best_map"])
    assert "summary.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    for n in (0, 1):
        child = runs_by_name[f"tune-ml-trial-{n}"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        assert "lr" in child.data.params
        assert [m.step for m in client.get_metric_history(child.info.run_id, "validation:mAP")] == [1, 2]
        # the trial's event files sit with its study's
        assert [s for s, _ in scalars(runs / "tune-ml" / "tensorboard" / f"tune-ml-trial-{n}")["validation/mAP"]] == [1, 2]


@pytest.mark.slow  # shares the SQLite store (its schema: ~10-50 s)
def test_amt_study_is_a_parent_run_and_its_children_are_tracked(aws, tmp_path, tiny_data, sqlite_mlflow):
    """SageMaker AMT (moto + the harness playing the children): each child's CloudWatch metric lines
    become a child run of the study's run and event files beside the study's."""
    from mlflow.tracking import MlflowClient

    from tests.hpo.test_amt import BUCKET, _run

    aws.make_bucket(BUCKET)
    result = _run(tmp_path, tiny_data, study="amt1", max_jobs=2, max_parallel_jobs=1,
                  tracking=TrackingOptions(mlflow_uri=sqlite_mlflow, experiment="tests"))
    client = MlflowClient(tracking_uri=sqlite_mlflow)
    experiment = client.get_experiment_by_name("tests")
    (parent,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'tune-amt1'")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best:validation:mAP"] == pytest.approx(
        max(t["best_map"] for t in result["trials"]))
    children = {r.info.run_name: r for r in client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == {t["job"] for t in result["trials"]}
    for trial in result["trials"]:
        expected = epoch_records(Path(trial["job_dir"]))
        assert expected, trial["job"]
        history = client.get_metric_history(children[trial["job"]].info.run_id, "validation:mAP")
        assert [(m.step, m.value) for m in history] == [(e, pytest.approx(expected[e]["validation:mAP"])) for e in sorted(expected)]
        got = scalars(tmp_path / "runs" / "tune-amt1" / "tensorboard" / trial["job"])
        assert [s for s, _ in got["validation/mAP"]] == sorted(expected)


@pytest.mark.slow  # shares the SQLite store (its schema: ~10-50 s)
def test_mlflow_failing_mid_job_is_counted_and_tensorboard_goes_on(tmp_path, sqlite_mlflow):
    """The run is deleted on the server while the job runs: every refused call is counted (one
    warning), job.json says how many, and TensorBoard still has every epoch."""
    from mlflow.tracking import MlflowClient

    from odorch.runs import append_metrics, new_record
    from odorch.tracking import open_tracker

    job_dir = tmp_path / "j"
    job_dir.mkdir()
    record = new_record(job_name="j", backend="local", job_dir=job_dir, model="m", hyperparameters={"lr": 0.1})
    said = []
    tracker = open_tracker(job_dir, record, TrackingOptions(mlflow_uri=sqlite_mlflow, experiment="tests"), echo=said.append)
    MlflowClient(tracking_uri=sqlite_mlflow).delete_run(record.extra["mlflow"]["run_id"])
    for epoch in (1, 2, 3):
        tracker.log(append_metrics(job_dir, {"validation:mAP": 0.1 * epoch, "train:loss": 1.0 / epoch}, epoch))
    record.status = "Completed"
    tracker.close(record, job_dir=job_dir)
    # the 3 epochs and the status refused (artifacts go to the artifact store, which does not ask the run)
    assert record.extra["mlflow"]["failed_calls"] == 4
    assert [s for s in said if s.startswith("warning: MLflow could not log")] == [
        f"warning: MLflow could not log epoch 1 (run {record.extra['mlflow']['run_id']}): "
        f"MlflowException: The run {record.extra['mlflow']['run_id']} must be in the 'active' state. Current state is "
        "deleted.; the job goes on, failures are counted"]
    assert said[-1].startswith("warning: 4 MLflow call(s) of run")
    assert [s for s, _ in scalars(job_dir / "tensorboard")["validation/mAP"]] == [1, 2, 3]


def test_cli_refuses_an_unreachable_mlflow_before_any_job(tmp_path, tiny_data, runner, monkeypatch):
    from tests.helpers import invoke

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on port 9
    runs = tmp_path / "runs"
    for command in (["train", "--job-name", "j"], ["tune", "--study", "s", "--max-jobs", "1"]):
        result = invoke(runner, *command, "--data", tiny_data, "--epochs", 1, "--runs-dir", runs)
        assert result.exit_code == 1
        # (sagemaker-mlflow, installed for the ARN test, may log a warning of its own before it)
        (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert line.startswith("Error: cannot use MLflow at http://127.0.0.1:9: ") and "MLFLOW_TRACKING_URI" in line
    assert not runs.exists()

"""Experiment tracking: TensorBoard event files and MLflow runs, fed from the metric records.

Event files are read back with TensorBoard's own reader (EventAccumulator). The fast tests run
tests/orchestrator/fake_entrypoint.py; the MLflow tests log to a real MLflow store (a SQLite
file, in this process) and, in test_mlflow_server_train_and_tune, to a real `mlflow server`.
"""

import json
from pathlib import Path

import pytest

from odorch.backends.local import run_local_job
from odorch.runs import read_metrics
from odorch.tracking import TrackingError, TrackingOptions, check_mlflow, redact

FAKE = Path(__file__).with_name("fake_entrypoint.py")


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


@pytest.fixture
def channels(tmp_path):
    out = {}
    for name in ("train", "validation"):
        (tmp_path / "data" / name).mkdir(parents=True)
        out[name] = tmp_path / "data" / name
    return out


def fake_job(tmp_path, channels, *, tracking=None, name="job1", **hps):
    return run_local_job(job_name=name, runs_dir=tmp_path / "runs", entrypoint=FAKE, channels=channels,
                         hyperparameters=hps, model="m", echo=False, tracking=tracking)


def test_event_files_hold_every_epoch_of_metrics_jsonl(tmp_path, channels):
    record = fake_job(tmp_path, channels, epochs=4, maps="0.1,0.3,0.2")
    job_dir = tmp_path / "runs" / "job1"
    assert record["tensorboard_dir"] == str(job_dir / "tensorboard")
    got = scalars(job_dir / "tensorboard")
    expected = epoch_records(job_dir)
    assert sorted(expected) == [1, 2, 3, 4]
    assert "validation/mAP" in got and "train/progress" not in got
    assert [step for step, _ in got["validation/mAP"]] == [1, 2, 3, 4]
    for step, value in got["validation/mAP"]:
        assert value == pytest.approx(expected[step]["validation:mAP"], abs=1e-6)


def test_a_resumed_job_appends_to_the_same_folder(tmp_path, channels):
    fake_job(tmp_path, channels, epochs=2, fail_with="boom")
    fake_job(tmp_path, channels, epochs=4)  # re-run resumes after epoch 2
    got = scalars(tmp_path / "runs" / "job1" / "tensorboard")
    assert [step for step, _ in got["validation/mAP"]] == [1, 2, 3, 4]


def test_mlflow_run_of_a_local_job(tmp_path, channels):
    """A real MLflow store (SQLite, in this process): params, per-epoch metrics, artifacts, status."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = TrackingOptions(mlflow_uri=uri, experiment="tests")
    check_mlflow(options)
    record = fake_job(tmp_path, channels, tracking=options, epochs=3, maps="0.2,0.5,0.4")
    run_id = record["mlflow"]["run_id"]
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


def test_mlflow_failed_job_is_a_failed_run_and_rerun_continues_it(tmp_path, channels):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = TrackingOptions(mlflow_uri=uri)
    first = fake_job(tmp_path, channels, tracking=options, epochs=2, fail_with="boom")
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(first["mlflow"]["run_id"]).info.status == "FAILED"
    second = fake_job(tmp_path, channels, tracking=options, epochs=3)
    assert second["mlflow"]["run_id"] == first["mlflow"]["run_id"]
    run_id = second["mlflow"]["run_id"]
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
    """What can run here of a managed MLflow server: the ARN is a tracking URI the sagemaker-mlflow
    plugin serves (its store, pointed at the region's endpoint); no request is sent."""
    from mlflow.tracking import MlflowClient
    from sagemaker_mlflow.mlflow_sagemaker_store import MlflowSageMakerStore

    arn = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/odorch"
    store = MlflowClient(tracking_uri=arn)._tracking_client.store
    assert isinstance(store, MlflowSageMakerStore)
    assert "eu-west-1" in store.get_host_creds().host

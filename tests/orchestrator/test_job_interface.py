"""The job interface: a JobSpec run by a backend through run_job, preflight listing every problem
before anything is written, and runs.record_line, the one log line -> metrics path.

The local job runs tests/orchestrator/fake_entrypoint.py (stdlib only) through an algorithm
that is one small subclass, as a new algorithm would be."""

import json
from collections.abc import Collection
from pathlib import Path

import pytest

from odorch.algorithms import ALGORITHMS, get_algorithm
from odorch.algorithms.pytorch import PyTorchEntrypoint
from odorch.backends import JobSpec, PreflightProblems, run_job
from odorch.backends.local import LocalBackend
from odorch.runs import JOB_FILE, METRICS_FILE, new_record, read_metrics, record_line
from tests.helpers import FAKE_ENTRYPOINT


class FakeTraining(PyTorchEntrypoint):
    """The stand-in entrypoint as an algorithm: its own script and hyperparameter names."""

    name = "fake"
    title = "the fake entrypoint"

    def hyperparameter_names(self) -> Collection[str]:
        return ("epochs", "maps", "model")

    def entrypoint(self) -> Path:
        return FAKE_ENTRYPOINT

    def check(self, hyperparameters):
        unknown = sorted(set(hyperparameters) - set(self.hyperparameter_names()))
        return [f"unknown hyperparameter(s) {', '.join(unknown)}"] if unknown else []


def spec(tmp_path, *, name="job1", algorithm=None, **hps):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return JobSpec(name=name, runs_dir=tmp_path / "runs", data=data, model="m", hyperparameters=hps,
                   algorithm=algorithm or FakeTraining())


def test_run_job_on_the_local_backend(tmp_path):
    record = run_job(spec(tmp_path, epochs="2", maps="0.3,0.6"), LocalBackend())
    job = tmp_path / "runs" / "job1"
    assert record.status == "Completed" and record.backend == "local"
    assert json.loads((job / JOB_FILE).read_text()) == json.loads(json.dumps(record.to_json(), default=str))
    assert [(m["epoch"], m["metrics"]["validation:mAP"]) for m in read_metrics(job) if "validation:mAP" in m["metrics"]] \
        == [(1, 0.3), (2, 0.6)]
    assert record.best == {"validation:mAP": 0.6, "epoch": 2}
    assert LocalBackend().stop(record).status == "Completed"  # a finished job is left as it is


def test_preflight_lists_every_problem_and_writes_nothing(tmp_path):
    with pytest.raises(PreflightProblems) as e:
        run_job(spec(tmp_path, name="bad name", colour="red"), LocalBackend())
    assert "bad job name 'bad name'" in str(e.value) and "unknown hyperparameter(s) colour" in str(e.value)
    assert not (tmp_path / "runs").exists()
    problems = LocalBackend().preflight(spec(tmp_path, algorithm=get_algorithm("builtin-od")))
    assert problems == ["--algorithm builtin-od runs only on SageMaker: add --instance TYPE (e.g. ml.p3.2xlarge)"]


def test_algorithms_know_whose_hyperparameter_a_name_is():
    pytorch, builtin = ALGORITHMS["pytorch"], ALGORITHMS["builtin-od"]
    assert pytorch.foreign_names({"nms_threshold": "0.4", "lr": "0.01"}) == [
        "hyperparameter nms_threshold belongs to --algorithm builtin-od, not the PyTorch entrypoint"]
    assert builtin.owner_of("head_lr_mult") is not None and builtin.owner_of("epochs") is None
    assert builtin.metric_definitions() is None and pytorch.metric_definitions()[0]["Name"]


def test_record_line_is_the_one_metrics_path(tmp_path):
    record = new_record(job_name="j", backend="sagemaker", job_dir=tmp_path)
    record.epochs = 5
    seen = []
    record_line(tmp_path, record, "epoch=1/3 train:loss=0.5 validation:mAP=0.25", sink=seen.append)
    record_line(tmp_path, record, "no metrics here", sink=seen.append)
    # the built-in algorithm's line carries no epoch total: the record's is kept
    record_line(tmp_path, record, "#quality_metric: host=algo-1, epoch=1, validation mAP <score>=(0.4)", sink=seen.append)
    written = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert seen == written and [(e["epoch"], e["metrics"]) for e in written] == [
        (1, {"validation:mAP": 0.25, "train:loss": 0.5}), (1, {"validation:mAP": 0.4})]
    assert record.best == {"validation:mAP": 0.4, "epoch": 1} and record.epochs == 3

"""SageMaker AMT engine (hpo/amt.py): the CreateHyperParameterTuningJob request, checked against
botocore's service model, and run_amt_tuning end to end against the harness (tests/aws_harness.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odorch.hpo.space import amt_ranges, load_space
from odorch.runtime.metrics import metric_definitions
from tests.aws_harness import ROLE

BUCKET = "odorch-test"
MODEL = "ssdlite320_mobilenet_v3_large"
SPACE_YAML = """\
lr: {type: float, low: 0.001, high: 0.1, log: true}
momentum: {type: float, low: 0.8, high: 0.95}
epochs: {type: int, low: 1, high: 3}
optimizer: {type: categorical, choices: [sgd, adamw]}
batch_size: {type: categorical, choices: [4, 8]}
"""
FIXED = {"weights": "none", "image_size": 128, "num_threads": 2, "flip": False}


def _validate(request: dict) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sagemaker")
    report = ParamValidator().validate(request, model.operation_model("CreateHyperParameterTuningJob").input_shape)
    assert not report.has_errors(), report.generate_report()


def _space(tmp_path: Path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE_YAML)
    return load_space(path)


def _training_request(**kw):
    from odorch.backends.sagemaker import training_job_request

    args = dict(job_name="study-1", region="us-east-1", role_arn=ROLE, bucket=BUCKET, dataset_uri="s3://b/d/",
                source_uri="s3://b/src.tar.gz", hyperparameters={"model": MODEL, **FIXED}, model=MODEL,
                instance_type="ml.g5.xlarge")
    args.update(kw)
    return training_job_request(**args)


def test_request_shape_and_service_model(tmp_path):
    from odorch.hpo.amt import tuning_job_request

    space = _space(tmp_path)
    request = tuning_job_request(study="study-1", space=space, fixed={"model": MODEL, **FIXED},
                                 training_request=_training_request(), max_jobs=6, max_parallel_jobs=2)
    _validate(request)
    config = request["HyperParameterTuningJobConfig"]
    assert request["HyperParameterTuningJobName"] == "study-1"
    assert config["Strategy"] == "Bayesian" and config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "validation:mAP"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 2}
    ranges = config["ParameterRanges"]
    assert ranges == amt_ranges(space)
    assert ranges["ContinuousParameterRanges"][0] == {"Name": "lr", "MinValue": "0.001", "MaxValue": "0.1",
                                                      "ScalingType": "Logarithmic"}
    assert ranges["IntegerParameterRanges"] == [{"Name": "epochs", "MinValue": "1", "MaxValue": "3", "ScalingType": "Linear"}]
    assert {"Name": "batch_size", "Values": ["4", "8"]} in ranges["CategoricalParameterRanges"]
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()
    assert "AlgorithmName" not in definition["AlgorithmSpecification"]
    static = definition["StaticHyperParameters"]
    assert all(isinstance(v, str) for v in static.values())
    assert static["flip"] == "false" and static["image_size"] == "128" and static["model"] == MODEL
    assert static["sagemaker_program"] == "train.py" and static["sagemaker_submit_directory"] == "s3://b/src.tar.gz"
    assert not set(space) & set(static)
    assert definition["RoleArn"] == ROLE and definition["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert "EnableManagedSpotTraining" not in definition and "WarmStartConfig" not in request
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["odorch:study"] == "study-1" and tags["odorch:engine"] == "amt" and tags["odorch:model"] == MODEL
    # the operator policy creates and stops only resources tagged odorch:job (defect 3: it was dropped)
    assert tags["odorch:job"] == request["HyperParameterTuningJobName"]


def test_warm_start_hyperband_spot_and_long_names(tmp_path):
    from odorch.hpo.amt import tuning_job_name, tuning_job_request

    space = _space(tmp_path)
    fixed = {"model": MODEL, **FIXED}
    spot = _training_request(spot=True, max_run=3600)
    request = tuning_job_request(study="a study named far beyond thirty-two characters", space=space, fixed=fixed,
                                 training_request=spot, max_jobs=4, max_parallel_jobs=4, strategy="Hyperband",
                                 warm_start="parent-tuning")
    _validate(request)
    name = request["HyperParameterTuningJobName"]
    assert len(name) <= 32 and name.startswith("a-study-named") and name == tuning_job_name("a study named far beyond thirty-two characters")
    assert tuning_job_name("a study named far beyond thirty-two characters-x") != name
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Hyperband" and config["TrainingJobEarlyStoppingType"] == "Off"
    # epochs tuned: MaxResource is the top of its range (AMT rejects Hyperband without MaxResource)
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": int(space["epochs"].high)}}
    assert request["WarmStartConfig"] == {"ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "parent-tuning"}],
                                          "WarmStartType": "IdenticalDataAndAlgorithm"}
    definition = request["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True and definition["CheckpointConfig"]["S3Uri"].endswith("/checkpoints")
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    # epochs fixed: Hyperband's MaxResource
    no_epochs = {k: v for k, v in space.items() if k != "epochs"}
    request = tuning_job_request(study="s", space=no_epochs, fixed={**fixed, "epochs": 5},
                                 training_request=_training_request(hyperparameters={**fixed, "epochs": 5}),
                                 max_jobs=2, max_parallel_jobs=1, strategy="Hyperband")
    assert request["HyperParameterTuningJobConfig"]["StrategyConfig"]["HyperbandStrategyConfig"] == {"MinResource": 1, "MaxResource": 5}
    # epochs neither tuned nor fixed: the entrypoint's default
    no_epochs_fixed = {k: v for k, v in fixed.items() if k != "epochs"}
    request = tuning_job_request(study="s", space=no_epochs, fixed=no_epochs_fixed,
                                 training_request=_training_request(hyperparameters=no_epochs_fixed),
                                 max_jobs=2, max_parallel_jobs=1, strategy="Hyperband")
    _validate(request)
    assert request["HyperParameterTuningJobConfig"]["StrategyConfig"]["HyperbandStrategyConfig"] == {"MinResource": 1, "MaxResource": 10}


def test_builtin_od_request_has_no_metric_definitions(tmp_path):
    from odorch.hpo.amt import tuning_job_request
    from odorch.hpo.space import parse_space

    space = parse_space({"learning_rate": {"type": "float", "low": 0.0001, "high": 0.01, "log": True},
                         "mini_batch_size": {"type": "categorical", "choices": [8, 16]}})
    training = _training_request(algorithm="builtin-od", hyperparameters={"num_classes": 2, "num_training_samples": 10, "epochs": 3},
                                 channel_uris={"train": "s3://b/t/", "validation": "s3://b/v/"})
    request = tuning_job_request(study="od", space=space, fixed={}, training_request=training, max_jobs=2,
                                 max_parallel_jobs=1, algorithm="builtin-od")
    _validate(request)
    spec = request["TrainingJobDefinition"]["AlgorithmSpecification"]
    assert "MetricDefinitions" not in spec and "AlgorithmName" not in spec and "object-detection" in spec["TrainingImage"]
    assert "sagemaker_program" not in request["TrainingJobDefinition"]["StaticHyperParameters"]


def test_bad_requests_are_refused(tmp_path):
    from odorch.hpo.amt import AmtError, tuning_job_request
    from odorch.hpo.space import SpaceError

    space = _space(tmp_path)
    kw = dict(study="s", space=space, fixed={}, training_request=_training_request())
    with pytest.raises(AmtError, match="max-parallel-jobs"):
        tuning_job_request(**kw, max_jobs=2, max_parallel_jobs=3)
    with pytest.raises(AmtError, match="strategy"):
        tuning_job_request(**kw, max_jobs=2, max_parallel_jobs=1, strategy="Genetic")
    with pytest.raises(SpaceError, match="Grid"):
        tuning_job_request(**kw, max_jobs=2, max_parallel_jobs=1, strategy="Grid")
    with pytest.raises(SpaceError, match="both tuned and fixed"):
        tuning_job_request(**{**kw, "fixed": {"lr": 0.1}}, max_jobs=2, max_parallel_jobs=1)


@pytest.fixture
def summaries(monkeypatch):
    """odorch.hpo.summary.write_summary, or a stand-in when the other engine's module is not there yet."""
    calls = []
    try:
        import odorch.hpo.summary as summary
    except ImportError:
        import sys
        import types

        summary = types.ModuleType("odorch.hpo.summary")
        monkeypatch.setitem(sys.modules, "odorch.hpo.summary", summary)
        summary.write_summary = None

    real = summary.write_summary

    def write_summary(tune_dir, trials, *, engine, study, objective="validation:mAP", minimize=False):
        calls.append({"tune_dir": Path(tune_dir), "trials": trials, "engine": engine, "study": study, "objective": objective,
                      "minimize": minimize})
        if real is not None:
            return real(tune_dir, trials, engine=engine, study=study, objective=objective, minimize=minimize)
        return {"trials": len(trials)}

    monkeypatch.setattr(summary, "write_summary", write_summary, raising=False)
    return calls


def _run(tmp_path, tiny_data, **kw):
    from odorch.aws import AwsClients
    from odorch.hpo.amt import run_amt_tuning

    args = dict(data=tiny_data, model=MODEL, space=_space(tmp_path), fixed=dict(FIXED), study="s1", max_jobs=5,
                max_parallel_jobs=2, instance="ml.g5.xlarge", bucket=BUCKET, role=ROLE, region="us-east-1",
                strategy="Bayesian", early_stopping="Auto", warm_start=None, runs_dir=tmp_path / "runs",
                clients=AwsClients.from_env(), poll_s=0.02, echo=None)
    args.update(kw)
    return run_amt_tuning(**args)


def test_run_amt_tuning_end_to_end(aws, tmp_path, tiny_data, summaries):
    from odorch.aws_tables import price_per_hour

    aws.make_bucket(BUCKET)
    lines = []
    result = _run(tmp_path, tiny_data, echo=lines.append)
    request = aws.tuning_requests["s1"]
    _validate(request)
    children = aws.tuning_children["s1"]
    assert len(children) == 5 and all(c.startswith("s1-") for c in children)
    assert [c.split("-")[1] for c in children] == ["001", "002", "003", "004", "005"]
    listed = aws.sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="s1",
                                                                              MaxResults=2)
    assert len(listed["TrainingJobSummaries"]) == 2 and listed["NextToken"]
    # children: the definition's static hyperparameters + tuned values, the objective metric named
    for child in children:
        hps = aws.requests[child]["HyperParameters"]
        assert hps["_tuning_objective_metric"] == "validation:mAP" and hps["flip"] == "false"
        assert 0.001 <= float(hps["lr"]) <= 0.1 and hps["optimizer"] in ("sgd", "adamw") and hps["batch_size"] in ("4", "8")
        assert aws.requests[child]["AlgorithmSpecification"]["MetricDefinitions"] == metric_definitions()
    assert result["status"] == "Completed"
    objectives = {c: aws._children[c]["objective"] for c in children}
    best = max(objectives, key=objectives.get)
    assert result["best_job"] == best
    desc = aws.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="s1")
    assert desc["BestTrainingJob"]["TrainingJobName"] == best
    assert desc["TrainingJobStatusCounters"]["Completed"] == 5
    model_dir = tmp_path / "runs/tune-s1/trials" / best / "model"
    assert json.loads((model_dir / "model.json").read_text())["job"] == best
    assert Path(result["model_dir"]) == model_dir
    # the summary: one trial per child, the tuned values typed back, cost from billable time
    (call,) = summaries
    assert call["engine"] == "amt" and call["study"] == "s1" and call["tune_dir"] == tmp_path / "runs/tune-s1"
    trials = call["trials"]
    assert len(trials) == 5 == len(result["trials"])
    assert [t["number"] for t in trials] == list(range(5)) and [t["job"] for t in trials] == children
    price = price_per_hour("ml.g5.xlarge")
    for t in trials:
        assert set(t) >= {"number", "params", "best_map", "epochs", "state", "duration_s", "cost_usd", "job", "job_dir"}
        assert t["state"] == "Completed" and t["best_map"] == pytest.approx(objectives[t["job"]])
        assert isinstance(t["params"]["lr"], float) and isinstance(t["params"]["epochs"], int)
        assert t["params"]["batch_size"] in (4, 8) and t["epochs"] == t["params"]["epochs"]
        record = json.loads((Path(t["job_dir"]) / "job.json").read_text())
        assert t["cost_usd"] == round(record["billable_seconds"] / 3600 * price, 4) and t["cost_usd"] > 0
        assert "validation:mAP=" in (Path(t["job_dir"]) / "logs.txt").read_text()
    assert max(trials, key=lambda t: t["best_map"])["job"] == best
    # the live table showed every child with its objective
    assert any(best in line and f"{objectives[best]:.6f}" in line for line in lines)
    if "best" in result["summary"]:  # the real hpo.summary: its best trial is AMT's best job
        assert result["summary"]["best"]["job"] == best and len(result["summary"]["trials"]) == 5
    amt = json.loads((tmp_path / "runs/tune-s1/amt.json").read_text())
    assert amt["status"] == "Completed" and amt["best_job"] == best


def test_ctrl_c_stops_the_tuning_job(aws, tmp_path, tiny_data, summaries):
    aws.make_bucket(BUCKET)
    aws.tuning_child_pause = 30.0  # children stay InProgress until stopped
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 1:
            raise KeyboardInterrupt
        import time

        time.sleep(0.02)

    questions = []
    result = _run(tmp_path, tiny_data, study="s2", max_jobs=4, max_parallel_jobs=2, sleep=sleep,
                  confirm=lambda q: questions.append(q) or True)
    assert questions == ["stop the tuning job s2?"] and aws.tuning_stop_calls == ["s2"]
    assert result["status"] == "Stopped" and result["stop_reason"] == "interrupted (Ctrl-C)" and result["best_job"] is None
    assert [t["state"] for t in summaries[0]["trials"]] == ["Stopped", "Stopped"]


def test_ctrl_c_declined_leaves_it_running(aws, tmp_path, tiny_data, summaries):
    aws.make_bucket(BUCKET)
    aws.on_tuning = None

    def sleep(seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, tiny_data, study="s3", sleep=sleep, confirm=lambda q: False)
    assert aws.tuning_stop_calls == []
    desc = aws.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="s3")
    assert desc["HyperParameterTuningJobStatus"] == "InProgress"
    aws.sagemaker.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="s3")
    assert aws.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="s3")[
        "HyperParameterTuningJobStatus"] == "Stopped"


def test_preflight_refuses_before_anything_is_created(aws, tmp_path, tiny_data, summaries):
    from odorch.errors import PreflightError
    from odorch.hpo.space import SpaceError

    with pytest.raises(PreflightError, match="no such bucket"):
        _run(tmp_path, tiny_data, study="s4")
    aws.make_bucket(BUCKET)
    with pytest.raises(SpaceError, match="not accepted"):
        _run(tmp_path, tiny_data, study="s4", space={**_space(tmp_path), **load_space_text(tmp_path, "nope: {type: float, low: 0, high: 1}")})
    assert aws.tuning_requests == {} and not (tmp_path / "runs/tune-s4").exists()


def load_space_text(tmp_path, text):
    path = tmp_path / "extra.yaml"
    path.write_text(text)
    return load_space(path)

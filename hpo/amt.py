"""SageMaker Automatic Model Tuning (AMT) as the second tuning engine, over boto3 clients (no SDK).

One CreateHyperParameterTuningJob whose TrainingJobDefinition is the SageMaker backend's own
CreateTrainingJob request (odorch.backends.sagemaker.training_job_request) with the tuned names
moved from HyperParameters to ParameterRanges (odorch.hpo.space.amt_ranges). AMT then runs the child
training jobs (``<tuning>-NNN-xxxxxxxx``) itself; odorch follows them with a live table, and at
the end fetches each child's logs, its cost, the best child's model and writes the summary:

    runs/tune-<study>/amt.json                       the tuning job: name, ARN, status, best
    runs/tune-<study>/trials/<child>/job.json        the SageMaker backend's record of each child
    runs/tune-<study>/trials/<child>/logs.txt        its CloudWatch lines (+ metrics.jsonl)
    runs/tune-<study>/trials/<best child>/model/     the best child's model.tar.gz, extracted safely
    runs/tune-<study>/...                            hpo.summary.write_summary's files

S3: odorch/jobs/<tuning>/source/sourcedir.tar.gz and odorch/jobs/<tuning>/output/<child>/output/.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odorch.algorithms import Algorithm, get_algorithm
from odorch.errors import OdorchError, SageMakerError
from odorch.hpo.space import Param, SpaceError, amt_ranges, check_names
from odorch.runtime.metrics import OBJECTIVE
from odorch.tracking import TrackingOptions, close_study_run, for_trial, open_study_run, open_tracker

STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
EARLY_STOPPING = ("Auto", "Off")
TERMINAL = ("Completed", "Failed", "Stopped")
NAME_MAX = 32  # AMT: HyperParameterTuningJobName is 1-32 characters
MAX_METRIC_DEFINITIONS = 20
MAX_RANGES = 30  # AMT: at most 30 tuned hyperparameters


class AmtError(OdorchError, RuntimeError):
    """A tuning job that cannot be built, started or followed; the message says what to do."""


def tuning_job_name(study: str) -> str:
    """The study name when AMT takes it as it is (letters, digits, hyphens, ≤ 32 chars); else a
    cleaned, truncated form plus 6 hex digits of the study's sha256, so distinct studies stay distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "-", study or "").strip("-")
    if cleaned and cleaned == study and len(cleaned) <= NAME_MAX:
        return cleaned
    digest = hashlib.sha256((study or "").encode()).hexdigest()[:6]
    head = cleaned[: NAME_MAX - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}" if head else f"tune-{digest}"


def tuning_job_request(*, study: str, space: dict[str, Param], fixed: dict[str, Any], training_request: dict[str, Any],
                       max_jobs: int, max_parallel_jobs: int, strategy: str = "Bayesian", early_stopping: str = "Auto",
                       warm_start: str | None = None, algorithm: str | Algorithm = "pytorch") -> dict[str, Any]:
    """The complete CreateHyperParameterTuningJob request (see the module docstring)."""
    from odorch.runs import hyperparameter_strings

    if strategy not in STRATEGIES:
        raise AmtError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if early_stopping not in EARLY_STOPPING:
        raise AmtError(f"--early-stopping {early_stopping!r}: use Auto or Off")
    if int(max_jobs) < 1 or int(max_parallel_jobs) < 1:
        raise AmtError(f"--max-jobs {max_jobs} / --max-parallel-jobs {max_parallel_jobs}: both must be at least 1")
    if int(max_parallel_jobs) > int(max_jobs):
        raise AmtError(f"--max-parallel-jobs {max_parallel_jobs} is more than --max-jobs {max_jobs}: lower it")
    if not space:
        raise SpaceError("space: nothing to tune")
    if len(space) > MAX_RANGES:
        raise SpaceError(f"space: {len(space)} hyperparameters; AMT tunes at most {MAX_RANGES}")
    both = sorted(set(space) & set(fixed))
    if both:
        raise SpaceError(f"space: {', '.join(both)} both tuned and fixed with --hp: drop one")
    ranges = amt_ranges(space)
    if strategy == "Grid" and (ranges["ContinuousParameterRanges"] or ranges["IntegerParameterRanges"]):
        raise SpaceError("space: the Grid strategy takes categorical ranges only")

    spec = dict(training_request["AlgorithmSpecification"])
    spec.pop("AlgorithmName", None)
    spec.pop("MetricDefinitions", None)
    algo = get_algorithm(algorithm)
    objective = algo.objective()
    metrics = algo.metric_definitions()
    if metrics is not None:  # None: SageMaker defines a built-in algorithm's metrics itself
        spec["MetricDefinitions"] = metrics
        if len(spec["MetricDefinitions"]) > MAX_METRIC_DEFINITIONS:
            raise AmtError(f"{len(spec['MetricDefinitions'])} metric definitions; AMT allows {MAX_METRIC_DEFINITIONS}")
        if objective["MetricName"] not in {d["Name"] for d in spec["MetricDefinitions"]}:
            raise AmtError(f"the objective {objective['MetricName']} is not among the metric definitions")

    static = hyperparameter_strings(fixed)
    static.update(training_request.get("HyperParameters") or {})
    for name in space:
        static.pop(name, None)

    definition: dict[str, Any] = {
        "StaticHyperParameters": static,
        "AlgorithmSpecification": spec,
        "RoleArn": training_request["RoleArn"],
        "InputDataConfig": training_request["InputDataConfig"],
        "OutputDataConfig": training_request["OutputDataConfig"],
        "ResourceConfig": training_request["ResourceConfig"],
        "StoppingCondition": training_request["StoppingCondition"],
    }
    if training_request.get("EnableManagedSpotTraining"):
        definition["EnableManagedSpotTraining"] = True
        if training_request.get("CheckpointConfig"):
            definition["CheckpointConfig"] = training_request["CheckpointConfig"]

    config: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": objective,
        "ResourceLimits": {"MaxNumberOfTrainingJobs": int(max_jobs), "MaxParallelTrainingJobs": int(max_parallel_jobs)},
        "ParameterRanges": ranges,
        "TrainingJobEarlyStoppingType": early_stopping,
    }
    if strategy == "Hyperband":
        # AWS: Hyperband has its own early stopping, TrainingJobEarlyStoppingType must be Off
        # and MaxResource (epochs) is required: the most epochs a child may train
        if "epochs" in space and space["epochs"].high is not None:
            max_resource = int(space["epochs"].high)
        elif str(static.get("epochs", "")).isdigit():
            max_resource = int(static["epochs"])
        else:  # the algorithm's default (both tables hold it second)
            default = (algo.hyperparameter_names().get("epochs") or (None, None))[1]
            if default is None:
                raise AmtError("--strategy Hyperband needs the most epochs a child may train: give --hp epochs=N "
                               "or tune epochs")
            max_resource = int(default)
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": max(1, max_resource)}}
        config["TrainingJobEarlyStoppingType"] = "Off"

    name = tuning_job_name(study)
    # odorch:job names the tuning job: the operator policy requires it to create and stop one, and
    # SageMaker propagates the tuning job's tags to its children (stoppable with the same policy)
    tags = [t for t in training_request.get("Tags", []) if t["Key"] != "odorch:job"]
    tags = [{"Key": "odorch:job", "Value": name}, {"Key": "odorch:tuning-job", "Value": name},
            {"Key": "odorch:study", "Value": study[:256]}, {"Key": "odorch:engine", "Value": "amt"}, *tags]
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
        "Tags": tags,
    }
    if warm_start:
        request["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": warm_start}],
            "WarmStartType": "IdenticalDataAndAlgorithm",
        }
    return request


# ---------------------------------------------------------------- following the tuning job


def list_children(clients: Any, tuning_name: str) -> list[dict[str, Any]]:
    """Every TrainingJobSummary of the tuning job, oldest first."""
    summaries: list[dict[str, Any]] = []
    paginator = clients.sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
    for page in paginator.paginate(HyperParameterTuningJobName=tuning_name, PaginationConfig={"PageSize": 100}):
        summaries += page.get("TrainingJobSummaries", [])
    return sorted(summaries, key=lambda s: (str(s.get("CreationTime") or ""), s["TrainingJobName"]))


def _objective(summary: dict[str, Any]) -> float | None:
    metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    return float(metric["Value"]) if metric.get("Value") is not None else None


def table(children: list[dict[str, Any]], *, objective: str = OBJECTIVE) -> list[str]:
    """The live table's lines: one per child with status, tuned hyperparameters and objective."""
    lines = [f"{'#':>3}  {'training job':<46} {'status':<10} {objective:>14}  tuned hyperparameters"]
    for i, child in enumerate(children, 1):
        value = _objective(child)
        tuned = " ".join(f"{k}={v}" for k, v in sorted((child.get("TunedHyperParameters") or {}).items()))
        shown = f"{value:.6f}" if value is not None else "-"
        lines.append(f"{i:>3}  {child['TrainingJobName']:<46} {child['TrainingJobStatus']:<10} {shown:>14}  {tuned}")
    return lines


def stop_tuning(clients: Any, tuning_name: str) -> dict[str, Any]:
    """StopHyperParameterTuningJob unless it already ended; DescribeHyperParameterTuningJob afterwards."""
    desc = clients.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_name)
    if desc["HyperParameterTuningJobStatus"] not in TERMINAL + ("Stopping",):
        clients.sagemaker.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_name)
        desc = clients.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_name)
    return desc


def _wait(clients: Any, tuning_name: str, *, poll_s: float, say: Callable[[str], None], objective: str,
          sleep: Callable[[float], None]) -> dict[str, Any]:
    """Poll the tuning job and its children, printing the table when it changes, until terminal."""
    last_table: list[str] | None = None
    last_status = None
    while True:
        desc = clients.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_name)
        status = desc["HyperParameterTuningJobStatus"]
        lines = table(list_children(clients, tuning_name), objective=objective)
        if status != last_status or lines != last_table:
            counters = desc.get("TrainingJobStatusCounters") or {}
            counts = ", ".join(f"{k} {v}" for k, v in counters.items() if v)
            say(f"[{tuning_name}] {status}" + (f" ({counts})" if counts else ""))
            for line in lines:
                say(line)
            last_table, last_status = lines, status
        if status in TERMINAL:
            return desc
        sleep(poll_s)


def _typed(space: dict[str, Param], tuned: dict[str, str]) -> dict[str, Any]:
    """AMT's string values back to the space's types (a categorical's own choice when one matches)."""
    out: dict[str, Any] = {}
    for name, text in tuned.items():
        p = space.get(name)
        try:
            if p is None:
                out[name] = text
            elif p.kind == "categorical":
                out[name] = next((c for c in p.choices if str(c) == text), text)
            elif p.kind == "int":
                out[name] = int(float(text))
            else:
                out[name] = float(text)
        except ValueError:
            out[name] = text
    return out


def _child_trial(clients: Any, child: dict[str, Any], number: int, space: dict[str, Param], trials_dir: Path, *,
                 model: str, instance_type: str, instance_count: int, fixed: dict[str, Any], algorithm: str,
                 tracking: TrackingOptions | None = None) -> dict[str, Any]:
    """The child's record (job.json, logs, metrics, cost) under trials/<child>/ and its trial dict;
    its metric lines tracked as any job's (tracking: see odorch.tracking.for_trial)."""
    from odorch.backends.sagemaker import (
        LogFollower,
        describe_job,
        estimated_cost,
        update_record,
    )
    from odorch.runs import LOG_FILE, METRICS_FILE, new_record, write_job

    name = child["TrainingJobName"]
    job_dir = trials_dir / name
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / LOG_FILE).write_text("")
    (job_dir / METRICS_FILE).unlink(missing_ok=True)
    desc = describe_job(clients, name)
    record = new_record(job_name=name, backend="sagemaker", job_dir=job_dir, model=model,
                        hyperparameters=desc.get("HyperParameters") or {})
    record.extra.update(algorithm=algorithm, training_job_arn=desc.get("TrainingJobArn"), region=clients.region,
                        instance_type=instance_type,
                        instance_count=instance_count, tuning_job=child.get("TuningJobName"), billable_seconds=None,
                        estimated_cost_usd=None)
    update_record(record, desc)
    tracker = open_tracker(job_dir, record, tracking, echo=print)
    follower = LogFollower(clients.logs, name, job_dir, record, None, sink=tracker.log)
    while follower.poll():
        pass
    record.extra["estimated_cost_usd"] = estimated_cost(record)
    write_job(job_dir, record)
    tracker.close(record, job_dir=job_dir)
    write_job(job_dir, record)
    epochs = record.epochs
    if epochs is None and str(fixed.get("epochs", "")).isdigit():
        epochs = int(fixed["epochs"])
    return {
        "number": number,
        "params": _typed(space, child.get("TunedHyperParameters") or {}),
        "best_map": _objective(child),
        "epochs": epochs,
        "state": child["TrainingJobStatus"],
        "duration_s": record.duration_s,
        "cost_usd": record.extra["estimated_cost_usd"],
        "job": name,
        "job_dir": str(job_dir),
    }


def _sample_low(space: dict[str, Param]) -> dict[str, Any]:
    """One point of the space (lows, first choices): to let preflight type-check tuned names too."""
    out: dict[str, Any] = {}
    for p in space.values():
        out[p.name] = p.choices[0] if p.kind == "categorical" else (int(p.low) if p.kind == "int" else p.low)
    return out


def run_amt_tuning(*, data: Path | str, model: str, space: dict[str, Param], fixed: dict[str, Any], study: str,
                   max_jobs: int, max_parallel_jobs: int, instance: str, bucket: str, role: str, region: str | None,
                   strategy: str = "Bayesian", early_stopping: str = "Auto", warm_start: str | None = None,
                   runs_dir: Path | str = "runs", algorithm: str = "pytorch", clients: Any = None,
                   poll_s: float = 30, echo: Callable[[str], None] | None = print, instance_count: int = 1,
                   spot: bool = False, max_run: int | None = None, max_wait: int | None = None,
                   confirm: Callable[[str], bool] | None = None,
                   sleep: Callable[[float], None] | None = None, tracking: TrackingOptions | None = None) -> dict[str, Any]:
    """Preflight, upload, CreateHyperParameterTuningJob, follow it to the end, fetch the best
    child's model and write the summary. Ctrl-C asks whether to stop the tuning job (no TTY: stops);
    declining re-raises KeyboardInterrupt with the tuning job still running."""
    from botocore.exceptions import BotoCoreError, ClientError

    from odorch.aws import AwsClients, download_model
    from odorch.backends import sagemaker as sm
    from odorch.converters.fsutil import atomic_write_bytes
    from odorch.hpo.summary import write_summary
    from odorch.runs import tune_dir as tune_dir_of

    say = echo or (lambda text: None)
    sleep = sleep or time.sleep
    confirm = confirm or sm.confirm_on_tty
    clients = clients or AwsClients.from_env(region)
    max_run = sm.DEFAULT_MAX_RUN if max_run is None else max_run
    instance_type = sm.normalize_instance_type(instance)
    name = tuning_job_name(study)
    tune_dir = tune_dir_of(runs_dir, study)
    if (tune_dir / "amt.json").exists():
        raise AmtError(f"study {study!r} already ran ({tune_dir}); tuning job names are unique: pick another --study")

    algo = get_algorithm(algorithm)
    fixed = algo.job_hyperparameters(model=model, hp=dict(fixed))
    check_names(space, valid=algo.hyperparameter_names(), fixed=fixed)
    try:
        training_request, prepared = sm.prepare_request(
            clients, job_name=name, data_dir=data, bucket=bucket, role_arn=role,
            hyperparameters={**fixed, **_sample_low(space)}, model=model, instance_type=instance_type,
            instance_count=instance_count, spot=spot, max_run=max_run, max_wait=max_wait, algorithm=algo,
            tuned=space, echo=say,
        )
        hyperparameters = {k: v for k, v in prepared.hyperparameters.items() if k not in space}
        request = tuning_job_request(study=study, space=space, fixed=hyperparameters, training_request=training_request,
                                     max_jobs=max_jobs, max_parallel_jobs=max_parallel_jobs, strategy=strategy,
                                     early_stopping=early_stopping, warm_start=warm_start, algorithm=algorithm)
        arn = clients.sagemaker.create_hyper_parameter_tuning_job(**request)["HyperParameterTuningJobArn"]
    except (ClientError, BotoCoreError) as e:
        raise AmtError(f"CreateHyperParameterTuningJob {name} failed: {e}") from e

    tune_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"engine": "amt", "study": study, "tuning_job_name": name, "tuning_job_arn": arn,
                             "region": clients.region, "status": "InProgress", "instance_type": instance_type,
                             "instance_count": instance_count, "strategy": strategy, "max_jobs": max_jobs,
                             "max_parallel_jobs": max_parallel_jobs, "request": request, "best_job": None,
                             "stop_reason": None}

    def save() -> None:
        atomic_write_bytes(tune_dir / "amt.json", (json.dumps(state, indent=2, default=str) + "\n").encode())

    parent = open_study_run(tracking, study=study, params={**hyperparameters, "model": model, "strategy": strategy,
                                                           "max_jobs": max_jobs}, echo=say)
    state["mlflow"] = parent
    parent_run_id = parent["run_id"] if parent else None
    save()
    say(f"created {arn} ({max_jobs} job(s), {max_parallel_jobs} at a time, {instance_count} × {instance_type})")
    try:
        try:
            desc = _wait(clients, name, poll_s=poll_s, say=say, sleep=sleep, objective=algo.objective()["MetricName"])
        except KeyboardInterrupt:
            save()
            if not sm.ask_to_stop(f"the tuning job {name}", arn, lambda: stop_tuning(clients, name),
                               f"aws sagemaker stop-hyper-parameter-tuning-job --hyper-parameter-tuning-job-name {name}",
                               confirm=confirm, say=say):
                raise
            state["stop_reason"] = "interrupted (Ctrl-C)"
            desc = _wait(clients, name, poll_s=poll_s, say=say, sleep=sleep, objective=algo.objective()["MetricName"])
        state["status"] = desc["HyperParameterTuningJobStatus"]
        if desc.get("FailureReason"):
            state["failure_reason"] = desc["FailureReason"]

        trials_dir = tune_dir / "trials"
        children = list_children(clients, name)
        trials = [_child_trial(clients, child, i, space, trials_dir, model=prepared.record.get("model", model),
                               instance_type=instance_type, instance_count=instance_count, fixed=hyperparameters,
                               algorithm=algo.name,
                               tracking=for_trial(tracking, tune_dir=tune_dir, job_name=child["TrainingJobName"],
                                                  parent_run_id=parent_run_id))
                  for i, child in enumerate(children)]
        best = desc.get("BestTrainingJob") or {}
        best_name = best.get("TrainingJobName")
        model_dir = None
        if best_name:
            state["best_job"] = best_name
            best_desc = sm.describe_job(clients, best_name)
            uri = (best_desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
            if uri:
                model_dir = trials_dir / best_name / "model"
                try:
                    download_model(clients, uri, model_dir)
                    say(f"best {best_name}: {algo.objective()['MetricName']}={_objective(best)}; model in {model_dir}")
                except (ClientError, BotoCoreError, SageMakerError, OSError) as e:
                    state["model_error"] = f"cannot download {uri}: {e}"
                    model_dir = None
                    say(f"error: {state['model_error']}")
        state["model_dir"] = str(model_dir) if model_dir else None
        state["estimated_cost_usd"] = round(sum(t["cost_usd"] or 0.0 for t in trials), 4)
        objective = algo.objective()
        summary = write_summary(tune_dir, trials, engine="amt", study=study, objective=objective["MetricName"],
                                minimize=objective["Type"] == "Minimize")
        close_study_run(tracking, parent_run_id, tune_dir=tune_dir, best=_objective(best) if best_name else None,
                        status={"Completed": "FINISHED", "Stopped": "KILLED"}.get(state["status"], "FAILED"), echo=say)
    finally:
        save()
    return {**{k: v for k, v in state.items() if k != "request"}, "tune_dir": str(tune_dir), "trials": trials,
            "summary": summary}

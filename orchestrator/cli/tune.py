"""`odorch tune`: a study of trials, locally (Optuna) or on SageMaker AMT."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from odorch.algorithms import ALGORITHMS
from odorch.cli.common import (
    device_option,
    epochs_option,
    hp_option,
    mlflow_option,
    model_option,
    pick_device,
    runs_dir_option,
    sagemaker_account_options,
    tracking_options,
    weights_option,
    with_shorthands,
)


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert` (annotations/train.json, val.json + images/).")
@model_option
@click.option("--study", help="Study name (default: the model's name); its files are RUNS_DIR/tune-STUDY/.")
@click.option("--max-jobs", type=click.IntRange(1), default=20, show_default=True, help="Trials to finish (complete or pruned).")
@click.option("--max-parallel-jobs", type=click.IntRange(1), default=1, show_default=True, help="Trials running at once.")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid"]), default="tpe", show_default=True, help="Local: Optuna sampler.")
@click.option("--pruner", type=click.Choice(["median", "percentile", "halving", "hyperband", "none"]), default="halving",
              show_default=True, help="Local: Optuna pruner (a pruned trial's job gets SIGTERM and keeps its checkpoint).")
@click.option("--storage", metavar="URL",
              help="Local: SQLAlchemy URL of the study (default sqlite:///RUNS_DIR/tune-STUDY/study.db); "
                   "workers given the same URL and --study share it, e.g. postgresql://USER:PASSWORD@HOST/DB.")
@click.option("--heartbeat-interval", type=click.IntRange(1), default=10, show_default=True, metavar="S",
              help="Local: each worker records a heartbeat of its running trials every S seconds.")
@click.option("--grace-period", type=click.IntRange(1), default=60, show_default=True, metavar="S",
              help="Local: a trial without a heartbeat for S seconds (its worker killed or lost) is failed and run again.")
@click.option("--seed", type=int, help="Local: seed of the sampler (a fixed seed repeats the same trials).")
@click.option("--space", "space_file", type=click.Path(dir_okay=False, path_type=Path), help="Search space YAML (default: the model's).")
@hp_option("Fixed hyperparameter (repeatable).")
@epochs_option
@weights_option
@runs_dir_option
@click.option("--report", "report", metavar="STUDY", help="Print the summary of study STUDY again and exit.")
@click.option("--instance", metavar="TYPE", help="Tune on SageMaker (Automatic Model Tuning) on this instance type.")
@sagemaker_account_options
@click.option("--strategy", type=click.Choice(["Bayesian", "Random", "Hyperband", "Grid"]), default="Bayesian", show_default=True,
              help="SageMaker AMT strategy.")
@click.option("--early-stopping", type=click.Choice(["Auto", "Off"]), default="Off", show_default=True, help="SageMaker AMT early stopping.")
@click.option("--warm-start", metavar="TUNING_JOB", help="SageMaker AMT: warm start from this tuning job.")
@click.option("--algorithm", type=click.Choice(list(ALGORITHMS)), default="pytorch", show_default=True,
              help="SageMaker AMT: odorch's entrypoint, the built-in Object Detection algorithm or a JumpStart "
                   "model (--model ID[@VERSION], --space FILE over its spec's hyperparameters, AMT on its spec's metric).")
@device_option
@mlflow_option
def tune(
    data: Path | None, model: str, study: str | None, max_jobs: int, max_parallel_jobs: int, sampler: str, pruner: str,
    storage: str | None, space_file: Path | None, hp: dict[str, str], epochs: int | None, weights: str | None,
    runs_dir: Path, report: str | None, instance: str | None, bucket: str | None, role: str | None, region: str | None,
    strategy: str, early_stopping: str, warm_start: str | None, algorithm: str, seed: int | None = None,
    heartbeat_interval: int = 10, grace_period: int = 60, device: str = "auto", mlflow_uri: str | None = None,
) -> None:
    """Tune hyperparameters: locally with Optuna (each trial a local training job, pruned by its
    validation:mAP), or with --instance as a SageMaker Automatic Model Tuning job.

    Re-running the same command continues the study. Results: RUNS_DIR/tune-STUDY/summary.json,
    best -> the best trial's job, history.png, importance.png.
    """
    from odorch.runs import tune_dir

    if report is not None:
        from odorch.hpo.summary import format_summary
        from odorch.runs import read_summary

        try:
            summary = read_summary(tune_dir(runs_dir, report))
        except (OSError, ValueError) as e:
            raise click.ClickException(f"no summary of study {report!r} in {tune_dir(runs_dir, report)}: {e}") from e
        for line in format_summary(summary):
            click.echo(line)
        return
    if data is None:
        raise click.UsageError("Missing option '--data' (or give --report STUDY)")
    from odorch.algorithms import get_algorithm
    from odorch.hpo.space import SpaceError, study_space
    from odorch.runs import JobError, check_job_name

    algo = get_algorithm(algorithm)
    if max_parallel_jobs > max_jobs:
        raise click.UsageError(f"--max-parallel-jobs ({max_parallel_jobs}) is more than --max-jobs ({max_jobs})")
    if grace_period <= heartbeat_interval:
        raise click.UsageError(f"--grace-period ({grace_period}) must be longer than --heartbeat-interval ({heartbeat_interval})")
    study = study or model.replace("_", "-")
    try:
        check_job_name(f"{tune_dir('', study).name}-trial-9999")
    except JobError as e:
        raise click.UsageError(f"--study {study!r}: {e}") from e
    fixed = with_shorthands(hp, epochs=epochs, weights=weights, local=instance is None)
    if device.startswith("cuda:"):
        raise click.UsageError(f"--device {device}: local trials get one GPU each (CUDA_VISIBLE_DEVICES); use --device cuda")
    if device != "auto":
        fixed["device"] = device
    if instance is None:
        if not algo.runs_locally:
            raise click.UsageError(f"--algorithm {algo.name} runs only on SageMaker: add --instance TYPE")
        given = [n for n, v in (("--bucket", bucket), ("--role", role), ("--region", region), ("--warm-start", warm_start)) if v]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply to SageMaker tuning: add --instance TYPE")
        pick_device(device)  # a device this machine lacks: say so before the study starts
    clients = None
    if instance is not None:  # an algorithm whose rules come from the model's spec reads it now
        from odorch.aws import AwsClients

        clients = AwsClients.from_env(region)
        algo = algo.for_model(model, clients=clients)
    problems = algo.check(algo.job_hyperparameters(model=model, hp=fixed))
    if problems:
        raise click.UsageError("; ".join(problems))
    try:
        space = study_space(model=model, algorithm=algo, fixed=fixed, space_file=space_file,
                            as_grid=sampler == "grid" and instance is None)
    except SpaceError as e:
        raise click.UsageError(str(e)) from e
    tracking = tracking_options(mlflow_uri)  # a server that does not answer: say so before any trial
    if instance is not None:
        from odorch.hpo.amt import run_amt_tuning

        run_amt_tuning(
            data=data, model=model, space=space or {}, fixed=fixed, study=study, max_jobs=max_jobs,
            max_parallel_jobs=max_parallel_jobs, instance=instance, bucket=bucket, role=role, region=region,
            strategy=strategy, early_stopping=early_stopping, warm_start=warm_start, runs_dir=runs_dir,
            algorithm=algo, tracking=tracking, clients=clients,
        )
        return
    from odorch.hpo.local import run_local_tuning
    from odorch.hpo.summary import format_summary

    try:
        summary = run_local_tuning(
            data=data, model=model, space=space or {}, fixed=fixed, study=study, max_jobs=max_jobs,
            max_parallel_jobs=max_parallel_jobs, sampler=sampler, pruner=pruner, storage=storage, runs_dir=runs_dir,
            echo=click.echo, seed=seed, heartbeat_s=heartbeat_interval, grace_s=grace_period, tracking=tracking,
            algorithm=algo,
        )
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command to continue the study", err=True)
        sys.exit(130)
    for line in format_summary(summary):
        click.echo(line)
    click.echo(f"summary: {tune_dir(runs_dir, study) / 'summary.json'}")


# ---------------------------------------------------------------- export

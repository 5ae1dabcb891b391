"""`odorch train`: one job on a backend (local, Docker or SageMaker)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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
from odorch.runs import JOB_FILE, JobRecord


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert` (annotations/train.json, val.json + images/).")
@model_option
@click.option("--job-name", help="Name of the job folder under --runs-dir (default: MODEL-TIMESTAMP).")
@epochs_option
@weights_option
@click.option("--time", "minutes", type=click.FloatRange(0, min_open=True), metavar="MINUTES",
              help="Wall-time budget (shorthand for --hp time=MINUTES): the epoch count is re-planned after "
                   "every epoch from the recent ones so that the schedule ends on time; --epochs is then only the first guess.")
@hp_option("Hyperparameter (repeatable).")
@runs_dir_option
@click.option("--instance", metavar="TYPE", help="Train on SageMaker on this instance type (e.g. ml.g5.xlarge) instead of locally.")
@sagemaker_account_options
@click.option("--spot", is_flag=True, help="Managed spot training (checkpoints resume after interruptions).")
@click.option("--max-wait", type=click.IntRange(1), metavar="S", help="Spot: seconds to wait for capacity + run (>= --max-run; default 2 × --max-run).")
@click.option("--max-run", type=click.IntRange(1), default=86400, show_default=True, metavar="S", help="SageMaker: max training seconds.")
@click.option("--instance-count", type=click.IntRange(1), default=1, show_default=True, help="SageMaker: number of instances.")
@click.option("--algorithm", type=click.Choice(list(ALGORITHMS)), default="pytorch", show_default=True,
              help="pytorch: odorch's entrypoint; builtin-od: SageMaker's built-in Object Detection algorithm "
                   "(needs --instance; RecordIO channels made from --data; --hp takes its hyperparameters); "
                   "jumpstart: a JumpStart model's own fine-tuning (--model ID[@VERSION], see odorch models --jumpstart; "
                   "--hp takes its spec's hyperparameters).")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True,
              help="Without --instance: run in this Python (local) or inside the training image under Docker, "
                   "with the job folder mounted as SageMaker's /opt/ml (SageMaker's local mode, without the SDK).")
@click.option("--image", metavar="IMAGE",
              help="--backend docker: the image built from infra/Dockerfile (default odorch-train, see infra/README.md). "
                   "With --instance: an ECR training image URI instead of the algorithm's (a region or image the "
                   "dated tables do not have, e.g. China's).")
@device_option
@mlflow_option
def train(
    data: Path, model: str, job_name: str | None, epochs: int | None, weights: str | None, hp: dict[str, str], runs_dir: Path,
    minutes: float | None = None,
    instance: str | None = None, bucket: str | None = None, role: str | None = None, region: str | None = None,
    spot: bool = False, max_wait: int | None = None, max_run: int = 86400, instance_count: int = 1,
    algorithm: str = "pytorch", backend: str = "local", image: str | None = None, device: str = "auto",
    mlflow_uri: str | None = None,
) -> None:
    """Fine-tune a detector locally through the same entrypoint a SageMaker job runs
    (--backend docker: inside the training image; with --instance: as a SageMaker training job).

    Re-running a local job that failed or was stopped resumes it from its last checkpoint.
    """
    import time

    from odorch.algorithms import get_algorithm
    from odorch.backends import JobSpec, run_job

    algo = get_algorithm(algorithm)
    local = instance is None
    clients = None
    hp = with_shorthands(hp, epochs=epochs, weights=weights, local=local)
    if minutes is not None:
        hp["time"] = f"{minutes:g}"
    if device != "auto":
        hp["device"] = device
    hyperparameters = algo.job_hyperparameters(model=model, hp=hp)
    problems = algo.check(hyperparameters)
    if problems:  # fail here, before a job folder exists
        raise click.UsageError("; ".join(problems))
    if not local and backend == "docker":
        raise click.UsageError("--backend docker runs a local job: leave out --instance")
    if local:
        given = [name for name, value in (("--bucket", bucket), ("--role", role), ("--region", region), ("--spot", spot),
                                          ("--max-wait", max_wait)) if value]
        if given or instance_count != 1:
            raise click.UsageError(f"{', '.join(given) or '--instance-count'} only apply to SageMaker jobs: add --instance TYPE")
        if backend == "local" and algo.runs_locally:
            pick_device(hyperparameters.get("device", "auto"))  # a device this machine lacks: say so now
    else:
        missing = [name for name, value in (("--bucket", bucket), ("--role", role)) if not value]
        if missing:
            raise click.UsageError(f"a SageMaker job (--instance) needs {' and '.join(missing)}")
        from odorch.aws import AwsClients

        clients = AwsClients.from_env(region)
        bound = algo.for_model(model, clients=clients)  # one whose rules come from the model's spec reads it
        if bound is not algo:
            algo, problems = bound, bound.check(hyperparameters)
            if problems:
                raise click.UsageError("; ".join(problems))
    tracking = tracking_options(mlflow_uri)
    spec = JobSpec(name=job_name or f"{algo.default_job_name(model)}-{time.strftime('%Y%m%d-%H%M%S')}",
                   runs_dir=runs_dir, data=data, model=model if algo.runs_locally else algo.name,
                   hyperparameters=hyperparameters, algorithm=algo)
    try:
        record = run_job(spec, make_backend(backend, instance=instance, bucket=bucket, role=role, region=region,
                                            spot=spot, max_wait=max_wait, max_run=max_run,
                                            instance_count=instance_count, image=image, tracking=tracking,
                                            clients=clients),
                         echo=click.echo)
    except KeyboardInterrupt:
        where = "keeps its checkpoint; run the same command to resume" if local else f"record: {spec.job_dir / JOB_FILE}"
        click.echo(f"stopped: {spec.job_dir} {where}", err=True)
        sys.exit(130)
    _report(spec, record)


def make_backend(backend: str, *, instance: str | None, bucket: str | None, role: str | None, region: str | None,
                 spot: bool, max_wait: int | None, max_run: int, instance_count: int, image: str | None,
                 tracking: Any = None, clients: Any = None) -> Any:
    """The backend the options name: SageMaker with --instance (over `clients`, else the
    region's), else local or Docker; every one tracks its job with `tracking`
    (odorch.tracking.TrackingOptions)."""
    options = {"tracking": tracking}
    if instance is not None:
        from odorch.aws import AwsClients
        from odorch.backends.sagemaker import SageMakerBackend

        return SageMakerBackend(clients or AwsClients.from_env(region), bucket=str(bucket), role=str(role), instance_type=instance,
                                instance_count=instance_count, spot=spot, max_run=max_run, max_wait=max_wait,
                                image=image, options=options)
    if backend == "docker":
        from odorch.backends.docker import DockerBackend

        return DockerBackend(image=image or "odorch-train", options=options)
    from odorch.backends.local import LocalBackend

    return LocalBackend(options=options)


def _report(spec: Any, record: JobRecord) -> None:
    """The job's outcome; exit status 1 unless it Completed with its model (130 if stopped by Ctrl-C)."""
    from odorch.backends import JobInterrupted, job_outcome

    try:
        lines = job_outcome(spec, record)
    except JobInterrupted as e:
        click.echo(str(e), err=True)
        sys.exit(130)
    for line in lines:
        click.echo(line)

"""`odorch train`: one job on a backend (local, Docker or SageMaker)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from odorch.cli.common import duration, parse_hp, runs_dir_option, with_shorthands


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert` (annotations/train.json, val.json + images/).")
@click.option("--model", default="ssdlite320_mobilenet_v3_large", show_default=True, help="torchvision detector.")
@click.option("--job-name", help="Name of the job folder under --runs-dir (default: MODEL-TIMESTAMP).")
@click.option("--epochs", type=click.IntRange(1), help="Shorthand for --hp epochs=N.")
@click.option("--weights", help="coco | imagenet | none | PATH (shorthand for --hp weights=...; default coco).")
@click.option("--hp", "hp", multiple=True, callback=parse_hp, metavar="KEY=VALUE", help="Hyperparameter (repeatable).")
@runs_dir_option
@click.option("--instance", metavar="TYPE", help="Train on SageMaker on this instance type (e.g. ml.g5.xlarge) instead of locally.")
@click.option("--bucket", help="S3 bucket for data, code and models (SageMaker).")
@click.option("--role", help="IAM role ARN SageMaker assumes (SageMaker).")
@click.option("--region", help="AWS region (default: boto3's, e.g. AWS_DEFAULT_REGION).")
@click.option("--spot", is_flag=True, help="Managed spot training (checkpoints resume after interruptions).")
@click.option("--max-wait", type=click.IntRange(1), metavar="S", help="Spot: seconds to wait for capacity + run (>= --max-run; default 2 × --max-run).")
@click.option("--max-run", type=click.IntRange(1), default=86400, show_default=True, metavar="S", help="SageMaker: max training seconds.")
@click.option("--instance-count", type=click.IntRange(1), default=1, show_default=True, help="SageMaker: number of instances.")
@click.option("--algorithm", type=click.Choice(["pytorch", "builtin-od"]), default="pytorch", show_default=True,
              help="pytorch: odorch's entrypoint; builtin-od: SageMaker's built-in Object Detection algorithm "
                   "(needs --instance; RecordIO channels made from --data; --hp takes its hyperparameters).")
@click.option("--backend", type=click.Choice(["local", "docker"]), default="local", show_default=True,
              help="Without --instance: run in this Python (local) or inside the training image under Docker, "
                   "with the job folder mounted as SageMaker's /opt/ml (SageMaker's local mode, without the SDK).")
@click.option("--image", default="odorch-train", show_default=True, metavar="IMAGE",
              help="--backend docker: the image built from infra/Dockerfile (see infra/README.md).")
def train(
    data: Path, model: str, job_name: str | None, epochs: int | None, weights: str | None, hp: dict[str, str], runs_dir: Path,
    instance: str | None = None, bucket: str | None = None, role: str | None = None, region: str | None = None,
    spot: bool = False, max_wait: int | None = None, max_run: int = 86400, instance_count: int = 1,
    algorithm: str = "pytorch", backend: str = "local", image: str = "odorch-train",
) -> None:
    """Fine-tune a detector locally through the same entrypoint a SageMaker job runs
    (--backend docker: inside the training image; with --instance: as a SageMaker training job).

    Re-running a local job that failed or was stopped resumes it from its last checkpoint.
    """
    import time

    from odorch import runtime

    from odorch.runtime.train import TrainingError, parse_hyperparameters
    from odorch.runs import JobError
    from odorch.backends.docker import docker_available, run_docker_job
    from odorch.backends.local import run_local_job

    if backend == "docker" and (instance is not None or algorithm != "pytorch"):
        raise click.UsageError("--backend docker runs a local job: leave out --instance and --algorithm")
    if backend == "docker" and (why := docker_available()):
        click.echo(f"error: --backend docker needs a Docker engine: {why}; use --backend local", err=True)
        sys.exit(1)
    if algorithm == "builtin-od":
        _train_builtin_od(data=data, job_name=job_name, epochs=epochs, weights=weights, hp=hp, runs_dir=runs_dir,
                          instance=instance, bucket=bucket, role=role, region=region, spot=spot, max_wait=max_wait,
                          max_run=max_run, instance_count=instance_count)
        return
    hyperparameters = {"model": model, **with_shorthands(hp, epochs=epochs, weights=weights, local=instance is None)}
    try:
        parse_hyperparameters(hyperparameters)  # fail here, before a job folder exists
    except TrainingError as e:
        raise click.UsageError(str(e)) from e
    job_name = job_name or f"{model.replace('_', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    if instance is not None:
        _train_sagemaker(data=data, model=model, job_name=job_name, hyperparameters=hyperparameters, runs_dir=runs_dir,
                         instance=instance, bucket=bucket, role=role, region=region, spot=spot, max_wait=max_wait,
                         max_run=max_run, instance_count=instance_count)
        return
    given = [name for name, value in (("--bucket", bucket), ("--role", role), ("--region", region), ("--spot", spot),
                                      ("--max-wait", max_wait)) if value]
    if given or instance_count != 1:
        raise click.UsageError(f"{', '.join(given) or '--instance-count'} only apply to SageMaker jobs: add --instance TYPE")
    try:
        job = {"job_name": job_name, "runs_dir": runs_dir, "entrypoint": Path(runtime.__file__).parent / "train.py",
               "channels": {"train": data, "validation": data}, "hyperparameters": hyperparameters, "model": model}
        record = run_docker_job(image=image, **job) if backend == "docker" else run_local_job(**job)
    except JobError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"stopped: {runs_dir / job_name} keeps its checkpoint; run the same command to resume", err=True)
        sys.exit(130)
    best = (record.get("best") or {}).get("validation:mAP")
    if record["status"] != "Completed":
        click.echo(f"job {job_name} {record['status']}: {record.get('failure_reason') or ''}", err=True)
        sys.exit(1)
    click.echo(f"job {job_name} Completed in {duration(record)}; best validation:mAP {best}")
    click.echo(f"model: {record['model_dir']}")
    click.echo(f"next: odorch evaluate {runs_dir / job_name} --data {data} --split test")


def _train_builtin_od(*, data: Path, job_name: str | None, epochs: int | None, weights: str | None, hp: dict[str, str],
                      runs_dir: Path, instance: str | None, **sagemaker: Any) -> None:
    """--algorithm builtin-od: SageMaker only, its own hyperparameters (checked in preflight)."""
    import time

    from odorch.algorithms.builtin_od import hyperparameter_problems

    if instance is None:
        raise click.UsageError("--algorithm builtin-od runs only on SageMaker: add --instance TYPE (e.g. ml.p3.2xlarge)")
    if weights is not None:
        raise click.UsageError("--weights is for the PyTorch entrypoint; builtin-od takes --hp use_pretrained_model=0|1")
    hyperparameters = dict(hp)
    if epochs is not None:
        hyperparameters["epochs"] = str(epochs)
    problems = hyperparameter_problems(hyperparameters)
    if problems:
        raise click.UsageError("; ".join(problems))
    job_name = job_name or f"builtin-od-{time.strftime('%Y%m%d-%H%M%S')}"
    _train_sagemaker(data=data, model="builtin-od", job_name=job_name, hyperparameters=hyperparameters,
                     runs_dir=runs_dir, instance=instance, algorithm="builtin-od", **sagemaker)


def _train_sagemaker(*, data: Path, model: str, job_name: str, hyperparameters: dict[str, str], runs_dir: Path,
                     instance: str, bucket: str | None, role: str | None, region: str | None, spot: bool,
                     max_wait: int | None, max_run: int, instance_count: int, algorithm: str = "pytorch") -> None:
    from odorch.runs import JobError
    from odorch.backends.sagemaker import AwsClients, run_sagemaker_job

    missing = [name for name, value in (("--bucket", bucket), ("--role", role)) if not value]
    if missing:
        raise click.UsageError(f"a SageMaker job (--instance) needs {' and '.join(missing)}")
    try:
        record = run_sagemaker_job(
            AwsClients.from_env(region), job_name=job_name, runs_dir=runs_dir, data_dir=data, bucket=str(bucket),
            role_arn=str(role), hyperparameters=hyperparameters, model=model, instance_type=instance,
            instance_count=instance_count, spot=spot, max_run=max_run, max_wait=max_wait, echo=click.echo,
            algorithm=algorithm,
        )
    except JobError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the job record is {runs_dir / job_name / 'job.json'}", err=True)
        sys.exit(130)
    cost = record.get("estimated_cost_usd")
    billed = f"{record.get('billable_seconds')} s billed" + (f", about ${cost:.2f}" if cost is not None else "")
    if record["status"] != "Completed":
        reason = record.get("failure_reason") or record.get("stop_reason") or ""
        click.echo(f"job {job_name} {record['status']} ({billed}): {reason}", err=True)
        sys.exit(130 if record.get("stop_reason") == "interrupted (Ctrl-C)" else 1)
    if record.get("model_error"):
        click.echo(f"job {job_name} Completed but {record['model_error']}", err=True)
        sys.exit(1)
    best = (record.get("best") or {}).get("validation:mAP")
    click.echo(f"job {job_name} Completed on SageMaker ({billed}); best validation:mAP {best}")
    click.echo(f"model: {record['model_dir']}")
    if algorithm == "builtin-od":
        click.echo("the model is MXNet (built-in Object Detection): odorch evaluate/predict cannot load it locally")
        return
    click.echo(f"next: odorch evaluate {runs_dir / job_name} --data {data} --split test")

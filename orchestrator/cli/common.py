"""Options and helpers that several command groups share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

runs_dir_option = click.option(
    "--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
    help="Folder holding one folder per job.",
)


# the options train and tune share: a job's model, its hyperparameters and a SageMaker account
model_option = click.option(
    "--model", default="ssdlite320_mobilenet_v3_large", show_default=True,
    help="torchvision detector (odorch models), or with --algorithm jumpstart a JumpStart model id.",
)
epochs_option = click.option("--epochs", type=click.IntRange(1), help="Shorthand for --hp epochs=N.")
weights_option = click.option("--weights", help="coco | imagenet | none | PATH (shorthand for --hp weights=...; default coco).")


def hp_option(help_text: str) -> Any:
    return click.option("--hp", "hp", multiple=True, callback=parse_hp, metavar="KEY=VALUE", help=help_text)


def sagemaker_account_options(command: Any) -> Any:
    """--bucket, --role and --region, as every command that starts SageMaker jobs takes them."""
    for option in reversed([
        click.option("--bucket", help="S3 bucket for data, code and models (SageMaker)."),
        click.option("--role", help="IAM role ARN SageMaker assumes (SageMaker)."),
        click.option("--region", help="AWS region (default: boto3's, e.g. AWS_DEFAULT_REGION)."),
    ]):  # fmt: skip
        command = option(command)
    return command


def _device_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from odorch.runtime.devices import DeviceError, check_device_name

    try:
        return check_device_name(value)
    except DeviceError as e:
        raise click.BadParameter(str(e)) from e


device_option = click.option(
    "--device", default="auto", show_default=True, callback=_device_name, metavar="auto|cpu|cuda|cuda:N|mps",
    help="Where the model runs: auto takes a CUDA GPU, else Apple MPS, else the CPU.",
)


mlflow_option = click.option(
    "--mlflow", "mlflow_uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
    help="Also track in MLflow: a tracking server (http://HOST:5000), or a SageMaker managed MLflow tracking "
         "server ARN (needs sagemaker-mlflow); default $MLFLOW_TRACKING_URI, experiment $MLFLOW_EXPERIMENT_NAME "
         "or odorch. (Jobs write TensorBoard event files either way: RUNS_DIR/JOB/tensorboard.)",
)


def tracking_options(mlflow_uri: str | None) -> Any:
    """odorch.tracking.TrackingOptions for --mlflow; a missing package or a server that does not
    answer is a one-line error now, before any job starts."""
    from odorch.tracking import TrackingError, TrackingOptions, check_mlflow

    options = TrackingOptions(mlflow_uri=mlflow_uri or None)
    try:
        check_mlflow(options)
    except TrackingError as e:
        raise click.ClickException(str(e)) from e
    return options


def pick_device(name: str) -> Any:
    """The torch device ``name`` means here; one that this machine lacks is a one-line error."""
    from odorch.runtime.devices import DeviceError, resolve_device

    try:
        return resolve_device(name)
    except DeviceError as e:
        raise click.ClickException(str(e)) from e


def with_shorthands(hp: dict[str, str], *, epochs: int | None, weights: str | None, local: bool) -> dict[str, str]:
    """--hp with --epochs/--weights folded in; for a local job a weights file given relative to
    here is made absolute (local jobs run in their own folder)."""
    out = dict(hp)
    if epochs is not None:
        out["epochs"] = str(epochs)
    if weights is not None:
        out["weights"] = weights
    value = out.get("weights")
    if local and value not in (None, "coco", "imagenet", "none") and Path(value).exists():
        out["weights"] = str(Path(value).resolve())
    return out


def parse_hp(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """KEY=VALUE items as a dict; --hp flags add to (and win over) the config file's hp."""
    from click.core import ParameterSource

    out = {}
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
        values = (*(ctx.lookup_default(param.name, call=False) or ()), *values)
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: write key=value, e.g. --hp lr=0.01")
        out[key.strip()] = value.strip()
    return out



def load_run(run: Path, *, device: Any = "cpu") -> tuple[Any, dict[str, Any], Path]:
    """(model on ``device``, config, folder for outputs) from a job folder or a model folder/file."""
    from odorch.runs import model_dir
    from odorch.runtime.models import load_trained

    model, config = load_trained(model_dir(run), device=device)
    return model, config, run if run.is_dir() else run.parent


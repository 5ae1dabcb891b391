"""Experiment tracking, fed from the one metric-line path.

Every record a backend appends to metrics.jsonl (odorch.runs.append_metrics) also goes to the
job's Tracker: its per-epoch metrics become TensorBoard scalars (event files written with
tensorboard's own writer: no TensorFlow, no torch) and, when an MLflow tracking URI is given,
metrics of an MLflow run whose params are the job's hyperparameters. When the job ends the run
gets the model folder, job.json, metrics.jsonl and any eval-*.json as artifacts, and its status.

    runs/<job>/tensorboard/                      a job's event files (`tensorboard --logdir runs`)
    runs/tune-<study>/tensorboard/<trial job>/   a study's trials side by side

MLflow: `--mlflow URI` or MLFLOW_TRACKING_URI: http(s)://, file:, sqlite:, databricks, or the ARN
of a SageMaker managed MLflow tracking server (needs the sagemaker-mlflow plugin, which signs
the requests with the AWS credentials boto3 finds). Experiment: MLFLOW_EXPERIMENT_NAME, default
"odorch". A tuning study is a parent run and its trials are child runs.

Tags are "train/loss", "validation/mAP" ... in TensorBoard (one section per prefix) and the
metric lines' own names ("validation:mAP") in MLflow. Lines without an epoch (train:progress)
are progress, not metrics: they are not tracked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from odorch.errors import JobError
from odorch.runs import JOB_FILE, METRICS_FILE, JobRecord, read_job

TENSORBOARD_DIR = "tensorboard"
DEFAULT_EXPERIMENT = "odorch"
PROGRESS = "train:progress"
# odorch's job status -> MLflow's RunStatus
_RUN_STATUS = {"Completed": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED"}


class TrackingError(JobError):
    """Tracking asked for but not possible (MLflow missing, server unreachable); says what to do."""


@dataclass(frozen=True)
class TrackingOptions:
    """How one job is tracked. tensorboard_dir None: <job_dir>/tensorboard."""

    mlflow_uri: str | None = None
    experiment: str | None = None
    parent_run_id: str | None = None
    tensorboard_dir: Path | None = None


def redact(uri: str) -> str:
    """The URI without a user:password part, fit for logs and job.json."""
    parts = urlsplit(uri)
    if not parts.username and not parts.password:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def experiment_name(options: TrackingOptions) -> str:
    return options.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def mlflow_client(uri: str) -> Any:
    """An MlflowClient for uri, or a TrackingError saying which package to install."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(f"--mlflow {redact(uri)}: the mlflow package is not installed; "
                            "pip install 'odorch[tracking]' (or mlflow-skinny)") from None
    if uri.startswith("arn:"):
        try:
            import sagemaker_mlflow  # noqa: F401 - registers the "arn" tracking store and SigV4 auth
        except ImportError:
            raise TrackingError(f"--mlflow {uri}: a SageMaker managed MLflow ARN needs the sagemaker-mlflow plugin; "
                                "pip install sagemaker-mlflow") from None
        import mlflow

        # the plugin's request header (which server of the account) comes from the global URI
        mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name)


def check_mlflow(options: TrackingOptions) -> None:
    """Before a job starts: the packages are there and the server answers (the experiment exists
    or can be made). Raises TrackingError with the URI (redacted) and the reason."""
    if not options.mlflow_uri:
        return
    client = mlflow_client(options.mlflow_uri)
    try:
        _experiment_id(client, experiment_name(options))
    except Exception as e:  # noqa: BLE001 - MlflowException, connection errors, auth errors
        raise TrackingError(f"cannot use MLflow at {redact(options.mlflow_uri)}: {_first_line(e)}; "
                            "check --mlflow / MLFLOW_TRACKING_URI (is the server running?)") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def start_run(options: TrackingOptions, *, name: str, tags: dict[str, str], run_id: str | None = None) -> tuple[Any, str]:
    """(client, run id) of a new run, or of run_id set RUNNING again (a resumed job or study)."""
    assert options.mlflow_uri
    client = mlflow_client(options.mlflow_uri)
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return client, run_id
    all_tags = dict(tags)
    if options.parent_run_id:
        all_tags["mlflow.parentRunId"] = options.parent_run_id
    run = client.create_run(_experiment_id(client, experiment_name(options)), tags=all_tags, run_name=name)
    return client, run.info.run_id


class Tracker:
    """One job's TensorBoard writer and MLflow run; open with open_tracker."""

    def __init__(self, *, tensorboard_dir: Path, mlflow: tuple[Any, str] | None, echo: Callable[[str], None]) -> None:
        self.tensorboard_dir = tensorboard_dir
        self.echo = echo
        self.client, self.run_id = mlflow if mlflow else (None, None)
        self.failed = 0  # records MLflow refused or could not be reached for
        self.writer: Any = None
        try:
            from tensorboard.summary import Writer
        except ImportError:
            echo("note: tensorboard is not installed, so no event files: pip install 'odorch[tracking]'")
        else:
            tensorboard_dir.mkdir(parents=True, exist_ok=True)
            self.writer = Writer(str(tensorboard_dir))

    def log(self, entry: dict[str, Any]) -> None:
        """One metrics.jsonl record ({"time", "epoch", "metrics"}); records without an epoch are progress."""
        epoch = entry.get("epoch")
        metrics = {k: (float("nan") if v is None else float(v))
                   for k, v in (entry.get("metrics") or {}).items() if k != PROGRESS}
        if epoch is None or not metrics:
            return
        wall = float(entry.get("time") or time.time())
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(name.replace(":", "/"), value, int(epoch), wall_time=wall)
            self.writer.flush()
        if self.client is not None:
            from mlflow.entities import Metric

            batch = [Metric(name, value, int(wall * 1000), int(epoch)) for name, value in metrics.items()]
            self._mlflow(f"epoch {epoch}", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def _mlflow(self, what: str, call: Callable[[], Any]) -> None:
        """A failed MLflow call never fails the job: the first is shown, all are counted."""
        try:
            call()
        except Exception as e:  # noqa: BLE001 - the server's or the network's error
            self.failed += 1
            if self.failed == 1:
                self.echo(f"warning: MLflow could not log {what} (run {self.run_id}): {_first_line(e)}; "
                          "the job goes on, failures are counted")

    def close(self, record: JobRecord, *, job_dir: Path) -> None:
        """Flush the event files; give the MLflow run its artifacts and the job's status."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.client is None:
            return
        client, run_id = self.client, self.run_id
        model_dir = Path(record.model_dir or job_dir / "model")
        if model_dir.is_dir() and any(model_dir.iterdir()):
            self._mlflow("the model", lambda: client.log_artifacts(run_id, str(model_dir), "model"))
        for path in [job_dir / JOB_FILE, job_dir / METRICS_FILE, *sorted(job_dir.glob("eval-*.json"))]:
            if path.is_file():
                self._mlflow(path.name, lambda path=path: client.log_artifact(run_id, str(path)))
        status = _RUN_STATUS.get(record.status, "FAILED")
        self._mlflow("the run's status", lambda: client.set_terminated(run_id, status=status))
        info = record.extra.setdefault("mlflow", {})
        info["failed_calls"] = self.failed
        if self.failed:
            self.echo(f"warning: {self.failed} MLflow call(s) of run {run_id} failed; metrics.jsonl has every record")
        self.client = None


def open_tracker(job_dir: Path, record: JobRecord, options: TrackingOptions | None = None, *,
                 echo: Callable[[str], None] = print) -> Tracker:
    """The job's tracker; notes its event folder and MLflow run in the record (a re-run of the
    same job continues the same MLflow run). MLflow unreachable now: a warning, TensorBoard only."""
    options = options or TrackingOptions()
    tensorboard_dir = Path(options.tensorboard_dir or Path(job_dir) / TENSORBOARD_DIR).absolute()
    record.extra["tensorboard_dir"] = str(tensorboard_dir)
    mlflow = None
    if options.mlflow_uri:
        previous = record.extra.get("mlflow") or {}
        same = previous.get("tracking_uri") == redact(options.mlflow_uri) and previous.get("run_id")
        tags = {"odorch.job": record.job_name, "odorch.backend": record.backend, "odorch.model": record.model}
        try:
            mlflow = start_run(options, name=record.job_name, tags=tags,
                               run_id=previous["run_id"] if same else None)
            client, run_id = mlflow
            from mlflow.entities import Param

            params = [Param(k, v) for k, v in record.hyperparameters.items()]
            if params and not same:
                client.log_batch(run_id, params=params)
        except TrackingError:
            raise
        except Exception as e:  # noqa: BLE001
            echo(f"warning: MLflow at {redact(options.mlflow_uri)} failed, this job is tracked in TensorBoard only: "
                 f"{_first_line(e)}")
            record.extra["mlflow"] = {"tracking_uri": redact(options.mlflow_uri), "error": _first_line(e)}
            mlflow = None
        else:
            record.extra["mlflow"] = {"tracking_uri": redact(options.mlflow_uri), "experiment": experiment_name(options),
                                "run_id": run_id, "parent_run_id": options.parent_run_id}
    return Tracker(tensorboard_dir=tensorboard_dir, mlflow=mlflow, echo=echo)


def for_trial(options: TrackingOptions | None, *, tune_dir: Path, job_name: str, parent_run_id: str | None) -> TrackingOptions:
    """A trial's options: event files under the study's folder, MLflow run a child of the study's."""
    return replace(options or TrackingOptions(), tensorboard_dir=Path(tune_dir) / TENSORBOARD_DIR / job_name,
                   parent_run_id=parent_run_id)


def open_study_run(options: TrackingOptions | None, *, study: str, params: dict[str, Any],
                   previous: dict[str, Any] | None = None, echo: Callable[[str], None] = print) -> dict[str, str] | None:
    """The study's parent run, {"tracking_uri" (redacted), "run_id"}: `previous` (what an earlier
    call returned) is continued when it is on the same server. None without MLflow, or when it
    failed (warned)."""
    if options is None or not options.mlflow_uri:
        return None
    uri = redact(options.mlflow_uri)
    same = previous and previous.get("tracking_uri") == uri and previous.get("run_id")
    try:
        client, run_id = start_run(options, name=f"tune-{study}", tags={"odorch.study": study},
                                   run_id=previous["run_id"] if same else None)
        if params and not same:
            from mlflow.entities import Param

            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return {"tracking_uri": uri, "run_id": run_id}
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001
        echo(f"warning: MLflow at {redact(options.mlflow_uri)} failed, the study has no parent run: {_first_line(e)}")
        return None


def close_study_run(options: TrackingOptions | None, run_id: str | None, *, tune_dir: Path, best: float | None,
                    status: str = "FINISHED", echo: Callable[[str], None] = print) -> None:
    """The study's summary files as artifacts, its best objective as a metric, and its status."""
    if options is None or not options.mlflow_uri or not run_id:
        return
    from odorch.runtime.metrics import OBJECTIVE

    try:
        client = mlflow_client(options.mlflow_uri)
        if best is not None:
            client.log_metric(run_id, f"best:{OBJECTIVE}", float(best))
        for path in sorted(Path(tune_dir).glob("summary.*")) + sorted(Path(tune_dir).glob("*.png")):
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, status=status)
    except Exception as e:  # noqa: BLE001
        echo(f"warning: MLflow could not close the study's run {run_id}: {_first_line(e)}")


def log_evaluation(job_dir: Path, eval_file: Path, *, split: str, stats: dict[str, Any], mlflow_uri: str | None = None,
                   echo: Callable[[str], None] = print) -> str | None:
    """`odorch evaluate`'s json of a job tracked in MLflow: an artifact of the job's run, its stats
    as metrics "<split>:AP", ... The URI: mlflow_uri, else the one in job.json (unless it had a
    password, which job.json never keeps). The run id, or None (nothing to do, or warned)."""
    try:
        info = read_job(job_dir).extra.get("mlflow") or {}
    except JobError:
        return None
    run_id = info.get("run_id")
    uri = mlflow_uri or info.get("tracking_uri")
    if not run_id or not uri:
        return None
    if "***@" in uri:
        echo(f"note: {eval_file.name} not sent to MLflow run {run_id}: give --mlflow URI (with its credentials)")
        return None
    try:
        client = mlflow_client(uri)
        client.log_artifact(run_id, str(eval_file))
        numbers = {k: float(v) for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if numbers:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(f"{split}:{k}", v, now, 0) for k, v in numbers.items()])
    except Exception as e:  # noqa: BLE001
        echo(f"warning: could not log {eval_file.name} to MLflow run {run_id} at {redact(uri)}: {_first_line(e)}")
        return None
    return run_id

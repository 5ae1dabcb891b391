"""The SageMaker backend: run the same entrypoint (entrypoints/train.py) as a SageMaker training
job, over boto3 clients that are passed in (no `sagemaker` SDK), and keep a local job folder
in the local backend's format:

    runs/<job>/job.json      the local schema (backend "sagemaker") + ARN, instance, spot, cost
    runs/<job>/logs.txt      every CloudWatch log line of the job
    runs/<job>/metrics.jsonl parsed with the same functions as the local backend
    runs/<job>/model/        model.tar.gz extracted (safely) when the job Completed

S3 layout under the bucket:

    odorch/datasets/<hash>/                   a converted folder, content-addressed (see dataset_hash)
    odorch/jobs/<job>/source/sourcedir.tar.gz entrypoints/ + a top-level train.py shim
    odorch/jobs/<job>/output/                 SageMaker's OutputDataConfig (model.tar.gz)
    odorch/jobs/<job>/checkpoints/            CheckpointConfig (spot restarts resume from it)
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odorch.backends.archive import package_source
from odorch.backends.aws import (
    PREFIX,
    AwsClients,
    check_bucket,
    download_model,
    upload_dataset,
)
from odorch.errors import JobError, PreflightError, SageMakerError
from odorch.runtime.metrics import metric_definitions, parse_epoch, parse_metrics
from odorch.runs import (
    LOG_FILE,
    TERMINAL,
    append_metrics,
    check_job_name,
    iso_from_unix,
    new_record,
    save_job,
    update_from_metrics,
)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
VOLUME_GB = 30
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
DEFAULT_MAX_RUN = 86400
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+")
POLL_S = 30.0  # DescribeTrainingJob / GetLogEvents every POLL_S seconds (tests lower it)


def normalize_instance_type(instance_type: str) -> str:
    """`p3.2xlarge` -> `ml.p3.2xlarge` (SageMaker's names carry the ml. prefix)."""
    t = instance_type.strip().lower()
    return t if t.startswith("ml.") else f"ml.{t}"


def job_prefix(job_name: str) -> str:
    return f"{PREFIX}/jobs/{job_name}"


# ---------------------------------------------------------------- source


def upload_source(clients: AwsClients, bucket: str, job_name: str) -> str:
    key = f"{job_prefix(job_name)}/source/sourcedir.tar.gz"
    clients.s3.put_object(Bucket=bucket, Key=key, Body=package_source())
    return f"s3://{bucket}/{key}"


# ---------------------------------------------------------------- request


def training_job_request(*, job_name: str, region: str, role_arn: str, bucket: str, dataset_uri: str, source_uri: str,
                         hyperparameters: dict[str, Any], model: str, instance_type: str, instance_count: int = 1,
                         spot: bool = False, max_run: int = DEFAULT_MAX_RUN, max_wait: int | None = None,
                         algorithm: str = "pytorch", channel_uris: dict[str, str] | None = None) -> dict[str, Any]:
    """The complete CreateTrainingJob request.

    algorithm "builtin-od": the built-in Object Detection image, `hyperparameters` sent as they
    are (no sagemaker_program/submit_directory), one RecordIO channel per `channel_uris` entry,
    and no MetricDefinitions: SageMaker defines a built-in algorithm's metrics itself (its
    Python SDK: metric_definitions "should be defined only for jobs that don't use an Amazon
    algorithm")."""
    from odorch import __version__
    from odorch import aws_tables
    from odorch.runs import hyperparameter_strings

    instance_type = normalize_instance_type(instance_type)
    base = f"s3://{bucket}/{job_prefix(job_name)}"
    builtin = algorithm == "builtin-od"
    hps = hyperparameter_strings(hyperparameters)
    if not builtin:
        hps.update(sagemaker_program="train.py", sagemaker_submit_directory=source_uri, sagemaker_region=region)
    uris = channel_uris or {"train": dataset_uri, "validation": dataset_uri}

    def channel(name: str) -> dict[str, Any]:
        out = {
            "ChannelName": name,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uris[name], "S3DataDistributionType": "FullyReplicated"}},
            "InputMode": "File",
        }
        if builtin:
            out.update(ContentType="application/x-recordio", RecordWrapperType="None")
        return out

    spec: dict[str, Any] = {"TrainingImage": aws_tables.training_image(region, instance_type), "TrainingInputMode": "File",
                            "MetricDefinitions": metric_definitions()}
    if builtin:
        spec = {"TrainingImage": aws_tables.builtin_od_image(region), "TrainingInputMode": "File"}
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": int(max_run)}
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": spec,
        "HyperParameters": hps,
        "RoleArn": role_arn,
        "InputDataConfig": [channel("train"), channel("validation")],
        "OutputDataConfig": {"S3OutputPath": f"{base}/output"},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": int(instance_count), "VolumeSizeInGB": VOLUME_GB},
        "StoppingCondition": stopping,
        "CheckpointConfig": {"S3Uri": f"{base}/checkpoints", "LocalPath": CHECKPOINT_LOCAL_PATH},
        "Tags": [
            {"Key": "odorch:job", "Value": job_name},
            {"Key": "odorch:model", "Value": model},
            {"Key": "odorch:version", "Value": __version__},
        ],
    }
    if spot:
        request["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = int(max_wait if max_wait is not None else 2 * max_run)
    return request


# ---------------------------------------------------------------- preflight


def check_dataset(data_dir: Path | str) -> None:
    """annotations/train.json + val.json with the same classes, every image file present."""
    from odorch.runtime.data import CocoDetection, DataError, class_names, load_coco_split

    root = Path(data_dir)
    classes = None
    for split in ("train", "val"):
        if not (root / "annotations" / f"{split}.json").is_file():
            raise DataError(f"{root}: no annotations/{split}.json; convert with --split (or --imagesets) so train and val exist")
        coco = load_coco_split(root, split)
        names = class_names(coco)
        if classes is not None and names != classes:
            raise DataError(f"{root}: val has classes {names} but train has {classes}: convert both together")
        classes = names
        images = CocoDetection(coco, root / "images", None)
        missing = [im["file_name"] for im in images.images if not (images.images_dir / im["file_name"]).is_file()]
        if missing:
            raise DataError(f"{root}: {len(missing)} image(s) of {split} missing from images/ (e.g. {missing[0]}); convert again")


def preflight(clients: AwsClients, *, role_arn: str, bucket: str, instance_type: str, data_dir: Path | str,
              hyperparameters: dict[str, Any], spot: bool = False, max_run: int = DEFAULT_MAX_RUN,
              max_wait: int | None = None, instance_count: int = 1, algorithm: str = "pytorch",
              recordio_dir: Path | str | None = None) -> dict[str, Any] | None:
    """Every check that can fail before money is spent; PreflightError lists each problem and its fix.

    algorithm "builtin-od": the RecordIO channels are written under `recordio_dir` here (the
    dataset converts, images readable) and the returned dict (builtin_od.prepare_recordio's, plus
    "hyperparameters": the strings to send) says what to upload; hyperparameters are checked
    against the data (num_classes, num_training_samples, label_width)."""
    from odorch.runtime.data import DataError
    from odorch.runtime.train import TrainingError, parse_hyperparameters
    from odorch import aws_tables

    problems = []
    if not ROLE_ARN.match(role_arn or ""):
        problems.append(f"--role {role_arn!r} is not an IAM role ARN: give arn:aws:iam::<12-digit account>:role/<name> "
                        "(a role SageMaker can assume, with access to the bucket)")
    normalized = normalize_instance_type(instance_type)
    if not aws_tables.is_known_instance(normalized):
        problems.append(f"--instance {instance_type!r} is not a known SageMaker training instance type: "
                        "use one like ml.g5.xlarge or ml.p3.2xlarge")
    try:  # the image URI depends on the region: an unknown one must stop us before any upload
        if algorithm == "builtin-od":
            aws_tables.builtin_od_image(clients.region)
        else:
            aws_tables.training_image(clients.region, normalized)
    except aws_tables.UnknownRegionError as e:
        problems.append(f"--region {clients.region}: {e}")
    except aws_tables.UnknownInstanceError:
        pass  # reported above
    if instance_count < 1:
        problems.append(f"--instance-count {instance_count}: must be at least 1")
    if max_run < 1:
        problems.append(f"--max-run {max_run}: must be at least 1 second")
    if spot and max_wait is not None and max_wait < max_run:
        problems.append(f"--max-wait {max_wait} is less than --max-run {max_run}: spot jobs need max-wait >= max-run; "
                        f"raise --max-wait to at least {max_run}")
    if not spot and max_wait is not None:
        problems.append("--max-wait only applies to spot jobs: add --spot or drop --max-wait")
    prepared = None
    if algorithm == "builtin-od":
        prepared = _preflight_builtin_od(hyperparameters, data_dir, recordio_dir, problems)
    elif algorithm != "pytorch":
        problems.append(f"--algorithm {algorithm!r}: use pytorch or builtin-od")
    else:
        from odorch.algorithms.builtin_od import refuse_in_entrypoint

        builtin_only = refuse_in_entrypoint(hyperparameters)
        problems += builtin_only
        try:
            if not builtin_only:
                parse_hyperparameters(hyperparameters)
        except TrainingError as e:
            problems.append(f"hyperparameters: {e}")
        try:
            check_dataset(data_dir)
        except (DataError, OSError, ValueError, KeyError) as e:
            problems.append(f"dataset: {e}")
    problems += check_bucket(clients, bucket)
    if problems:
        raise PreflightError("not starting the SageMaker job:\n  " + "\n  ".join(problems))
    return prepared


def _preflight_builtin_od(hyperparameters: dict[str, Any], data_dir: Path | str, recordio_dir: Path | str | None,
                          problems: list[str]) -> dict[str, Any] | None:
    from odorch.converters.dataset import DatasetError
    from odorch.algorithms import builtin_od

    names = builtin_od.hyperparameter_problems(hyperparameters)
    problems += names
    if recordio_dir is None:
        problems.append("internal: no folder to write the RecordIO channels to")
        return None
    try:
        prepared = builtin_od.prepare_recordio(data_dir, recordio_dir)
    except (builtin_od.BuiltinOdError, DatasetError, OSError, ValueError, KeyError) as e:
        problems.append(f"dataset (RecordIO for builtin-od): {e}")
        return None
    if not names:
        try:
            prepared["hyperparameters"] = builtin_od.hyperparameters(hyperparameters, prepared)
        except builtin_od.BuiltinOdError as e:
            problems.append(str(e))
    return prepared


# ---------------------------------------------------------------- job control


def describe_job(clients: AwsClients, job_name: str) -> dict[str, Any]:
    return clients.sagemaker.describe_training_job(TrainingJobName=job_name)


def stop_job(clients: AwsClients, job_name: str) -> dict[str, Any]:
    """StopTrainingJob unless the job already ended; returns DescribeTrainingJob afterwards."""
    desc = describe_job(clients, job_name)
    if desc["TrainingJobStatus"] not in TERMINAL + ("Stopping",):
        clients.sagemaker.stop_training_job(TrainingJobName=job_name)
        desc = describe_job(clients, job_name)
    return desc


class LogFollower:
    """CloudWatch log streams <job>/algo-N-<epoch> -> logs.txt, metrics.jsonl and the record,
    line by line with the local backend's parsers."""

    def __init__(self, logs: Any, job_name: str, job_dir: Path, record: dict[str, Any],
                 echo: Callable[[str], None] | None = None) -> None:
        self.logs, self.job_name, self.job_dir, self.record, self.echo = logs, job_name, job_dir, record, echo
        self.tokens: dict[str, str | None] = {}

    def _streams(self) -> list[str]:
        names: list[str] = []
        kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": self.job_name + "/"}
        try:
            while True:
                page = self.logs.describe_log_streams(**kwargs)
                names += [s["logStreamName"] for s in page.get("logStreams", [])]
                if not page.get("nextToken"):
                    return sorted(names)
                kwargs["nextToken"] = page["nextToken"]
        except self.logs.exceptions.ResourceNotFoundException:
            return []  # no log group yet: the job has not started

    def poll(self) -> int:
        """Read every new event of every stream; the number of lines read."""
        count = 0
        for stream in self._streams():
            while True:
                kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if self.tokens.get(stream):
                    kwargs["nextToken"] = self.tokens[stream]
                page = self.logs.get_log_events(**kwargs)
                for event in page.get("events", []):
                    self.line(event["message"])
                    count += 1
                token = page.get("nextForwardToken")
                if not page.get("events") or token == self.tokens.get(stream):
                    self.tokens[stream] = token or self.tokens.get(stream)
                    break
                self.tokens[stream] = token
        return count

    def line(self, message: str) -> None:
        with open(self.job_dir / LOG_FILE, "a") as log:
            log.write(message if message.endswith("\n") else message + "\n")
        for text in message.rstrip("\r\n").split("\r"):
            if not text.strip():
                continue
            values = parse_metrics(text)
            epoch = parse_epoch(text)
            if epoch is not None and epoch[1] is None:  # the built-in algorithm's line: epochs from the job
                epoch = (epoch[0], self.record.get("epochs"))
            if values:
                append_metrics(self.job_dir, values, epoch[0] if epoch else None)
                update_from_metrics(self.record, values, epoch)
            if self.echo:
                self.echo(text)


def _timestamp(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return iso_from_unix(value.timestamp())
    return str(value)


def update_record(record: dict[str, Any], desc: dict[str, Any]) -> None:
    """The record's status fields from DescribeTrainingJob."""
    record["status"] = {"Stopping": "InProgress"}.get(desc["TrainingJobStatus"], desc["TrainingJobStatus"])
    record["sagemaker_status"] = desc["TrainingJobStatus"]
    record["secondary_status"] = desc.get("SecondaryStatus")
    record["training_job_arn"] = desc.get("TrainingJobArn", record.get("training_job_arn"))
    if desc.get("FailureReason"):
        record["failure_reason"] = desc["FailureReason"]
    record["started"] = _timestamp(desc.get("TrainingStartTime")) or record.get("started")
    record["ended"] = _timestamp(desc.get("TrainingEndTime")) or record.get("ended")
    if desc.get("TrainingStartTime") and desc.get("TrainingEndTime"):
        record["duration_s"] = round((desc["TrainingEndTime"] - desc["TrainingStartTime"]).total_seconds(), 1)
    if desc.get("BillableTimeInSeconds") is not None:
        record["billable_seconds"] = int(desc["BillableTimeInSeconds"])
    if desc.get("FinalMetricDataList"):
        record["final_metric_data"] = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    artifacts = (desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if artifacts:
        record["model_s3_uri"] = artifacts


def estimated_cost(record: dict[str, Any]) -> float | None:
    """BillableTimeInSeconds × instances × the on-demand price. For managed spot SageMaker
    already lowers BillableTimeInSeconds by the saving (savings = 1 − billable / training
    time), so the on-demand rate is the right one for both."""
    from odorch import aws_tables

    if record.get("billable_seconds") is None:
        return None
    try:
        price = aws_tables.price_per_hour(record["instance_type"], spot=False)
    except (LookupError, ValueError):
        return None
    return round(record["billable_seconds"] / 3600.0 * float(price) * int(record.get("instance_count") or 1), 4)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _default_confirm(question: str) -> bool:
    """Ask on a terminal; with no TTY (CI, pipes) the answer is yes: stop the job."""
    import click

    try:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        interactive = False
    return click.confirm(question, default=True) if interactive else True


def run_sagemaker_job(clients: AwsClients, *, job_name: str, runs_dir: Path | str, data_dir: Path | str, bucket: str,
                      role_arn: str, hyperparameters: dict[str, Any], model: str, instance_type: str,
                      instance_count: int = 1, spot: bool = False, max_run: int = DEFAULT_MAX_RUN,
                      max_wait: int | None = None, poll_s: float | None = None,
                      echo: Callable[[str], None] | None = print, confirm: Callable[[str], bool] | None = None,
                      sleep: Callable[[float], None] | None = None, algorithm: str = "pytorch") -> dict[str, Any]:
    """Preflight, upload, CreateTrainingJob, follow it to the end; returns the saved record.

    Ctrl-C while waiting asks whether to stop the job (stops without asking with no TTY); when
    stopped, waits for Stopped. Declining re-raises KeyboardInterrupt with the job still running
    and its record (ARN, last status) saved."""
    say = echo or (lambda text: None)
    poll_s = POLL_S if poll_s is None else poll_s
    sleep = sleep or _sleep
    confirm = confirm or _default_confirm
    check_job_name(job_name)
    job_dir = Path(runs_dir) / job_name
    if (job_dir / "job.json").exists():
        raise JobError(f"job {job_name!r} already exists ({job_dir}); SageMaker job names are unique: pick another --job-name")
    instance_type = normalize_instance_type(instance_type)
    builtin = algorithm == "builtin-od"
    with tempfile.TemporaryDirectory(prefix="odorch-rec-") as recordio_dir:
        prepared = preflight(clients, role_arn=role_arn, bucket=bucket, instance_type=instance_type, data_dir=data_dir,
                             hyperparameters=hyperparameters, spot=spot, max_run=max_run, max_wait=max_wait,
                             instance_count=instance_count, algorithm=algorithm, recordio_dir=recordio_dir)
        if builtin:
            from odorch.algorithms.builtin_od import upload_recordio

            assert prepared is not None
            hyperparameters = prepared["hyperparameters"]
            channels = upload_recordio(clients, prepared, data_dir, bucket, echo=say)
            dataset_uri, source_uri = channels["train"], ""
        else:
            dataset_uri = upload_dataset(clients, data_dir, bucket, echo=say)
            source_uri = upload_source(clients, bucket, job_name)
            channels = {"train": dataset_uri, "validation": dataset_uri}
    request = training_job_request(
        job_name=job_name, region=clients.region, role_arn=role_arn, bucket=bucket, dataset_uri=dataset_uri,
        source_uri=source_uri, hyperparameters=hyperparameters, model=model, instance_type=instance_type,
        instance_count=instance_count, spot=spot, max_run=max_run, max_wait=max_wait, algorithm=algorithm,
        channel_uris=channels,
    )
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        arn = clients.sagemaker.create_training_job(**request)["TrainingJobArn"]
    except (ClientError, BotoCoreError) as e:
        raise SageMakerError(f"CreateTrainingJob {job_name} failed: {e}") from e
    record = new_record(job_name=job_name, backend="sagemaker", job_dir=job_dir, model=model,
                        hyperparameters=hyperparameters, channels=channels)
    if builtin:
        record.update(algorithm="builtin-od", epochs=int(hyperparameters.get("epochs", 30)), source_s3_uri=None,
                      classes=prepared["classes"] if prepared else None)
    record.update(
        training_job_arn=arn, region=clients.region, instance_type=instance_type, instance_count=instance_count,
        spot=spot, billable_seconds=None, estimated_cost_usd=None, sagemaker_status="InProgress", secondary_status=None,
        source_s3_uri=source_uri or None, output_s3_uri=request["OutputDataConfig"]["S3OutputPath"],
        checkpoint_s3_uri=request["CheckpointConfig"]["S3Uri"], orchestrator_pid=os.getpid(),
    )
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / LOG_FILE).touch()
    save_job(job_dir, record)
    say(f"created {arn} ({instance_count} × {instance_type}{', spot' if spot else ''})")
    follower = LogFollower(clients.logs, job_name, job_dir, record, echo)

    try:
        try:
            _wait(clients, record, follower, job_dir, poll_s=poll_s, say=say, sleep=sleep)
        except KeyboardInterrupt:
            save_job(job_dir, record)
            if not ask_to_stop(f"the SageMaker job {job_name}", arn, lambda: stop_job(clients, job_name),
                               f"aws sagemaker stop-training-job --training-job-name {job_name}",
                               confirm=confirm, say=say):
                raise
            record["stop_reason"] = "interrupted (Ctrl-C)"
            _wait(clients, record, follower, job_dir, poll_s=poll_s, say=say, sleep=sleep)
        if record["status"] == "Completed" and record.get("model_s3_uri"):
            try:
                download_model(clients, record["model_s3_uri"], job_dir / "model")
            except (ClientError, BotoCoreError, SageMakerError, tarfile.TarError, OSError) as e:
                record["model_error"] = f"cannot download {record['model_s3_uri']}: {e}"
                say(f"error: {record['model_error']}")
        record["estimated_cost_usd"] = estimated_cost(record)
    finally:
        save_job(job_dir, record)
    return record


def ask_to_stop(what: str, arn: str, stop: Callable[[], Any], stop_command: str, *,
                confirm: Callable[[str], bool], say: Callable[[str], None]) -> bool:
    """After Ctrl-C: stop a cloud job (True) unless the user says no (False: it keeps running,
    and they are told how to stop it later). Never leaves the job unknown."""
    if not confirm(f"stop {what}?"):
        say(f"{what} keeps running on SageMaker ({arn}); stop it with `{stop_command}`")
        return False
    say(f"stopping {what} ...")
    stop()
    return True


def _wait(clients: AwsClients, record: dict[str, Any], follower: LogFollower, job_dir: Path, *, poll_s: float,
          say: Callable[[str], None], sleep: Callable[[float], None]) -> None:
    """Poll DescribeTrainingJob and the logs until the job is terminal and its logs are drained."""
    last = None
    while True:
        desc = describe_job(clients, record["job_name"])
        update_record(record, desc)
        state = (desc["TrainingJobStatus"], desc.get("SecondaryStatus"))
        if state != last:
            transitions = desc.get("SecondaryStatusTransitions") or []
            message = transitions[-1].get("StatusMessage") if transitions else None
            say(f"[{record['job_name']}] {state[0]} / {state[1]}" + (f": {message}" if message else ""))
            last = state
        follower.poll()
        save_job(job_dir, record)
        if desc["TrainingJobStatus"] in TERMINAL:
            while follower.poll():  # CloudWatch may lag the status: drain what is left
                pass
            save_job(job_dir, record)
            return
        sleep(poll_s)

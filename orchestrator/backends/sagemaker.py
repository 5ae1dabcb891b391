"""The SageMaker backend: run an algorithm (odorch.algorithms: odorch's entrypoint, the built-in
Object Detection algorithm) as a SageMaker training job, over boto3 clients that are passed in
(no `sagemaker` SDK), and keep a local job folder in the local backend's format:

    runs/<job>/job.json      the local schema (backend "sagemaker") + ARN, instance, spot, cost
    runs/<job>/logs.txt      every CloudWatch log line of the job
    runs/<job>/metrics.jsonl parsed by runs.record_line, as the local backend's
    runs/<job>/model/        model.tar.gz extracted (safely) when the job Completed

S3 layout under the bucket:

    odorch/datasets/<hash>/                   a converted folder, content-addressed (see dataset_hash)
    odorch/jobs/<job>/source/sourcedir.tar.gz odorch/runtime/ + a top-level train.py shim (archive.py)
    odorch/jobs/<job>/output/                 SageMaker's OutputDataConfig (model.tar.gz)
    odorch/jobs/<job>/checkpoints/            CheckpointConfig (spot restarts resume from it)
    odorch/jobs/<job>/tensorboard/            TensorBoardOutputConfig: the event files odorch writes
                                              from the job's metric lines, uploaded when it ends, for
                                              SageMaker's managed TensorBoard
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odorch.algorithms import Algorithm, AlgorithmError, Prepared, get_algorithm
from odorch.aws import (
    AwsClients,
    check_bucket,
    download_model,
    job_prefix,
    split_s3,
)
from odorch.backends.base import JobSpec
from odorch.errors import JobError, PreflightError, SageMakerError
from odorch.runs import (
    JOB_FILE,
    LOG_FILE,
    MODEL_DIR,
    TERMINAL,
    JobRecord,
    check_job_name,
    iso_from_unix,
    new_record,
    record_line,
    write_job,
)
from odorch.tracking import TrackingOptions, open_tracker

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
VOLUME_GB = 30
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"
DEFAULT_MAX_RUN = 86400
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+")
POLL_S = 30.0  # DescribeTrainingJob / GetLogEvents every POLL_S seconds (tests lower it)


def normalize_instance_type(instance_type: str) -> str:
    """`p3.2xlarge` -> `ml.p3.2xlarge` (SageMaker's names carry the ml. prefix)."""
    t = instance_type.strip().lower()
    return t if t.startswith("ml.") else f"ml.{t}"


# ---------------------------------------------------------------- request


def training_job_request(*, job_name: str, region: str, role_arn: str, bucket: str, hyperparameters: dict[str, Any],
                         model: str, instance_type: str, dataset_uri: str = "", source_uri: str = "",
                         instance_count: int = 1, spot: bool = False, max_run: int = DEFAULT_MAX_RUN,
                         max_wait: int | None = None, algorithm: str | Algorithm = "pytorch",
                         channel_uris: dict[str, str] | None = None, volume_gb: int = VOLUME_GB,
                         image: str | None = None) -> dict[str, Any]:
    """The complete CreateTrainingJob request: the algorithm gives the image (unless `image`), the hyperparameters
    its code needs (source_uri), each channel's options and MetricDefinitions (none for a
    built-in algorithm: SageMaker defines those itself). Channels: channel_uris, else dataset_uri
    as both train and validation."""
    from odorch import __version__
    from odorch.runs import hyperparameter_strings

    algo = get_algorithm(algorithm)
    instance_type = normalize_instance_type(instance_type)
    base = f"s3://{bucket}/{job_prefix(job_name)}"
    hps = hyperparameter_strings(hyperparameters)
    hps.update(algo.code_hyperparameters(source_uri, region))
    uris = channel_uris or {"train": dataset_uri, "validation": dataset_uri}

    def channel(name: str) -> dict[str, Any]:
        return {
            "ChannelName": name,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uris[name], "S3DataDistributionType": "FullyReplicated"}},
            "InputMode": "File",
            **algo.channel_options(name),
        }

    spec: dict[str, Any] = {"TrainingImage": image or algo.image(region, instance_type), "TrainingInputMode": "File"}
    metrics = algo.metric_definitions()
    if metrics is not None:
        spec["MetricDefinitions"] = metrics
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": int(max_run)}
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": spec,
        "HyperParameters": hps,
        "RoleArn": role_arn,
        "InputDataConfig": [channel(name) for name in uris],
        "OutputDataConfig": {"S3OutputPath": f"{base}/output"},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": int(instance_count), "VolumeSizeInGB": int(volume_gb)},
        "StoppingCondition": stopping,
        "CheckpointConfig": {"S3Uri": f"{base}/checkpoints", "LocalPath": CHECKPOINT_LOCAL_PATH},
        "TensorBoardOutputConfig": {"S3OutputPath": f"{base}/tensorboard", "LocalPath": TENSORBOARD_LOCAL_PATH},
        "Tags": [
            {"Key": "odorch:job", "Value": job_name},
            {"Key": "odorch:model", "Value": model},
            {"Key": "odorch:version", "Value": __version__},
            *algo.tags(),
        ],
    }
    if spot:
        request["EnableManagedSpotTraining"] = True
        stopping["MaxWaitTimeInSeconds"] = int(max_wait if max_wait is not None else 2 * max_run)
    return request


# ---------------------------------------------------------------- preflight


def preflight(clients: AwsClients, **job: Any) -> Prepared:
    """preflight_problems' checks; PreflightError lists each problem and its fix."""
    prepared, problems = preflight_problems(clients, **job)
    if problems or prepared is None:
        raise PreflightError("not starting the SageMaker job: " + "; ".join(problems))
    return prepared


def preflight_problems(clients: AwsClients, *, role_arn: str, bucket: str, instance_type: str, data_dir: Path | str,
                       hyperparameters: dict[str, Any], spot: bool = False, max_run: int = DEFAULT_MAX_RUN,
                       max_wait: int | None = None, instance_count: int = 1, algorithm: str | Algorithm = "pytorch",
                       work_dir: Path | str | None = None, image: str | None = None) -> tuple[Prepared | None, list[str]]:
    """Every check that can fail before money is spent, each problem with its fix.

    The algorithm checks its hyperparameters and the dataset and makes its channels (files go
    under work_dir, the built-in algorithm's RecordIO for one; without work_dir they are made
    and thrown away): the Prepared says what to upload and the hyperparameters to send (None
    when there are problems)."""
    from odorch import aws_tables

    problems = []
    if not ROLE_ARN.match(role_arn or ""):
        problems.append(f"--role {role_arn!r} is not an IAM role ARN: give arn:aws:iam::<12-digit account>:role/<name> "
                        "(a role SageMaker can assume, with access to the bucket)")
    normalized = normalize_instance_type(instance_type)
    if not aws_tables.is_known_instance(normalized):
        problems.append(f"--instance {instance_type!r} is not a known SageMaker training instance type: "
                        "use one like ml.g5.xlarge or ml.p3.2xlarge")
    try:
        algo = get_algorithm(algorithm)
    except AlgorithmError as e:
        return None, problems + [str(e)]
    if image is not None:  # the user's image: any region, no table lookup
        problems += aws_tables.image_uri_problems(image)
    else:
        try:  # the image URI depends on the region: an unknown one must stop us before any upload
            algo.image(clients.region, normalized)
        except aws_tables.UnknownRegionError as e:
            problems.append(f"--region {clients.region}: {e} (--image URI)")
        except aws_tables.UnknownInstanceError:
            pass  # reported above
        except AlgorithmError as e:  # e.g. a model with no image for the instance type
            problems.append(str(e))
    if algo.gpu_only and aws_tables.is_known_instance(normalized) and not aws_tables.instance_has_gpu(normalized):
        problems.append(f"--instance {normalized} has no GPU, and {algo.title} trains on GPU instances only: "
                        "use one like ml.g5.xlarge or ml.p3.2xlarge")
    if instance_count < 1:
        problems.append(f"--instance-count {instance_count}: must be at least 1")
    if max_run < 1:
        problems.append(f"--max-run {max_run}: must be at least 1 second")
    if spot and max_wait is not None and max_wait < max_run:
        problems.append(f"--max-wait {max_wait} is less than --max-run {max_run}: spot jobs need max-wait >= max-run; "
                        f"raise --max-wait to at least {max_run}")
    if not spot and max_wait is not None:
        problems.append("--max-wait only applies to spot jobs: add --spot or drop --max-wait")
    problems += algo.check(hyperparameters)
    with tempfile.TemporaryDirectory(prefix="odorch-prep-") as scratch:  # without work_dir: a check only
        prepared, found = algo.prepare(Path(data_dir), hyperparameters, Path(work_dir or scratch))
    problems += found
    problems += check_bucket(clients, bucket)
    return (None if problems else prepared), problems


def volume_size_gb(channels: dict[str, Path]) -> int:
    """The ML storage volume: File mode downloads every channel onto it (odorch's train and
    validation channels are the same dataset, so it lands twice), plus VOLUME_GB for the code,
    checkpoints, model and logs."""
    total = 0
    for local in channels.values():
        files = [Path(local)] if Path(local).is_file() else [p for p in Path(local).rglob("*") if p.is_file()]
        total += sum(p.stat().st_size for p in files)
    return VOLUME_GB + -(-total // 2**30)


def prepare_request(clients: AwsClients, *, job_name: str, data_dir: Path | str, bucket: str, role_arn: str,
                    hyperparameters: dict[str, Any], model: str, instance_type: str, instance_count: int = 1,
                    spot: bool = False, max_run: int = DEFAULT_MAX_RUN, max_wait: int | None = None,
                    algorithm: str | Algorithm = "pytorch", tuned: Collection[str] = (),
                    echo: Callable[[str], None] | None = None, image: str | None = None) -> tuple[dict[str, Any], Prepared]:
    """preflight -> upload -> the CreateTrainingJob request: the sequence a training job and a
    tuning job (hpo.amt, whose TrainingJobDefinition is this request) share. Names in `tuned`
    are checked with the rest but left out of the request's HyperParameters."""
    algo = get_algorithm(algorithm)
    with tempfile.TemporaryDirectory(prefix="odorch-prep-") as work_dir:
        prepared = preflight(clients, role_arn=role_arn, bucket=bucket, instance_type=instance_type,
                             data_dir=data_dir, hyperparameters=hyperparameters, spot=spot, max_run=max_run,
                             max_wait=max_wait, instance_count=instance_count, algorithm=algo, work_dir=work_dir,
                             image=image)
        prepared.channel_uris, prepared.source_uri = algo.upload(
            clients, prepared, data=Path(data_dir), bucket=bucket, job_name=job_name, echo=echo or (lambda text: None))
        volume_gb = volume_size_gb(prepared.channels)  # while work_dir's channel files exist
    request = training_job_request(
        job_name=job_name, region=clients.region, role_arn=role_arn, bucket=bucket,
        hyperparameters={k: v for k, v in prepared.hyperparameters.items() if k not in tuned}, model=model,
        instance_type=instance_type, source_uri=prepared.source_uri, instance_count=instance_count, spot=spot,
        max_run=max_run, max_wait=max_wait, algorithm=algo, channel_uris=prepared.channel_uris,
        volume_gb=volume_gb, image=image,
    )
    from odorch import aws_tables

    warning = aws_tables.support_warning(request["AlgorithmSpecification"]["TrainingImage"])
    if warning and echo:
        echo(f"warning: {warning}")
    return request, prepared


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

    def __init__(self, logs: Any, job_name: str, job_dir: Path, record: JobRecord,
                 echo: Callable[[str], None] | None = None, sink: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.logs, self.job_name, self.job_dir, self.record, self.echo = logs, job_name, job_dir, record, echo
        self.sink = sink  # a tracker's log (odorch.tracking)
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
                # the end of what is there now is an unchanged token: an empty page with a new
                # token is not (CloudWatch pages by time and may return empty pages mid-stream)
                if not token or token == self.tokens.get(stream):
                    break
                self.tokens[stream] = token
        return count

    def line(self, message: str) -> None:
        with open(self.job_dir / LOG_FILE, "a") as log:
            log.write(message if message.endswith("\n") else message + "\n")
        for text in message.rstrip("\r\n").split("\r"):
            if not text.strip():
                continue
            record_line(self.job_dir, self.record, text, sink=self.sink)
            if self.echo:
                self.echo(text)


def _timestamp(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return iso_from_unix(value.timestamp())
    return str(value)


def update_record(record: JobRecord, desc: dict[str, Any]) -> None:
    """The record's status fields from DescribeTrainingJob."""
    record.status = {"Stopping": "InProgress"}.get(desc["TrainingJobStatus"], desc["TrainingJobStatus"])
    record.extra["sagemaker_status"] = desc["TrainingJobStatus"]
    record.extra["secondary_status"] = desc.get("SecondaryStatus")
    record.extra["training_job_arn"] = desc.get("TrainingJobArn", record.extra.get("training_job_arn"))
    if desc.get("FailureReason"):
        record.failure_reason = desc["FailureReason"]
    record.started = _timestamp(desc.get("TrainingStartTime")) or record.started
    record.ended = _timestamp(desc.get("TrainingEndTime")) or record.ended
    if desc.get("TrainingStartTime") and desc.get("TrainingEndTime"):
        record.duration_s = round((desc["TrainingEndTime"] - desc["TrainingStartTime"]).total_seconds(), 1)
    if desc.get("BillableTimeInSeconds") is not None:
        record.extra["billable_seconds"] = int(desc["BillableTimeInSeconds"])
    if desc.get("FinalMetricDataList"):
        record.extra["final_metric_data"] = {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]}
    artifacts = (desc.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if artifacts:
        record.extra["model_s3_uri"] = artifacts


def estimated_cost(record: JobRecord) -> float | None:
    """BillableTimeInSeconds × instances × the on-demand price. For managed spot SageMaker
    already lowers BillableTimeInSeconds by the saving (savings = 1 − billable / training
    time), so the on-demand rate is the right one for both."""
    from odorch import aws_tables

    if record.extra.get("billable_seconds") is None:
        return None
    try:
        price = aws_tables.price_per_hour(record.extra["instance_type"], spot=False)
    except (LookupError, ValueError):
        return None
    return round(record.extra["billable_seconds"] / 3600.0 * float(price) * int(record.extra.get("instance_count") or 1), 4)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def confirm_on_tty(question: str) -> bool:
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
                      sleep: Callable[[float], None] | None = None, algorithm: str = "pytorch",
                      tracking: TrackingOptions | None = None, image: str | None = None) -> JobRecord:
    """Preflight, upload, CreateTrainingJob, follow it to the end; returns the saved record.

    The metric lines read from CloudWatch are tracked as a local job's are (odorch.tracking); the
    event files go to the request's TensorBoardOutputConfig path when the job ends.

    Ctrl-C while waiting asks whether to stop the job (stops without asking with no TTY); when
    stopped, waits for Stopped. Declining re-raises KeyboardInterrupt with the job still running
    and its record (ARN, last status) saved."""
    say = echo or (lambda text: None)
    poll_s = POLL_S if poll_s is None else poll_s
    sleep = sleep or _sleep
    confirm = confirm or confirm_on_tty
    check_job_name(job_name)
    job_dir = Path(runs_dir) / job_name
    if (job_dir / JOB_FILE).exists():
        raise JobError(f"job {job_name!r} already exists ({job_dir}); SageMaker job names are unique: pick another --job-name")
    instance_type = normalize_instance_type(instance_type)
    request, prepared = prepare_request(
        clients, job_name=job_name, data_dir=data_dir, bucket=bucket, role_arn=role_arn,
        hyperparameters=hyperparameters, model=model, instance_type=instance_type, instance_count=instance_count,
        spot=spot, max_run=max_run, max_wait=max_wait, algorithm=algorithm, echo=say, image=image,
    )
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        arn = clients.sagemaker.create_training_job(**request)["TrainingJobArn"]
    except (ClientError, BotoCoreError) as e:
        raise SageMakerError(f"CreateTrainingJob {job_name} failed: {e}") from e
    record = new_record(job_name=job_name, backend="sagemaker", job_dir=job_dir, model=model,
                        hyperparameters=prepared.hyperparameters, channels=prepared.channel_uris)
    # the algorithm's facts may set fields (epochs, model) as well as its own keys (classes)
    record = JobRecord.from_json({**record.to_json(), "algorithm": get_algorithm(algorithm).name, **prepared.record})
    record.orchestrator_pid = os.getpid()
    record.extra.update(
        training_job_arn=arn, region=clients.region, instance_type=instance_type, instance_count=instance_count,
        spot=spot, billable_seconds=None, estimated_cost_usd=None, sagemaker_status="InProgress", secondary_status=None,
        source_s3_uri=prepared.source_uri or None, output_s3_uri=request["OutputDataConfig"]["S3OutputPath"],
        checkpoint_s3_uri=request["CheckpointConfig"]["S3Uri"],
    )
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / LOG_FILE).touch()
    tracker = open_tracker(job_dir, record, tracking, echo=say)
    write_job(job_dir, record)
    say(f"created {arn} ({instance_count} × {instance_type}{', spot' if spot else ''})")
    follower = LogFollower(clients.logs, job_name, job_dir, record, echo, sink=tracker.log)

    try:
        try:
            _wait(clients, record, follower, job_dir, poll_s=poll_s, say=say, sleep=sleep)
        except KeyboardInterrupt:
            write_job(job_dir, record)
            if not ask_to_stop(f"the SageMaker job {job_name}", arn, lambda: stop_job(clients, job_name),
                               f"aws sagemaker stop-training-job --training-job-name {job_name}",
                               confirm=confirm, say=say):
                raise
            record.stop_reason = "interrupted (Ctrl-C)"
            _wait(clients, record, follower, job_dir, poll_s=poll_s, say=say, sleep=sleep)
        if record.status == "Completed" and record.extra.get("model_s3_uri"):
            try:
                download_model(clients, record.extra["model_s3_uri"], job_dir / MODEL_DIR)
            except (ClientError, BotoCoreError, SageMakerError, tarfile.TarError, OSError) as e:
                record.extra["model_error"] = f"cannot download {record.extra['model_s3_uri']}: {e}"
                say(f"error: {record.extra['model_error']}")
        record.extra["estimated_cost_usd"] = estimated_cost(record)
    finally:
        write_job(job_dir, record)
        tracker.close(record, job_dir=job_dir)
        record.extra["tensorboard_s3_uri"] = upload_tensorboard(clients, tracker.tensorboard_dir,
                                                          request["TensorBoardOutputConfig"]["S3OutputPath"], say=say)
        write_job(job_dir, record)
    return record


def upload_tensorboard(clients: AwsClients, tensorboard_dir: Path, s3_uri: str, *,
                       say: Callable[[str], None]) -> str | None:
    """The job's event files to its TensorBoardOutputConfig path, where SageMaker's managed
    TensorBoard looks for them; the URI, or None (said why) when nothing could be uploaded."""
    from botocore.exceptions import BotoCoreError, ClientError

    files = sorted(p for p in Path(tensorboard_dir).rglob("*") if p.is_file())
    if not files:
        return None
    bucket, prefix = split_s3(s3_uri)
    try:
        for path in files:
            clients.s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(tensorboard_dir).as_posix()}")
    except (ClientError, BotoCoreError, OSError) as e:
        say(f"warning: could not upload the TensorBoard event files to {s3_uri}: {e}; they are in {tensorboard_dir}")
        return None
    return s3_uri


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


def _wait(clients: AwsClients, record: JobRecord, follower: LogFollower, job_dir: Path, *, poll_s: float,
          say: Callable[[str], None], sleep: Callable[[float], None]) -> None:
    """Poll DescribeTrainingJob and the logs until the job is terminal and its logs are drained."""
    last = None
    while True:
        desc = describe_job(clients, record.job_name)
        update_record(record, desc)
        state = (desc["TrainingJobStatus"], desc.get("SecondaryStatus"))
        if state != last:
            transitions = desc.get("SecondaryStatusTransitions") or []
            message = transitions[-1].get("StatusMessage") if transitions else None
            say(f"[{record.job_name}] {state[0]} / {state[1]}" + (f": {message}" if message else ""))
            last = state
        follower.poll()
        write_job(job_dir, record)
        if desc["TrainingJobStatus"] in TERMINAL:
            while follower.poll():  # CloudWatch may lag the status: drain what is left
                pass
            write_job(job_dir, record)
            return
        sleep(poll_s)


@dataclass
class SageMakerBackend:
    """A job as a SageMaker training job. `options` go to run_sagemaker_job (poll_s, confirm, ...)."""

    clients: AwsClients
    bucket: str
    role: str
    instance_type: str
    instance_count: int = 1
    spot: bool = False
    max_run: int = DEFAULT_MAX_RUN
    max_wait: int | None = None
    image: str | None = None  # the training image instead of the algorithm's (train --image)
    options: dict[str, Any] = field(default_factory=dict)
    name: str = "sagemaker"

    def _job(self, spec: JobSpec) -> dict[str, Any]:
        return {"role_arn": self.role, "bucket": self.bucket, "instance_type": self.instance_type,
                "data_dir": spec.data, "hyperparameters": dict(spec.hyperparameters), "spot": self.spot,
                "max_run": self.max_run, "max_wait": self.max_wait, "instance_count": self.instance_count,
                "algorithm": spec.algorithm, "image": self.image}

    def preflight(self, spec: JobSpec) -> list[str]:
        problems = []
        try:
            check_job_name(spec.name)
        except JobError as e:
            problems.append(str(e))
        if (spec.job_dir / JOB_FILE).exists():
            problems.append(f"job {spec.name!r} already exists ({spec.job_dir}); SageMaker job names are unique: "
                            "pick another --job-name")
        return problems + preflight_problems(self.clients, **self._job(spec))[1]

    def run(self, spec: JobSpec, *, echo: Callable[[str], None] | None = None) -> JobRecord:
        job = self._job(spec)
        return run_sagemaker_job(self.clients, job_name=spec.name, runs_dir=spec.runs_dir,
                                 data_dir=job.pop("data_dir"), role_arn=job.pop("role_arn"), model=spec.model,
                                 echo=echo, **job, **self.options)

    def stop(self, record: JobRecord) -> JobRecord:
        update_record(record, stop_job(self.clients, record.job_name))
        write_job(record.job_dir, record)
        return record

"""AWS on loopback for the tests: moto 5.2's ThreadedMotoServer on 127.0.0.1 (never the network),
reached through boto3's AWS_ENDPOINT_URL, plus what moto lacks for SageMaker training jobs.

What this file patches (in-process: the server runs in this process, so its backends are
reachable), for one test at a time through pytest's monkeypatch (undone after each test):

- CreateTrainingJob: moto overwrites MetricDefinitions with canned ones, so the request is
  recorded AS SENT (the raw json body) in ``harness.requests``; the job starts InProgress /
  Starting (moto: Completed at once) without ModelArtifacts, billable time or metrics; then
  ``harness.on_create(name, request)``, if set, runs in a thread: it plays SageMaker.
- StopTrainingJob (moto: 500 NotImplemented): added to moto's SageMakerResponse; it records the
  call in ``harness.stop_calls`` and sets Stopping. A running ``run_entrypoint`` then SIGTERMs
  the entrypoint and ends Stopped; a job with nothing running turns Stopped at once.
- Job progression, which moto does not model: ``run_job`` (canned log lines) and
  ``run_entrypoint`` (the REAL entrypoint) write CloudWatch events to /aws/sagemaker/TrainingJobs
  stream ``<job>/algo-1-<epoch>``, put model.tar.gz at ModelArtifacts.S3ModelArtifacts, set
  BillableTimeInSeconds, FinalMetricDataList (parsed from the logs with the request's
  MetricDefinitions, as SageMaker does), FailureReason and the status transitions.

``run_entrypoint`` works like the container: downloads each channel's S3 prefix into
input/data/<channel>, extracts sagemaker_submit_directory (sourcedir.tar.gz) into code/, writes
input/config/hyperparameters.json (strings, as sent), sets SM_* like the training toolkit and
runs ``python train.py`` there; every stdout/stderr line becomes a CloudWatch event as it is
printed; SM_MODEL_DIR is tarred into model.tar.gz; output/failure becomes FailureReason.

Endpoints (moto: InService at once, InvokeEndpoint fails on binary bodies):

- CreateEndpoint: the endpoint starts Creating and turns InService (or Failed with
  ``harness.endpoint_failure`` as FailureReason, when set) after ``harness.creating_polls``
  DescribeEndpoint calls; ``harness.fail_create_endpoint`` (a message) makes CreateEndpoint
  itself fail with a ValidationException.
- InvokeEndpoint serves the request with the REAL handler from the endpoint's model.tar.gz
  through the REAL PyTorch inference toolkit (tests/sagemaker_toolkits.py): the archive is read
  from moto's S3, extracted once, and each request runs in a subprocess where TorchServe's worker
  code loads sagemaker_pytorch_serving_container's handler service with the model's container
  Environment, which imports code/inference.py and calls model_fn(model_dir, context) and
  input_fn/predict_fn/output_fn. A status other than 200 answers ModelError (424); a body over
  6 MiB is refused (413 ValidationError) as SageMaker does. Calls are recorded in
  ``harness.invocations``.

Tuning jobs (moto: Completed at once with a canned BestTrainingJob and no children):

- CreateHyperParameterTuningJob: the request is recorded AS SENT in ``harness.tuning_requests``;
  the job starts InProgress with no BestTrainingJob, and ``harness.on_tuning`` (default
  ``run_tuning``; None leaves it InProgress) plays AMT in a thread: MaxNumberOfTrainingJobs
  children, MaxParallelTrainingJobs at a time, each a real CreateTrainingJob named
  ``<tuning>-NNN-xxxxxxxx`` (``harness.tuning_children[tuning]``) of the TrainingJobDefinition,
  HyperParameters = StaticHyperParameters + values sampled from ParameterRanges (seeded by
  ``harness.tuning_seed`` and the tuning name: deterministic) + ``_tuning_objective_metric``.
  Each child is played like ``run_job`` (after ``harness.tuning_child_pause`` seconds): canned
  CloudWatch lines with rising ``validation:mAP=`` values, FinalMetricDataList, billable time and
  a model.tar.gz holding model.json; the harness's ``on_create`` is never applied to children.
  TrainingJobStatusCounters/ObjectiveStatusCounters follow; at the end BestTrainingJob is the
  Completed child with the highest objective and the status Completed.
- ListTrainingJobsForHyperParameterTuningJob (moto: 500): the children's summaries (status,
  TunedHyperParameters, FinalHyperParameterTuningJobObjectiveMetric, ObjectiveStatus), with
  StatusEquals, SortBy Name, SortOrder, MaxResults (default 10) and NextToken.
- StopHyperParameterTuningJob (moto: 500): recorded in ``harness.tuning_stop_calls``; the job
  turns Stopping, and the player stops its unfinished children (Stopped), then the job Stopped.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/odorch-sagemaker"
INVOKE_MAX_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's payload limit (SageMaker developer guide)


def start_server() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class AwsHarness:
    def __init__(self, endpoint: str, monkeypatch: Any) -> None:
        self.endpoint = endpoint
        self.requests: dict[str, dict[str, Any]] = {}
        self.stop_calls: list[str] = []
        self.on_create: Callable[[str, dict[str, Any]], None] | None = None
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.active: set[str] = set()
        self.creating_polls = 1
        self.endpoint_failure: str | None = None
        self.fail_create_endpoint: str | None = None
        self.invocations: list[dict[str, Any]] = []
        self.throttles: dict[str, int] = {}  # operation -> ThrottlingException answers still to give
        self.throttled: list[str] = []
        self._pending_endpoints: dict[str, int] = {}
        self._served = tempfile.TemporaryDirectory(prefix="odorch-serve-")
        self._model_dirs: dict[str, Path] = {}
        for key, value in {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        }.items():
            monkeypatch.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        from moto.moto_api._internal import moto_api_backend

        moto_api_backend.reset()
        self._patch_moto(monkeypatch)
        import boto3

        session = boto3.session.Session(region_name=REGION)
        self.s3 = session.client("s3")
        self.logs = session.client("logs")
        self.sagemaker = session.client("sagemaker")
        for client in (self.s3, self.logs, self.sagemaker):
            client._odorch_harness = True  # its calls play AWS's side: not recorded in self.calls
        self.calls: list[dict[str, Any]] = []
        self._record_calls(monkeypatch)

    # ------------------------------------------------------------ patches

    def _record_calls(self, monkeypatch: Any) -> None:
        """Every AWS call made in this process by a client that is not the harness's own goes to
        ``self.calls`` as {"service", "operation", "params"} (the API parameters as sent), for
        tests/iam_policy.py to evaluate against infra/iam's policies."""
        from botocore.client import BaseClient

        harness, original = self, BaseClient._make_api_call

        def make_api_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            if not getattr(client, "_odorch_harness", False):
                harness.calls.append({"service": client.meta.service_model.service_name, "operation": operation_name,
                                      "params": copy.deepcopy({k: v for k, v in api_params.items() if k != "Body"})})
            return original(client, operation_name, api_params)

        monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)

    def _patch_moto(self, monkeypatch: Any) -> None:
        from moto.sagemaker.responses import SageMakerResponse

        harness = self
        original_create = SageMakerResponse.create_training_job

        def create_training_job(self: Any) -> Any:
            request = copy.deepcopy(json.loads(self.body))
            result = original_create(self)
            name = request["TrainingJobName"]
            job = self.sagemaker_backend.training_jobs[name]
            harness.requests[name] = request
            job.training_job_status, job.secondary_status = "InProgress", "Starting"
            job.secondary_status_transitions = [{"Status": "Starting", "StartTime": _now(),
                                                 "StatusMessage": "Launching requested ML instances"}]
            job.final_metric_data_list = []
            job.training_start_time = job.training_end_time = None
            harness._artifacts = getattr(harness, "_artifacts", {})
            harness._artifacts[name] = job.model_artifacts
            job.model_artifacts = None
            if harness.on_create is not None and name not in getattr(harness, "_children", {}):  # AMT children: run_tuning plays them
                harness.active.add(name)
                thread = threading.Thread(target=harness._guard, args=(harness.on_create, name, request), daemon=True)
                harness.threads.append(thread)
                thread.start()
            return result

        def stop_training_job(self: Any) -> Any:
            from moto.core.responses import EmptyResult

            name = self._get_param("TrainingJobName")
            harness.stop_calls.append(name)
            job = self.sagemaker_backend.training_jobs[name]
            if job.training_job_status == "InProgress":
                job.training_job_status, job.secondary_status = "Stopping", "Stopping"
                if name not in harness.active:
                    harness._finish(name, "Stopped")
            return EmptyResult()

        monkeypatch.setattr(SageMakerResponse, "create_training_job", create_training_job)
        monkeypatch.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)
        self._patch_endpoints(monkeypatch)
        self._patch_throttling(monkeypatch)
        self._patch_tuning(monkeypatch)

    def _patch_endpoints(self, monkeypatch: Any) -> None:
        from moto.sagemaker.exceptions import ValidationError
        from moto.sagemaker.responses import SageMakerResponse
        from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

        harness = self
        original_create = SageMakerResponse.create_endpoint
        original_describe = SageMakerResponse.describe_endpoint

        def create_endpoint(self: Any) -> Any:
            if harness.fail_create_endpoint:
                raise ValidationError(message=harness.fail_create_endpoint)
            result = original_create(self)
            name = self._get_param("EndpointName")
            self.sagemaker_backend.endpoints[name].endpoint_status = "Creating"
            harness._pending_endpoints[name] = harness.creating_polls
            return result

        def describe_endpoint(self: Any) -> Any:
            name = self._get_param("EndpointName")
            endpoint = self.sagemaker_backend.endpoints.get(name)
            if endpoint is not None and name in harness._pending_endpoints:
                harness._pending_endpoints[name] -= 1
                if harness._pending_endpoints[name] < 0:
                    del harness._pending_endpoints[name]
                    if harness.endpoint_failure:
                        endpoint.endpoint_status, endpoint.failure_reason = "Failed", harness.endpoint_failure
                    else:
                        endpoint.endpoint_status = "InService"
            return original_describe(self)

        def invoke_endpoint(self: Any) -> Any:
            name = self.path.strip("/").split("/")[1]
            body = self.raw_body if isinstance(self.raw_body, bytes) else str(self.raw_body or "").encode()
            content_type, accept = self.headers.get("Content-Type"), self.headers.get("Accept")
            harness.invocations.append({"endpoint": name, "content_type": content_type, "accept": accept, "bytes": len(body)})
            try:
                model_dir = harness.served_model_dir(name)
            except LookupError as e:
                return 400, {"status": 400, "Content-Type": "application/json", "x-amzn-ErrorType": "ValidationError"}, json.dumps(
                    {"message": str(e)})  # moto takes the HTTP status from the "status" header
            if len(body) > INVOKE_MAX_BYTES:  # SageMaker refuses it before any container sees it
                return 413, {"status": 413, "Content-Type": "application/json", "x-amzn-ErrorType": "ValidationError"}, \
                    json.dumps({"message": f"Request payload of {len(body)} bytes exceeds the {INVOKE_MAX_BYTES}-byte limit."})
            status, out = harness.serve(model_dir, body, content_type, accept, harness.served_environment(name))
            if status != 200:
                return 424, {"status": 424, "Content-Type": "application/json", "x-amzn-ErrorType": "ModelError"}, json.dumps(
                    {"message": out.decode(errors="replace"), "OriginalStatusCode": status})
            return 200, {"Content-Type": "application/json"}, out

        monkeypatch.setattr(SageMakerResponse, "create_endpoint", create_endpoint)
        monkeypatch.setattr(SageMakerResponse, "describe_endpoint", describe_endpoint)
        monkeypatch.setattr(SageMakerRuntimeResponse, "use_raw_body", True)
        monkeypatch.setattr(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)

    def _patch_throttling(self, monkeypatch: Any) -> None:
        """Throttling injection: while ``harness.throttles[op] > 0`` (op = the SageMakerResponse method,
        e.g. "describe_training_job"), that call answers HTTP 400 ThrottlingException as SageMaker's
        JSON protocol does (``__type`` + x-amzn-ErrorType) without reaching moto; each answer
        decrements the count and is recorded in ``harness.throttled``. botocore retries these."""
        from moto.sagemaker.responses import SageMakerResponse

        harness = self
        for op in ("describe_training_job",):
            original = getattr(SageMakerResponse, op)

            def throttled(self: Any, _op: str = op, _original: Any = original) -> Any:
                if harness.throttles.get(_op, 0) > 0:
                    harness.throttles[_op] -= 1
                    harness.throttled.append(_op)
                    return 400, {"status": 400, "Content-Type": "application/x-amz-json-1.1",  # moto reads "status"
                                 "x-amzn-ErrorType": "ThrottlingException"}, \
                        json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
                return _original(self)

            monkeypatch.setattr(SageMakerResponse, op, throttled)

    # ------------------------------------------------------------ endpoints

    def sm_backend(self) -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION]

    def served_model_dir(self, endpoint_name: str) -> Path:
        """The endpoint's model.tar.gz (from moto's S3), extracted once: what /opt/ml/model holds."""
        from moto.s3.models import s3_backends

        backend = self.sm_backend()
        endpoint = backend.endpoints.get(endpoint_name)
        if endpoint is None:
            raise LookupError(f"Endpoint {endpoint_name} not found.")
        if endpoint.endpoint_status != "InService":
            raise LookupError(f"Endpoint {endpoint_name} is {endpoint.endpoint_status}, not InService.")
        config = backend.endpoint_configs[endpoint.endpoint_config_name]
        model = backend._models[config.production_variants[0]["ModelName"]]
        uri = model.primary_container["ModelDataUrl"]
        if uri not in self._model_dirs:
            bucket, _, key = uri[5:].partition("/")
            data = s3_backends[ACCOUNT]["aws"].get_object(bucket, key).value
            dest = Path(self._served.name) / str(len(self._model_dirs))
            dest.mkdir()
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(dest, filter="data")
            self._model_dirs[uri] = dest
        return self._model_dirs[uri]

    def served_environment(self, endpoint_name: str) -> dict[str, str]:
        """The endpoint's model container Environment (CreateModel's), as the serving container gets it."""
        backend = self.sm_backend()
        config = backend.endpoint_configs[backend.endpoints[endpoint_name].endpoint_config_name]
        return dict(backend._models[config.production_variants[0]["ModelName"]].primary_container.get("Environment") or {})

    def serve(self, model_dir: Path, body: bytes, content_type: str, accept: str | None,
              environment: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request through the REAL PyTorch inference toolkit (handler service, Transformer and
        <model_dir>/code/inference.py, loaded by TorchServe's worker code) in a fresh interpreter:
        see tests/sagemaker_toolkits.py. Returns the HTTP status and the body (the toolkit's error
        message and trace on an error)."""
        from tests.sagemaker_toolkits import serve

        request = {"body": body, "content_type": content_type or "", "accept": accept or "application/json"}
        answer = serve(model_dir, [request], environment=environment)[0]
        return answer["status"], answer["body"]

    # ------------------------------------------------------------ state

    def job(self, name: str) -> Any:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]

    def make_bucket(self, name: str) -> str:
        self.s3.create_bucket(Bucket=name)
        return name

    def _guard(self, fn: Callable[..., None], name: str, request: dict[str, Any]) -> None:
        try:
            fn(name, request)
        except BaseException as e:  # noqa: BLE001 - surfaced by close()
            self.errors.append(e)
            self._finish(name, "Failed", failure_reason=f"harness error: {e}")
        finally:
            self.active.discard(name)

    def set_secondary(self, name: str, status: str, message: str = "") -> None:
        job = self.job(name)
        job.secondary_status = status
        job.secondary_status_transitions = [*job.secondary_status_transitions,
                                            {"Status": status, "StartTime": _now(), "StatusMessage": message}]
        if status == "Training" and job.training_start_time is None:
            job.training_start_time = _now()

    def _finish(self, name: str, outcome: str, *, failure_reason: str | None = None, billable: int | None = None,
                metrics: list[dict[str, Any]] | None = None) -> None:
        job = self.job(name)
        job.training_end_time = _now()
        job.training_start_time = job.training_start_time or job.training_end_time
        job.final_metric_data_list = metrics or []
        if billable is not None:
            job.billable_time_in_seconds = billable
        if failure_reason:
            job.failure_reason = failure_reason
        if outcome == "Completed":
            job.model_artifacts = self._artifacts[name]
        self.set_secondary(name, outcome, f"Training job {outcome.lower()}")
        job.training_job_status = outcome

    # ------------------------------------------------------------ SageMaker's side of a job

    def log_stream(self, name: str) -> str:
        stream = f"{name}/algo-1-{int(time.time())}"
        try:
            self.logs.create_log_group(logGroupName=LOG_GROUP)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        self.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        return stream

    def put_logs(self, stream: str, lines: list[str]) -> None:
        if lines:
            t = int(time.time() * 1000)
            events = [{"timestamp": t, "message": line} for line in lines]
            self.logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)

    def final_metrics(self, name: str, lines: list[str]) -> list[dict[str, Any]]:
        """Last value of each MetricDefinition over the log lines, as SageMaker computes it."""
        out = {}
        for definition in self.requests[name]["AlgorithmSpecification"].get("MetricDefinitions", []):
            for line in lines:
                match = re.search(definition["Regex"], line)
                if match:
                    out[definition["Name"]] = float(match.group(1))
        return [{"MetricName": k, "Value": v, "Timestamp": _now()} for k, v in out.items()]

    def put_model(self, name: str, model_tar: bytes) -> None:
        bucket, _, key = self._artifacts[name]["S3ModelArtifacts"][5:].partition("/")
        self.s3.put_object(Bucket=bucket, Key=key, Body=model_tar)

    def run_job(self, name: str, *, logs: list[str], outcome: str = "Completed", model_tar: bytes | None = None,
                failure_reason: str | None = None, billable: int = 42) -> None:
        """Canned progress: Downloading -> Training (logs) -> Uploading -> outcome."""
        self.set_secondary(name, "Downloading", "Downloading input data")
        self.set_secondary(name, "Training", "Training image download completed. Training in progress.")
        self.put_logs(self.log_stream(name), logs)
        if model_tar is not None:
            self.put_model(name, model_tar)
        self._finish(name, outcome, failure_reason=failure_reason, billable=billable,
                     metrics=self.final_metrics(name, logs))

    def run_entrypoint(self, name: str, request: dict[str, Any]) -> None:
        """Run the real entrypoint from the job's sourcedir.tar.gz on the job's S3 input."""
        with tempfile.TemporaryDirectory(prefix=f"sm-{name}-") as tmp:
            ml = Path(tmp)
            paths = {k: ml / k for k in ("input/config", "model", "output", "checkpoints", "code", "output/data")}
            for p in paths.values():
                p.mkdir(parents=True, exist_ok=True)
            self.set_secondary(name, "Downloading", "Downloading input data")
            for channel in request["InputDataConfig"]:
                self._download_prefix(channel["DataSource"]["S3DataSource"]["S3Uri"], ml / "input/data" / channel["ChannelName"])
            hps = request["HyperParameters"]
            source = io.BytesIO(self._get(hps["sagemaker_submit_directory"]))
            with tarfile.open(fileobj=source) as tar:
                tar.extractall(paths["code"], filter="data")
            (paths["input/config"] / "hyperparameters.json").write_text(json.dumps(hps))
            channels = [c["ChannelName"] for c in request["InputDataConfig"]]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "AWS_"))}
            env.update({
                "SM_MODEL_DIR": str(paths["model"]), "SM_INPUT_DIR": str(ml / "input"),
                "SM_INPUT_CONFIG_DIR": str(paths["input/config"]), "SM_OUTPUT_DIR": str(paths["output"]),
                "SM_OUTPUT_DATA_DIR": str(paths["output/data"]), "SM_CHANNELS": json.dumps(channels),
                "SM_NUM_GPUS": "0", "SM_HOSTS": json.dumps(["algo-1"]), "SM_CURRENT_HOST": "algo-1",
                "ODORCH_CHECKPOINT_DIR": str(paths["checkpoints"]), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2",
                **{f"SM_CHANNEL_{c.upper()}": str(ml / "input/data" / c) for c in channels},
            })
            self.set_secondary(name, "Training", "Training in progress.")
            stream = self.log_stream(name)
            started = time.time()
            proc = subprocess.Popen([sys.executable, request["HyperParameters"]["sagemaker_program"]],
                                    cwd=paths["code"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
            watcher = threading.Thread(target=self._stop_watch, args=(name, proc), daemon=True)
            watcher.start()
            lines = []
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                self.put_logs(stream, [line])
            rc = proc.wait()
            billable = max(1, round(time.time() - started))
            if self.job(name).training_job_status == "Stopping":
                self._finish(name, "Stopped", billable=billable, metrics=self.final_metrics(name, lines))
            elif rc == 0:
                self.set_secondary(name, "Uploading", "Uploading generated training model")
                self.put_model(name, tar_dir(paths["model"]))
                self._finish(name, "Completed", billable=billable, metrics=self.final_metrics(name, lines))
            else:
                failure = paths["output"] / "failure"
                reason = failure.read_text() if failure.is_file() else f"exit code {rc}"
                self._finish(name, "Failed", failure_reason=f"AlgorithmError: {reason}", billable=billable,
                             metrics=self.final_metrics(name, lines))

    def _stop_watch(self, name: str, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            if self.job(name).training_job_status == "Stopping":
                proc.send_signal(signal.SIGTERM)
                return
            time.sleep(0.05)

    def _get(self, uri: str) -> bytes:
        bucket, _, key = uri[5:].partition("/")
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def _download_prefix(self, uri: str, dest: Path) -> None:
        bucket, _, prefix = uri[5:].partition("/")
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                target = dest / obj["Key"][len(prefix):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, obj["Key"], str(target))

    def close(self) -> None:
        for thread in self.threads:
            thread.join(timeout=300)
        self._served.cleanup()
        if self.errors:
            raise self.errors[0]


    # ------------------------------------------------------------ tuning jobs (AMT)

    def _patch_tuning(self, monkeypatch: Any) -> None:
        """CreateHyperParameterTuningJob (recorded as sent, starts InProgress, played by
        ``on_tuning``), ListTrainingJobsForHyperParameterTuningJob and
        StopHyperParameterTuningJob (moto: 500 NotImplemented). See the module docstring."""
        from moto.core.responses import ActionResult, EmptyResult
        from moto.sagemaker.exceptions import ResourceNotFound
        from moto.sagemaker.responses import SageMakerResponse

        harness = self
        self.tuning_requests: dict[str, dict[str, Any]] = {}
        self.tuning_stop_calls: list[str] = []
        self.tuning_children: dict[str, list[str]] = {}
        self.tuning_seed = 0
        self.tuning_child_pause = 0.0
        self.on_tuning: Callable[[str, dict[str, Any]], None] | None = self.run_tuning
        self._children: dict[str, dict[str, Any]] = {}  # child -> {"tuning", "tuned", "objective"}
        original_create = SageMakerResponse.create_hyper_parameter_tuning_job

        def create_hyper_parameter_tuning_job(self: Any) -> Any:
            request = copy.deepcopy(json.loads(self.body))
            result = original_create(self)
            name = request["HyperParameterTuningJobName"]
            job = self.sagemaker_backend.hyper_parameter_tuning_jobs[name]
            harness.tuning_requests[name] = request
            harness.tuning_children[name] = []
            job.hyper_parameter_tuning_job_status = "InProgress"
            job.hyper_parameter_tuning_end_time = None
            job.best_training_job = job.OverallBestTrainingJob = None
            job.failure_reason = None
            job.tuning_job_completion_details = None
            job.consumed_resources = None
            harness._update_tuning_counters(name)
            if harness.on_tuning is not None:
                thread = threading.Thread(target=harness._guard_tuning, args=(harness.on_tuning, name, request), daemon=True)
                harness.threads.append(thread)
                thread.start()
            return result

        def list_training_jobs_for_hyper_parameter_tuning_job(self: Any) -> Any:
            name = self._get_param("HyperParameterTuningJobName")
            if name not in self.sagemaker_backend.hyper_parameter_tuning_jobs:
                raise ResourceNotFound(message=f"Could not find hyper parameter tuning job '{name}'.")
            summaries = [harness.child_summary(child) for child in harness.tuning_children.get(name, [])]
            if self._get_param("StatusEquals"):
                summaries = [s for s in summaries if s["TrainingJobStatus"] == self._get_param("StatusEquals")]
            if self._get_param("SortBy") == "Name":
                summaries.sort(key=lambda s: s["TrainingJobName"])
            if self._get_param("SortOrder") == "Descending":
                summaries.reverse()
            start = int(self._get_param("NextToken") or 0)
            size = int(self._get_param("MaxResults") or 10)
            out: dict[str, Any] = {"TrainingJobSummaries": summaries[start:start + size]}
            if start + size < len(summaries):
                out["NextToken"] = str(start + size)
            return ActionResult(out)

        def stop_hyper_parameter_tuning_job(self: Any) -> Any:
            name = self._get_param("HyperParameterTuningJobName")
            job = self.sagemaker_backend.hyper_parameter_tuning_jobs.get(name)
            if job is None:
                raise ResourceNotFound(message=f"Could not find hyper parameter tuning job '{name}'.")
            harness.tuning_stop_calls.append(name)
            if job.hyper_parameter_tuning_job_status == "InProgress":
                job.hyper_parameter_tuning_job_status = "Stopping"
                if harness.on_tuning is None:
                    harness._end_tuning(name, "Stopped")
            return EmptyResult()

        monkeypatch.setattr(SageMakerResponse, "create_hyper_parameter_tuning_job", create_hyper_parameter_tuning_job)
        monkeypatch.setattr(SageMakerResponse, "list_training_jobs_for_hyper_parameter_tuning_job",
                            list_training_jobs_for_hyper_parameter_tuning_job, raising=False)
        monkeypatch.setattr(SageMakerResponse, "stop_hyper_parameter_tuning_job", stop_hyper_parameter_tuning_job,
                            raising=False)

    def tuning_job(self, name: str) -> Any:
        return self.sm_backend().hyper_parameter_tuning_jobs[name]

    def _guard_tuning(self, fn: Callable[..., None], name: str, request: dict[str, Any]) -> None:
        try:
            fn(name, request)
        except BaseException as e:  # noqa: BLE001 - surfaced by close()
            self.errors.append(e)
            self._end_tuning(name, "Failed", failure_reason=f"harness error: {e}")

    def child_summary(self, child: str) -> dict[str, Any]:
        """The child's HyperParameterTrainingJobSummary, from moto's training job and what the harness recorded."""
        job, info = self.job(child), self._children[child]
        summary: dict[str, Any] = {
            "TrainingJobName": child, "TrainingJobArn": job.arn, "TuningJobName": info["tuning"],
            "CreationTime": job.creation_time, "TrainingJobStatus": job.training_job_status,
            "TunedHyperParameters": info["tuned"],
        }
        if job.training_start_time:
            summary["TrainingStartTime"] = job.training_start_time
        if job.training_end_time:
            summary["TrainingEndTime"] = job.training_end_time
        if job.training_job_status == "Failed" and job.failure_reason:
            summary["FailureReason"] = job.failure_reason
        if info["objective"] is not None:
            summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": "Maximize", "MetricName": info["metric"], "Value": info["objective"]}
            summary["ObjectiveStatus"] = "Succeeded"
        else:
            summary["ObjectiveStatus"] = "Failed" if job.training_job_status in ("Failed", "Stopped") else "Pending"
        return summary

    def _tuning_stopping(self, name: str) -> bool:
        return self.tuning_job(name).hyper_parameter_tuning_job_status == "Stopping"

    def _update_tuning_counters(self, name: str) -> None:
        counters = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
        objectives = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        for child in self.tuning_children.get(name, []):
            status = self.job(child).training_job_status
            key = {"Failed": "NonRetryableError", "Stopping": "InProgress"}.get(status, status)
            counters[key] = counters.get(key, 0) + 1
            objectives[self.child_summary(child)["ObjectiveStatus"]] += 1
        job = self.tuning_job(name)
        job.training_job_status_counters, job.objective_status_counters = counters, objectives

    def _end_tuning(self, name: str, outcome: str, failure_reason: str | None = None) -> None:
        """Stop what still runs (Stopped/Failed), set BestTrainingJob (highest objective) and the outcome."""
        for child in self.tuning_children.get(name, []):
            if self.job(child).training_job_status in ("InProgress", "Stopping"):
                self._finish(child, "Stopped")
        scored = [(self._children[c]["objective"], c) for c in self.tuning_children.get(name, [])
                  if self._children[c]["objective"] is not None and self.job(c).training_job_status == "Completed"]
        job = self.tuning_job(name)
        if scored:
            best = self.child_summary(max(scored)[1])
            job.best_training_job = job.OverallBestTrainingJob = best
        self._update_tuning_counters(name)
        job.failure_reason = failure_reason
        job.hyper_parameter_tuning_end_time = job.last_modified_time = _now()
        job.hyper_parameter_tuning_job_status = outcome

    def run_tuning(self, name: str, request: dict[str, Any]) -> None:
        """Play AMT: MaxNumberOfTrainingJobs children, MaxParallelTrainingJobs at a time, each a real
        CreateTrainingJob (``<tuning>-NNN-xxxxxxxx``) of the TrainingJobDefinition with hyperparameters
        sampled (seeded) from ParameterRanges over StaticHyperParameters, played like ``run_job``."""
        import random

        config = request["HyperParameterTuningJobConfig"]
        limits, definition = config["ResourceLimits"], request["TrainingJobDefinition"]
        metric = config["HyperParameterTuningJobObjective"]["MetricName"]
        rng = random.Random(f"{self.tuning_seed}:{name}")
        total, parallel = int(limits["MaxNumberOfTrainingJobs"]), int(limits["MaxParallelTrainingJobs"])
        for start in range(0, total, parallel):
            batch = []
            for i in range(start, min(total, start + parallel)):
                if self._tuning_stopping(name):
                    break
                tuned = sample_ranges(config["ParameterRanges"], rng)
                child = f"{name}-{i + 1:03d}-{rng.getrandbits(32):08x}"
                self._children[child] = {"tuning": name, "tuned": tuned, "objective": None, "metric": metric}
                hps = {**definition.get("StaticHyperParameters", {}), **tuned, "_tuning_objective_metric": metric}
                child_request = {"TrainingJobName": child, "HyperParameters": hps, "Tags": request.get("Tags", []),
                                 **{k: definition[k] for k in (
                                     "AlgorithmSpecification", "RoleArn", "InputDataConfig", "OutputDataConfig",
                                     "ResourceConfig", "StoppingCondition", "EnableManagedSpotTraining",
                                     "CheckpointConfig") if k in definition}}
                self.sagemaker.create_training_job(**child_request)
                self.tuning_children[name].append(child)
                batch.append(child)
            self._update_tuning_counters(name)
            for child in batch:
                if not self._tuning_pause(name):
                    break
                self.play_child(child, rng, metric)
                self._update_tuning_counters(name)
            if self._tuning_stopping(name):
                break
        self._end_tuning(name, "Stopped" if self._tuning_stopping(name) else "Completed")

    def _tuning_pause(self, name: str) -> bool:
        """Wait ``tuning_child_pause`` seconds before playing a child; False when the tuning is being stopped."""
        until = time.time() + self.tuning_child_pause
        while time.time() < until and not self._tuning_stopping(name):
            time.sleep(0.02)
        return not self._tuning_stopping(name)

    def play_child(self, child: str, rng: Any, metric: str) -> None:
        """Canned epochs whose objective rises to a seeded final value; model.tar.gz with a small file."""
        request = self.requests[child]
        builtin = not request["AlgorithmSpecification"].get("MetricDefinitions")
        epochs = max(1, min(3, int(request["HyperParameters"].get("epochs", "2") or 2)))
        final = round(rng.uniform(0.05, 0.65), 6)
        lines = []
        for e in range(1, epochs + 1):
            value = round(final * e / epochs, 6)
            if builtin:
                lines.append(f"#quality_metric: host=algo-1, epoch={e - 1}, validation mAP <score>=({value})")
            else:
                lines.append(f"epoch={e}/{epochs} train:loss={1.0 / e:.6f} validation:mAP={value:.6f} "
                             f"validation:mAP50={min(1.0, value * 1.5):.6f}")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model.json").write_text(json.dumps({"job": child, "objective": final}))
            model_tar = tar_dir(Path(tmp))
        self.run_job(child, logs=lines, model_tar=model_tar, billable=rng.randint(60, 600))
        from odorch.runtime.metrics import parse_metrics

        values = {m["MetricName"]: m["Value"] for m in self.job(child).final_metric_data_list}
        if builtin:  # SageMaker defines the built-in algorithm's metrics itself
            values = parse_metrics(lines[-1])
        if self.job(child).training_job_status == "Completed":
            self._children[child]["objective"] = values.get(metric)


def sample_ranges(ranges: dict[str, list[dict[str, Any]]], rng: Any) -> dict[str, str]:
    """One point of AMT ParameterRanges, as AMT sends it: strings."""
    import math

    out = {}
    for r in ranges.get("ContinuousParameterRanges", []):
        low, high = float(r["MinValue"]), float(r["MaxValue"])
        if r.get("ScalingType") == "Logarithmic":
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        out[r["Name"]] = f"{value:.10g}"
    for r in ranges.get("IntegerParameterRanges", []):
        out[r["Name"]] = str(rng.randint(int(r["MinValue"]), int(r["MaxValue"])))
    for r in ranges.get("CategoricalParameterRanges", []):
        out[r["Name"]] = rng.choice(r["Values"])
    return out


def tar_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(folder).as_posix())
    return buf.getvalue()

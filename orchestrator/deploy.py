"""Deploy a trained model as a SageMaker real-time endpoint (PyTorch inference container), list,
delete and call endpoints, over boto3 clients that are passed in (no `sagemaker` SDK).

    s3://BUCKET/odorch/models/<job>/model.tar.gz   model.pth, config.json, code/ (see package_model)
    RUN/endpoint.json                               name, config, model, ARN, instance, region, created

Every resource is tagged ``odorch:job`` (the operator policy in infra/iam requires the tag on
creation and on deletion). A deploy that fails or is interrupted deletes what it created
(endpoint, config, model, in that order) before the error goes on.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from odorch.algorithms import AlgorithmError
from odorch.archive import runtime_files, write_tar_gz
from odorch.aws import AwsClients, check_bucket
from odorch.backends.sagemaker import ROLE_ARN
from odorch.errors import JobError, PreflightError, SageMakerError
from odorch.runs import JobRecord, model_dir, read_job

TAG = "odorch:job"
ALGORITHM_TAG = "odorch:algorithm"  # which algorithm's request and reply format its endpoint speaks
PREFIX = "odorch/models"
ENDPOINT_FILE = "endpoint.json"
POLL_S = 15.0  # DescribeEndpoint every POLL_S seconds (tests lower it)
TIMEOUT_S = 3600.0
PROGRAM = "inference.py"
SUBMIT_DIR = "/opt/ml/model/code"
# The toolkit imports <model_dir>/code/inference.py as a top-level module with code/ on the path;
# importing the handler from the shipped package keeps `odorch.runtime.*` one package.
SHIM = (
    '"""SageMaker PyTorch serving entry point: the handler of odorch.runtime.inference."""\n\n'
    "from odorch.runtime.inference import input_fn, invoke, model_fn, output_fn, predict_fn  # noqa: F401\n"
)
_NAME_OK = re.compile(r"[^a-zA-Z0-9-]+")
INVOKE_MAX_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's payload limit


class DeployError(SageMakerError):
    """An endpoint that cannot be created, read or called; the message says why."""


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- package


def job_name_of(run_dir: Path | str) -> str:
    run = Path(run_dir)
    try:
        name = read_job(run).job_name
    except JobError:
        name = None
    return str(name or run.resolve().name)


def package_model(run_dir: Path | str) -> bytes:
    """model.tar.gz for the PyTorch inference container: model.pth + config.json at the top,
    code/inference.py (a shim importing odorch.runtime.inference) and code/odorch/runtime/*.py.
    No code/requirements.txt: the serving toolkit pip-installs one at every start-up, and serving
    needs only what the image ships (torch, torchvision, pillow, numpy); the training-only
    packages would slow each start and fail it without internet access.
    Deterministic: sorted names, mtime 0, no __pycache__."""
    folder = model_dir(run_dir)
    missing = [n for n in ("model.pth", "config.json") if not (folder / n).is_file()]
    if missing:
        raise DeployError(f"{folder}: no {' or '.join(missing)}; train a model first (odorch train)")
    return write_tar_gz({"model.pth": (folder / "model.pth").read_bytes(),
                         "config.json": (folder / "config.json").read_bytes(),
                         "code/inference.py": SHIM.encode(),
                         **runtime_files("code/", requirements=False)})


# ---------------------------------------------------------------- names and checks


def resource_name(text: str, *, limit: int = 63) -> str:
    """A SageMaker resource name: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}."""
    name = _NAME_OK.sub("-", text).strip("-")[:limit].strip("-")
    if not name:
        raise DeployError(f"cannot make a SageMaker name from {text!r}")
    return name


def job_algorithm(clients: AwsClients, run_dir: Path | str) -> tuple[Any, JobRecord]:
    """The algorithm that trained RUN (bound to its model) and RUN's job record (an empty one when
    it has none: a model folder of odorch's own)."""
    from odorch.algorithms import AlgorithmError, get_algorithm

    try:
        record = read_job(run_dir)
    except JobError:
        record = JobRecord()
    try:
        return get_algorithm(record.extra.get("algorithm") or "pytorch").for_model(record.model, clients=clients), record
    except AlgorithmError as e:
        raise PreflightError(f"not deploying {run_dir}: {e}") from e


def preflight_deploy(clients: AwsClients, run_dir: Path | str, *, instance_type: str, bucket: str, role: str,
                     region: str, image: str | None = None) -> None:
    """Every check before anything is uploaded or created; PreflightError lists each problem."""
    from odorch import aws_tables

    algo, record = job_algorithm(clients, run_dir)
    problems = []
    if not ROLE_ARN.match(role or ""):
        problems.append(f"--role {role!r} is not an IAM role ARN: give arn:aws:iam::<12-digit account>:role/<name> "
                        "(a role SageMaker can assume, with read access to the bucket)")
    if not aws_tables.is_known_instance(instance_type or ""):
        problems.append(f"--instance {instance_type!r} is not a known SageMaker instance type: "
                        "use one like ml.g4dn.xlarge or ml.m5.xlarge")
    elif not aws_tables.is_hosting_instance(instance_type):
        problems.append(f"--instance {instance_type!r} trains but cannot host an endpoint: "
                        "use a hosting type such as ml.g4dn.xlarge, ml.g5.xlarge or ml.m5.xlarge")
    elif image is None and not algo.serves_itself:  # one that does brings its image (Algorithm.hosting)
        try:
            aws_tables.inference_image(region, aws_tables.normalize_instance(instance_type))
        except ValueError as e:
            problems.append(f"{e} (--image URI)")
    problems += aws_tables.image_uri_problems(image)
    folder = model_dir(run_dir)
    if algo.serves_itself:
        if not record.extra.get("model_s3_uri"):
            problems.append(f"{run_dir}: its job record has no model_s3_uri; deploy a job that completed on SageMaker")
    elif not (folder / "model.pth").is_file():
        problems.append(f"{run_dir}: no model/model.pth; give a job folder of a finished `odorch train`")
    elif not (folder / "config.json").is_file():
        problems.append(f"{folder}: no config.json beside model.pth")
    problems += check_bucket(clients, bucket)
    if problems:
        raise PreflightError("not deploying: " + "; ".join(problems))


# ---------------------------------------------------------------- deploy


def _is_gone(error: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return False
    err = error.response.get("Error", {})
    return err.get("Code") in ("ResourceNotFound", "ValidationException") and "find" in str(err.get("Message", "")).lower()


def _delete(clients: AwsClients, kind: str, name: str) -> bool:
    """Delete one endpoint/endpoint-config/model; False when it was already gone."""
    call = {"endpoint": (clients.sagemaker.delete_endpoint, "EndpointName"),
            "config": (clients.sagemaker.delete_endpoint_config, "EndpointConfigName"),
            "model": (clients.sagemaker.delete_model, "ModelName")}[kind]
    try:
        call[0](**{call[1]: name})
    except Exception as e:  # noqa: BLE001 - only "not found" is tolerated
        if _is_gone(e):
            return False
        raise
    return True


def deploy(clients: AwsClients, run_dir: Path | str, *, instance_type: str, bucket: str, role: str,
           endpoint_name: str | None = None, region: str | None = None, image: str | None = None, wait: bool = True,
           poll_s: float | None = None, timeout_s: float = TIMEOUT_S, echo: Any = None) -> dict[str, Any]:
    """Upload model.tar.gz, create model + endpoint config + endpoint (tagged), wait for InService,
    write RUN/endpoint.json (atomically) and return that record. On any failure or Ctrl-C the
    resources created so far are deleted (in reverse order) and the error is re-raised."""
    from odorch import aws_tables
    from odorch.converters.fsutil import atomic_write_json

    say = echo or (lambda _msg: None)
    run = Path(run_dir)
    region = region or clients.region
    instance = aws_tables.normalize_instance(instance_type)
    algo, job_record = job_algorithm(clients, run)
    job = job_name_of(run)
    endpoint = resource_name(endpoint_name or f"odorch-{job}")
    if endpoint_name and endpoint != endpoint_name:
        raise DeployError(f"--endpoint-name {endpoint_name!r}: use letters, digits and '-' (at most 63)")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    model_name = resource_name(f"{endpoint[:47]}-{stamp}")
    config_name = model_name
    tags = [{"Key": TAG, "Value": job}, {"Key": ALGORITHM_TAG, "Value": algo.name}]

    key = f"{PREFIX}/{job}/model.tar.gz"
    model_uri = f"s3://{bucket}/{key}"
    try:
        container = algo.hosting(clients, job_record, instance_type=instance, bucket=bucket, key=key)
    except AlgorithmError as e:
        raise DeployError(f"not deploying {run}: {e}") from e
    if container is None:  # odorch's handler in the PyTorch inference image
        clients.s3.put_object(Bucket=bucket, Key=key, Body=package_model(run))
        container = {"Image": aws_tables.inference_image(region, instance), "ModelDataUrl": model_uri,
                     "Environment": {"SAGEMAKER_PROGRAM": PROGRAM, "SAGEMAKER_SUBMIT_DIRECTORY": SUBMIT_DIR}}
    if image:
        container["Image"] = image
    image = container["Image"]
    warning = aws_tables.support_warning(image)
    if warning:
        say(f"warning: {warning}")
    say(f"uploaded {model_uri}")

    created: list[tuple[str, str]] = []
    try:
        clients.sagemaker.create_model(
            ModelName=model_name, ExecutionRoleArn=role, Tags=tags, PrimaryContainer=container,
        )
        created.append(("model", model_name))
        clients.sagemaker.create_endpoint_config(
            EndpointConfigName=config_name, Tags=tags,
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": model_name, "InitialInstanceCount": 1,
                                 "InstanceType": instance, "InitialVariantWeight": 1.0}],
        )
        created.append(("config", config_name))
        arn = clients.sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=config_name,
                                                Tags=tags)["EndpointArn"]
        created.append(("endpoint", endpoint))
        say(f"creating endpoint {endpoint} on {instance} (usually 5-10 minutes)")
        status = "Creating"
        if wait:
            status = wait_in_service(clients, endpoint, poll_s=POLL_S if poll_s is None else poll_s, timeout_s=timeout_s)
        record = {"name": endpoint, "config": config_name, "model": model_name, "arn": arn, "instance": instance,
                  "region": region, "image": image, "model_data": model_uri, "job": job, "status": status,
                  "created": _now().isoformat(timespec="seconds")}
        atomic_write_json(run / ENDPOINT_FILE, record, indent=2)
        return record
    except BaseException as error:
        for kind, name in reversed(created):
            try:
                _delete(clients, kind, name)
                say(f"deleted {kind} {name}")
            except Exception as e:  # noqa: BLE001 - keep cleaning, report the original error
                say(f"could not delete {kind} {name}: {e}; delete it by hand")
        raise error


def wait_in_service(clients: AwsClients, endpoint: str, *, poll_s: float, timeout_s: float = TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        desc = clients.sagemaker.describe_endpoint(EndpointName=endpoint)
        status = desc["EndpointStatus"]
        if status == "InService":
            return status
        if status in ("Failed", "OutOfService", "Deleting"):
            raise DeployError(f"endpoint {endpoint} {status}: {desc.get('FailureReason') or 'no reason given'}")
        if time.monotonic() > deadline:
            raise DeployError(f"endpoint {endpoint} still {status} after {timeout_s:.0f} s")
        _sleep(poll_s)


# ---------------------------------------------------------------- list / delete / invoke


def list_endpoints(clients: AwsClients, *, all_endpoints: bool = False) -> list[dict[str, Any]]:
    """Endpoints tagged odorch:job (all of them with all_endpoints), newest first:
    name, status, instance, created, job."""
    sm = clients.sagemaker
    out = []
    for page in sm.get_paginator("list_endpoints").paginate():
        for item in page.get("Endpoints", []):
            name = item["EndpointName"]
            try:
                tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=item["EndpointArn"]).get("Tags", [])}
                desc = sm.describe_endpoint(EndpointName=name)
            except Exception as e:  # noqa: BLE001 - deleted meanwhile
                if _is_gone(e):
                    continue
                raise
            if TAG not in tags and not all_endpoints:
                continue
            instance = None
            try:
                config = sm.describe_endpoint_config(EndpointConfigName=desc["EndpointConfigName"])
                instance = (config.get("ProductionVariants") or [{}])[0].get("InstanceType")
            except Exception as e:  # noqa: BLE001
                if not _is_gone(e):
                    raise
            created = item.get("CreationTime")
            out.append({"name": name, "status": desc["EndpointStatus"], "instance": instance,
                        "created": created.isoformat(timespec="seconds") if hasattr(created, "isoformat") else created,
                        "job": tags.get(TAG), "config": desc.get("EndpointConfigName")})
    return sorted(out, key=lambda r: str(r["created"] or ""), reverse=True)


def delete_endpoint(clients: AwsClients, name: str) -> list[str]:
    """Delete the endpoint, its config and the config's model(s), each tolerant of already-gone;
    returns what was deleted ("endpoint NAME", ...)."""
    sm = clients.sagemaker
    config_name = None
    try:
        config_name = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    except Exception as e:  # noqa: BLE001
        if not _is_gone(e):
            raise
    models: list[str] = []
    if config_name:
        try:
            config = sm.describe_endpoint_config(EndpointConfigName=config_name)
            models = [v["ModelName"] for v in config.get("ProductionVariants", []) if v.get("ModelName")]
        except Exception as e:  # noqa: BLE001
            if not _is_gone(e):
                raise
    deleted = []
    for kind, item in [("endpoint", name), *([("config", config_name)] if config_name else []),
                       *[("model", m) for m in models]]:
        if _delete(clients, kind, item):
            deleted.append(f"{kind} {item}")
    return deleted


def image_content_type(data: bytes, what: str = "image") -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    raise DeployError(f"{what}: not a JPEG or PNG file (the endpoint takes those)")


def endpoint_algorithm(clients: AwsClients, name: str, tags: list[dict[str, str]] | None = None) -> Any:
    """The algorithm whose request and reply format endpoint NAME speaks (its odorch:algorithm tag,
    set by deploy; odorch's handler when untagged)."""
    from odorch.algorithms import get_algorithm

    if tags is None:
        try:
            arn = clients.sagemaker.describe_endpoint(EndpointName=name)["EndpointArn"]
            tags = clients.sagemaker.list_tags(ResourceArn=arn).get("Tags", [])
        except Exception as e:  # noqa: BLE001 - a missing endpoint is the user's to fix
            if _is_gone(e):
                raise DeployError(f"no endpoint {name} (odorch endpoints list)") from e
            raise
    try:
        return get_algorithm({t["Key"]: t["Value"] for t in tags}.get(ALGORITHM_TAG) or "pytorch")
    except AlgorithmError as e:
        raise DeployError(f"endpoint {name}: {e}") from e


def invoke_endpoint(clients: AwsClients, name: str, image_path: Path | str, *, algorithm: Any = None) -> dict[str, Any]:
    """One image through the endpoint: its JSON response in odorch's format (see
    entrypoints/inference.py); ALGORITHM (endpoint_algorithm's) says how to ask and read another's."""
    from botocore.exceptions import ClientError

    from odorch.algorithms import get_algorithm

    algo = algorithm or get_algorithm("pytorch")
    data = Path(image_path).read_bytes()
    if len(data) > INVOKE_MAX_BYTES:
        raise DeployError(f"{image_path}: {len(data) / 2**20:.1f} MiB; InvokeEndpoint takes at most 6 MiB: "
                          "send a smaller or more compressed image (e.g. JPEG)")
    detected = image_content_type(data, str(image_path))
    content_type, accept = algo.endpoint_request()
    try:
        response = clients.runtime.invoke_endpoint(EndpointName=name, Accept=accept, Body=data,
                                                   ContentType=content_type or detected)
    except ClientError as e:
        raise DeployError(f"endpoint {name}: {e}") from e
    body = response["Body"].read()
    try:
        reply = json.loads(body)
    except ValueError as e:
        raise DeployError(f"endpoint {name}: the response is not JSON ({body[:200]!r})") from e
    from PIL import Image

    with Image.open(image_path) as im:
        width, height = im.size
    try:
        return algo.endpoint_detections(reply, width=width, height=height)
    except AlgorithmError as e:
        raise DeployError(f"endpoint {name}: {e}") from e

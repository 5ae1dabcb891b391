"""odorch's archives run by the REAL SageMaker toolkits, the way the PyTorch DLC images run them.

- ``serve``: model.tar.gz extracted as /opt/ml/model under a temp root; a fresh interpreter
  (PYTHONPATH = <model>/code, as the toolkit's torchserve launcher sets it for its workers)
  loads the handler service ``sagemaker_pytorch_serving_container.handler_service`` with
  TorchServe's own model loader (``ts.model_loader.TsModelLoader``, what the TorchServe Python
  worker calls) and answers each request through ``ts.service.Service.predict`` with the binary
  request and response frames the Java frontend exchanges with the worker. Only the frontend
  (Java, HTTP) is missing: this file plays it by encoding requests and decoding responses.
- ``train``: an /opt/ml tree under a temp root (``SAGEMAKER_BASE_DIR``, which the training toolkit
  reads instead of /opt/ml), input/config/{hyperparameters,inputdataconfig,resourceconfig}.json
  as SageMaker writes them, channels under input/data/<channel>, and the toolkit's ``train``
  console script (``sagemaker_training.cli.train`` -> ``trainer.train()``), which fetches
  ``sagemaker_submit_directory``, pip-installs requirements.txt and runs ``sagemaker_program``.

Run as a script (``python tests/sagemaker_toolkits.py worker MODEL_DIR``) it is the serving worker.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

HANDLER = "sagemaker_pytorch_serving_container.handler_service"
THIS = Path(__file__).resolve()


def clean_env() -> dict[str, str]:
    """The test process's environment without AWS, SageMaker or PYTHONPATH settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SM_", "SAGEMAKER_", "PYTHONPATH", "ODORCH_"))}
    env.update(OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    return env


# ---------------------------------------------------------------- serving


def extract_model(model_tar: bytes, root: Path) -> Path:
    """model.tar.gz extracted where SageMaker puts it: <root>/opt/ml/model."""
    model_dir = root / "opt/ml/model"
    model_dir.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(model_tar)) as tar:
        tar.extractall(model_dir, filter="data")
    return model_dir


def serve(model_dir: Path, requests: list[dict[str, Any]], *,
          environment: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Each request ({"body": bytes, "content_type", "accept"}) through the real handler service
    on MODEL_DIR (an extracted model.tar.gz); returns [{"status", "content_type", "body": bytes}].
    ``environment``: the model's container Environment (CreateModel's), e.g. SAGEMAKER_PROGRAM."""
    env = clean_env()
    env.update(environment or {})
    env.update(SAGEMAKER_BASE_DIR=str(model_dir.parent), PYTHONPATH=str(model_dir / "code"))
    frames = [{"body": base64.b64encode(r["body"]).decode(), "content_type": r.get("content_type"),
               "accept": r.get("accept")} for r in requests]
    done = subprocess.run([sys.executable, str(THIS), "worker", str(model_dir)], input=json.dumps(frames).encode(),
                          cwd=model_dir.parent, env=env, capture_output=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"serving worker failed ({done.returncode}):\n{done.stderr.decode(errors='replace')[-4000:]}")
    out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return [{**r, "body": base64.b64decode(r["body"])} for r in out]


def _request_frame(i: int, request: dict[str, Any]) -> dict[str, Any]:
    """One request as TorchServe's frontend hands it to the worker (ts.protocol's decoded form)."""
    headers = [{"name": b"Content-Type", "value": (request["content_type"] or "").encode()}]
    if request.get("accept"):
        headers.append({"name": b"Accept", "value": request["accept"].encode()})
    return {"requestId": str(i).encode(), "headers": headers,
            "parameters": [{"name": "body", "contentType": request["content_type"] or "",
                            "value": base64.b64decode(request["body"])}]}


def _decode_response(msg: bytes) -> dict[str, Any]:
    """ts.protocol.otf_message_handler.create_predict_response's frame, for one request."""
    pos = 0

    def take_int() -> int:
        nonlocal pos
        (value,) = struct.unpack_from("!i", msg, pos)
        pos += 4
        return value

    def take_bytes() -> bytes:
        nonlocal pos
        n = take_int()
        data = msg[pos:pos + n]
        pos += n
        return bytes(data)

    code, message = take_int(), take_bytes().decode()
    take_bytes()  # request id
    content_type = take_bytes().decode()
    status = take_int()
    take_bytes()  # phrase
    for _ in range(take_int()):  # response headers (absent without a context)
        take_bytes(), take_bytes()
    body = take_bytes()
    return {"status": status if code == 200 else code, "content_type": content_type,
            "body": base64.b64encode(body if code == 200 else message.encode() + b"\n" + body).decode()}


def _worker(model_dir: str) -> None:
    """In the serving interpreter: load the handler service as TorchServe's worker does, answer each request."""
    import ts
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.model_loader import ModelLoaderFactory

    import odorch.runtime

    code = str(Path(model_dir) / "code")
    assert odorch.runtime.__file__.startswith(code), f"odorch.runtime imported from {odorch.runtime.__file__}, not {code}"
    metrics = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs/metrics.yaml"))
    metrics.initialize_cache()
    service = ModelLoaderFactory.get_model_loader().load("model", model_dir, handler=HANDLER, gpu_id=None,
                                                         batch_size=1, metrics_cache=metrics)
    service.set_cl_socket(None)  # the frontend's socket: this process answers on stdout instead
    requests = json.loads(sys.stdin.read())
    out = [_decode_response(service.predict([_request_frame(i, r)])) for i, r in enumerate(requests)]
    sys.stdout.write("\n" + json.dumps(out) + "\n")


# ---------------------------------------------------------------- training


def opt_ml(root: Path, *, hyperparameters: dict[str, str], channels: dict[str, Path],
           hosts: tuple[str, ...] = ("localhost",)) -> Path:
    """/opt/ml under ROOT as SageMaker lays it out before starting the container: the request's
    HyperParameters map written as is (a str -> str JSON object), inputdataconfig.json,
    resourceconfig.json and each channel's files under input/data/<channel>. The host is
    "localhost", standing in for "algo-1": the toolkit waits (15 min) until every host name
    resolves, and only SageMaker's /etc/hosts resolves algo-1."""
    ml = root / "opt/ml"
    config = ml / "input/config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels}))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": hosts[0], "hosts": list(hosts), "network_interface_name": "eth0",
        "current_instance_type": "ml.m5.xlarge", "current_group_name": "homogeneousCluster",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.xlarge",
                             "hosts": list(hosts)}]}))
    for name, source in channels.items():
        shutil.copytree(source, ml / "input/data" / name)
    for sub in ("model", "output/data", "code", "checkpoints"):
        (ml / sub).mkdir(parents=True, exist_ok=True)
    return ml


def train_command() -> list[str]:
    """The DLC's training command: the toolkit's ``train`` console script of this environment."""
    script = Path(sys.executable).parent / "train"
    assert script.is_file(), f"no {script}: pip install sagemaker-training"
    return [str(script)]


def train_env(ml: Path, job_name: str) -> dict[str, str]:
    """The container's environment for the toolkit: its base dir moved to ML, TRAINING_JOB_NAME as
    SageMaker sets it. The checkpoint folder (CheckpointConfig.LocalPath, /opt/ml/checkpoints on
    SageMaker) moves with the base dir."""
    env = clean_env()
    env.update(SAGEMAKER_BASE_DIR=str(ml), ODORCH_CHECKPOINT_DIR=str(ml / "checkpoints"), TRAINING_JOB_NAME=job_name)
    return env


# The PyTorch training DLC's ENTRYPOINT is `bash -m start_with_right_hostname.sh` and SageMaker
# runs it with the argument `train`: bash (PID 1 of the container) runs the toolkit's `train` as a
# child, not with exec, and sets no trap. The same shape without the hostname library it preloads:
DLC_START = """if [[ "$1" = "train" ]]; then
    train
else
    eval "$@"
fi
"""


def can_be_pid_1() -> bool:
    """Whether this machine lets a process start a PID namespace (unshare --pid), so that the DLC's
    shell can run as PID 1 as in the container."""
    done = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True)
    return done.returncode == 0


def launch_dlc(ml: Path, env: dict[str, str]) -> subprocess.Popen:
    """The container's start: DLC_START under bash -m as PID 1 of a new PID namespace (as
    `docker run IMAGE train` does), stdout+stderr piped. ``init_pid`` gives PID 1's pid here."""
    script = ml.parent / "start_with_right_hostname.sh"
    script.write_text(DLC_START)
    env = {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    return subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "bash", "-m", str(script), "train"],
                            cwd=ml.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)


def init_pid(proc: subprocess.Popen) -> int:
    """The pid (in this namespace) of the container's PID 1: unshare's only child."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    while True:
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
        time.sleep(0.01)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(sys.argv[2])

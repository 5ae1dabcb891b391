"""The Docker backend: the entrypoint baked into the training image (infra/Dockerfile) runs under
`docker run`, with the local job folder mounted where SageMaker puts /opt/ml (SageMaker's local
mode without the SDK). Everything else (record, logs, metrics, stop) is the local backend's."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odorch.backends.base import JobSpec
from odorch.backends.local import HOST, LocalBackend, job_layout, run_local_job
from odorch.runs import JobRecord


def docker_command(job_dir: Path, channels: dict[str, Path], hyperparameters: dict[str, Any], *, image: str,
                   num_gpus: int) -> list[str]:
    """`docker run` of a training image as SageMaker runs it: the job folder's parts at /opt/ml/...
    (not /opt/ml itself, which would hide the image's /opt/ml/code), each channel at
    /opt/ml/input/data/<name> read-only, files written as the calling user, signals forwarded."""
    paths = job_layout(job_dir)
    mounts = [
        (paths["config"], "/opt/ml/input/config", "ro"),
        (paths["model"], "/opt/ml/model", "rw"),
        (paths["checkpoints"], "/opt/ml/checkpoints", "rw"),
        (paths["output"], "/opt/ml/output", "rw"),
        *((path, f"/opt/ml/input/data/{name}", "ro") for name, path in sorted(channels.items())),
    ]
    env = {
        "SM_HPS": json.dumps(hyperparameters, default=str),
        "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_NUM_GPUS": str(num_gpus),
        "SM_HOSTS": json.dumps([HOST]),
        "SM_CURRENT_HOST": HOST,
        "PYTHONUNBUFFERED": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "HOME": "/tmp",
    }
    command = ["docker", "run", "--rm", "--init", "--user", f"{os.getuid()}:{os.getgid()}"]
    if num_gpus:
        command += ["--gpus", "all"]
    for source, target, mode in mounts:
        command += ["--volume", f"{Path(source).resolve()}:{target}:{mode}"]
    for key, value in env.items():
        command += ["--env", f"{key}={value}"]
    return command + [image, "python", "/opt/ml/code/train.py"]


def docker_available() -> str | None:
    """None when a Docker engine answers, else why not (for an error or a test skip)."""
    import shutil

    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker info failed: {e}"
    if probe.returncode != 0:
        return f"no Docker engine answers (docker info: {(probe.stderr or probe.stdout).strip().splitlines()[-1:]})"
    return None


def run_docker_job(*, image: str, **job: Any) -> JobRecord:
    """run_local_job's job (same arguments, same record) inside IMAGE."""
    return run_local_job(**job, container=lambda job_dir, channels, hyperparameters, num_gpus: docker_command(
        job_dir, channels, hyperparameters, image=image, num_gpus=num_gpus))


@dataclass
class DockerBackend(LocalBackend):
    """A local job inside IMAGE (infra/Dockerfile)."""

    image: str = "odorch-train"
    name: str = "docker"

    def preflight(self, spec: JobSpec) -> list[str]:
        why = docker_available()
        if why:
            return [f"--backend docker needs a Docker engine: {why}; use --backend local"]
        return super().preflight(spec)

    def run(self, spec: JobSpec, *, echo: Any = None) -> JobRecord:
        data = Path(spec.data)
        return run_docker_job(image=self.image, job_name=spec.name, runs_dir=spec.runs_dir,
                              entrypoint=spec.algorithm.entrypoint(), channels={"train": data, "validation": data},
                              hyperparameters=dict(spec.hyperparameters), model=spec.model, echo=echo is not None,
                              **self.options)

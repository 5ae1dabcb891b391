"""The Docker backend: the `docker run` command (mounts, environment), the engine check, and a
real job where a Docker engine and the training image exist (skipped otherwise, saying why)."""

import json
import os
import subprocess

import pytest

from odorch.backends import docker, local
from tests.helpers import FAKE_ENTRYPOINT, invoke


def test_docker_command_mounts_the_job_like_sagemaker(tmp_path, channels):
    job = tmp_path / "runs" / "d"
    local.prepare_job_dir(job, channels, {"epochs": 2})
    command = docker.docker_command(job, channels, {"epochs": 2}, image="odorch-train:1", num_gpus=1)
    assert command[:4] == ["docker", "run", "--rm", "--init"]
    assert command[-3:] == ["odorch-train:1", "python", "/opt/ml/code/train.py"]
    volumes = [command[i + 1] for i, arg in enumerate(command) if arg == "--volume"]
    assert f"{(job / 'model').resolve()}:/opt/ml/model:rw" in volumes
    assert f"{(job / 'checkpoints').resolve()}:/opt/ml/checkpoints:rw" in volumes
    assert f"{channels['train'].resolve()}:/opt/ml/input/data/train:ro" in volumes
    assert not any(v.split(":")[1] == "/opt/ml" for v in volumes)  # would hide the image's /opt/ml/code
    env = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "--env")
    assert json.loads(env["SM_HPS"]) == {"epochs": 2} and env["SM_NUM_GPUS"] == "1"
    assert "--gpus" in command


def test_docker_backend_needs_a_docker_engine(tmp_path, runner, monkeypatch):
    monkeypatch.setattr(docker, "docker_available", lambda: "no docker command on PATH")
    (tmp_path / "data").mkdir()
    result = invoke(runner, "train", "--data", tmp_path / "data", "--backend", "docker", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "--backend docker needs a Docker engine: no docker command on PATH" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_docker_job_end_to_end(tmp_path, tiny_data):
    """Runs only where a Docker engine answers and ODORCH_TEST_IMAGE names an image built from infra/Dockerfile."""
    why = docker.docker_available()
    if why:
        pytest.skip(f"Docker backend not testable here: {why}")
    image = os.environ.get("ODORCH_TEST_IMAGE", "odorch-train")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        pytest.skip(f"no image {image}: build it from infra/Dockerfile (infra/README.md) to run the Docker job test")
    record = docker.run_docker_job(
        image=image, job_name="docker", runs_dir=tmp_path, entrypoint=FAKE_ENTRYPOINT, channels={"train": tiny_data, "validation": tiny_data},
        hyperparameters={"epochs": 1, "weights": "none", "batch_size": 4, "image_size": 128}, echo=False,
    )
    assert record.status == "Completed" and (tmp_path / "docker" / "model" / "model.pth").exists()


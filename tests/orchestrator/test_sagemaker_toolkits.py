"""odorch's archives under the REAL SageMaker toolkits (sagemaker-training, sagemaker-inference,
sagemaker-pytorch-inference, TorchServe's Python worker), run as the PyTorch DLC images run them
(see tests/sagemaker_toolkits.py): model.tar.gz served through the handler service, and
sourcedir.tar.gz trained through the toolkit's `train` entry, each on a tiny untrained model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from tests import sagemaker_toolkits as toolkits

NAME = "ssdlite320_mobilenet_v3_large"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_data):
    """A job folder with a small untrained model (spread head: detections differ between images)."""
    import torch

    from odorch.runtime.models import build_model, save_model

    run = tmp_path_factory.mktemp("toolkit") / "runs" / "tiny"
    torch.manual_seed(0)
    model = build_model(NAME, ["circle", "square"], weights="none", image_size=128)
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.3)
    save_model(run / "model", model.eval(), {"model": NAME, "classes": ["circle", "square"], "image_size": 128,
                                              "origin": "none", "weights": "none"})
    (run / "job.json").write_text(json.dumps({"job_name": "tiny", "status": "Completed"}))
    images = sorted(p for p in (tiny_data / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return {"run": run, "images": images[:2]}


@pytest.mark.slow
def test_model_archive_served_by_the_pytorch_inference_toolkit(run, tmp_path):
    """Before the fix model_fn(model_dir, *, device=None) had two parameters: the toolkit called
    model_fn(model_dir, context) and every request failed (TypeError at model load)."""
    from odorch.deploy import PROGRAM, SUBMIT_DIR, package_model
    from odorch.runtime.inference import invoke

    model_dir = toolkits.extract_model(package_model(run["run"]), tmp_path)
    assert not (model_dir / "code/requirements.txt").exists()  # the toolkit would pip-install it at start-up
    jpg = run["images"][0].read_bytes()
    requests = [
        {"body": jpg, "content_type": "image/jpeg", "accept": "application/json"},
        {"body": jpg, "content_type": "application/x-image", "accept": "application/x-od-builtin"},
        {"body": b"x,y\n1,2\n", "content_type": "text/csv", "accept": "application/json"},
        {"body": b"not an image", "content_type": "image/png", "accept": "application/json"},
    ]
    got = toolkits.serve(model_dir, requests,
                         environment={"SAGEMAKER_PROGRAM": PROGRAM, "SAGEMAKER_SUBMIT_DIRECTORY": SUBMIT_DIR})
    assert [r["status"] for r in got] == [200, 200, 415, 400], [r["body"][:300] for r in got]
    assert got[0]["content_type"] == "application/json"
    served = json.loads(got[0]["body"])["predictions"][0]
    direct = json.loads(invoke(run["run"] / "model", jpg, "image/jpeg"))["predictions"][0]
    assert served["classes"] == direct["classes"] and served["labels"] == direct["labels"]
    assert served["scores"] == pytest.approx(direct["scores"], abs=1e-5)
    assert (served["width"], served["height"]) == (direct["width"], direct["height"])
    builtin = json.loads(got[1]["body"])["prediction"]
    assert len(builtin) == len(served["boxes"]) and all(0.0 <= v <= 1.0 for row in builtin for v in row[2:])
    assert b"unsupported content type 'text/csv'" in got[2]["body"]
    assert b"cannot be decoded as an image" in got[3]["body"]


def _request_hyperparameters(source: Path, **hp: str) -> dict[str, str]:
    """The CreateTrainingJob HyperParameters odorch sends, with sagemaker_submit_directory pointing at
    the local archive instead of its S3 copy (the toolkit takes either; here nothing reaches S3)."""
    from odorch.backends.sagemaker import training_job_request
    from tests.aws_harness import ROLE

    request = training_job_request(job_name="toolkit-job", region="us-east-1", role_arn=ROLE, bucket="b",
                                   hyperparameters={"model": NAME, **hp}, model=NAME, instance_type="ml.m5.xlarge",
                                   dataset_uri="s3://b/odorch/datasets/0/", source_uri="s3://b/odorch/jobs/x/source.tar.gz")
    hps = request["HyperParameters"]
    assert hps["sagemaker_program"] == "train.py" and hps["sagemaker_submit_directory"].startswith("s3://")
    assert all(isinstance(v, str) for v in hps.values())  # SageMaker takes a str -> str map
    return {**hps, "sagemaker_submit_directory": str(source)}


FAST = {"weights": "none", "image_size": "128", "batch_size": "2", "num_threads": "2", "num_workers": "0"}


@pytest.mark.slow
def test_source_archive_trained_by_the_training_toolkit(tiny_data, tmp_path):
    """sourcedir.tar.gz fetched, its requirements.txt installed and train.py run by the toolkit's own
    `train` entry, which passes the hyperparameters JSON-decoded (SM_HPS) and the SM_* paths."""
    from odorch.archive import package_source

    source = tmp_path / "sourcedir.tar.gz"
    source.write_bytes(package_source())
    hps = _request_hyperparameters(source, epochs="1", flip="true", lr="0.01", **FAST)
    ml = toolkits.opt_ml(tmp_path, hyperparameters=hps, channels={"train": tiny_data, "validation": tiny_data})
    done = subprocess.run(toolkits.train_command(), env=toolkits.train_env(ml, "toolkit-job"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Installing dependencies from requirements.txt" in out  # the archive's requirements.txt, as in the DLC
    assert re.search(r"epoch=1/1 .*validation:mAP=", out)
    assert (ml / "output/success").is_file() and not (ml / "output/failure").exists()
    saved = json.loads((ml / "model/config.json").read_text())
    assert saved["model"] == NAME and saved["hyperparameters"]["lr"] == 0.01 and saved["hyperparameters"]["flip"] is True
    assert (ml / "model/model.pth").is_file()
    assert (ml / "checkpoints/toolkit-job/checkpoint.pth").is_file()  # TRAINING_JOB_NAME's own folder


@pytest.mark.slow
@pytest.mark.skipif(not toolkits.can_be_pid_1(), reason="needs PID namespaces (unshare --pid) to run the DLC's shell as PID 1")
def test_sigterm_never_reaches_train_py_under_the_dlc_launch_so_it_checkpoints_on_time(tiny_data, tmp_path):
    """Defect 11, shown with the real toolkit: SIGTERM to the container's PID 1 (what StopTrainingJob
    and a spot interruption send) never reaches train.py (bash as PID 1 has no handler, so the
    kernel drops it; the toolkit forwards nothing), training goes on, and SageMaker's SIGKILL
    follows. So train.py also checkpoints every checkpoint_interval seconds: the restart resumes
    from the interval checkpoint written inside the interrupted epoch."""
    from odorch.archive import package_source

    source = tmp_path / "sourcedir.tar.gz"
    source.write_bytes(package_source())
    hps = _request_hyperparameters(source, epochs="4", checkpoint_interval="0.000001", **FAST)
    ml = toolkits.opt_ml(tmp_path, hyperparameters=hps, channels={"train": tiny_data, "validation": tiny_data})
    env = toolkits.train_env(ml, "toolkit-job")
    proc = toolkits.launch_dlc(ml, env)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "epoch=1/4" in line:
                os.kill(toolkits.init_pid(proc), signal.SIGTERM)  # docker stop: SIGTERM to PID 1
            if re.search(r"checkpoint: epoch 3, step 1/", line):
                break
        else:
            raise AssertionError("".join(lines)[-4000:])
        assert not any("stopped by SIGTERM" in line for line in lines)
        assert any("epoch=2/4" in line for line in lines)  # trained on after the SIGTERM
    finally:
        os.kill(toolkits.init_pid(proc), signal.SIGKILL)  # SageMaker's SIGKILL after the grace period
        proc.wait(timeout=60)
    state = torch.load(ml / "checkpoints/toolkit-job/checkpoint.pth", weights_only=True)
    assert state["epoch"] == 2  # saved inside epoch 3, which a restart trains again

    (ml / "output/failure").unlink(missing_ok=True)
    restart = subprocess.run(toolkits.train_command(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    out = restart.stdout + restart.stderr
    assert restart.returncode == 0, out[-4000:]
    assert re.search(r"resuming from .*checkpoint.pth: 2 epoch\(s\) done", out)
    assert "epoch=3/4" in out and "epoch=4/4" in out and "epoch=1/4" not in out

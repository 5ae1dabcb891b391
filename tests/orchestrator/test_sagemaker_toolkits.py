"""odorch's archives under the REAL SageMaker toolkits (sagemaker-training, sagemaker-inference,
sagemaker-pytorch-inference, TorchServe's Python worker), run as the PyTorch DLC images run them
(see tests/sagemaker_toolkits.py): model.tar.gz served through the handler service, and
sourcedir.tar.gz trained through the toolkit's `train` entry, each on a tiny untrained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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

"""odorch deploy / endpoints / predict --endpoint against moto on loopback (tests/aws_harness.py):
the endpoint is served by the REAL handler from the uploaded model.tar.gz."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.aws_harness import ROLE

BUCKET = "odorch-deploy"
NAME = "ssdlite320_mobilenet_v3_large"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_data):
    """A job folder with a small model (built and saved directly: no training needed) and a test image."""
    import numpy as np
    import torch
    from PIL import Image

    from odorch.runtime.models import build_model, save_model

    root = tmp_path_factory.mktemp("deploy")
    run = root / "runs" / "tiny-job"
    torch.manual_seed(0)
    model = build_model(NAME, ["circle", "square"], weights="none", image_size=128)
    with torch.no_grad():  # spread the head so that detections differ between images
        for p in model.head.parameters():
            p.normal_(0, 0.3)
    save_model(run / "model", model.eval(), {"model": NAME, "classes": ["circle", "square"], "image_size": 128,
                                              "origin": "none", "weights": "none"})
    (run / "job.json").write_text(json.dumps({"job_name": "tiny-job", "status": "Completed"}))
    images = sorted((tiny_data / "images").iterdir())
    jpg = next(p for p in images if p.suffix.lower() in (".jpg", ".jpeg"))
    rng = np.random.default_rng(0)
    png = root / "noise.png"
    Image.fromarray((rng.random((96, 112, 3)) * 255).astype("uint8")).save(png)
    return {"run": run, "jpg": jpg, "png": png}


@pytest.fixture
def dep(aws, monkeypatch):
    import odorch.deploy as backend

    monkeypatch.setattr(backend, "POLL_S", 0.01)
    aws.make_bucket(BUCKET)
    return aws


def _state(aws):
    b = aws.sm_backend()
    return sorted(b.endpoints), sorted(b.endpoint_configs), sorted(b._models)


def _deploy(runner, run, *extra):
    from odorch.cli import main

    return runner.invoke(main, ["deploy", str(run), "--instance", "ml.g4dn.xlarge", "--bucket", BUCKET, "--role", ROLE,
                                *extra])


def _same_detections(a, b):
    """Same detections as sets of (label, rounded box, rounded score): row order may differ."""
    def key(dets):
        return sorted((d["label"], tuple(round(v, 2) for v in d["box"]), round(d["score"], 3)) for d in dets)

    assert key(a) == key(b)


# ---------------------------------------------------------------- package


def test_package_model_contents_and_import(run_dir, tmp_path):
    from odorch.deploy import package_model

    data = package_model(run_dir["run"])
    assert data == package_model(run_dir["run"])  # deterministic
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all(m.mtime == 0 for m in members)
        tar.extractall(tmp_path / "model", filter="data")
    assert {"model.pth", "config.json", "code/inference.py",
            "code/odorch/__init__.py", "code/odorch/runtime/inference.py", "code/odorch/runtime/models.py"} <= set(names)
    assert "code/requirements.txt" not in names  # the serving toolkit would pip-install training packages
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import inference, odorch.runtime.models as m; "
        "assert m.__file__.startswith(sys.argv[1]), m.__file__; "
        "assert all(callable(getattr(inference, f)) for f in ('model_fn', 'input_fn', 'predict_fn', 'output_fn')); "
        "out = json.loads(inference.invoke(sys.argv[2], open(sys.argv[3], 'rb').read(), 'image/jpeg')); "
        "print(json.dumps(out['predictions'][0]['width']))"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model" / "code"), str(tmp_path / "model"),
                           str(run_dir["jpg"])], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == 128


# ---------------------------------------------------------------- deploy end to end


def test_deploy_predict_list_delete(dep, runner, run_dir, tmp_path):
    from odorch.cli import main

    result = _deploy(runner, run_dir["run"], "--endpoint-name", "odorch-tiny")
    assert result.exit_code == 0, result.output
    assert "InService" in result.output
    endpoints, configs, models = _state(dep)
    assert endpoints == ["odorch-tiny"] and len(configs) == 1 and len(models) == 1
    sm = dep.sagemaker
    desc = sm.describe_endpoint(EndpointName="odorch-tiny")
    assert desc["EndpointStatus"] == "InService"
    model = sm.describe_model(ModelName=models[0])
    container = model["PrimaryContainer"]
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/odorch/models/tiny-job/model.tar.gz"
    assert container["Environment"] == {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
    assert "pytorch-inference" in container["Image"] and "gpu" in container["Image"]
    assert model["ExecutionRoleArn"] == ROLE
    config = sm.describe_endpoint_config(EndpointConfigName=configs[0])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.xlarge"
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 1
    for arn in (desc["EndpointArn"], config["EndpointConfigArn"], model["ModelArn"]):
        assert {"Key": "odorch:job", "Value": "tiny-job"} in sm.list_tags(ResourceArn=arn)["Tags"]
    record = json.loads((run_dir["run"] / "endpoint.json").read_text())
    assert record["name"] == "odorch-tiny" and record["arn"] == desc["EndpointArn"]
    assert record["config"] == configs[0] and record["model"] == models[0]
    assert record["instance"] == "ml.g4dn.xlarge" and record["region"] == "us-east-1" and record["created"]

    # predict through the endpoint (real handler from the uploaded tar) == local predict
    images = [str(run_dir["jpg"]), str(run_dir["png"])]
    local = runner.invoke(main, ["predict", str(run_dir["run"]), *images, "--out", str(tmp_path / "local"), "--min-score", "0"])
    assert local.exit_code == 0, local.output
    remote = runner.invoke(main, ["predict", "--endpoint", "odorch-tiny", *images, "--out", str(tmp_path / "remote"), "--min-score", "0"])
    assert remote.exit_code == 0, remote.output
    assert [i["content_type"] for i in dep.invocations] == ["image/jpeg", "image/png"]
    local_records = json.loads((tmp_path / "local" / "predictions.json").read_text())
    remote_records = json.loads((tmp_path / "remote" / "predictions.json").read_text())
    assert [r["image"] for r in remote_records] == images
    assert any(r["detections"] for r in local_records)
    for a, b in zip(local_records, remote_records):
        _same_detections(a["detections"], b["detections"])
    assert {p.name for p in (tmp_path / "remote").glob("*.png")} == {Path(i).stem + ".png" for i in images}
    # RUN may be given too
    again = runner.invoke(main, ["predict", str(run_dir["run"]), str(run_dir["png"]), "--endpoint", "odorch-tiny",
                                 "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output

    listed = runner.invoke(main, ["endpoints", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["name"], r["status"], r["instance"], r["job"]) for r in rows] == [("odorch-tiny", "InService", "ml.g4dn.xlarge", "tiny-job")]
    table = runner.invoke(main, ["endpoints", "list"])
    assert "odorch-tiny" in table.output and "InService" in table.output

    deleted = runner.invoke(main, ["endpoints", "delete", "odorch-tiny"])
    assert deleted.exit_code == 0, deleted.output
    assert _state(dep) == ([], [], [])
    assert deleted.output.count("deleted") == 3
    gone = runner.invoke(main, ["endpoints", "delete", "odorch-tiny"])
    assert gone.exit_code == 0 and "nothing to delete" in gone.output


def test_status_progression_is_polled(dep, run_dir, tmp_path, monkeypatch):
    import shutil

    from odorch import deploy as backend
    from odorch.aws import AwsClients

    run = tmp_path / "run"
    shutil.copytree(run_dir["run"], run)
    dep.creating_polls = 3
    seen = []
    original = backend._sleep
    monkeypatch.setattr(backend, "_sleep", lambda s: (seen.append(dep.sm_backend().endpoints["odorch-tiny-job"].endpoint_status), original(0)))
    record = backend.deploy(AwsClients.from_env(), run, instance_type="m5.xlarge", bucket=BUCKET, role=ROLE)
    assert record["status"] == "InService" and record["instance"] == "ml.m5.xlarge"
    assert seen == ["Creating"] * 3
    assert "cpu" in dep.sm_backend()._models[record["model"]].primary_container["Image"]


# ---------------------------------------------------------------- failures clean up


@pytest.mark.parametrize("how", ["create", "failed", "interrupt"])
def test_failure_while_creating_leaves_nothing(dep, runner, run_dir, tmp_path, monkeypatch, how):
    import shutil

    from odorch import deploy as backend

    run = tmp_path / "run"
    shutil.copytree(run_dir["run"], run)
    (run / "endpoint.json").unlink(missing_ok=True)
    if how == "create":
        dep.fail_create_endpoint = "ResourceLimitExceeded: ml.g4dn.xlarge for endpoint usage is 0 instances"
    elif how == "failed":
        dep.endpoint_failure = "The primary container for production variant AllTraffic did not pass the ping health check."
    else:
        def interrupt(_s):
            raise KeyboardInterrupt

        monkeypatch.setattr(backend, "_sleep", interrupt)
    result = _deploy(runner, run, "--instance", "p3.2xlarge")
    assert result.exit_code == (130 if how == "interrupt" else 1), result.output
    assert _state(dep) == ([], [], [])
    assert not (run / "endpoint.json").exists()
    if how == "create":
        assert "ResourceLimitExceeded" in result.output
    if how == "failed":
        assert "ping health check" in result.output
    assert "deleted model" in result.output


def test_preflight_errors_create_nothing(dep, runner, run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--role", "not-a-role"], run_dir["run"], "not an IAM role ARN"),
        (["--instance", "ml.x9.huge"], run_dir["run"], "not a known SageMaker instance type"),
        ([], empty, "no model/model.pth"),
        (["--bucket", "no-such-bucket"], run_dir["run"], "no such bucket"),
    ]
    for extra, run, message in cases:
        result = _deploy(runner, run, *extra)
        assert result.exit_code == 1, result.output
        assert message in result.output
        assert _state(dep) == ([], [], [])
    assert [o["Key"] for o in dep.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])] == []


def test_help_imports_no_boto3_or_torch():
    code = ("import sys; from click.testing import CliRunner; from odorch.cli import main; "
            "r = CliRunner().invoke(main, ['deploy', '--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(main, ['endpoints', 'list', '--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('boto3', 'torch', 'botocore') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_invoke_with_a_bad_body_is_a_model_error(dep, run_dir):
    """The handler's 4xx reaches the client as SageMaker's ModelError, not as a 200."""
    import botocore.exceptions

    from odorch.aws import AwsClients
    from odorch.deploy import deploy

    clients = AwsClients.from_env("us-east-1")
    record = deploy(clients, run_dir["run"], instance_type="ml.g4dn.xlarge", bucket=BUCKET, role=ROLE, region="us-east-1")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        clients.runtime.invoke_endpoint(EndpointName=record["name"], ContentType="image/jpeg", Body=b"not a jpeg")
    assert err.value.response["Error"]["Code"] == "ModelError"

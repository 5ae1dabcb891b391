"""Issue 12's defects in the SageMaker path, one test each (the toolkit ones are in
test_sagemaker_toolkits.py, the IAM ones in test_iam.py)."""

from __future__ import annotations

import json
import os

import pytest

from tests.aws_harness import ROLE

BUCKET = "odorch-defects"


class ScriptedLogs:
    """A stand-in for the CloudWatch Logs client: GetLogEvents pages as CloudWatch can return them
    (empty pages with a new nextForwardToken mid-stream), which moto never does."""

    class exceptions:  # noqa: N801 - boto3's shape
        ResourceNotFoundException = LookupError

    def __init__(self, pages: dict[str | None, dict]) -> None:
        self.pages = pages

    def describe_log_streams(self, **kwargs):
        return {"logStreams": [{"logStreamName": "job/algo-1-1"}]}

    def get_log_events(self, *, nextToken=None, **kwargs):
        return self.pages[nextToken]


def test_log_following_reads_past_an_empty_page_until_the_token_stops_changing(tmp_path):
    """Defect 7: an empty page used to end the stream, losing everything after it."""
    from odorch.backends.sagemaker import LogFollower

    logs = ScriptedLogs({
        None: {"events": [], "nextForwardToken": "f/1"},
        "f/1": {"events": [{"message": "epoch=1/1 train:loss=0.5 validation:mAP=0.25"}], "nextForwardToken": "f/2"},
        "f/2": {"events": [], "nextForwardToken": "f/3"},
        "f/3": {"events": [{"message": "best validation:mAP 0.2500"}], "nextForwardToken": "f/4"},
        "f/4": {"events": [], "nextForwardToken": "f/4"},  # unchanged: the end, for now
    })
    from odorch.runs import new_record

    record = new_record(job_name="job", backend="sagemaker", job_dir=tmp_path)
    follower = LogFollower(logs, "job", tmp_path, record)
    assert follower.poll() == 2
    assert (tmp_path / "logs.txt").read_text().splitlines() == [
        "epoch=1/1 train:loss=0.5 validation:mAP=0.25", "best validation:mAP 0.2500"]
    assert follower.poll() == 0  # nothing new: asks from f/4 and stops


def test_builtin_od_refuses_cpu_instances(aws, tiny_data):
    """Defect 8: the built-in Object Detection algorithm trains on GPU instances only."""
    from odorch.backends.sagemaker import preflight_problems

    aws.make_bucket(BUCKET)
    clients = _clients()
    hps = {"epochs": "1"}
    _, problems = preflight_problems(clients, role_arn=ROLE, bucket=BUCKET, instance_type="ml.m5.xlarge",
                                     data_dir=tiny_data, hyperparameters=hps, algorithm="builtin-od")
    assert any("ml.m5.xlarge has no GPU" in p and "GPU instances only" in p for p in problems), problems
    _, problems = preflight_problems(clients, role_arn=ROLE, bucket=BUCKET, instance_type="ml.g5.xlarge",
                                     data_dir=tiny_data, hyperparameters=hps, algorithm="builtin-od")
    assert not any("GPU" in p for p in problems), problems
    _, problems = preflight_problems(clients, role_arn=ROLE, bucket=BUCKET, instance_type="ml.m5.xlarge",
                                     data_dir=tiny_data, hyperparameters={"epochs": "1"})
    assert not any("GPU" in p for p in problems), problems  # the PyTorch entrypoint runs on CPUs too


@pytest.mark.parametrize(("name", "value", "ok"), [
    ("momentum", "1", True), ("momentum", "0", False),
    ("weight_decay", "0", False), ("weight_decay", "0.5", True), ("weight_decay", "1", False),
    ("early_stopping_tolerance", "1", True), ("early_stopping_tolerance", "0", True),
    ("kv_store", "dist_sync", True), ("kv_store", "dist_async", True), ("kv_store", "local", False),
])
def test_builtin_od_ranges_are_the_documented_ones(name, value, ok):
    """Defect 13: momentum (0, 1], weight_decay (0, 1), early_stopping_tolerance [0, 1], kv_store taken."""
    from odorch.algorithms.builtin_od import hyperparameter_problems

    assert (hyperparameter_problems({name: value}) == []) == ok


def test_volume_holds_every_channel(tmp_path):
    """Defect 13: File mode downloads each channel onto the volume; train and validation are the same
    dataset, so a 24 GiB dataset needs 48 GiB plus room for code, checkpoints and the model."""
    from odorch.backends.sagemaker import VOLUME_GB, volume_size_gb

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    with open(data / "images" / "big.bin", "wb") as f:  # sparse: no disk used
        f.truncate(24 * 2**30)
    (data / "annotations.json").write_text(json.dumps({"images": []}))
    assert volume_size_gb({"train": data, "validation": data}) == VOLUME_GB + 49
    assert volume_size_gb({"train": data / "annotations.json"}) == VOLUME_GB + 1


def _clients():
    from odorch.aws import AwsClients

    return AwsClients.from_env()


def test_no_aws_profile_leaks_into_these_tests():
    assert os.environ.get("AWS_PROFILE") is None


def test_invoke_refuses_a_body_over_6_mib_before_calling(tmp_path):
    """Defect 13: InvokeEndpoint takes at most 6 MiB; a bigger image failed with SageMaker's error."""
    from odorch.deploy import DeployError, invoke_endpoint

    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * (6 * 2**20))
    with pytest.raises(DeployError, match=r"big.jpg: 6.0 MiB; InvokeEndpoint takes at most 6 MiB"):
        invoke_endpoint(None, "any", big)  # no client is needed: nothing is sent


def _run_with_model(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "model.pth").write_bytes(b"x")
    (run / "model" / "config.json").write_text("{}")
    return run


def test_deploy_preflight_refuses_training_only_types_and_takes_an_image_for_unknown_regions(aws, tmp_path):
    """Defect 13: ml.p3dn.24xlarge passed deploy preflight but cannot host; an unknown region's error
    said to pass an image URI and there was no option to (now --image)."""
    from odorch.deploy import preflight_deploy
    from odorch.errors import PreflightError

    aws.make_bucket(BUCKET)
    run = _run_with_model(tmp_path)
    kw = dict(bucket=BUCKET, role=ROLE)
    with pytest.raises(PreflightError, match=r"ml.p3dn.24xlarge' trains but cannot host"):
        preflight_deploy(_clients(), run, instance_type="ml.p3dn.24xlarge", region="us-east-1", **kw)
    with pytest.raises(PreflightError, match=r"no AWS Deep Learning Containers registry known for region 'xx-new-1'.*--image URI"):
        preflight_deploy(_clients(), run, instance_type="ml.g5.xlarge", region="xx-new-1", **kw)
    image = "123456789012.dkr.ecr.xx-new-1.amazonaws.com/my-serving:1.0"
    preflight_deploy(_clients(), run, instance_type="ml.g5.xlarge", region="xx-new-1", image=image, **kw)
    with pytest.raises(PreflightError, match=r"--image 'my-serving:1.0' is not an ECR image URI"):
        preflight_deploy(_clients(), run, instance_type="ml.g5.xlarge", region="xx-new-1", image="my-serving:1.0", **kw)


def test_train_uses_the_given_image_and_refuses_one_that_is_not_ecr(aws, tmp_path, tiny_data, runner):
    """Defect 13's training half: an unknown region's error says to pass an image URI; `train
    --image` with --instance is that option (the request carries it, and no DLC end-of-support
    warning applies to a user's image); a name that is not an ECR URI stops before any upload."""
    from odorch.cli import main

    aws.make_bucket(BUCKET)
    aws.on_create = lambda name, request: aws.run_job(name, logs=["epoch=1/1 validation:mAP=0.1"], billable=1)
    common = ["train", "--data", str(tiny_data), "--instance", "ml.g5.xlarge", "--bucket", BUCKET, "--role", ROLE,
              "--weights", "none", "--runs-dir", str(tmp_path / "runs")]
    bad = runner.invoke(main, [*common, "--job-name", "bad-image", "--image", "my-train:1.0"])
    assert bad.exit_code == 1 and "--image 'my-train:1.0' is not an ECR image URI" in bad.output, bad.output
    assert aws.requests == {} and not aws.s3.list_objects_v2(Bucket=BUCKET).get("Contents")
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-train:1.0"
    result = runner.invoke(main, [*common, "--job-name", "own-image", "--image", image])
    assert aws.requests["own-image"]["AlgorithmSpecification"]["TrainingImage"] == image, result.output
    assert "end of patch" not in result.output


def test_deploy_uses_the_given_image(aws, tmp_path, runner):
    from odorch.cli import main

    aws.make_bucket(BUCKET)
    run = _run_with_model(tmp_path)
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-serving:1.0"
    result = runner.invoke(main, ["deploy", str(run), "--instance", "ml.m5.xlarge", "--bucket", BUCKET, "--role", ROLE,
                                  "--image", image, "--no-wait", "--endpoint-name", "img"])
    assert result.exit_code == 0, result.output
    assert "end of patch" not in result.output  # a user's image is not in the DLC table
    model = aws.sagemaker.describe_model(ModelName=json.loads((run / "endpoint.json").read_text())["model"])
    assert model["PrimaryContainer"]["Image"] == image

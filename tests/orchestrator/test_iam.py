"""infra/iam's policies against every AWS call odorch makes: the moto harness records each call
(tests/aws_harness.py), tests/iam_policy.py turns it into IAM's authorization requests and
evaluates them with AWS's rules. The operator policy must allow every call of train (pytorch,
spot, several instances, builtin-od, jumpstart), tune (AMT of each algorithm), deploy, invoke, endpoints delete and stop;
the execution role must reach what SageMaker does on its behalf. The policies are linted with
parliament too."""

from __future__ import annotations

import json

import pytest

from tests import iam_policy
from tests.aws_harness import ACCOUNT, REGION

BUCKET = "odorch-iam"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/odorch-sagemaker-execution"  # the name the operator policy may pass
MODEL = "ssdlite320_mobilenet_v3_large"
FAST = {"model": MODEL, "weights": "none", "epochs": 1, "image_size": 128, "batch_size": 4}


def _operator():
    return [iam_policy.load_policy("operator-policy.json", bucket=BUCKET, account=ACCOUNT)]


def _execution():
    return [iam_policy.load_policy("execution-role-policy.json", bucket=BUCKET, account=ACCOUNT)]


def _assert_allowed(aws, policies=None):
    count, denied = iam_policy.denied_calls(aws.calls, policies or _operator(), region=REGION, account=ACCOUNT)
    assert count > 0
    assert denied == [], "\n".join(denied)
    return count


@pytest.fixture
def iam(aws, monkeypatch):
    import odorch.backends.sagemaker as backend
    import odorch.deploy as deploy

    monkeypatch.setattr(backend, "POLL_S", 0.02)
    monkeypatch.setattr(deploy, "POLL_S", 0.01)
    aws.make_bucket(BUCKET)
    return aws


def _clients():
    from odorch.aws import AwsClients

    return AwsClients.from_env()


def _canned(aws, tmp_path):
    from tests.aws_harness import tar_dir

    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "model.json").write_text("{}")
    tar = tar_dir(tmp_path / "m")
    lines = ["epoch=1/1 train:loss=1.0 validation:mAP=0.1 validation:mAP50=0.2",
             "#quality_metric: host=algo-1, epoch=0, validation mAP <score>=(0.1)"]
    aws.on_create = lambda name, request: aws.run_job(name, logs=lines, model_tar=tar, billable=60)


@pytest.mark.parametrize(("job", "options"), [
    ("pytorch", {}),
    ("spot", {"spot": True, "max_run": 3600}),
    ("multi", {"instance_count": 2}),
    ("builtin", {"algorithm": "builtin-od"}),
])
def test_train_calls_are_allowed_by_the_operator_policy(iam, tmp_path, tiny_data, job, options):
    """Defect 2: HeadBucket (the bucket check) needs s3:ListBucket with no s3:prefix: a StringLike
    condition on s3:prefix denied every train, tune and deploy."""
    from odorch.backends.sagemaker import run_sagemaker_job

    _canned(iam, tmp_path)
    hps = {"epochs": "1"} if job == "builtin" else dict(FAST)
    record = run_sagemaker_job(_clients(), job_name=f"iam-{job}", runs_dir=tmp_path / "runs", data_dir=tiny_data,
                               bucket=BUCKET, role_arn=ROLE, hyperparameters=hps, model=MODEL,
                               instance_type="ml.g5.xlarge", echo=None, **options)
    assert record.status == "Completed"
    operations = {c["operation"] for c in iam.calls}
    assert {"HeadBucket", "PutObject", "CreateTrainingJob", "DescribeTrainingJob", "GetLogEvents"} <= operations
    _assert_allowed(iam)


def test_stop_is_allowed_by_the_operator_policy(iam, tmp_path, tiny_data):
    from odorch.backends.sagemaker import run_sagemaker_job, stop_job

    iam.on_create = None  # the job stays InProgress until stopped
    with pytest.raises(KeyboardInterrupt):
        run_sagemaker_job(_clients(), job_name="iam-stop", runs_dir=tmp_path / "runs", data_dir=tiny_data,
                          bucket=BUCKET, role_arn=ROLE, hyperparameters=dict(FAST), model=MODEL,
                          instance_type="ml.g5.xlarge", echo=None, confirm=lambda q: False,
                          sleep=lambda s: (_ for _ in ()).throw(KeyboardInterrupt()))
    stop_job(_clients(), "iam-stop")
    assert iam.stop_calls == ["iam-stop"]
    _assert_allowed(iam)


@pytest.mark.parametrize("algorithm", ["pytorch", "builtin-od"])
def test_amt_tuning_is_allowed_by_the_operator_policy(iam, tmp_path, tiny_data, monkeypatch, algorithm):
    """Defect 3: the tuning request dropped odorch:job, which the policy requires to create (and stop) it."""
    from odorch.hpo.amt import run_amt_tuning
    from odorch.hpo.space import default_space, parse_space

    monkeypatch.setattr("odorch.hpo.summary.write_summary", lambda tune_dir, trials, **kw: {})  # not under test here
    if algorithm == "pytorch":
        fixed = {k: v for k, v in FAST.items() if k != "model"}
        space = {k: v for k, v in default_space(MODEL).items() if k not in fixed}
    else:
        fixed = {"epochs": "1"}
        space = parse_space({"learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True}})
    result = run_amt_tuning(data=tiny_data, model=MODEL, space=space, fixed=fixed, study="iam-amt", max_jobs=2,
                            max_parallel_jobs=1, instance="ml.g5.xlarge", bucket=BUCKET, role=ROLE, region=REGION,
                            strategy="Bayesian", early_stopping="Auto", warm_start=None, runs_dir=tmp_path / "runs",
                            algorithm=algorithm, clients=_clients(), poll_s=0.02, echo=None)
    assert result["status"] == "Completed"
    iam.calls.append({"service": "sagemaker", "operation": "StopHyperParameterTuningJob",
                      "params": {"HyperParameterTuningJobName": "iam-amt"}})  # what Ctrl-C sends (see test_amt)
    assert {"CreateHyperParameterTuningJob", "ListTrainingJobsForHyperParameterTuningJob"} <= {c["operation"] for c in iam.calls}
    _assert_allowed(iam)


@pytest.mark.slow
def test_deploy_invoke_delete_are_allowed(iam, tmp_path, tiny_data):
    """Deploy, InvokeEndpoint and endpoints delete under the operator policy; the endpoint's model
    archive (odorch/models/...) under the execution role (defect 4: it could not read it)."""
    import torch

    from odorch.deploy import delete_endpoint, deploy, invoke_endpoint
    from odorch.runtime.models import build_model, save_model

    run = tmp_path / "runs" / "iam-job"
    save_model(run / "model", build_model(MODEL, ["a", "b"], weights="none", image_size=128).eval(),
               {"model": MODEL, "classes": ["a", "b"], "image_size": 128, "origin": "none", "weights": "none"})
    (run / "job.json").write_text(json.dumps({"job_name": "iam-job", "status": "Completed"}))
    torch.manual_seed(0)
    record = deploy(_clients(), run, instance_type="ml.m5.xlarge", bucket=BUCKET, role=ROLE, endpoint_name="iam-ep")
    image = next(p for p in sorted((tiny_data / "images").iterdir()) if p.suffix.lower() in (".jpg", ".png"))
    assert "predictions" in invoke_endpoint(_clients(), "iam-ep", image)
    assert delete_endpoint(_clients(), "iam-ep")
    _assert_allowed(iam)
    # SageMaker, as the execution role, reads the model archive and pulls the serving image
    bucket_key = record["model_data"][len("s3://"):]
    account, _, rest = record["image"].partition(".dkr.ecr.")
    region, _, repository = rest.partition(".amazonaws.com/")
    for request in (iam_policy.Authorization("s3:GetObject", f"arn:aws:s3:::{bucket_key}"),
                    iam_policy.Authorization("ecr:BatchGetImage",
                                             f"arn:aws:ecr:{region}:{account}:repository/{repository.split(':')[0]}")):
        assert iam_policy.evaluate(_execution(), request) == "Allow", request


def test_execution_role_pulls_every_image_odorch_picks():
    """Defect 10: only the us-east-1 DLC account was allowed; built-in OD and other regions' DLC
    registries live in other accounts (China is another partition: a policy there is separate)."""
    from odorch import aws_tables

    policies = _execution()
    images = []
    for region in aws_tables.DLC_REGISTRIES:
        images += [aws_tables.training_image(region, "ml.g5.xlarge"), aws_tables.inference_image(region, "ml.m5.xlarge")]
    images += [aws_tables.builtin_od_image(region) for region in aws_tables.BUILTIN_OD_REGISTRIES]
    checked = 0
    for image in images:
        account, _, rest = image.partition(".dkr.ecr.")
        region, _, repository = rest.partition(".amazonaws.com")
        if region.startswith("cn-"):
            continue
        arn = f"arn:aws:ecr:{region}:{account}:repository/{repository.lstrip('/').split(':')[0]}"
        assert iam_policy.evaluate(policies, iam_policy.Authorization("ecr:BatchGetImage", arn)) == "Allow", arn
        checked += 1
    assert checked > 50


def test_evaluator_follows_aws_rules():
    """The evaluator itself: explicit deny wins, a condition on a missing key is false (but true with
    IfExists, Null or a negated operator), resource wildcards, tag conditions."""
    A = iam_policy.Authorization
    allow = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
             "Condition": {"StringLike": {"s3:prefix": "odorch/*"}}}
    policy = {"Statement": [allow]}
    assert iam_policy.evaluate([policy], A("s3:ListBucket", "arn:aws:s3:::b")) == "ImplicitDeny"  # defect 2's shape
    assert iam_policy.evaluate([policy], A("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": ["odorch/x"]})) == "Allow"
    assert iam_policy.evaluate([policy], A("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": ["other/"]})) == "ImplicitDeny"
    if_exists = {**allow, "Condition": {"StringLikeIfExists": {"s3:prefix": "odorch/*"}}}
    assert iam_policy.evaluate([{"Statement": [if_exists]}], A("s3:ListBucket", "arn:aws:s3:::b")) == "Allow"
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}
    assert iam_policy.evaluate([{"Statement": [if_exists, deny]}], A("s3:ListBucket", "arn:aws:s3:::b")) == "ExplicitDeny"
    tagged = {"Effect": "Allow", "Action": "sagemaker:Stop*", "Resource": "arn:aws:sagemaker:*:*:training-job/*",
              "Condition": {"Null": {"aws:ResourceTag/odorch:job": "false"}}}
    arn = "arn:aws:sagemaker:us-east-1:1:training-job/j"
    assert iam_policy.evaluate([{"Statement": tagged}], A("sagemaker:StopTrainingJob", arn)) == "ImplicitDeny"
    ok = A("sagemaker:StopTrainingJob", arn, {"aws:ResourceTag/odorch:job": ["j"]})
    assert iam_policy.evaluate([{"Statement": tagged}], ok) == "Allow"
    not_like = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Condition": {"StringNotLike": {"s3:x": "a*"}}}
    assert iam_policy.evaluate([{"Statement": not_like}], A("s3:GetObject", "arn:aws:s3:::b/k")) == "Allow"


def test_policies_pass_parliament(monkeypatch):
    """parliament (duo-labs) lints both identity policies: no finding. It imports pkg_resources,
    which setuptools >= 81 no longer ships: a two-line stand-in gives it its data files' paths."""
    import importlib.util
    import os
    import sys
    import types

    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: os.path.join(  # type: ignore[attr-defined]
            os.path.dirname(importlib.util.find_spec(package).origin), name)
        monkeypatch.setitem(sys.modules, "pkg_resources", shim)
    from parliament import analyze_policy_string

    for name in ("operator-policy.json", "execution-role-policy.json"):
        text = json.dumps(iam_policy.load_policy(name, bucket=BUCKET, account=ACCOUNT))
        findings = [f"{f.issue} {f.detail} {f.location}" for f in analyze_policy_string(text).findings]
        assert findings == [], (name, findings)


def test_jumpstart_train_tune_deploy_invoke_are_allowed(iam, tmp_path, tiny_data, monkeypatch):
    """--algorithm jumpstart reads the region's public JumpStart bucket (jumpstart-cache-prod-REGION:
    manifest, spec, and on deploy the hosting script): the operator policy allows that, and the
    execution role reads the script and the pretrained model (the "model" channel, an S3 prefix)."""
    from odorch.algorithms import get_algorithm
    from odorch.backends.sagemaker import run_sagemaker_job
    from odorch.deploy import delete_endpoint, deploy, invoke_endpoint
    from odorch.hpo.amt import run_amt_tuning
    from odorch.hpo.space import Param
    from tests.orchestrator.test_jumpstart import MODEL as JS_MODEL
    from tests.orchestrator.test_jumpstart import publish_jumpstart

    monkeypatch.delenv("AWS_JUMPSTART_CONTENT_BUCKET_OVERRIDE", raising=False)
    monkeypatch.setattr("odorch.hpo.summary.write_summary", lambda tune_dir, trials, **kw: {})  # not under test here
    publish_jumpstart(iam, f"jumpstart-cache-prod-{REGION}")
    _canned(iam, tmp_path)
    algo = get_algorithm("jumpstart").for_model(JS_MODEL, clients=_clients())
    record = run_sagemaker_job(_clients(), job_name="iam-js", runs_dir=tmp_path / "runs", data_dir=tiny_data,
                               bucket=BUCKET, role_arn=ROLE, hyperparameters={"epochs": "1"}, model=JS_MODEL,
                               instance_type="ml.g5.xlarge", echo=None, algorithm=algo)
    assert record.status == "Completed"
    space = {"adam-learning-rate": Param("adam-learning-rate", "float", low=1e-4, high=1e-2, log=True)}
    tuned = run_amt_tuning(data=tiny_data, model=JS_MODEL, space=space, fixed={"epochs": "1"}, study="iam-js-amt",
                           max_jobs=1, max_parallel_jobs=1, instance="ml.g5.xlarge", bucket=BUCKET, role=ROLE,
                           region=REGION, runs_dir=tmp_path / "runs", algorithm=algo, clients=_clients(),
                           poll_s=0.02, echo=None)
    assert tuned["status"] == "Completed"
    # the JumpStart inference container cannot run here: a stand-in answers in its verbose format
    monkeypatch.setattr(iam, "serve", lambda *a, **k: (200, json.dumps(
        {"normalized_boxes": [[0.1, 0.1, 0.5, 0.5]], "classes": [0.0], "scores": [0.9], "labels": ["a"]}).encode()))
    deploy(_clients(), tmp_path / "runs" / "iam-js", instance_type="ml.g4dn.xlarge", bucket=BUCKET, role=ROLE,
           endpoint_name="iam-js-ep")
    image = next(p for p in sorted((tiny_data / "images").iterdir()) if p.suffix.lower() in (".jpg", ".png"))
    assert invoke_endpoint(_clients(), "iam-js-ep", image, algorithm=algo)["predictions"][0]["classes"] == ["a"]
    assert delete_endpoint(_clients(), "iam-js-ep")
    read = {c["params"].get("Key") for c in iam.calls
            if c["operation"] == "GetObject" and c["params"]["Bucket"] == f"jumpstart-cache-prod-{REGION}"}
    assert "models_manifest.json" in read and algo.spec["hosting_script_key"] in read
    _assert_allowed(iam)
    request = iam.requests["iam-js"]
    model_uri = next(c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]
                     if c["ChannelName"] == "model")
    script_uri = request["HyperParameters"]["sagemaker_submit_directory"]
    for uri in (model_uri, script_uri):
        bucket, _, key = uri[len("s3://"):].partition("/")
        assert bucket == f"jumpstart-cache-prod-{REGION}"
        assert iam_policy.evaluate(_execution(), iam_policy.Authorization("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")) == "Allow"
        listing = iam_policy.Authorization("s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": [key]})
        assert iam_policy.evaluate(_execution(), listing) == "Allow"

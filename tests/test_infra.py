"""Static checks of infra/: the IAM documents parse, are well formed and least-privilege; the Dockerfile
installs the entrypoints' requirements and names the SageMaker program."""

import json
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parent.parent / "infra"
POLICIES = sorted((INFRA / "iam").glob("*.json"))
BROAD = {"*", "sagemaker:*", "s3:*", "iam:*", "logs:*", "ecr:*", "cloudwatch:*", "sts:*"}


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _load(path):
    return json.loads(path.read_text())


def test_expected_policies_exist():
    names = {p.name for p in POLICIES}
    assert {"execution-role-policy.json", "execution-role-trust.json", "operator-policy.json"} <= names


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_policy_is_well_formed(path):
    doc = _load(path)
    assert doc["Version"] == "2012-10-17"
    statements = _as_list(doc["Statement"])
    assert statements
    trust = "trust" in path.name
    sids = [s.get("Sid") for s in statements if "Sid" in s]
    assert len(sids) == len(set(sids)), "duplicate Sid"
    for s in statements:
        assert s["Effect"] in ("Allow", "Deny")
        assert s["Action"]
        if trust:
            assert s["Principal"]
            assert "Resource" not in s
        else:
            assert "Principal" not in s
            assert s["Resource"]
        for action in _as_list(s["Action"]):
            assert action not in BROAD, f"{path.name}: wildcard action {action!r}"
            assert ":" in action


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_no_wildcard_resource_except_where_iam_allows_nothing_narrower(path):
    # these actions have no resource-level permissions in IAM, so "*" is the only choice
    unscoped_ok = {
        "ecr:GetAuthorizationToken",
        "cloudwatch:PutMetricData",
        "sagemaker:ListTrainingJobs",
        "sagemaker:ListHyperParameterTuningJobs",
        "sagemaker:ListEndpoints",
    }
    for s in _as_list(_load(path)["Statement"]):
        if "*" in _as_list(s.get("Resource", [])):
            assert set(_as_list(s["Action"])) <= unscoped_ok, s.get("Sid")


def test_trust_policy_trusts_sagemaker_only():
    doc = _load(INFRA / "iam" / "execution-role-trust.json")
    (s,) = _as_list(doc["Statement"])
    assert s["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert s["Action"] == "sts:AssumeRole"


def _statements_with(doc, action):
    return [s for s in _as_list(doc["Statement"]) if action in _as_list(s["Action"])]


def test_execution_role_scopes():
    doc = _load(INFRA / "iam" / "execution-role-policy.json")
    (put,) = _statements_with(doc, "s3:PutObject")
    assert _as_list(put["Resource"]) == ["arn:aws:s3:::BUCKET/odorch/jobs/*"]  # never writes datasets
    get, jumpstart = _statements_with(doc, "s3:GetObject")
    assert set(_as_list(get["Resource"])) == {"arn:aws:s3:::BUCKET/odorch/datasets/*", "arn:aws:s3:::BUCKET/odorch/jobs/*",
                                              "arn:aws:s3:::BUCKET/odorch/models/*"}  # an endpoint loads odorch/models/
    assert _as_list(jumpstart["Resource"]) == ["arn:aws:s3:::jumpstart-cache-prod-*/*"]  # JumpStart's public content
    jumpstart_ls, ls = _statements_with(doc, "s3:ListBucket")
    assert ls["Condition"]["StringLike"]["s3:prefix"] == ["odorch/*"]
    assert _as_list(jumpstart_ls["Resource"]) == ["arn:aws:s3:::jumpstart-cache-prod-*"]
    (metrics,) = _statements_with(doc, "cloudwatch:PutMetricData")
    assert metrics["Condition"]["StringLike"]["cloudwatch:namespace"] == "/aws/sagemaker/*"
    for action in ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"):
        (s,) = _statements_with(doc, action)
        assert all(":log-group:/aws/sagemaker/" in r for r in _as_list(s["Resource"]))
    for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
        assert _statements_with(doc, action)


def test_operator_policy_scopes():
    doc = _load(INFRA / "iam" / "operator-policy.json")
    (pass_role,) = _statements_with(doc, "iam:PassRole")
    assert pass_role["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com"
    assert all(r.startswith("arn:aws:iam::ACCOUNT:role/") for r in _as_list(pass_role["Resource"]))
    (create,) = _statements_with(doc, "sagemaker:CreateTrainingJob")
    assert "aws:RequestTag/odorch:job" in json.dumps(create.get("Condition", {}))
    needed = [
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
        "sagemaker:ListTrainingJobs", "sagemaker:CreateHyperParameterTuningJob",
        "sagemaker:DescribeHyperParameterTuningJob", "sagemaker:StopHyperParameterTuningJob",
        "sagemaker:ListTrainingJobsForHyperParameterTuningJob", "sagemaker:CreateModel",
        "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint",
        "sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel",
        "sagemaker:ListEndpoints", "sagemaker:AddTags", "sagemaker:InvokeEndpoint",
        "s3:PutObject", "s3:GetObject", "s3:ListBucket",
        "logs:GetLogEvents", "logs:DescribeLogStreams", "logs:FilterLogEvents",
    ]  # fmt: skip
    for action in needed:
        assert _statements_with(doc, action), action
    for s in _statements_with(doc, "s3:PutObject"):
        assert all(r.startswith("arn:aws:s3:::BUCKET/odorch/") for r in _as_list(s["Resource"]))


def test_dockerfile_installs_requirements_and_names_program():
    text = (INFRA / "Dockerfile").read_text()
    assert "entrypoints/requirements.txt" in text
    assert "SAGEMAKER_PROGRAM" in text
    assert "ARG TRAIN_BASE=" in text and "FROM ${TRAIN_BASE}" in text
    assert "from odorch.runtime.train import main" in text
    assert (Path(__file__).resolve().parent.parent / "entrypoints" / "requirements.txt").is_file()


def test_dockerfile_bases_match_aws_tables():
    from odorch import aws_tables

    text = (INFRA / "Dockerfile").read_text()
    assert f"pytorch-training:{aws_tables.TRAINING_TAG_GPU}" in text
    assert f"pytorch-inference:{aws_tables.INFERENCE_TAG_GPU}" in text


def test_readme_documents_placeholders():
    text = (INFRA / "README.md").read_text()
    for word in ("BUCKET", "ACCOUNT", "create-role", "put-role-policy", "AWS_ENDPOINT_URL"):
        assert word in text

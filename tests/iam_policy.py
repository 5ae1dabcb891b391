"""AWS's IAM policy evaluation, the part odorch's policies use, for the tests: each AWS call odorch
makes (recorded by tests/aws_harness.py) becomes the authorization requests AWS makes of it
(action, resource ARN, request context), and each is evaluated against the identity policies in
infra/iam the way IAM does for one account: an explicit Deny wins, else an Allow whose Action,
Resource and every Condition match, else an implicit deny.

Written here because no maintained Python library evaluates requests against policies:
parliament and cloudsplaining lint, policy_sentry writes policies, moto's evaluator ignores
most condition operators and turns a failed condition on an Allow into a Deny, and AWS's
own simulator (iam:SimulateCustomPolicy) needs an AWS account.

Condition operators: String{Equals,NotEquals,EqualsIgnoreCase,Like,NotLike}, Arn{Equals,Like,
NotEquals,NotLike}, Bool, Null, the IfExists suffix and the ForAnyValue/ForAllValues prefixes.
A key missing from the request makes a condition false, except Null, ...IfExists, the negated
operators and ForAllValues (AWS's rules).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INFRA = Path(__file__).resolve().parent.parent / "infra" / "iam"
SAGEMAKER = "sagemaker.amazonaws.com"


@dataclass
class Authorization:
    """One request IAM evaluates: what a call needs (a call may need several)."""

    action: str
    resource: str
    context: dict[str, list[str]] = field(default_factory=dict)
    call: str = ""


def load_policy(name: str, *, bucket: str, account: str) -> dict[str, Any]:
    """infra/iam/NAME with its placeholders replaced, as infra/README.md says to."""
    text = (INFRA / name).read_text().replace("BUCKET", bucket).replace("ACCOUNT", account)
    return json.loads(text)


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _base_match(op: str, wanted: str, got: str) -> bool:
    if op in ("StringEquals", "ArnEquals", "Bool"):
        return wanted == got if op != "Bool" else wanted.lower() == got.lower()
    if op == "StringEqualsIgnoreCase":
        return wanted.lower() == got.lower()
    if op in ("StringLike", "ArnLike"):
        return _wildcard(wanted, got)
    raise ValueError(f"condition operator {op} is not supported by tests/iam_policy.py: add it")


NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals",
           "ArnNotLike": "ArnLike", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase"}


def condition_holds(operator: str, key: str, wanted: Any, context: dict[str, list[str]]) -> bool:
    """One (operator, key, values) of a Condition block against the request context."""
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    wanted = [str(w) for w in _listify(wanted)]
    got = context.get(key)
    if op == "Null":  # "true": the key must be absent
        return (got is None) == (wanted[0].lower() == "true")
    if got is None:
        return if_exists or op in NEGATED or qualifier == "ForAllValues"
    negated = op in NEGATED
    base = NEGATED.get(op, op)
    if qualifier == "ForAllValues":
        hit = all(any(_base_match(base, w, g) for w in wanted) for g in got)
    else:  # single-valued keys and ForAnyValue: any request value matching any policy value
        hit = any(_base_match(base, w, g) for w in wanted for g in got)
    return not hit if negated else hit


def _statement_applies(statement: dict[str, Any], request: Authorization) -> bool:
    if "Action" in statement:
        if not any(_wildcard(a, request.action, ignore_case=True) for a in _listify(statement["Action"])):
            return False
    elif any(_wildcard(a, request.action, ignore_case=True) for a in _listify(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_wildcard(r, request.resource) for r in _listify(statement["Resource"])):
            return False
    elif any(_wildcard(r, request.resource) for r in _listify(statement.get("NotResource", []))):
        return False
    for operator, block in (statement.get("Condition") or {}).items():
        for key, wanted in block.items():
            if not condition_holds(operator, key, wanted, request.context):
                return False
    return True


def evaluate(policies: list[dict[str, Any]], request: Authorization) -> str:
    """"Allow", "ExplicitDeny" or "ImplicitDeny" for REQUEST under the identity POLICIES."""
    allowed = False
    for policy in policies:
        for statement in _listify(policy["Statement"]):
            if _statement_applies(statement, request):
                if statement["Effect"] == "Deny":
                    return "ExplicitDeny"
                allowed = True
    return "Allow" if allowed else "ImplicitDeny"


# ---------------------------------------------------------------- calls -> authorizations

S3_OBJECT_ACTIONS = {
    "PutObject": "s3:PutObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload", "DeleteObject": "s3:DeleteObject",
}
SAGEMAKER_RESOURCES = {  # operation -> (ARN resource type, the parameter naming it)
    "TrainingJob": ("training-job", "TrainingJobName"),
    "HyperParameterTuningJob": ("hyper-parameter-tuning-job", "HyperParameterTuningJobName"),
    "TrainingJobsForHyperParameterTuningJob": ("hyper-parameter-tuning-job", "HyperParameterTuningJobName"),
    "EndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "Endpoint": ("endpoint", "EndpointName"),
    "Model": ("model", "ModelName"),
}
NO_RESOURCE = ("ListTrainingJobs", "ListHyperParameterTuningJobs", "ListEndpoints", "ListModels", "ListEndpointConfigs")


def _tag_context(tags: list[dict[str, str]] | dict[str, str], prefix: str) -> dict[str, list[str]]:
    pairs = tags.items() if isinstance(tags, dict) else ((t["Key"], t["Value"]) for t in tags)
    context = {f"aws:{prefix}/{k}": [v] for k, v in pairs}
    if prefix == "RequestTag" and context:
        context["aws:TagKeys"] = [k.split("/", 1)[1] for k in context]
    return context


def _sagemaker_arn(operation: str, params: dict[str, Any], region: str, account: str) -> str:
    if operation in NO_RESOURCE:
        return "*"
    if operation in ("ListTags", "AddTags", "DeleteTags"):
        return params["ResourceArn"]
    for suffix in sorted(SAGEMAKER_RESOURCES, key=len, reverse=True):
        if operation.endswith(suffix):
            kind, param = SAGEMAKER_RESOURCES[suffix]
            return f"arn:aws:sagemaker:{region}:{account}:{kind}/{params[param]}"
    raise ValueError(f"sagemaker:{operation}: no resource mapping in tests/iam_policy.py: add it")


def authorizations(call: dict[str, Any], *, region: str, account: str,
                   tags_of: Callable[[str], dict[str, str]]) -> list[Authorization]:
    """What AWS authorizes for one recorded call ({"service", "operation", "params"});
    tags_of(arn) gives a resource's tags when the call is made (aws:ResourceTag/...)."""
    service, op, params = call["service"], call["operation"], call["params"]
    name = f"{service}:{op}"
    if service == "s3":
        bucket = f"arn:aws:s3:::{params['Bucket']}"
        if op == "HeadBucket":  # needs ListBucket, and sends no prefix
            return [Authorization("s3:ListBucket", bucket, {}, name)]
        if op in ("ListObjectsV2", "ListObjects"):
            context = {"s3:prefix": [params["Prefix"]]} if "Prefix" in params else {}
            return [Authorization("s3:ListBucket", bucket, context, name)]
        if op == "GetBucketLocation":
            return [Authorization("s3:GetBucketLocation", bucket, {}, name)]
        if op in S3_OBJECT_ACTIONS:
            return [Authorization(S3_OBJECT_ACTIONS[op], f"{bucket}/{params['Key']}", {}, name)]
    elif service == "sagemaker":
        arn = _sagemaker_arn(op, params, region, account)
        if op.startswith("Create"):
            context = _tag_context(params.get("Tags", []), "RequestTag")
            out = [Authorization(f"sagemaker:{op}", arn, context, name)]
            if params.get("Tags"):  # creating with tags is also AddTags
                out.append(Authorization("sagemaker:AddTags", arn, context, name))
            definition = params.get("TrainingJobDefinition") or {}
            role = params.get("RoleArn") or params.get("ExecutionRoleArn") or definition.get("RoleArn")
            if role:
                out.append(Authorization("iam:PassRole", role, {"iam:PassedToService": [SAGEMAKER]}, name))
            return out
        context = _tag_context(tags_of(arn), "ResourceTag") if arn != "*" else {}
        return [Authorization(f"sagemaker:{op}", arn, context, name)]
    elif service == "sagemaker-runtime" and op == "InvokeEndpoint":
        return [Authorization("sagemaker:InvokeEndpoint",
                              f"arn:aws:sagemaker:{region}:{account}:endpoint/{params['EndpointName']}", {}, name)]
    elif service == "logs":
        group = f"arn:aws:logs:{region}:{account}:log-group:{params['logGroupName']}"
        if op == "GetLogEvents":
            return [Authorization("logs:GetLogEvents", f"{group}:log-stream:{params['logStreamName']}", {}, name)]
        if op in ("DescribeLogStreams", "FilterLogEvents"):
            return [Authorization(f"logs:{op}", group, {}, name)]
    elif service == "sts" and op == "GetCallerIdentity":
        return []  # needs no permission
    raise ValueError(f"{name}: no IAM mapping in tests/iam_policy.py: add it (nothing is skipped silently)")


def denied_calls(calls: list[dict[str, Any]], policies: list[dict[str, Any]], *, region: str,
                 account: str) -> tuple[int, list[str]]:
    """(how many authorizations were evaluated, one line per denied one) for CALLS in order. A
    resource's tags are those its Create call sent (the operator creates everything it stops or
    deletes; AMT gives a tuning job's tags to its children)."""
    tags: dict[str, dict[str, str]] = {}
    count, denied = 0, []
    for call in calls:
        for request in authorizations(call, region=region, account=account, tags_of=lambda arn: tags.get(arn, {})):
            count += 1
            outcome = evaluate(policies, request)
            if outcome != "Allow":
                denied.append(f"{outcome}: {request.call} needs {request.action} on {request.resource} "
                              f"(context {request.context})")
        if call["operation"].startswith("Create") and call["service"] == "sagemaker" and call["params"].get("Tags"):
            arn = _sagemaker_arn(call["operation"], call["params"], region, account)
            tags[arn] = {t["Key"]: t["Value"] for t in call["params"]["Tags"]}
    return count, denied

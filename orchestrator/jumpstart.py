"""SageMaker JumpStart fine-tuning without the `sagemaker` SDK: what the SDK reads from the region's
public JumpStart bucket and how it turns a model's spec into a training job.

    s3://jumpstart-cache-prod-{region}/models_manifest.json   [{model_id, version, min_version, spec_key}]
    s3://jumpstart-cache-prod-{region}/<spec_key>              the model's spec (JSON)

``AWS_JUMPSTART_CONTENT_BUCKET_OVERRIDE`` replaces the bucket, as in the SDK. A job of a spec runs
its training image (``training_instance_type_variants``: the full instance type, then the family,
``$alias`` resolved per region) with ``sagemaker_program=transfer_learning.py`` from the spec's
script tarball, the pretrained artifact as the ``model`` channel, the spec's hyperparameters
(defaults, checked against type/min/max/options) and metrics, and the SDK's model-id/version tags.
"""

from __future__ import annotations

import json
import os
from typing import Any

from odorch.errors import SageMakerError

BUCKET_OVERRIDE_ENV = "AWS_JUMPSTART_CONTENT_BUCKET_OVERRIDE"
MANIFEST_KEY = "models_manifest.json"
PROGRAM = "transfer_learning.py"
MODEL_CONTENT_TYPE = "application/x-sagemaker-model"
OD_TASKS = ("od", "od1")  # the task part of a model id: {framework}-{task}-{name}


class JumpStartError(SageMakerError):
    """A JumpStart model, version, spec or hyperparameter odorch cannot use; the message says why."""


def content_bucket(region: str) -> str:
    return os.environ.get(BUCKET_OVERRIDE_ENV) or f"jumpstart-cache-prod-{region}"


def _read_json(s3: Any, bucket: str, key: str) -> Any:
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        raise JumpStartError(f"s3://{bucket}/{key}: {e.response.get('Error', {}).get('Code', e)}; "
                             f"check --region (or {BUCKET_OVERRIDE_ENV})") from e
    try:
        return json.loads(body)
    except ValueError as e:
        raise JumpStartError(f"s3://{bucket}/{key}: not JSON ({e})") from e


def read_manifest(s3: Any, region: str) -> list[dict[str, Any]]:
    manifest = _read_json(s3, content_bucket(region), MANIFEST_KEY)
    if not isinstance(manifest, list) or not all(isinstance(m, dict) and {"model_id", "version", "spec_key"} <= set(m)
                                                 for m in manifest):
        raise JumpStartError(f"s3://{content_bucket(region)}/{MANIFEST_KEY}: expected a list of "
                             "{model_id, version, spec_key} entries")
    return manifest


def _version(text: str) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


def manifest_entry(manifest: list[dict[str, Any]], model_id: str, version: str | None = None) -> dict[str, Any]:
    """The entry of MODEL_ID at VERSION, or its newest version."""
    entries = [m for m in manifest if m["model_id"] == model_id]
    if not entries:
        close = sorted({m["model_id"] for m in manifest if model_id.split("-")[0] in m["model_id"]})[:10]
        raise JumpStartError(f"--model {model_id}: no such JumpStart model in the manifest"
                             + (f"; e.g. {', '.join(close)}" if close else "") + " (odorch models --jumpstart lists them)")
    if version in (None, "*"):
        return max(entries, key=lambda m: _version(m["version"]))
    for m in entries:
        if m["version"] == version:
            return m
    raise JumpStartError(f"--model {model_id} has no version {version}; versions: "
                         f"{', '.join(sorted((m['version'] for m in entries), key=_version))}")


def read_spec(s3: Any, region: str, model_id: str, version: str | None = None, *,
              allow_deprecated: bool = False) -> dict[str, Any]:
    """The spec of MODEL_ID (newest version by default); a deprecated one is refused with its message."""
    entry = manifest_entry(read_manifest(s3, region), model_id, version)
    spec = _read_json(s3, content_bucket(region), entry["spec_key"])
    if spec.get("deprecated") and not allow_deprecated:
        raise JumpStartError(f"--model {model_id} {entry['version']} is deprecated: "
                             f"{spec.get('deprecated_message') or 'no reason given'} (to use it anyway, name its version: "
                             f"--model {model_id}@{entry['version']})")
    if not spec.get("training_supported"):
        raise JumpStartError(f"--model {model_id} {entry['version']} cannot be fine-tuned (training_supported is false)")
    return {**spec, "model_id": model_id, "version": entry["version"]}


def training_image(spec: dict[str, Any], region: str, instance_type: str) -> str:
    """The image of the full instance type's variant, else its family's; "$alias" resolved for the region."""
    image = _variant_image(spec, "training_instance_type_variants", region, instance_type, "training")
    if image:
        return image
    supported = spec.get("supported_training_instance_types") or []
    raise JumpStartError(f"--instance {instance_type}: --model {spec['model_id']} has no training image for it; "
                         f"supported: {', '.join(supported) or 'none listed'}")


def _typed(kind: str, value: str) -> Any:
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if str(value).strip().lower() not in ("true", "false"):
            raise ValueError("must be True or False")
        return str(value).strip().lower() == "true"
    return str(value)


def hyperparameters(spec: dict[str, Any], given: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The spec's algorithm hyperparameters with their defaults, overridden by GIVEN (strings to
    send), and each problem (unknown name, wrong type, out of min/max, not among options)."""
    defined = {h["name"]: h for h in spec.get("hyperparameters", []) if h.get("scope", "algorithm") == "algorithm"}
    out = {name: str(h["default"]) for name, h in defined.items() if h.get("default") is not None}
    problems = [f"hyperparameter {name} is not one of {spec['model_id']}'s: {', '.join(defined)}"
                for name in given if name not in defined]
    for name, raw in given.items():
        if name not in defined:
            continue
        h, text = defined[name], str(raw).strip()
        try:
            value = _typed(h.get("type", "text"), text)
        except ValueError:
            problems.append(f"hyperparameter {name}={text!r}: must be {h.get('type')}")
            continue
        if h.get("min") is not None and value < h["min"] or h.get("max") is not None and value > h["max"]:
            problems.append(f"hyperparameter {name}={text}: must be in [{h.get('min')}, {h.get('max')}]")
        elif h.get("options") and value not in h["options"] and text not in [str(o) for o in h["options"]]:
            problems.append(f"hyperparameter {name}={text}: use one of {', '.join(map(str, h['options']))}")
        out[name] = text
    return out, problems


def script_uri(spec: dict[str, Any], region: str) -> str:
    """The training script tarball (the prepacked one when the spec has it): sagemaker_submit_directory."""
    script = spec.get("training_prepacked_script_key") or spec.get("training_script_key")
    if not script:
        raise JumpStartError(f"--model {spec['model_id']}: its spec names no training script")
    return f"s3://{content_bucket(region)}/{script}"


def artifact_uri(spec: dict[str, Any], region: str) -> str:
    """The pretrained model the script fine-tunes: the job's "model" channel."""
    if not spec.get("training_artifact_key"):
        raise JumpStartError(f"--model {spec['model_id']}: its spec names no training artifact")
    return f"s3://{content_bucket(region)}/{spec['training_artifact_key']}"


def sdk_tags(spec: dict[str, Any]) -> list[dict[str, str]]:
    """The tags the SDK puts on a JumpStart job (SageMaker Studio lists jobs by them)."""
    return [{"Key": "sagemaker-sdk:jumpstart-model-id", "Value": spec["model_id"]},
            {"Key": "sagemaker-sdk:jumpstart-model-version", "Value": spec["version"]}]


def _variant_image(spec: dict[str, Any], key: str, region: str, instance_type: str, what: str) -> str | None:
    variants = spec.get(key) or {}
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else instance_type
    for name in (instance_type, family):
        uri = ((variants.get("variants") or {}).get(name) or {}).get("regional_properties", {}).get("image_uri")
        if uri and uri.startswith("$"):
            aliases = (variants.get("regional_aliases") or {}).get(region) or {}
            if uri[1:] not in aliases:
                raise JumpStartError(f"--model {spec['model_id']}: no {what} image in {region} "
                                     f"(alias {uri} not listed for the region)")
            return str(aliases[uri[1:]])
        if uri:
            return str(uri)
    return None


def hosting_container(spec: dict[str, Any], region: str, instance_type: str, model_data: str) -> dict[str, Any]:
    """CreateModel's PrimaryContainer for a model fine-tuned from SPEC: the image of
    ``hosting_instance_type_variants`` (full type, then family), the spec's inference environment (container scope) and the model data (which
    holds the hosting script under code/, see the algorithm's repacking)."""
    image = _variant_image(spec, "hosting_instance_type_variants", region, instance_type, "hosting")
    if not image:
        supported = spec.get("supported_inference_instance_types") or []
        raise JumpStartError(f"--instance {instance_type}: --model {spec['model_id']} has no hosting image for it; "
                             f"supported: {', '.join(supported) or 'none listed'}")
    environment = {v["name"]: str(v["default"]) for v in spec.get("inference_environment_variables", [])
                   if v.get("scope", "container") == "container" and v.get("default") is not None}
    return {"Image": image, "ModelDataUrl": model_data, "Environment": environment}


def hosting_script_uri(spec: dict[str, Any], region: str) -> str:
    if not spec.get("hosting_script_key"):
        raise JumpStartError(f"--model {spec['model_id']}: its spec names no hosting script (hosting_script_key)")
    return f"s3://{content_bucket(region)}/{spec['hosting_script_key']}"


def od_models(s3: Any, region: str) -> list[dict[str, Any]]:
    """The fine-tunable object-detection models of the manifest, newest version each:
    [{model_id, version, default_instance}] (deprecated ones and those without training left out)."""
    manifest = read_manifest(s3, region)
    out = []
    for model_id in sorted({m["model_id"] for m in manifest}):
        parts = model_id.split("-")
        if len(parts) < 3 or parts[1] not in OD_TASKS:
            continue
        entry = manifest_entry(manifest, model_id)
        spec = _read_json(s3, content_bucket(region), entry["spec_key"])
        if spec.get("training_supported") and not spec.get("deprecated"):
            out.append({"model_id": model_id, "version": entry["version"],
                        "default_instance": spec.get("default_training_instance_type")})
    return out

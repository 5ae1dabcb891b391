"""JumpStart specs read from moto's S3 as the SDK reads them from the public bucket; the manifest
and specs are this file's own fixture with the real field names (see NOTES.md), no copied files."""

from __future__ import annotations

import json

import pytest

from tests.aws_harness import REGION

MODEL = "pytorch-od1-fasterrcnn-resnet50-fpn"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:1.10.0-gpu-py38"
CPU_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:1.10.0-cpu-py38"


def _spec(version, **extra):
    return {
        "model_id": MODEL, "version": version, "training_supported": True,
        "training_script_key": f"source-directory-tarballs/pytorch/transfer_learning/od1/v{version}/sourcedir.tar.gz",
        "training_prepacked_script_key": None,
        "training_artifact_key": f"pytorch-training/train-{MODEL}.tar.gz",
        "default_training_instance_type": "ml.p3.2xlarge",
        "supported_training_instance_types": ["ml.p3.2xlarge", "ml.g4dn.xlarge", "ml.m5.xlarge"],
        "training_instance_type_variants": {
            "regional_aliases": {REGION: {"gpu_ecr_uri_1": IMAGE, "cpu_ecr_uri_1": CPU_IMAGE}},
            "variants": {"p3": {"regional_properties": {"image_uri": "$gpu_ecr_uri_1"}},
                         "g4dn": {"regional_properties": {"image_uri": "$gpu_ecr_uri_1"}},
                         "ml.m5.xlarge": {"regional_properties": {"image_uri": "$cpu_ecr_uri_1"}}},
        },
        "hyperparameters": [
            {"name": "epochs", "type": "int", "default": 5, "min": 1, "max": 1000, "scope": "algorithm"},
            {"name": "adam-learning-rate", "type": "float", "default": 0.001, "min": 1e-08, "max": 1, "scope": "algorithm"},
            {"name": "optimizer", "type": "text", "default": "adam", "options": ["adam", "sgd"], "scope": "algorithm"},
            {"name": "sagemaker_program", "type": "text", "default": "transfer_learning.py", "scope": "container"},
        ],
        "metrics": [{"Name": "pytorch-od1:train-loss", "Regex": "train loss: ([0-9\\.]+)"}],
        "deprecated": False, "deprecated_message": None,
        **extra,
    }


@pytest.fixture
def js(aws, monkeypatch):
    """A JumpStart bucket in moto's S3: two versions of MODEL, a deprecated OD model, a classifier."""
    bucket = aws.make_bucket("jumpstart-test-content")
    monkeypatch.setenv("AWS_JUMPSTART_CONTENT_BUCKET_OVERRIDE", bucket)
    specs = {
        (MODEL, "1.2.0"): _spec("1.2.0"),
        (MODEL, "1.10.0"): _spec("1.10.0"),
        ("mxnet-od-ssd-512-vgg16-atrous-coco", "1.0.0"): {**_spec("1.0.0"), "deprecated": True,
                                                           "deprecated_message": "use a newer model"},
        ("pytorch-ic-resnet18", "2.0.0"): _spec("2.0.0"),
    }
    manifest = []
    for (model_id, version), spec in specs.items():
        key = f"community_models_specs/{model_id}/specs_v{version}.json"
        aws.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({**spec, "model_id": model_id}).encode())
        manifest.append({"model_id": model_id, "version": version, "min_version": "2.49.0", "spec_key": key})
    aws.s3.put_object(Bucket=bucket, Key="models_manifest.json", Body=json.dumps(manifest).encode())
    return bucket


def _s3():
    import boto3

    return boto3.client("s3", region_name=REGION)


def test_newest_spec_image_hyperparameters_and_job_parts(js):
    from odorch import jumpstart

    spec = jumpstart.read_spec(_s3(), REGION, MODEL)
    assert spec["version"] == "1.10.0"  # newest by version, not by text (1.10 > 1.2)
    assert jumpstart.training_image(spec, REGION, "ml.p3.8xlarge") == IMAGE  # by family
    assert jumpstart.training_image(spec, REGION, "ml.m5.xlarge") == CPU_IMAGE  # by full type
    with pytest.raises(jumpstart.JumpStartError, match="no training image for it; supported: ml.p3.2xlarge"):
        jumpstart.training_image(spec, REGION, "ml.c5.xlarge")
    with pytest.raises(jumpstart.JumpStartError, match="no training image in eu-west-1"):
        jumpstart.training_image(spec, "eu-west-1", "ml.p3.2xlarge")
    parts = jumpstart.job_parts(spec, region=REGION, instance_type="ml.g4dn.xlarge", given={"epochs": "3"})
    hps = parts["HyperParameters"]
    assert hps["epochs"] == "3" and hps["adam-learning-rate"] == "0.001" and hps["optimizer"] == "adam"
    assert hps["sagemaker_program"] == "transfer_learning.py"
    assert hps["sagemaker_submit_directory"] == f"s3://{js}/{spec['training_script_key']}"
    assert parts["AlgorithmSpecification"] == {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                               "MetricDefinitions": spec["metrics"]}
    assert parts["ModelChannel"]["ContentType"] == "application/x-sagemaker-model"
    assert parts["ModelChannel"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{js}/{spec['training_artifact_key']}"
    assert parts["Tags"] == [{"Key": "sagemaker-sdk:jumpstart-model-id", "Value": MODEL},
                             {"Key": "sagemaker-sdk:jumpstart-model-version", "Value": "1.10.0"}]


def test_hyperparameters_are_checked_against_the_spec(js):
    from odorch import jumpstart

    spec = jumpstart.read_spec(_s3(), REGION, MODEL, "1.2.0")
    assert spec["version"] == "1.2.0"
    with pytest.raises(jumpstart.JumpStartError) as e:
        jumpstart.job_parts(spec, region=REGION, instance_type="ml.p3.2xlarge",
                            given={"epochs": "0", "adam-learning-rate": "fast", "optimizer": "lamb", "lr": "1"})
    message = str(e.value)
    assert "epochs=0: must be in [1, 1000]" in message and "adam-learning-rate='fast': must be float" in message
    assert "optimizer=lamb: use one of adam, sgd" in message and "hyperparameter lr is not one of" in message
    assert "sagemaker_program" not in jumpstart.hyperparameters(spec, {})[0]  # container scope: set by odorch


def test_deprecated_unknown_and_listing(js):
    from odorch import jumpstart

    with pytest.raises(jumpstart.JumpStartError, match="is deprecated: use a newer model"):
        jumpstart.read_spec(_s3(), REGION, "mxnet-od-ssd-512-vgg16-atrous-coco")
    assert jumpstart.read_spec(_s3(), REGION, "mxnet-od-ssd-512-vgg16-atrous-coco", allow_deprecated=True)["deprecated"]
    with pytest.raises(jumpstart.JumpStartError, match="no such JumpStart model"):
        jumpstart.read_spec(_s3(), REGION, "pytorch-od1-nope")
    with pytest.raises(jumpstart.JumpStartError, match="no version 9.9.9; versions: 1.2.0, 1.10.0"):
        jumpstart.read_spec(_s3(), REGION, MODEL, "9.9.9")
    assert jumpstart.od_models(_s3(), REGION) == [
        {"model_id": MODEL, "version": "1.10.0", "default_instance": "ml.p3.2xlarge"}]


def test_the_bucket_is_the_regions_unless_overridden(monkeypatch):
    from odorch import jumpstart

    monkeypatch.delenv("AWS_JUMPSTART_CONTENT_BUCKET_OVERRIDE", raising=False)
    assert jumpstart.content_bucket("eu-west-1") == "jumpstart-cache-prod-eu-west-1"
    monkeypatch.setenv("AWS_JUMPSTART_CONTENT_BUCKET_OVERRIDE", "mine")
    assert jumpstart.content_bucket("eu-west-1") == "mine"

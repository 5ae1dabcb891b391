"""JumpStart specs read from moto's S3 as the SDK reads them from the public bucket, and
`--algorithm jumpstart` (odorch.algorithms.jumpstart) driven through the CLI against the moto
harness: train, tune, deploy, predict/compare. The manifest, specs and tarballs are this file's own
fixture with the real field names (see NOTES.md), no copied files; the tarballs hold stand-ins
(the real JumpStart scripts and containers cannot run here)."""

from __future__ import annotations

import json

import pytest

from odorch.archive import write_tar_gz
from tests.aws_harness import REGION, ROLE, tar_dir
from tests.helpers import invoke

MODEL = "pytorch-od1-fasterrcnn-resnet50-fpn"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:1.10.0-gpu-py38"
CPU_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:1.10.0-cpu-py38"
IMAGE_G5 = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:1.13.1-gpu-py39"
HOSTING_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:1.10.0-gpu-py38"
CPU_HOSTING_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:1.10.0-cpu-py38"


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
                         "ml.g5.xlarge": {"regional_properties": {"image_uri": IMAGE_G5}},
                         "g4dn": {"regional_properties": {"image_uri": "$gpu_ecr_uri_1"}},
                         "ml.m5.xlarge": {"regional_properties": {"image_uri": "$cpu_ecr_uri_1"}}},
        },
        "hyperparameters": [
            {"name": "epochs", "type": "int", "default": 5, "min": 1, "max": 1000, "scope": "algorithm"},
            {"name": "adam-learning-rate", "type": "float", "default": 0.001, "min": 1e-08, "max": 1, "scope": "algorithm"},
            {"name": "optimizer", "type": "text", "default": "adam", "options": ["adam", "sgd"], "scope": "algorithm"},
            {"name": "sagemaker_program", "type": "text", "default": "transfer_learning.py", "scope": "container"},
        ],
        "metrics": [{"Name": "pytorch-od1:train-loss", "Regex": "train loss: ([0-9\\.]+)"},
                    {"Name": "pytorch-od1:val-mAP", "Regex": "validation:mAP=([0-9\\.]+)"}],
        "hosting_script_key": f"source-directory-tarballs/pytorch/inference/od1/v{version}/sourcedir.tar.gz",
        "hosting_instance_type_variants": {
            "regional_aliases": {REGION: {"gpu_ecr_uri_2": HOSTING_IMAGE, "cpu_ecr_uri_2": CPU_HOSTING_IMAGE}},
            "variants": {"g4dn": {"regional_properties": {"image_uri": "$gpu_ecr_uri_2"}},
                         "m5": {"regional_properties": {"image_uri": "$cpu_ecr_uri_2"}}},
        },
        "supported_inference_instance_types": ["ml.g4dn.xlarge", "ml.m5.xlarge"],
        "inference_environment_variables": [
            {"name": "SAGEMAKER_PROGRAM", "type": "text", "default": "inference.py", "scope": "container",
             "required_for_model_class": True},
            {"name": "SAGEMAKER_SUBMIT_DIRECTORY", "type": "text", "default": "/opt/ml/model/code", "scope": "container",
             "required_for_model_class": False},
            {"name": "MODEL_CACHE_ROOT", "type": "text", "default": "/opt/ml/model", "scope": "container",
             "required_for_model_class": True},
            {"name": "SAGEMAKER_MODEL_SERVER_WORKERS", "type": "int", "default": 1, "scope": "container",
             "required_for_model_class": True},
        ],
        "deprecated": False, "deprecated_message": None,
        **extra,
    }


@pytest.fixture
def js(aws, monkeypatch):
    """A JumpStart bucket in moto's S3 (by the SDK's override variable): see publish_jumpstart."""
    bucket = publish_jumpstart(aws, "jumpstart-test-content")
    monkeypatch.setenv("AWS_JUMPSTART_CONTENT_BUCKET_OVERRIDE", bucket)
    return bucket


def publish_jumpstart(aws, bucket: str) -> str:
    """BUCKET in moto's S3 as a JumpStart bucket: the manifest, two versions of MODEL, a deprecated
    OD model, a classifier, and the newest MODEL's tarballs (stand-ins)."""
    aws.make_bucket(bucket)
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
    newest = specs[(MODEL, "1.10.0")]
    for key, members in ((newest["training_script_key"], {"transfer_learning.py": b"# stand-in\n"}),
                         (newest["training_artifact_key"], {"model.pt": b"pretrained"}),
                         (newest["hosting_script_key"], {"inference.py": b"# stand-in\n", "constants.py": b""})):
        aws.s3.put_object(Bucket=bucket, Key=key, Body=write_tar_gz(members))
    return bucket


def _s3():
    import boto3

    return boto3.client("s3", region_name=REGION)


def test_newest_spec_and_its_training_image(js):
    from odorch import jumpstart

    spec = jumpstart.read_spec(_s3(), REGION, MODEL)
    assert spec["version"] == "1.10.0"  # newest by version, not by text (1.10 > 1.2)
    assert jumpstart.training_image(spec, REGION, "ml.p3.8xlarge") == IMAGE  # by family
    assert jumpstart.training_image(spec, REGION, "ml.m5.xlarge") == CPU_IMAGE  # by full type
    with pytest.raises(jumpstart.JumpStartError, match="no training image for it; supported: ml.p3.2xlarge"):
        jumpstart.training_image(spec, REGION, "ml.c5.xlarge")
    with pytest.raises(jumpstart.JumpStartError, match="no training image in eu-west-1"):
        jumpstart.training_image(spec, "eu-west-1", "ml.p3.2xlarge")


def test_hyperparameters_are_checked_against_the_spec(js):
    from odorch import jumpstart

    spec = jumpstart.read_spec(_s3(), REGION, MODEL, "1.2.0")
    assert spec["version"] == "1.2.0"
    message = "; ".join(jumpstart.hyperparameters(
        spec, {"epochs": "0", "adam-learning-rate": "fast", "optimizer": "lamb", "lr": "1"})[1])
    assert "epochs=0: must be in [1, 1000]" in message and "adam-learning-rate='fast': must be float" in message
    assert "optimizer=lamb: use one of adam, sgd" in message and "hyperparameter lr is not one of" in message
    assert "sagemaker_program" not in jumpstart.hyperparameters(spec, {})[0]  # container scope: set by odorch


def test_deprecated_unknown_and_listing(js):
    from odorch import jumpstart

    with pytest.raises(jumpstart.JumpStartError, match="is deprecated: use a newer model"):
        jumpstart.read_spec(_s3(), REGION, "mxnet-od-ssd-512-vgg16-atrous-coco")
    assert jumpstart.read_spec(_s3(), REGION, "mxnet-od-ssd-512-vgg16-atrous-coco", allow_deprecated=True)["deprecated"]
    from odorch.algorithms import AlgorithmError, get_algorithm
    from odorch.aws import AwsClients

    unbound = get_algorithm("jumpstart")
    with pytest.raises(AlgorithmError, match="is deprecated"):
        unbound.for_model("mxnet-od-ssd-512-vgg16-atrous-coco", clients=AwsClients.from_env())
    pinned = unbound.for_model("mxnet-od-ssd-512-vgg16-atrous-coco@1.0.0", clients=AwsClients.from_env())
    assert pinned.spec["deprecated"] and pinned.spec["version"] == "1.0.0"  # named explicitly: allowed
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


# ---------------------------------------------------------------- --algorithm jumpstart through the CLI

BUCKET = "odorch-test"
SM = ["--bucket", BUCKET, "--role", ROLE, "--algorithm", "jumpstart"]


@pytest.fixture
def sm(js, aws, monkeypatch):
    import odorch.backends.sagemaker as backend

    monkeypatch.setattr(backend, "POLL_S", 0.05)
    aws.make_bucket(BUCKET)
    return aws


def _validate(operation: str, request: dict) -> str:
    """Errors of botocore's own validator for OPERATION ('' when valid)."""
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    return report.generate_report() if report.has_errors() else ""


def _fine_tuned_tar(tmp_path) -> bytes:
    folder = tmp_path / "fine-tuned"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"fine-tuned weights (stand-in)")
    return tar_dir(folder)


def _train(sm, runner, tmp_path, tiny_data, *extra, job="js"):
    tar = _fine_tuned_tar(tmp_path)
    sm.on_create = lambda name, request: sm.run_job(
        name, logs=["train loss: 0.9", "train loss: 0.5 validation:mAP=0.41"], model_tar=tar, billable=120)
    runs = tmp_path / "runs"
    result = invoke(runner, "train", "--data", tiny_data, "--job-name", job, "--instance", "ml.g5.xlarge",
                    "--model", MODEL, *SM, *extra, "--runs-dir", runs)
    return result, runs / job


def test_train_builds_the_sdks_request_validated_by_botocore(sm, js, tmp_path, tiny_data, runner):
    from odorch.converters.coco import read_coco

    result, job = _train(sm, runner, tmp_path, tiny_data, "--hp", "epochs=3", "--hp", "optimizer=sgd")
    assert result.exit_code == 0, result.output
    request = sm.requests["js"]
    assert _validate("CreateTrainingJob", request) == ""
    newest = _spec("1.10.0")
    assert request["AlgorithmSpecification"] == {"TrainingImage": IMAGE_G5, "TrainingInputMode": "File",
                                                 "MetricDefinitions": newest["metrics"]}
    hps = request["HyperParameters"]
    assert hps == {"epochs": "3", "adam-learning-rate": "0.001", "optimizer": "sgd",
                   "sagemaker_program": "transfer_learning.py",
                   "sagemaker_submit_directory": f"s3://{js}/{newest['training_script_key']}",
                   "sagemaker_region": REGION}
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert list(channels) == ["training", "model"]
    assert channels["model"]["ContentType"] == "application/x-sagemaker-model"
    assert channels["model"]["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{js}/{newest['training_artifact_key']}"
    assert "ContentType" not in channels["training"]
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["sagemaker-sdk:jumpstart-model-id"] == MODEL and tags["sagemaker-sdk:jumpstart-model-version"] == "1.10.0"
    assert tags["odorch:job"] == "js"

    # the training channel is the JumpStart layout of train + val: pixel xyxy, 0-based ids, every image there
    uri = channels["training"]["DataSource"]["S3DataSource"]["S3Uri"]
    prefix = uri.split("/", 3)[3]
    keys = [o["Key"] for o in sm.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    annotations = json.loads(sm.s3.get_object(Bucket=BUCKET, Key=prefix + "annotations.json")["Body"].read())
    source = read_coco([tiny_data / "annotations" / f"{s}.json" for s in ("train", "val")],
                       images_dirs=[tiny_data / "images"])
    boxed = [im for im in source.images if im.boxes]
    assert len(annotations["images"]) == len(boxed) == len(keys) - 1
    assert [c["name"] for c in annotations["categories"]] == source.classes
    first = next(im for im in boxed if im.file_name == annotations["images"][0]["file_name"])
    box = first.boxes[0]
    assert annotations["annotations"][0]["bbox"] == [round(v, 3) for v in (box.x0, box.y0, box.x1, box.y1)]

    record = json.loads((job / "job.json").read_text())
    assert record["status"] == "Completed" and record["algorithm"] == "jumpstart"
    assert record["model"] == f"{MODEL}@1.10.0"  # the version pinned: deploy reads the same spec
    assert (job / "model" / "model.pt").read_bytes() == b"fine-tuned weights (stand-in)"
    assert "JumpStart model" in result.output and "cannot load" in result.output


@pytest.mark.parametrize(("extra", "code", "message"), [
    (["--model", "pytorch-od1-nope"], 1, "no such JumpStart model"),
    (["--model", "mxnet-od-ssd-512-vgg16-atrous-coco"], 1,
     "is deprecated: use a newer model (to use it anyway, name its version: --model mxnet-od-ssd-512-vgg16-atrous-coco@1.0.0)"),
    (["--model", f"{MODEL}@9.9.9"], 1, "has no version 9.9.9"),
    (["--model", MODEL, "--instance", "ml.c5.xlarge"], 1, "has no training image for it"),
    # a bad --hp is a usage error (exit 2) for every algorithm, as odorch's own hyperparameters are
    (["--model", MODEL, "--hp", "epochs=0"], 2, "epochs=0: must be in [1, 1000]"),
    (["--model", MODEL, "--hp", "optimizer=lamb"], 2, "optimizer=lamb: use one of adam, sgd"),
])
def test_user_mistakes_are_one_line_errors_before_any_job(sm, tmp_path, tiny_data, runner, extra, code, message):
    runs = tmp_path / "runs"
    args = ["train", "--data", tiny_data, "--job-name", "no", "--instance", "ml.g5.xlarge", *SM, *extra, "--runs-dir", runs]
    result = invoke(runner, *args)
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.lower().startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
    assert sm.requests == {} and not (runs / "no").exists()


def test_no_region_is_a_one_line_error(tmp_path, tiny_data, runner, monkeypatch):
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    result = invoke(runner, "train", "--data", tiny_data, "--instance", "ml.g5.xlarge", "--model", MODEL, *SM,
                    "--runs-dir", tmp_path)
    assert result.exit_code == 1 and "no AWS region" in result.output and "Traceback" not in result.output


def _ground_truth_container(tiny_data, fine_tuned: bytes | None, calls: list):
    """A stand-in for the JumpStart inference container (the real one cannot run here): it checks
    what the endpoint was given (the repacked model.tar.gz, the spec's environment) and answers the
    verbose format with the image's ground truth (found by its bytes in every split), class names
    in reverse order, so the conversion to odorch's pixels and names is what is under test."""
    import hashlib

    truth = {}
    for split in ("train", "val", "test"):
        coco = json.loads((tiny_data / "annotations" / f"{split}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for im in coco["images"]:
            data = (tiny_data / "images" / im["file_name"]).read_bytes()
            boxes = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
            truth[hashlib.sha256(data).hexdigest()] = (im["width"], im["height"],
                                                      [(names[a["category_id"]], a["bbox"]) for a in boxes])
    labels = sorted({name for _, _, boxes in truth.values() for name, _ in boxes}, reverse=True)

    def serve(model_dir, body, content_type, accept, environment=None):
        calls.append((content_type, accept))
        assert fine_tuned is None or (model_dir / "model.pt").read_bytes() == fine_tuned
        assert (model_dir / "code" / "inference.py").is_file() and (model_dir / "code" / "constants.py").is_file()
        assert environment["SAGEMAKER_PROGRAM"] == "inference.py" and environment["MODEL_CACHE_ROOT"] == "/opt/ml/model"
        if content_type != "application/x-image" or accept != "application/json;verbose":
            return 415, b"unsupported"
        width, height, boxes = truth[hashlib.sha256(body).hexdigest()]
        reply = {"normalized_boxes": [[x / width, y / height, (x + w) / width, (y + h) / height] for _, (x, y, w, h) in boxes],
                 "classes": [float(labels.index(name)) for name, _ in boxes], "scores": [0.9] * len(boxes),
                 "labels": labels}
        return 200, json.dumps(reply).encode()

    return serve


def test_deploy_predict_and_compare_a_jumpstart_job(sm, js, tmp_path, tiny_data, runner, monkeypatch):
    import odorch.deploy as deploy_backend

    monkeypatch.setattr(deploy_backend, "POLL_S", 0.01)
    result, job = _train(sm, runner, tmp_path, tiny_data)
    assert result.exit_code == 0, result.output
    calls: list = []
    fine_tuned = b"fine-tuned weights (stand-in)"
    monkeypatch.setattr(sm, "serve", _ground_truth_container(tiny_data, fine_tuned, calls))

    deployed = invoke(runner, "deploy", job, "--instance", "ml.g4dn.xlarge", "--bucket", BUCKET, "--role", ROLE)
    assert deployed.exit_code == 0, deployed.output
    create_model = next(c["params"] for c in sm.calls if c["operation"] == "CreateModel")
    assert _validate("CreateModel", create_model) == ""
    container = create_model["PrimaryContainer"]
    newest = _spec("1.10.0")
    assert container == {"Image": HOSTING_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/odorch/models/js/model.tar.gz",
                         "Environment": {v["name"]: str(v["default"]) for v in newest["inference_environment_variables"]}}
    endpoint = json.loads((job / "endpoint.json").read_text())["name"]

    # predict: boxes back in pixels, names by the reply's labels
    test = json.loads((tiny_data / "annotations" / "test.json").read_text())
    names = {c["id"]: c["name"] for c in test["categories"]}
    first = next(im for im in test["images"] if any(a["image_id"] == im["id"] for a in test["annotations"]))
    out = tmp_path / "pred"
    predicted = invoke(runner, "predict", "--endpoint", endpoint, tiny_data / "images" / first["file_name"], "--out", out)
    assert predicted.exit_code == 0, predicted.output
    detections = json.loads((out / "predictions.json").read_text())[0]["detections"]
    expected = sorted((names[a["category_id"]], [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                                  a["bbox"][1] + a["bbox"][3]])
                      for a in test["annotations"] if a["image_id"] == first["id"])
    got = sorted((d["label"], d["box"]) for d in detections)
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert all(abs(g - e) < 1e-3 for (_, gb), (_, eb) in zip(got, expected) for g, e in zip(gb, eb))

    # compare scores it on the same test images as any candidate: the ground truth scores AP 1
    report_dir = tmp_path / "report"
    compared = invoke(runner, "compare", f"js={endpoint}", "--data", tiny_data, "--split", "test",
                      "--runs-dir", job.parent, "--out", report_dir)
    assert compared.exit_code == 0, compared.output
    row = json.loads((report_dir / "report.json").read_text())["candidates"][0]
    assert row["name"] == "js" and row["kind"] == "endpoint"
    assert row["stats"]["AP"] == pytest.approx(1.0, abs=1e-6)
    assert set(calls) == {("application/x-image", "application/json;verbose")}


def test_tune_runs_amt_on_a_metric_the_spec_defines(sm, js, tmp_path, tiny_data, runner, monkeypatch):
    """The harness plays AMT's children; their canned lines carry `validation:mAP=`, which this
    fixture's spec reads as its own pytorch-od1:val-mAP metric."""
    import functools

    import odorch.hpo.amt as amt

    monkeypatch.setattr(amt, "run_amt_tuning", functools.partial(amt.run_amt_tuning, poll_s=0.02))
    space = tmp_path / "space.yaml"
    space.write_text("adam-learning-rate: {type: float, low: 0.0001, high: 0.01, log: true}\n"
                     "optimizer: {type: categorical, choices: [adam, sgd]}\n")
    result = invoke(runner, "tune", "--data", tiny_data, "--model", MODEL, "--study", "js-study", "--instance",
                    "ml.g5.xlarge", *SM, "--space", space, "--max-jobs", 2, "--epochs", 2, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    request = sm.tuning_requests["js-study"]
    assert _validate("CreateHyperParameterTuningJob", request) == ""
    config, definition = request["HyperParameterTuningJobConfig"], request["TrainingJobDefinition"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "pytorch-od1:val-mAP"}
    assert {r["Name"] for r in config["ParameterRanges"]["ContinuousParameterRanges"]} == {"adam-learning-rate"}
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == _spec("1.10.0")["metrics"]
    static = definition["StaticHyperParameters"]
    assert static["epochs"] == "2" and static["sagemaker_program"] == "transfer_learning.py"
    assert "adam-learning-rate" not in static and "optimizer" not in static
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == ["training", "model"]
    tags = {t["Key"]: t["Value"] for t in request["Tags"]}
    assert tags["sagemaker-sdk:jumpstart-model-id"] == MODEL and tags["odorch:job"] == "js-study"
    children = sm.tuning_children["js-study"]
    assert len(children) == 2
    for child in children:
        assert sm.requests[child]["HyperParameters"]["_tuning_objective_metric"] == "pytorch-od1:val-mAP"
    best = max(children, key=lambda c: sm._children[c]["objective"])
    assert json.loads((tmp_path / "runs" / "tune-js-study" / "amt.json").read_text())["best_job"] == best
    header = next(line for line in result.output.splitlines() if "training job" in line)
    assert "pytorch-od1:val-mAP" in header  # the live table names the objective AMT tunes
    assert f"best {best}: pytorch-od1:val-mAP=" in result.output
    # the best child deploys as a JumpStart job: its record names the algorithm and the pinned model
    monkeypatch.setattr("odorch.deploy.POLL_S", 0.01)
    child = tmp_path / "runs" / "tune-js-study" / "trials" / best
    assert json.loads((child / "job.json").read_text())["model"] == f"{MODEL}@1.10.0"
    deployed = invoke(runner, "deploy", child, "--instance", "ml.g4dn.xlarge", "--bucket", BUCKET, "--role", ROLE)
    assert deployed.exit_code == 0, deployed.output
    create_model = [c["params"] for c in sm.calls if c["operation"] == "CreateModel"][-1]
    assert create_model["PrimaryContainer"]["Image"] == HOSTING_IMAGE
    # ... and is compared on the test split like any candidate (tune -> deploy -> compare in one run)
    calls: list = []
    monkeypatch.setattr(sm, "serve", _ground_truth_container(tiny_data, None, calls))
    endpoint = json.loads((child / "endpoint.json").read_text())["name"]
    compared = invoke(runner, "compare", f"tuned-js={endpoint}", "--data", tiny_data, "--split", "test",
                      "--runs-dir", tmp_path / "runs", "--out", tmp_path / "report")
    assert compared.exit_code == 0, compared.output
    row = json.loads((tmp_path / "report" / "report.json").read_text())["candidates"][0]
    assert row["name"] == "tuned-js" and row["stats"]["AP"] == pytest.approx(1.0, abs=1e-6)
    assert set(calls) == {("application/x-image", "application/json;verbose")}


def test_a_spec_hyperparameter_outside_its_range_stops_tune(sm, tmp_path, tiny_data, runner):
    result = invoke(runner, "tune", "--data", tiny_data, "--model", MODEL, "--instance", "ml.g5.xlarge", *SM,
                    "--hp", "epochs=5000", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "epochs=5000: must be in [1, 1000]" in result.output
    assert sm.tuning_requests == {}


def test_models_lists_the_fine_tunable_od_models_of_the_manifest(js, runner):
    result = invoke(runner, "models", "--jumpstart", "--region", REGION, "--json")
    assert result.exit_code == 0, result.output
    # the classifier, the deprecated OD model and the older version are left out
    assert json.loads(result.output) == [{"model_id": MODEL, "version": "1.10.0", "default_instance": "ml.p3.2xlarge"}]
    text = invoke(runner, "models", "--jumpstart")
    assert text.exit_code == 0 and f"{MODEL}  1.10.0" in text.output and "1 fine-tunable" in text.output


def test_models_jumpstart_without_a_region_is_one_line(runner, monkeypatch, tmp_path):
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    result = invoke(runner, "models", "--jumpstart")
    assert result.exit_code == 1 and "no AWS region" in result.output and "Traceback" not in result.output


def test_a_spec_with_only_a_loss_is_tuned_to_minimize_it(tmp_path):
    """AMT minimizes a loss; the summary's best trial is then the lowest, as AMT's BestTrainingJob is."""
    from odorch.algorithms.jumpstart import JumpStart
    from odorch.hpo.summary import write_summary

    loss_only = JumpStart({**_spec("1.10.0"), "metrics": [{"Name": "pytorch-od1:train-loss", "Regex": "loss: ([0-9.]+)"}]},
                          region=REGION)
    assert loss_only.objective() == {"Type": "Minimize", "MetricName": "pytorch-od1:train-loss"}
    assert JumpStart(_spec("1.10.0"), region=REGION).objective() == {"Type": "Maximize", "MetricName": "pytorch-od1:val-mAP"}
    trials = [{"number": i, "best_map": v, "state": "Completed", "params": {"lr": 0.1 * (i + 1)}}
              for i, v in enumerate((0.9, 0.2, 0.5))]
    summary = write_summary(tmp_path, trials, engine="amt", study="s", objective="pytorch-od1:train-loss", minimize=True)
    assert summary["best"]["number"] == 1 and summary["direction"] == "minimize"
    assert write_summary(tmp_path / "max", trials, engine="amt", study="s")["best"]["number"] == 0


def test_jumpstart_runs_only_on_sagemaker(tmp_path, tiny_data, runner):
    for command in ("train", "tune"):
        result = invoke(runner, command, "--data", tiny_data, "--algorithm", "jumpstart", "--model", MODEL,
                        "--runs-dir", tmp_path / "runs")
        assert result.exit_code != 0 and "runs only on SageMaker: add --instance" in result.output, result.output
        assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_deploy_mistakes_are_one_line_errors(sm, tmp_path, tiny_data, runner):
    result, job = _train(sm, runner, tmp_path, tiny_data)
    assert result.exit_code == 0, result.output
    no_image = invoke(runner, "deploy", job, "--instance", "ml.c5.xlarge", "--bucket", BUCKET, "--role", ROLE)
    assert no_image.exit_code == 1 and "has no hosting image for it; supported: ml.g4dn.xlarge, ml.m5.xlarge" in no_image.output
    record = json.loads((job / "job.json").read_text())
    del record["model_s3_uri"]
    (job / "job.json").write_text(json.dumps(record))
    no_model = invoke(runner, "deploy", job, "--instance", "ml.g4dn.xlarge", "--bucket", BUCKET, "--role", ROLE)
    assert no_model.exit_code == 1 and "no model_s3_uri" in no_model.output
    for result in (no_image, no_model):
        assert "Traceback" not in result.output
        assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert not any(c["operation"] in ("CreateModel", "CreateEndpoint") for c in sm.calls)

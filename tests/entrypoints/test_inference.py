"""The serving handler (entrypoints/inference.py) on a small untrained model: nothing is trained."""

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from odorch.runtime import inference
from odorch.runtime.inference import RequestError, input_fn, invoke, model_fn, output_fn, predict_fn
from odorch.runtime.models import build_model, load_trained, save_model
from odorch.runtime.predict import detect_files

NAME = "ssdlite320_mobilenet_v3_large"
ROOT = Path(__file__).resolve().parents[2]


def _calibrated_model():
    """A from-scratch SSDlite whose detections depend on the image: a fresh one gives the same
    boxes with tied scores for any input (its batch norms' statistics are the defaults), which
    would let a wrong decoding pass. Re-estimating the statistics on a few images and
    spreading the head's weights gives distinct, image-dependent detections."""
    torch.manual_seed(0)
    model = build_model(NAME, ["a", "b"], weights="none", image_size=128)
    x = torch.rand(8, 3, 128, 128)
    x[:, :, 30:80, 20:90] *= torch.rand(8, 3, 1, 1)
    x = (x - 0.5) / 0.25
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.3)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # a plain average over the batches seen
        model.train()
        features = list(model.backbone(x).values())
        model.head(features)
    return model.eval()


def _image(h, w, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = (rng.random((h, w, 3)) * 255).astype("uint8")
    pixels[h // 5 : h // 2, w // 4 : w // 2] = [220, 40, 40]
    pixels[h // 2 : h - 5, w // 2 : w - 5] = [40, 40, 220]
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    config = {"model": NAME, "classes": ["a", "b"], "image_size": 128, "origin": "none", "weights": "none"}
    save_model(root / "model", _calibrated_model(), config)
    files = {"jpg": root / "a.jpg", "png": root / "b.png", "grey": root / "grey.png"}
    _image(90, 120, 0).save(files["jpg"], quality=90)
    _image(100, 70, 1).save(files["png"])
    _image(80, 96, 2, mode="L").save(files["grey"])
    model, _ = load_trained(root / "model")
    reference = {k: detect_files(model, [p])[0] for k, p in files.items()}
    return {"dir": root / "model", "files": files, "reference": reference, "loaded": model_fn(str(root / "model"))}


def _b64(path):
    return base64.b64encode(Path(path).read_bytes()).decode()


def _call(served, body, content_type, accept="application/json"):
    return json.loads(invoke(served["dir"], body, content_type, accept))


def assert_same_detections(got, want, *, tol=1e-4):
    """The same detections in any row order (near-tied scores reorder). Only rows clearly above
    the lower of the two lists' lowest scores count: at the model's 300-detection cap a row
    can swap in or out with float noise of a batched forward pass."""
    floor = max(min(got["scores"], default=0.0), min(want["scores"], default=0.0)) + 1e-3
    rows = lambda d: [(b, lab, s) for b, lab, s in zip(d["boxes"], d["labels"], d["scores"]) if s > floor]  # noqa: E731
    ours, theirs = rows(got), rows(want)
    assert len(ours) == len(theirs) and len(ours) > 10
    unused = list(range(len(theirs)))
    for box, label, score in ours:
        match = next(
            (
                j
                for j in unused
                if theirs[j][1] == label
                and abs(theirs[j][2] - score) <= tol
                and max(abs(a - b) for a, b in zip(box, theirs[j][0])) <= 100 * tol
            ),
            None,
        )
        assert match is not None, f"no match for {label} {score} {box}"
        unused.remove(match)


def test_model_fn_loads_the_saved_model(served):
    loaded = served["loaded"]
    assert set(loaded) == {"model", "config", "classes", "device"}
    assert loaded["classes"] == ["a", "b"] and loaded["config"]["model"] == NAME
    assert loaded["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not loaded["model"].training


@pytest.mark.parametrize(
    "content_type, key",
    [("image/jpeg", "jpg"), ("image/png", "png"), ("application/x-image", "jpg"), ("application/x-image", "png"), ("image/jpeg; charset=binary", "jpg")],
)
def test_image_bodies_give_the_models_detections(served, content_type, key):
    path = served["files"][key]
    out = _call(served, path.read_bytes(), content_type)
    assert list(out) == ["predictions"] and len(out["predictions"]) == 1
    pred = out["predictions"][0]
    with Image.open(path) as im:
        assert (pred["width"], pred["height"]) == im.size
    assert len(pred["scores"]) == len(served["reference"][key]["scores"])
    assert_same_detections(pred, served["reference"][key])
    assert pred["scores"] == sorted(pred["scores"], reverse=True)
    assert set(pred["labels"]) <= {1, 2} and pred["classes"] == [["a", "b"][v - 1] for v in pred["labels"]]


def test_different_images_give_different_detections(served):
    """Guards the comparisons above: a model blind to its input would make them vacuous."""
    a, b = served["reference"]["jpg"], served["reference"]["png"]
    assert a["boxes"][:5] != b["boxes"][:5] and a["scores"][:5] != b["scores"][:5]


def test_json_batch_of_two_base64_images(served):
    files = served["files"]
    body = json.dumps({"instances": [_b64(files["jpg"]), _b64(files["png"])]})
    out = _call(served, body, "application/json")
    assert len(out["predictions"]) == 2
    for pred, key in zip(out["predictions"], ["jpg", "png"]):
        assert_same_detections(pred, served["reference"][key])
    assert [(p["width"], p["height"]) for p in out["predictions"]] == [(120, 90), (70, 100)]


def test_json_bare_list_bytes_body_and_data_urls(served):
    files = served["files"]
    body = json.dumps([_b64(files["jpg"]), "data:image/png;base64," + _b64(files["png"])]).encode()
    out = _call(served, body, "application/json; charset=utf-8")
    assert len(out["predictions"]) == 2
    assert_same_detections(out["predictions"][1], served["reference"]["png"])


def test_batches_larger_than_one_forward_pass(served, monkeypatch):
    monkeypatch.setattr(inference, "BATCH_SIZE", 2)
    body = json.dumps({"instances": [_b64(served["files"]["jpg"])] * 3 + [_b64(served["files"]["png"])]})
    out = _call(served, body, "application/json")
    assert len(out["predictions"]) == 4
    assert_same_detections(out["predictions"][2], served["reference"]["jpg"])
    assert_same_detections(out["predictions"][3], served["reference"]["png"])


def test_min_score_and_max_detections_filter(served):
    every = served["reference"]["jpg"]["scores"]
    threshold = sorted(every)[len(every) // 2]
    b64 = _b64(served["files"]["jpg"])
    pred = _call(served, json.dumps({"instances": [b64], "min_score": threshold}), "application/json")["predictions"][0]
    assert pred["scores"] and min(pred["scores"]) >= threshold
    assert len(pred["scores"]) == sum(s >= threshold for s in every)
    assert len(pred["boxes"]) == len(pred["labels"]) == len(pred["classes"]) == len(pred["scores"])
    pred = _call(served, json.dumps({"instances": [b64], "max_detections": 5}), "application/json")["predictions"][0]
    assert len(pred["scores"]) == 5
    assert pred["scores"] == pytest.approx(sorted(every, reverse=True)[:5], abs=1e-6)
    both = {"instances": [b64], "min_score": 0.999, "max_detections": 5}
    assert _call(served, json.dumps(both), "application/json")["predictions"][0]["scores"] == []


def test_default_filters_from_the_serving_environment(served, monkeypatch):
    monkeypatch.setenv("ODORCH_MAX_DETECTIONS", "3")
    pred = _call(served, served["files"]["png"].read_bytes(), "image/png")["predictions"][0]
    assert len(pred["scores"]) == 3
    body = json.dumps({"instances": [_b64(served["files"]["png"])], "max_detections": 7})
    assert len(_call(served, body, "application/json")["predictions"][0]["scores"]) == 7  # the request wins


def _assert_builtin_matches(builtin, pred):
    rows = builtin["prediction"]
    assert len(rows) == len(pred["scores"]) > 0
    w, h = pred["width"], pred["height"]
    for row, box, label, score in zip(rows, pred["boxes"], pred["labels"], pred["scores"]):
        cls, conf, *corners = row
        assert cls == label - 1 and cls in (0, 1)
        assert 0.0 <= conf <= 1.0 and conf == pytest.approx(score)
        assert all(0.0 <= c <= 1.0 for c in corners)
        assert corners == pytest.approx([box[0] / w, box[1] / h, box[2] / w, box[3] / h])
        assert corners[0] <= corners[2] and corners[1] <= corners[3]


def test_builtin_format_is_normalized(served):
    files = served["files"]
    body = json.dumps({"instances": [_b64(files["jpg"]), _b64(files["png"])], "format": "builtin"})
    prediction = predict_fn(input_fn(body, "application/json"), served["loaded"])
    batch = json.loads(output_fn(prediction, "application/json"))  # the request's option wins
    plain = json.loads(output_fn(list(prediction), "application/json"))["predictions"]
    assert isinstance(batch, list) and len(batch) == 2
    for builtin, pred in zip(batch, plain):
        _assert_builtin_matches(builtin, pred)
    # one image, asked for with the accept header: one object, as the built-in algorithm answers
    prediction = predict_fn(input_fn(files["png"].read_bytes(), "image/png"), served["loaded"])
    single = json.loads(output_fn(prediction, "application/x-od-builtin"))
    assert set(single) == {"prediction"}
    _assert_builtin_matches(single, json.loads(output_fn(prediction, "application/json"))["predictions"][0])
    # and end to end, through invoke
    out = _call(served, files["png"].read_bytes(), "image/png", accept="application/x-od-builtin")
    assert len(out["prediction"]) == len(single["prediction"])
    assert all(0.0 <= v <= 1.0 for row in out["prediction"] for v in row[1:])


def test_greyscale_png_is_converted_to_rgb(served):
    path = served["files"]["grey"]
    with Image.open(path) as im:
        assert im.mode == "L"
    request = input_fn(path.read_bytes(), "image/png")
    assert len(request) == 1 and request.images[0].shape == (3, 80, 96) and request.single
    assert torch.equal(request.images[0][0], request.images[0][2])
    pred = json.loads(output_fn(predict_fn(request, served["loaded"]), "application/json"))["predictions"][0]
    assert_same_detections(pred, served["reference"]["grey"])


def test_input_fn_decodes_like_the_training_loader(served):
    request = input_fn(served["files"]["png"].read_bytes(), "image/png")
    with Image.open(served["files"]["png"]) as im:
        pixels = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
    assert request.images[0].dtype == torch.float32 and torch.allclose(request.images[0], pixels)
    assert (request.min_score, request.max_detections, request.format) == (0.0, None, "json")


def test_unsupported_content_type_names_the_supported_ones():
    with pytest.raises(ValueError, match=r"unsupported content type 'text/csv'.*image/jpeg, image/png, application/x-image, application/json") as e:
        input_fn(b"1,2,3", "text/csv")
    assert e.value.status_code == 415


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"definitely not an image", "image/jpeg", r"the request body: cannot be decoded as an image .*send JPEG or PNG"),
        (b"", "application/x-image", r"the request body: empty"),
        (b"{not json", "application/json", r"not valid JSON"),
        ('{"images": []}', "application/json", r"unknown key\(s\) images; known keys: instances"),
        ('{"instances": []}', "application/json", r"non-empty list of base64 images"),
        ('{"min_score": 0.5}', "application/json", r'expected \{"instances"'),
        ('["@@@"]', "application/json", r"instance 0: not valid base64"),
        ('[42]', "application/json", r"instance 0: expected a base64 string, got int"),
        (json.dumps([base64.b64encode(b"garbage bytes").decode()]), "application/json", r"instance 0: cannot be decoded as an image"),
        ('{"instances": ["aGk="], "min_score": 2}', "application/json", r"min_score must be a number in \[0, 1\]"),
        ('{"instances": ["aGk="], "max_detections": -1}', "application/json", r"max_detections must be a whole number"),
        ('{"instances": ["aGk="], "format": "coco"}', "application/json", r"format must be one of json, builtin"),
    ],
)
def test_bad_requests_raise_a_helpful_value_error(body, content_type, message):
    with pytest.raises(ValueError, match=message) as e:
        input_fn(body, content_type)
    assert isinstance(e.value, RequestError) and e.value.status_code == 400


def test_truncated_image_is_rejected(served):
    data = served["files"]["png"].read_bytes()
    with pytest.raises(ValueError, match="cannot be decoded as an image"):
        input_fn(data[: len(data) // 2], "image/png")


def test_unsupported_accept_raises(served):
    prediction = predict_fn(input_fn(served["files"]["jpg"].read_bytes(), "image/jpeg"), served["loaded"])
    with pytest.raises(ValueError, match=r"unsupported accept 'text/csv'.*application/json, application/x-od-builtin") as e:
        output_fn(prediction, "text/csv")
    assert e.value.status_code == 406
    for accept in ("*/*", None, "", "text/html, application/json;q=0.9"):
        assert "predictions" in json.loads(output_fn(prediction, accept))


def test_predict_fn_takes_a_bare_list_of_tensors(served):
    image = input_fn(served["files"]["jpg"].read_bytes(), "image/jpeg").images[0]
    out = predict_fn([image], served["loaded"])
    assert len(out) == 1 and out[0]["width"] == 120
    assert_same_detections(out[0], served["reference"]["jpg"])


def test_no_orchestrator_or_converters_import():
    code = (
        "import sys, odorch.runtime.inference; "
        "bad = sorted(m for m in sys.modules if m.startswith('odorch.') and not m.startswith('odorch.runtime')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_invoke_reloads_a_replaced_model(served, tmp_path):
    model_dir = tmp_path / "m"
    shutil.copytree(served["dir"], model_dir)
    body = served["files"]["jpg"].read_bytes()
    first = invoke(model_dir, body, "image/jpeg", "application/json")
    assert invoke(model_dir, body, "image/jpeg", "application/json") == first
    other = build_model(NAME, ["x", "y", "z"], weights="none", image_size=128)
    save_model(model_dir, other, {"model": NAME, "classes": ["x", "y", "z"], "image_size": 128, "origin": "none", "weights": "none"})
    pred = json.loads(invoke(model_dir, body, "image/jpeg", "application/json"))["predictions"][0]
    assert set(pred["classes"]) <= {"x", "y", "z"} and pred["classes"]

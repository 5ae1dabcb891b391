"""RT-DETRv2 through Hugging Face transformers (the `detr` extra), on a small randomly initialised
config saved locally with save_pretrained (the real COCO checkpoint cannot be downloaded here):
training, exact resume, evaluation, serving's loader and export."""

import json
import os
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the detr extra (transformers) is not installed")

from odorch.runtime.models import ModelError, build_model, load_trained  # noqa: E402
from odorch.runtime.train import Dist, Stopped, parse_hyperparameters, train  # noqa: E402
from tests.entrypoints.test_recipe import StopAfter, _paths  # noqa: E402

MODEL = "rtdetr_v2_r18vd"


@pytest.fixture(scope="module")
def small_rtdetr(tmp_path_factory):
    """A tiny RT-DETRv2 (ResNet backbone of 16–128 channels, 2 decoder layers, 20 queries) as a
    transformers folder, the way a downloaded checkpoint is laid out."""
    from transformers import RTDetrResNetConfig, RTDetrV2Config, RTDetrV2ForObjectDetection

    backbone = RTDetrResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                  out_features=["stage2", "stage3", "stage4"])  # fmt: skip
    config = RTDetrV2Config(
        backbone_config=backbone, encoder_in_channels=[32, 64, 128], encoder_hidden_dim=32, d_model=32,
        decoder_in_channels=[32, 32, 32], encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, num_denoising=5, num_labels=80,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("rtdetr") / "small-rtdetr"
    torch.manual_seed(0)
    RTDetrV2ForObjectDetection(config).save_pretrained(folder)
    return folder


def test_detector_interface(small_rtdetr):
    model = build_model(MODEL, ["a", "b"], weights=str(small_rtdetr), image_size=96)
    images = [torch.rand(3, 80, 120), torch.rand(3, 100, 60)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # fmt: skip
    model.train()
    loss = sum(model(images, targets).values())
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.inference_mode():
        out = model(images)
    for o, im in zip(out, images):
        assert set(o) == {"boxes", "scores", "labels"} and len(o["boxes"]) == 40  # 20 queries × 2 classes
        assert set(o["labels"].tolist()) <= {1, 2} and (o["scores"][:-1] >= o["scores"][1:]).all()
        h, w = im.shape[-2:]
        assert (o["boxes"][:, 0::2] <= w + 1e-3).all() and (o["boxes"][:, 1::2] <= h + 1e-3).all()


@pytest.mark.slow  # three trainings and an export: ~2.5 min on the shared 2-core box
def test_train_resume_equals_unbroken_then_evaluate_and_load(tmp_path, tiny_data, small_rtdetr, runner):
    hp = parse_hyperparameters({"model": MODEL, "weights": str(small_rtdetr), "epochs": 2, "batch_size": 4,
                                "image_size": 96, "num_threads": 1})  # fmt: skip
    assert hp["optimizer"] == "adamw" and hp["lr"] == 1e-4  # the model's defaults
    whole = _paths(tmp_path / "whole", tiny_data)
    train(dict(hp), whole, Dist(), StopAfter(10**9))
    iters = len(json.loads((tiny_data / "annotations" / "train.json").read_text())["images"]) // 4
    broken = _paths(tmp_path / "broken", tiny_data)
    with pytest.raises(Stopped):
        train(dict(hp), broken, Dist(), StopAfter(iters))
    train(dict(hp), broken, Dist(), StopAfter(10**9))
    a = torch.load(whole.checkpoints / "checkpoint.pth", weights_only=True)
    b = torch.load(broken.checkpoints / "checkpoint.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    model, config = load_trained(whole.model_dir)  # rebuilt from the saved transformers config, no folder needed
    assert config["arch"]["model_type"] == "rt_detr_v2" and config["classes"] == ["circle", "square"]
    from odorch.cli import main

    result = runner.invoke(main, ["evaluate", str(whole.model_dir), "--data", str(tiny_data), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)["stats"]
    assert 0.0 <= stats["AP"] <= 1.0

    result = runner.invoke(main, ["export", str(whole.model_dir), "--data", str(tiny_data), "--out", str(tmp_path / "export"),
                                  "--format", "openvino", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    fp32 = json.loads((tmp_path / "export" / "metrics.json").read_text())["variants"]["fp32"]
    check = fp32["vs_pytorch"]
    # every detection of the IR pairs with one of PyTorch's, at the same score where the pair is the
    # same box (within 1 px): an untrained model's near-tied (query, class) pairs make the nearest
    # box of some detections another query's
    assert check["matched"] > 0 and check["unmatched"] == 0 and check["max_count_diff"] == 0
    assert check["matched"] > check["moved"] and check["unmoved_max_score_diff"] < 1e-3
    ir, _ = load_trained(tmp_path / "export")
    with torch.inference_mode():
        out = ir([torch.rand(3, 96, 96)])[0]
    assert set(out) >= {"boxes", "scores", "labels"}


def test_offline_coco_weights_name_what_to_download(tmp_path):
    code = (
        "from odorch.runtime.models import build_model, ModelError\n"
        "try:\n    build_model('rtdetr_v2_r18vd', ['a'], weights='coco')\n"
        "except ModelError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert "cannot load PekingU/rtdetr_v2_r18vd" in out
    assert "huggingface-cli download PekingU/rtdetr_v2_r18vd --local-dir DIR" in out and "weights=DIR" in out


def test_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="not a folder with config.json"):
        build_model(MODEL, ["a"], weights=str(tmp_path))
    with pytest.raises(ModelError, match="weights=imagenet is for torchvision models"):
        build_model(MODEL, ["a"], weights="imagenet")

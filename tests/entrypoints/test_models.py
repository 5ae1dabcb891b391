import pytest
import torch

from odorch.runtime.models import MODELS, ModelError, build_arch, build_model, load_trained, load_weights, save_model


def _one_step(model):
    model.train()
    images = [torch.rand(3, 96, 128), torch.rand(3, 128, 96)]  # 2: SSDlite's 1x1 batch norms need a batch
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image without boxes
    ]
    loss = sum(model(images, targets).values())
    loss.backward()
    model.eval()
    with torch.inference_mode():
        out = model(images)[0]
    return loss, out


@pytest.mark.parametrize("name", [n for n in MODELS if MODELS[n].family != "hf"])  # hf: tests/entrypoints/test_hf_detr.py
def test_every_model_builds_and_takes_a_step(name):
    model = build_model(name, ["a", "b"], weights="none", image_size=max(128, MODELS[name].min_image_size))
    loss, out = _one_step(model)
    assert torch.isfinite(loss)
    assert set(out) == {"boxes", "scores", "labels"}
    assert out["labels"].numel() == 0 or int(out["labels"].max()) <= 2  # background 0 + 2 classes


def test_unknown_model_lists_valid_ones():
    with pytest.raises(ModelError, match="valid models: ssdlite320_mobilenet_v3_large, ssd300_vgg16"):
        build_model("yolo", ["a"])


def _fake_coco_cache(tmp_path, monkeypatch, name):
    """Put a COCO-shaped weights file where torch looks, so 'coco' loads offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.hub.set_dir(str(tmp_path / "torch" / "hub"))
    coco = build_arch(name, [f"c{i}" for i in range(90)], origin="coco", image_size=MODELS[name].image_size)
    url = getattr(__import__("torchvision").models.detection, MODELS[name].weights_enum).DEFAULT.url
    file = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    file.parent.mkdir(parents=True)
    torch.save(coco.state_dict(), file)
    return coco, file


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"])
def test_coco_weights_replace_the_head_and_keep_the_body(tmp_path, monkeypatch, name):
    coco, _ = _fake_coco_cache(tmp_path, monkeypatch, name)
    try:
        model = build_model(name, ["a", "b"], weights="coco")
    finally:
        torch.hub.set_dir(str(tmp_path / "unused"))
    ours, theirs = model.state_dict(), coco.state_dict()
    same = [k for k in ours if k in theirs and ours[k].shape == theirs[k].shape]
    assert all(torch.equal(ours[k], theirs[k]) for k in same if "backbone" in k)
    head = [k for k in ours if ours[k].shape != theirs.get(k, ours[k]).shape]
    assert head and all("head" in k or "box_predictor" in k for k in head)
    _, out = _one_step(model)
    assert out["labels"].numel() == 0 or int(out["labels"].max()) <= 2


def test_coco_weights_offline_fail_fast_naming_the_file(tmp_path, monkeypatch):
    torch.hub.set_dir(str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    try:
        with pytest.raises(ModelError) as err:
            build_model("ssdlite320_mobilenet_v3_large", ["a"], weights="coco")
    finally:
        torch.hub.set_dir(str(tmp_path / "unused"))
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth") in message
    assert "weights=none" in message


@pytest.mark.parametrize("origin", ["coco", "imagenet"])
@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn"])
def test_saved_model_round_trip_for_pretrained_arch(tmp_path, name, origin):
    model = build_arch(name, ["a", "b"], origin=origin, image_size=160)
    config = {"model": name, "classes": ["a", "b"], "image_size": 160, "origin": origin, "weights": origin}
    save_model(tmp_path / "m", model, config)
    loaded, cfg = load_trained(tmp_path / "m")
    assert cfg == config and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert loaded.transform.min_size == (160,)


def test_local_weights_with_other_classes_reinitialise_only_the_head(tmp_path):
    name = "ssdlite320_mobilenet_v3_large"
    source = build_model(name, ["a", "b", "c"], weights="none")
    save_model(tmp_path / "m", source, {"model": name, "classes": ["a", "b", "c"], "image_size": 320, "origin": "none", "weights": "none"})
    target = build_arch(name, ["x"], origin="none", image_size=320)
    fresh = load_weights(target, tmp_path / "m" / "model.pth", name, ["x"])
    assert fresh and all("classification_head" in k for k in fresh)
    assert torch.equal(target.state_dict()["backbone.features.0.0.0.weight"], source.state_dict()["backbone.features.0.0.0.weight"])


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pth"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ModelError, match="corrupt or not a PyTorch checkpoint"):
        load_trained(bad)
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(ModelError, match="not an odorch model"):
        load_trained(bad)
    model = build_arch("ssdlite320_mobilenet_v3_large", ["a"], origin="none", image_size=320)
    with pytest.raises(ModelError, match="only 0 of"):
        load_weights(model, bad, "ssdlite320_mobilenet_v3_large", ["a"])

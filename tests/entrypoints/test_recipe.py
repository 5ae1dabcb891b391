"""The training recipe: mosaic and scale jitter keep boxes on their objects, EMA maths, fitted
anchors, the time planner, and a resumed run that equals an unbroken one."""

import json
import re

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from odorch.runtime import train as train_module
from odorch.runtime.data import CocoDetection, Mosaic, mosaic, train_transforms
from odorch.runtime.models import (
    build_model,
    feature_grids,
    fit_anchors,
    load_trained,
    matched_shares,
    model_anchors,
    save_model,
    set_anchors,
)
from odorch.runtime.train import (
    Dist,
    Paths,
    dataset_anchors,
    lr_factor,
    make_ema,
    parse_hyperparameters,
    plan_epochs,
    plan_time_budget,
    scale_jitter_from,
    train,
    typical_epoch_s,
)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 255, 255), (255, 128, 0)]


def _painted(h, w, boxes, first_colour=0, image_id=0):
    """A black image with each box filled in its own colour; label = colour index + 1."""
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        image[:, y0:y1, x0:x1] = torch.tensor(COLOURS[first_colour + i], dtype=torch.uint8)[:, None, None]
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(first_colour, first_colour + len(boxes)) + 1,
        "image_id": image_id,
    }
    return tv_tensors.Image(image), target


def _assert_boxes_on_their_colour(image, target):
    """Every box's interior (1 px in, to allow for resampling at the edges) shows its object's colour,
    and the box is tight: the colour also touches each side's neighbourhood."""
    image = image.as_subclass(torch.Tensor)
    if image.is_floating_point():
        image = (image * 255).round().to(torch.uint8)
    h, w = image.shape[-2:]
    for box, label in zip(target["boxes"].as_subclass(torch.Tensor).tolist(), target["labels"].tolist()):
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, box
        inner = image[:, round(y0) + 1 : round(y1) - 1, round(x0) + 1 : round(x1) - 1].reshape(3, -1)
        if inner.shape[1] == 0:
            continue
        colour = torch.tensor(COLOURS[label - 1], dtype=torch.int32)[:, None]
        share = ((inner.to(torch.int32) - colour).abs().max(dim=0).values <= 40).float().mean().item()
        assert share > 0.95, (box, label, share)


def test_mosaic_of_one_full_quadrant_is_v2_resize():
    """Centre at the bottom-right corner: the first image fills the canvas, the others are outside;
    image and boxes must be what torchvision.transforms.v2.Resize makes of them."""
    image, target = _painted(100, 100, [(10, 20, 40, 60), (50, 50, 90, 95)])
    others = [_painted(80, 120, [(5, 5, 30, 30)], first_colour=2, image_id=i) for i in (1, 2, 3)]
    out, out_target = mosaic([(image, target), *others], size=64, center=(64, 64))
    ref_image, ref_target = v2.Resize((64, 64), antialias=True)(image, target)
    assert torch.equal(out.as_subclass(torch.Tensor), ref_image.as_subclass(torch.Tensor))
    assert torch.allclose(out_target["boxes"].as_subclass(torch.Tensor), ref_target["boxes"].as_subclass(torch.Tensor))
    assert out_target["labels"].tolist() == [1, 2] and out_target["image_id"] == 0


@pytest.mark.parametrize("center", [(64, 64), (40, 90), (95, 33)])
def test_mosaic_moves_clips_and_drops_boxes_with_their_pixels(center):
    samples = [
        _painted(100, 140, [(0, 0, 30, 30), (100, 60, 140, 100)], first_colour=0, image_id=10),
        _painted(120, 80, [(10, 10, 70, 40)], first_colour=2, image_id=11),
        _painted(90, 90, [(40, 40, 89, 89), (2, 70, 12, 80)], first_colour=3, image_id=12),
        _painted(128, 128, [(60, 0, 128, 20), (0, 100, 20, 128)], first_colour=5, image_id=13),
    ]
    image, target = mosaic(samples, size=128, center=center)
    assert image.shape == (3, 128, 128) and target["boxes"].canvas_size == (128, 128)
    assert target["annotated"] == 7  # the four images' boxes, shown or not: training counts the ones cut
    _assert_boxes_on_their_colour(image, target)
    labels = target["labels"].tolist()
    assert len(set(labels)) == len(labels)
    for label in range(1, 9):  # a label left out shows less than MOSAIC_MIN_VISIBLE of its box
        if label not in labels:
            colour = torch.tensor(COLOURS[label - 1], dtype=torch.int32)[:, None]
            pixels = ((image.as_subclass(torch.Tensor).reshape(3, -1).to(torch.int32) - colour).abs().max(dim=0).values <= 40).sum()
            assert pixels < 0.1 * 70 * 70, label  # every box here is at most ~70×70 after resizing


def test_training_transforms_keep_boxes_on_their_pixels():
    """Scale jitter, crop and flip (torchvision.transforms.v2) after a mosaic, over many seeds."""
    transforms = train_transforms(flip=True, photometric=False, scale_jitter=True, image_size=96)
    for seed in range(20):
        torch.manual_seed(seed)
        samples = [_painted(96, 96, [(10 + 5 * i, 20, 50 + 5 * i, 70)], first_colour=i, image_id=i) for i in range(4)]
        image, target = transforms(*mosaic(samples, size=96, center=(48, 48)))
        assert image.dtype == torch.float32
        _assert_boxes_on_their_colour(image, target)


def test_scale_jitter_for_ssd_keeps_the_proportions_the_model_detects_at():
    """SSD squeezes every image to a square when it detects, so its jittered training images are
    squeezed the same way first: a 40×40 object in a 200×100 image is 1:2 (w:h) to the model then.
    Without `stretch`, the jitter keeps the image's own proportions (1:1 here), as Faster R-CNN
    and FCOS see them. Boxes stay on their pixels either way."""
    for stretch, ratio in ((True, 0.5), (False, 1.0)):
        transforms = train_transforms(flip=True, photometric=False, scale_jitter=True, image_size=96, stretch=stretch)
        seen = 0
        for seed in range(20):
            torch.manual_seed(seed)
            image, target = transforms(*_painted(100, 200, [(80, 30, 120, 70)]))
            assert image.shape == (3, 96, 96)
            _assert_boxes_on_their_colour(image, target)
            (x0, y0, x1, y1), = target["boxes"].as_subclass(torch.Tensor).tolist() or [(0, 0, 0, 0)]
            if 0 < x0 and x1 < 96 and 0 < y0 and y1 < 96:  # not cut by the crop
                assert (x1 - x0) / (y1 - y0) == pytest.approx(ratio, rel=0.05), (stretch, seed)
                seen += 1
        assert seen >= 10, stretch


def test_mosaic_for_ssd_keeps_the_proportions_the_model_detects_at():
    """As scale jitter: each image of a mosaic is squeezed to the model's square first for SSD, so a
    40×40 object in a 200×100 image is 1:2 (w:h), as SSD sees it when it detects; 1:1 otherwise."""
    for stretch, ratio in ((True, 0.5), (False, 1.0)):
        samples = [_painted(100, 200, [(80, 30, 120, 70)], first_colour=i, image_id=i) for i in range(4)]
        image, target = mosaic(samples, size=96, center=(72, 72), stretch=stretch)
        _assert_boxes_on_their_colour(image, target)
        (x0, y0, x1, y1), *_ = target["boxes"].as_subclass(torch.Tensor).tolist()  # the top-left image's, whole
        assert target["labels"][0] == 1 and (x1 - x0) / (y1 - y0) == pytest.approx(ratio, rel=0.02), stretch


def test_mosaic_dataset_on_real_files(tiny_data):
    coco = json.loads((tiny_data / "annotations" / "train.json").read_text())
    base = CocoDetection(coco, tiny_data / "images", train_transforms(flip=True, photometric=False, scale_jitter=False, image_size=128))
    data = Mosaic(base, size=128, p=1.0)
    torch.manual_seed(0)
    boxes = 0
    for i in range(len(data)):
        image, target = data[i]
        assert image.shape == (3, 128, 128)
        b = target["boxes"].as_subclass(torch.Tensor)
        assert ((b >= 0) & (b <= 128)).all() and (b[:, 2:] > b[:, :2]).all()
        boxes += len(b)
    assert boxes > len(data)  # four images' objects per sample
    data.enabled = False  # the last epochs: the plain sample
    torch.manual_seed(1)
    image, _ = data[0]
    torch.manual_seed(1)
    assert torch.equal(image, base[0][0])


def test_ema_follows_its_formula():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = make_ema(model, decay=0.9)
    expected = {}
    for n in range(30):  # n: updates before this one
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()
        model(torch.randn(8, 3))  # moves the batch-norm statistics
        ema.update_parameters(model)
        d = 0.0 if n == 0 else min(0.9, (1 + n) / (10 + n))  # the first update copies
        for k, v in model.state_dict().items():
            expected[k] = v.clone() if n == 0 or not v.is_floating_point() else d * expected[k] + (1 - d) * v
    got = ema.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k].float(), v.float(), atol=1e-6), k
    assert int(ema.n_averaged) == 30


def test_ema_of_unchanging_weights_is_those_weights():
    model = torch.nn.Linear(4, 4)
    ema = make_ema(model, decay=0.999)
    for _ in range(5):
        ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, model.weight)


@pytest.mark.parametrize(
    "budget, elapsed, epoch_s, done, expected",
    [
        (1200, 30, 29, 1, 1 + 40),  # 1170 s left hold 40 more epochs of 29 s
        (1200, 59, 28, 2, 2 + 40),
        (60, 70, 30, 1, 1),  # over budget already: stop after what is done
        (100, 0, 30, 0, 1 + 3),  # at least one epoch
    ],
)
def test_time_planner(budget, elapsed, epoch_s, done, expected):
    assert plan_epochs(budget_s=budget, elapsed_s=elapsed, epoch_s=epoch_s, done=done) == expected


@pytest.mark.parametrize(
    "durations, expected",
    [
        ([40.0], 40.0),  # one epoch: all there is
        ([40.0, 26.0], 26.0),  # the first (one-off costs) is left out once there is another
        ([40.0, 26.0, 28.0, 30.0, 32.0], 30.0),  # the last three: validation slows as the model learns
    ],
)
def test_typical_epoch_leaves_out_the_first_and_follows_the_recent(durations, expected):
    assert typical_epoch_s(durations) == pytest.approx(expected)


def test_time_budget_is_re_planned_as_epochs_slow_down(capsys):
    """The BCCD run that overshot by 14 %: planned from a 26 s second epoch, later epochs took 30 s."""
    hp = parse_hyperparameters({"epochs": "10", "time": "20"})
    durations, elapsed = [40.0, 26.0], 66.0
    plan_time_budget(hp, Dist(), epoch_s=typical_epoch_s(durations), elapsed_s=elapsed, done=2)
    assert hp["epochs"] == 2 + (1200 - 66) // 26 == 45
    while len(durations) < hp["epochs"]:  # every later epoch takes 30 s
        durations.append(30.0)
        elapsed += 30.0
        plan_time_budget(hp, Dist(), epoch_s=typical_epoch_s(durations), elapsed_s=elapsed, done=len(durations))
    assert elapsed <= 1200 and 1200 - elapsed < 30  # ends on time, within one epoch of the budget
    assert hp["epochs"] == len(durations) == 2 + (1200 - 66) // 30 == 39
    out = capsys.readouterr().out
    assert "45 epochs in all" in out and out.rstrip().endswith("39 epochs in all")


@pytest.mark.parametrize(("epochs", "warmup"), [(2, 10), (40, 50)])
def test_warm_up_takes_at_most_a_fifth_of_the_run(epochs, warmup):
    hp = parse_hyperparameters({"epochs": str(epochs)})  # the default warmup, 50 iterations
    factor = lr_factor(hp, iters_per_epoch=26)
    ramp = [factor(it) for it in range(warmup + 1)]
    assert ramp[0] == pytest.approx(0.001) and all(a < b < 1 for a, b in zip(ramp, ramp[1:-1]))
    assert ramp[-1] == pytest.approx(1.0)  # the cosine starts at the end of the warm-up
    assert factor(epochs * 26 - 1) < 0.01


def _best_ious(model, boxes, size):
    """Each box's IoU with its best default box, the default boxes taken from the model's own
    forward path (backbone features, then its anchor generator), as SSD matches them."""
    from torchvision.models.detection.image_list import ImageList
    from torchvision.ops import box_iou

    images = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        features = list(model.eval().backbone(images).values())
        defaults = model.anchor_generator(ImageList(images, [(size, size)]), features)[0] / size
    return box_iou(boxes, defaults).max(dim=1).values


def _best_iou_per_class(model, boxes, labels, size):
    best = _best_ious(model, boxes, size)
    return {int(c): float(best[labels == c].mean()) for c in labels.unique()}


def test_fitted_anchors_fit_small_and_large_boxes_and_survive_saving(tmp_path):
    """BCCD's shape: many mid-sized boxes, a few small and a few large ones. SSDlite's own
    default boxes (0.2 of the image at least) miss the small class; a plain k-means (weighted by
    count) gave up the large one and lost AP."""
    g = torch.Generator().manual_seed(0)

    def boxes(n, low, high, aspect):
        side = low + (high - low) * torch.rand(n, 1, generator=g)
        wh = torch.cat([side * aspect**0.5, side / aspect**0.5], dim=1)
        centre = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
        return torch.cat([centre - wh / 2, centre + wh / 2], dim=1)

    xyxy = torch.cat([boxes(60, 0.05, 0.08, 1.0), boxes(300, 0.15, 0.22, 0.8), boxes(60, 0.3, 0.45, 2.0)])
    labels = torch.tensor([1] * 60 + [2] * 300 + [3] * 60)
    model = build_model("ssdlite320_mobilenet_v3_large", ["a", "b", "c"], weights="none", image_size=320)
    assert feature_grids(model, 320) == [20, 10, 5, 3, 2, 1] and feature_grids(model, 640) == [40, 20, 10, 5, 3, 2]
    before = _best_iou_per_class(model, xyxy, labels, 320)
    anchors = fit_anchors(xyxy.tolist(), labels.tolist(), model=model, image_size=320)
    assert anchors == fit_anchors(xyxy.tolist(), labels.tolist(), model=model, image_size=320)  # deterministic
    assert len(anchors["scales"]) == 7 and len(anchors["aspect_ratios"]) == 2
    assert all(0 < s <= 1 for s in anchors["scales"]) and all(r >= 1 for r in anchors["aspect_ratios"])
    counts = model.anchor_generator.num_anchors_per_location()
    set_anchors(model, anchors)
    assert model.anchor_generator.num_anchors_per_location() == counts
    after = _best_iou_per_class(model, xyxy, labels, 320)
    assert before[1] < 0.3 and after[1] > 0.5  # the small class becomes matchable (SSD's threshold: 0.5)
    assert after[2] > before[2] - 0.02 and after[3] > before[3] - 0.02  # and the others lose nothing
    save_model(tmp_path, model, {"model": "ssdlite320_mobilenet_v3_large", "classes": ["a", "b", "c"], "origin": "none",
                                 "image_size": 320, "anchors": anchors})  # fmt: skip
    loaded, _ = load_trained(tmp_path)
    assert loaded.anchor_generator.scales == anchors["scales"]
    image = [torch.rand(3, 320, 320)]
    with torch.inference_mode():
        a, b = model.eval()(image)[0], loaded(image)[0]
    assert torch.equal(a["boxes"], b["boxes"])


def test_fitted_anchors_keep_each_levels_box_count():
    """SSD300 has one aspect ratio on some levels and two on others; one list for all levels changed
    the count per cell, and the head no longer fitted its default boxes."""
    model = build_model("ssd300_vgg16", ["a", "b"], weights="none", image_size=300)
    counts = model.anchor_generator.num_anchors_per_location()
    assert len(set(counts)) > 1
    g = torch.Generator().manual_seed(0)
    centre, wh = 0.2 + 0.5 * torch.rand(40, 2, generator=g), 0.05 + 0.2 * torch.rand(40, 2, generator=g)
    anchors = fit_anchors(torch.cat([centre - wh / 2, centre + wh / 2], dim=1).tolist(), [1, 2] * 20, model=model, image_size=300)
    set_anchors(model, anchors)
    assert model.anchor_generator.num_anchors_per_location() == counts
    with torch.inference_mode():
        assert "boxes" in model.eval()([torch.rand(3, 300, 300)])[0]  # the head's outputs match the boxes


def _coco(groups):
    """A COCO dict of 100x100 images, one per box; `groups` maps a category id to its boxes (fractions)."""
    images, annotations, categories = [], [], []
    for category, boxes in groups.items():
        categories.append({"id": category, "name": f"class{category}"})
        for x0, y0, x1, y1 in boxes.tolist():
            images.append({"id": len(images), "width": 100, "height": 100, "file_name": f"{len(images)}.png"})
            annotations.append({"id": len(annotations), "image_id": images[-1]["id"], "category_id": category, "iscrowd": 0,
                                "bbox": [100 * x0, 100 * y0, 100 * (x1 - x0), 100 * (y1 - y0)]})  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": categories}


def _square_boxes(n, low, high, seed):
    g = torch.Generator().manual_seed(seed)
    side = low + (high - low) * torch.rand(n, 1, generator=g)
    centre = side / 2 + (1 - side) * torch.rand(n, 2, generator=g)
    return torch.cat([centre - side / 2, centre + side / 2], dim=1)


def test_anchors_auto_fits_only_where_the_models_own_boxes_miss_a_class(capsys):
    """As YOLOv5 refits its anchors only when they recall too few boxes: SSD's matcher needs IoU 0.5,
    and BCCD's platelets (none matched by SSDlite's boxes) gained from fitted boxes, while the demo
    data (three quarters of each class matched) lost. The share matched is checked against the
    default boxes of the model's own forward path."""
    hp = parse_hyperparameters({"weights": "none"})
    assert hp["anchors"] == "auto"
    model = build_model(hp["model"], ["small", "mid"], weights="none", image_size=320)
    mid, small = _square_boxes(40, 0.22, 0.3, seed=0), _square_boxes(40, 0.04, 0.07, seed=1)
    coco = _coco({1: mid, 2: small})
    xyxy, labels = torch.cat([mid, small]), torch.tensor([1] * 40 + [2] * 40)
    shares = matched_shares(xyxy.tolist(), labels.tolist(), model=model, image_size=320)
    assert shares == {1: pytest.approx(float((_best_ious(model, mid, 320) >= 0.5).float().mean())), 2: 0.0} and shares[1] > 0.5

    anchors = dataset_anchors(hp, model, coco, Dist(), origin="none")
    assert anchors == fit_anchors(xyxy.tolist(), labels.tolist(), model=model, image_size=320)
    assert "match few training boxes at IoU 0.5 (class2 0%): fitting them" in capsys.readouterr().out
    assert dataset_anchors(hp, model, _coco({1: mid}), Dist(), origin="none") is None
    assert "default boxes are kept (they match at least half of each class's" in capsys.readouterr().out
    assert dataset_anchors(hp, model, _coco({2: small[:3]}), Dist(), origin="none") is None  # too few to fit: no error
    assert "but 3 are too few to fit; kept" in capsys.readouterr().out
    assert dataset_anchors(hp, model, _coco({c: small[c::7] for c in range(1, 8)}), Dist(), origin="none") is not None
    assert "(class1 0%, class2 0%, class3 0%, class4 0%, class5 0% and 2 more classes): fitting" in capsys.readouterr().out
    assert dataset_anchors({**hp, "anchors": "default"}, model, coco, Dist(), origin="none") is None
    assert dataset_anchors(hp, model, coco, Dist(), origin="imagenet") is not None  # a fresh head: fitting is safe
    capsys.readouterr()
    assert dataset_anchors(hp, model, coco, Dist(), origin="coco") is None  # COCO's box regression needs SSD's boxes
    assert "kept (the COCO weights' box regression was learnt against them" in capsys.readouterr().out
    assert dataset_anchors({**hp, "anchors": "fit"}, model, coco, Dist(), origin="coco") is not None
    fcos = parse_hyperparameters({"model": "fcos_mobilenet_v3_large_fpn", "weights": "none"})
    assert dataset_anchors(fcos, None, coco, Dist(), origin="none") is None  # auto is a no-op without default boxes


def test_anchors_fit_only_for_ssd_and_recipe_values_checked():
    from odorch.runtime.train import TrainingError

    with pytest.raises(TrainingError, match="anchors=fit: only the SSD family"):
        parse_hyperparameters({"model": "fcos_mobilenet_v3_large_fpn", "anchors": "fit"})
    with pytest.raises(TrainingError, match="anchors='best': use one of auto, default, fit"):
        parse_hyperparameters({"anchors": "best"})
    with pytest.raises(TrainingError, match="mosaic=1.5: must be between 0 and 1"):
        parse_hyperparameters({"mosaic": "1.5"})
    with pytest.raises(TrainingError, match="time=-1.0: must not be negative"):
        parse_hyperparameters({"time": "-1"})


class StopAfter:
    """A stop flag that asks to stop at the `n`-th check (the training loop checks before each step)."""

    def __init__(self, n):
        self.n, self.checks = n, 0

    @property
    def requested(self):
        self.checks += 1
        return self.checks > self.n


def _paths(root, data):
    return Paths(train=data, validation=data, model_channel=None, model_dir=root / "model", checkpoints=root / "checkpoints",
                 output=root / "output", config=root / "config")  # fmt: skip


RECIPE = {"weights": "none", "batch_size": 4, "image_size": 128, "epochs": 3, "ema": "true", "mosaic": "0.5",
          "anchors": "fit", "warmup_epochs": "1", "lr_batch_ref": "8", "num_threads": 1}  # fmt: skip


def test_resumed_run_equals_an_unbroken_one(tmp_path, tiny_data):
    from odorch.runtime.train import Stopped

    hp = parse_hyperparameters(RECIPE)
    train(dict(hp), _paths(tmp_path / "whole", tiny_data), Dist(), StopAfter(10**9))
    iters = len(json.loads((tiny_data / "annotations" / "train.json").read_text())["images"]) // 4
    broken = _paths(tmp_path / "broken", tiny_data)
    with pytest.raises(Stopped):
        train(dict(hp), broken, Dist(), StopAfter(iters))  # stops at the first step of epoch 2
    assert torch.load(broken.checkpoints / "checkpoint.pth", weights_only=True)["epoch"] == 1
    train(dict(hp), broken, Dist(), StopAfter(10**9))
    a = torch.load(tmp_path / "whole" / "checkpoints" / "checkpoint.pth", weights_only=True)
    b = torch.load(broken.checkpoints / "checkpoint.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3 and a["history"] == b["history"]
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert a["config"]["anchors"] == b["config"]["anchors"]
    saved = torch.load(tmp_path / "whole" / "model" / "model.pth", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in a["ema"].items() if k.startswith("module.")}
    if saved["config"]["epoch"] == 3:  # the model saved is the EMA's, not the raw weights
        assert all(torch.equal(saved["model"][k], ema[k]) for k in saved["model"])


def test_continued_training_keeps_the_default_boxes_of_the_model_it_starts_from(tmp_path, tiny_data, capsys):
    """Its box regression was learned relative to them, so SSD's own boxes would throw that away.
    The quickstart's tuned candidate continues its SSDlite run this way."""
    first = _paths(tmp_path / "first", tiny_data)
    train(parse_hyperparameters({**RECIPE, "epochs": 1}), first, Dist(), StopAfter(10**9))
    fitted = json.loads((first.model_dir / "config.json").read_text())["anchors"]
    assert fitted["scales"] != build_model("ssdlite320_mobilenet_v3_large", ["a"], weights="none").anchor_generator.scales
    second = _paths(tmp_path / "second", tiny_data)
    hp = parse_hyperparameters({**RECIPE, "epochs": 1, "anchors": "default", "weights": str(first.model_dir / "model.pth")})
    train(hp, second, Dist(), StopAfter(10**9))
    assert "its default boxes are kept (anchors=default not applied)" in capsys.readouterr().out
    assert json.loads((second.model_dir / "config.json").read_text())["anchors"] == fitted
    assert load_trained(second.model_dir)[0].anchor_generator.scales == fitted["scales"]


def test_continued_training_keeps_ssds_own_boxes_too(tmp_path, tiny_data, capsys):
    """A model saved with SSD's own boxes (anchors=default) records none, yet its box regression
    was learnt against them: continuing from it must not refit them."""
    first = _paths(tmp_path / "first", tiny_data)
    train(parse_hyperparameters({**RECIPE, "epochs": 1, "anchors": "default"}), first, Dist(), StopAfter(10**9))
    assert json.loads((first.model_dir / "config.json").read_text())["anchors"] is None
    second = _paths(tmp_path / "second", tiny_data)
    hp = parse_hyperparameters({**RECIPE, "epochs": 1, "weights": str(first.model_dir / "model.pth")})  # anchors=fit
    train(hp, second, Dist(), StopAfter(10**9))
    assert "its default boxes are kept (anchors=fit not applied)" in capsys.readouterr().out
    own = model_anchors(build_model("ssdlite320_mobilenet_v3_large", ["a"], weights="none"))
    assert json.loads((second.model_dir / "config.json").read_text())["anchors"] == own
    assert load_trained(second.model_dir)[0].anchor_generator.scales == own["scales"]


def test_time_budget_fixes_the_epoch_count(tmp_path, tiny_data, capsys):
    hp = parse_hyperparameters({**RECIPE, "anchors": "default", "epochs": 5, "time": 0.0001})  # 6 ms: one epoch
    paths = _paths(tmp_path, tiny_data)
    train(hp, paths, Dist(), StopAfter(10**9))
    out = capsys.readouterr().out
    assert "time budget 0.0001 min: " in out and " s an epoch; 1 epochs in all" in out
    assert "epoch=1/1 " in out and "epoch=2" not in out
    state = torch.load(paths.checkpoints / "checkpoint.pth", weights_only=True)
    assert state["epoch"] == state["epochs"] == 1
    assert len(state["epoch_s"]) == 1 and state["epoch_s"][0] > 0  # a resumed run plans from these
    assert json.loads((paths.model_dir / "config.json").read_text())["hyperparameters"]["epochs"] == 1


@pytest.mark.parametrize("value, best, done, since, expected", [
    ("auto", {"validation:mAP": 0.3, "epoch": 4}, 9, None, 9),  # 5 epochs without a better mAP: from now on
    ("auto", {"validation:mAP": 0.3, "epoch": 4}, 8, None, None),  # 4: not yet
    ("auto", {"validation:mAP": 0.3, "epoch": 4}, 20, 9, 9),  # once on, it stays on from where it started
    ("auto", {"validation:mAP": 0.3, "epoch": 14}, 20, None, 20),  # half the run (40 epochs) to come
    ("auto", {"validation:mAP": 0.3, "epoch": 15}, 21, None, None),  # the second half: the schedule settles
    ("auto", {"validation:mAP": 0.0, "epoch": 1}, 20, None, None),  # nothing learnt, nothing to overfit
    ("auto", {"validation:mAP": 0.002, "epoch": 1}, 6, None, None),  # still finding objects (the quickstart's epochs 1-6)
    ("auto", {"validation:mAP": 0.05, "epoch": 1}, 6, None, 6),
    ("false", {"validation:mAP": 0.3, "epoch": 4}, 20, None, None),
    ("true", {"validation:mAP": 0.3, "epoch": 4}, 20, None, None),  # on from the start, not switched
])
def test_scale_jitter_auto_turns_on_when_validation_stalls(value, best, done, since, expected):
    assert scale_jitter_from({"scale_jitter": value, "epochs": 40}, best, done, since, Dist()) == expected


def test_scale_jitter_values():
    from odorch.runtime.train import TrainingError

    assert parse_hyperparameters({})["scale_jitter"] == "auto"
    assert [parse_hyperparameters({"scale_jitter": v})["scale_jitter"] for v in ("Auto", "1", "no", True)] == ["auto", "true", "false", "true"]
    with pytest.raises(TrainingError, match="scale_jitter='often': 'often' is not auto/true/false"):
        parse_hyperparameters({"scale_jitter": "often"})


TRAIN_ONE_EPOCH = train_module.train_one_epoch


class ScriptedValidation:
    """Validation mAP by epoch, in place of the COCO evaluation of the model: a tiny dataset cannot be
    made to stall on cue, so the stall is scripted; training, loaders and checkpoints are real."""

    def __init__(self, maps, monkeypatch):
        self.maps, self.epoch, self.batch_shapes = maps, 0, {}

        def one_epoch(ctx, epoch):
            self.epoch = epoch
            self.batch_shapes[epoch + 1] = {tuple(image.shape) for image in next(iter(ctx["train_loader"]))[0]}
            return TRAIN_ONE_EPOCH(ctx, epoch)

        monkeypatch.setattr(train_module, "train_one_epoch", one_epoch)
        monkeypatch.setattr(train_module, "evaluate", lambda *args: {"stats": {"AP": self.maps[self.epoch], "AP50": self.maps[self.epoch]}})


def test_scale_jitter_auto_in_a_run_and_its_resumption(tmp_path, tiny_data, capsys, monkeypatch):
    """Best validation mAP at epoch 1, then 5 epochs without better: jitter from epoch 7 on, in the
    batches the model trains on (SSD: every jittered image is the model's square, 96 × 96, against
    the 128-pixel originals), and a run stopped in epoch 8 resumes with it on, equal to an unbroken run."""
    hp = parse_hyperparameters({**RECIPE, "image_size": 96, "mosaic": 0, "ema": "false", "epochs": 12})
    assert hp["scale_jitter"] == "auto"
    whole = ScriptedValidation([0.2] + [0.1] * 11, monkeypatch)
    train(dict(hp), _paths(tmp_path / "whole", tiny_data), Dist(), StopAfter(10**9))
    assert "no better validation:mAP for 5 epochs (best 0.2000 at epoch 1): training images are rescaled 0.5–1.5 " \
           "from epoch 7 on" in capsys.readouterr().out
    assert all((3, 96, 96) not in whole.batch_shapes[e] for e in range(1, 7))
    assert all(whole.batch_shapes[e] == {(3, 96, 96)} for e in range(7, 13))
    iters = len(json.loads((tiny_data / "annotations" / "train.json").read_text())["images"]) // 4
    broken = _paths(tmp_path / "broken", tiny_data)
    with pytest.raises(train_module.Stopped):
        train(dict(hp), broken, Dist(), StopAfter(7 * iters))  # stops at the first step of epoch 8
    assert torch.load(broken.checkpoints / "checkpoint.pth", weights_only=True)["jitter_from"] == 6
    resumed = ScriptedValidation(whole.maps, monkeypatch)
    train(dict(hp), broken, Dist(), StopAfter(10**9))
    assert resumed.batch_shapes == {e: {(3, 96, 96)} for e in range(8, 13)}
    a = torch.load(tmp_path / "whole" / "checkpoints" / "checkpoint.pth", weights_only=True)
    b = torch.load(broken.checkpoints / "checkpoint.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 12 and a["jitter_from"] == b["jitter_from"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("min_epochs, last", [(1, 5), (7, 7)])
def test_early_stopping_ends_the_run_and_a_rerun_trains_no_more(tmp_path, tiny_data, capsys, monkeypatch, min_epochs, last):
    """Best validation mAP at epoch 2, then none better: with patience 3 the run of 10 epochs ends
    after epoch 5 (or at min_epochs), keeps epoch 2's model, and records the end in its checkpoint,
    so that the same job run again resumes a finished run instead of training on."""
    hp = parse_hyperparameters({**RECIPE, "image_size": 96, "mosaic": 0, "ema": "false", "scale_jitter": "false",
                                "epochs": 10, "early_stopping_patience": 3, "min_epochs": min_epochs})  # fmt: skip
    ScriptedValidation([0.1, 0.3] + [0.2] * 8, monkeypatch)
    paths = _paths(tmp_path, tiny_data)
    train(dict(hp), paths, Dist(), StopAfter(10**9))
    out = capsys.readouterr().out
    assert re.findall(r"^epoch=(\d+)/(\d+) ", out, re.M) == [(str(e), "10") for e in range(1, last)] + [(str(last), str(last))]
    assert f"early stopping: no better validation:mAP for {last - 2} epochs (best 0.3000 at epoch 2; " \
           f"early_stopping_patience 3, min_epochs {min_epochs})" in out
    state = torch.load(paths.checkpoints / "checkpoint.pth", weights_only=True)
    assert state["epoch"] == state["epochs"] == last
    assert json.loads((paths.model_dir / "config.json").read_text())["epoch"] == 2
    train(dict(hp), paths, Dist(), StopAfter(10**9))
    assert "epoch=" not in capsys.readouterr().out


class BoxesGiven:
    """Counts the boxes in the targets the model is called with, epoch by epoch."""

    def __init__(self, monkeypatch):
        self.by_epoch = {}

        def one_epoch(ctx, epoch):
            model, self.by_epoch[epoch + 1] = ctx["model"], 0

            def forward(images, targets):
                self.by_epoch[epoch + 1] += sum(len(t["labels"]) for t in targets)
                return type(model).forward(model, images, targets)

            model.forward = forward
            try:
                return TRAIN_ONE_EPOCH(ctx, epoch)
            finally:
                del model.forward

        monkeypatch.setattr(train_module, "train_one_epoch", one_epoch)


def test_boxes_augmentation_cuts_away_are_counted_and_reported(tmp_path, tiny_data, capsys, monkeypatch):
    """Each epoch's line counts the training json's boxes (15 images, batch 5: each image once) and, as cut,
    those that never reach the model: none without jitter or mosaic, some with scale jitter's crop."""
    gt = json.loads((tiny_data / "annotations" / "train.json").read_text())
    boxes = sum(1 for a in gt["annotations"] if not a.get("iscrowd"))
    assert len(gt["images"]) == 15
    hp = {**RECIPE, "batch_size": 5, "image_size": 96, "mosaic": 0, "ema": "false", "anchors": "default", "epochs": 3}
    plain = BoxesGiven(monkeypatch)
    train(parse_hyperparameters({**hp, "scale_jitter": "false"}), _paths(tmp_path / "plain", tiny_data), Dist(), StopAfter(10**9))
    assert "augmentation left out" not in capsys.readouterr().out
    assert plain.by_epoch == {1: boxes, 2: boxes, 3: boxes}
    jittered = BoxesGiven(monkeypatch)
    train(parse_hyperparameters({**hp, "scale_jitter": "true"}), _paths(tmp_path / "jitter", tiny_data), Dist(), StopAfter(10**9))
    reported = {int(m[3]): (int(m[1]), int(m[2])) for m in re.finditer(
        r"augmentation left out (\d+) of the (\d+) boxes in epoch (\d+)'s training samples", capsys.readouterr().out)}
    assert reported, "scale jitter cut no box in 3 epochs"
    for epoch, given in jittered.by_epoch.items():
        cut, annotated = reported.get(epoch, (0, boxes))
        assert annotated == boxes and cut == boxes - given, epoch


def test_train_command_takes_time(tmp_path, runner, tiny_data):
    from odorch.cli import main

    result = runner.invoke(main, ["train", "--data", str(tiny_data), "--weights", "none", "--time", "0.0001",
                                  "--hp", "image_size=128", "--hp", "batch_size=4", "--job-name", "t",
                                  "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert result.exit_code == 0, result.output
    log = (tmp_path / "runs" / "t" / "logs.txt").read_text()
    assert "time budget 0.0001 min" in log and "epoch=1/1 " in log
    bad = runner.invoke(main, ["train", "--data", str(tiny_data), "--time", "0"])
    assert bad.exit_code == 2 and "--time" in bad.output



@pytest.mark.parametrize("model", ["fcos_mobilenet_v3_large_fpn", "ssdlite512_mobilenet_v3_large"])
def test_new_models_train_and_evaluate_from_scratch(tmp_path, runner, tiny_data, model):
    from odorch.cli import main

    runs = tmp_path / "runs"
    result = runner.invoke(main, ["train", "--data", str(tiny_data), "--model", model, "--weights", "none", "--epochs", "1",
                                  "--hp", "image_size=128", "--hp", "batch_size=4", "--hp", "ema=true", "--hp", "mosaic=0.5",
                                  "--job-name", "j", "--runs-dir", str(runs)])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["evaluate", str(runs / "j"), "--data", str(tiny_data), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads((runs / "j" / "eval-test.json").read_text())
    assert set(evaluation["per_class"]) == {"circle", "square"} and 0.0 <= evaluation["stats"]["AP"] <= 1.0
    assert json.loads((runs / "j" / "model" / "config.json").read_text())["model"] == model

"""odorch.runtime.openvino_model: which path means which exported model, and an IR answering like a
torchvision detector (a tiny hand-made IR; tests/orchestrator/test_export.py exports real ones)."""

from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from odorch.runtime.models import ModelError, load_trained
from odorch.runtime.openvino_model import OpenVINODetector, find_ir

CONFIG = {"model": "ssdlite320_mobilenet_v3_large", "classes": ["circle", "square"], "export": {"format": "openvino"}}


class WholeImage(torch.nn.Module):
    """One box over the whole image, scored by its mean, label 2: enough to see shapes and values."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = image.shape[-2:]
        box = torch.stack([torch.zeros(()), torch.zeros(()), torch.tensor(w).float(), torch.tensor(h).float()])
        return box[None], image.mean()[None], torch.full((1,), 2, dtype=torch.int64)


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory) -> Path:
    import openvino as ov

    folder = tmp_path_factory.mktemp("ir") / "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on torch.tensor(w): traced as a shape here
        ir = ov.convert_model(WholeImage(), example_input=torch.rand(1, 3, 20, 30),
                              input=ov.PartialShape([1, 3, -1, -1]))
    ov.save_model(ir, folder / "model.xml", compress_to_fp16=False)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def test_find_ir_prefers_int8_then_fp32_and_takes_files_and_folders(tmp_path):
    fp32 = touch(tmp_path / "export" / "fp32" / "model.xml")
    assert find_ir(tmp_path / "export") == fp32
    int8 = touch(tmp_path / "export" / "int8" / "model.xml")
    assert find_ir(tmp_path / "export") == int8
    assert find_ir(tmp_path / "export" / "fp32") == fp32 and find_ir(fp32) == fp32
    onnx = touch(tmp_path / "export" / "onnx" / "model.onnx")
    assert find_ir(onnx.parent) == onnx
    assert find_ir(touch(tmp_path / "run" / "model" / "model.pth").parent) is None
    assert find_ir(tmp_path / "run" / "model" / "model.pth") is None


def test_an_ir_without_its_config_is_refused(tiny_ir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.xml", "model.bin"):
        (bare / name).write_bytes((tiny_ir / name).read_bytes())
    with pytest.raises(ModelError, match=r"config\.json: unreadable .*export it again"):
        load_trained(bare)


def test_load_trained_returns_a_detector_like_torchvisions(tiny_ir):
    model, config = load_trained(tiny_ir.parent, device="cuda")  # runs on the CPU whatever the device
    assert isinstance(model, OpenVINODetector) and config == CONFIG
    assert model.eval() is model and model.to("cuda") is model and not model.training
    images = [torch.full((3, 40, 60), 0.25), torch.full((3, 100, 80), 0.5)]
    with torch.inference_mode():
        out = model(images)
    assert [o["boxes"].tolist() for o in out] == [[[0, 0, 60, 40]], [[0, 0, 80, 100]]]  # H and W are dynamic
    assert [o["scores"].tolist() for o in out] == [[0.25], [0.5]]
    assert all(o["labels"].dtype == torch.int64 and o["labels"].tolist() == [2] for o in out)
    assert all(o["boxes"].dtype == o["scores"].dtype == torch.float32 for o in out)


def test_concurrent_calls_get_their_own_answers(tiny_ir):
    model, _ = load_trained(tiny_ir)
    sizes = [(10 + i, 20 + 2 * i) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda hw: model([torch.zeros(3, *hw)])[0]["boxes"][0, 2:].tolist(), sizes))
    assert answers == [[w, h] for h, w in sizes]


class OnesConv(torch.nn.Module):
    """A 1x1 convolution summing the 3 channels, then the mean: 3 * (1 + 2**-12) needs more than bf16's 8 bits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1, bias=False)
        torch.nn.init.ones_(self.conv.weight)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.zeros(1, 4), self.conv(image).mean()[None], torch.ones(1, dtype=torch.int64)


def test_an_fp32_model_computes_in_fp32_on_cpus_with_bf16_units(tmp_path):
    """On a CPU with AMX / AVX512-BF16 OpenVINO's default runs convolutions in bf16 (score 3.0 here,
    found by CI on such a machine); elsewhere fp32 is the default and this passes either way."""
    import openvino as ov

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ir = ov.convert_model(OnesConv(), example_input=torch.rand(1, 3, 8, 8))
    ov.save_model(ir, tmp_path / "model.xml", compress_to_fp16=False)
    model = OpenVINODetector(tmp_path / "model.xml")
    assert model.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    score = model([torch.full((3, 8, 8), 1 + 2**-12)])[0]["scores"].item()
    assert score == pytest.approx(3 * (1 + 2**-12), abs=1e-6)

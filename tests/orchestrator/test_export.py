"""odorch export: a trained SSDlite exported to OpenVINO FP32 + INT8 and ONNX; the IR against
PyTorch and against `odorch evaluate`; the export as a model for evaluate and predict; and
bad input (an op OpenVINO cannot convert, missing calibration data, models it cannot export)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from odorch.cli import main


def odorch(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def evaluate_json(model: Path, data: Path) -> dict:
    result = odorch("evaluate", model, "--data", data, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def exported(trained_runs, tiny_data, tmp_path_factory):
    """small-a exported to OpenVINO FP32 + INT8 (8 calibration images) and ONNX, with --json."""
    out = tmp_path_factory.mktemp("export") / "small-a"
    result = odorch("export", trained_runs["small-a"], "--data", tiny_data, "--out", out, "--format", "openvino",
                    "--format", "onnx", "--int8", "--calibration-size", 8, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(result.stdout) == metrics
    return {"dir": out, "metrics": metrics}


@pytest.mark.slow
def test_export_writes_models_config_and_metrics(exported, trained_runs):
    out, metrics = exported["dir"], exported["metrics"]
    ir = ("model.xml", "model.bin")
    for folder, files in (("fp32", ir), ("int8", ir), ("onnx", ("model.onnx",))):
        assert all((out / folder / f).stat().st_size > 0 for f in files), folder
        config = json.loads((out / folder / "config.json").read_text())
        assert config["classes"] == ["circle", "square"] and config["model"] == "ssdlite320_mobilenet_v3_large"
        assert config["export"]["source"] == str(trained_runs["small-a"].resolve())
    assert json.loads((out / "int8" / "config.json").read_text())["export"]["precision"] == "int8"
    assert set(metrics["variants"]) == {"pytorch", "fp32", "int8", "onnx"}
    assert metrics["calibration"]["images"] == 8
    int8_bin, fp32_bin = (out / "int8" / "model.bin").stat().st_size, (out / "fp32" / "model.bin").stat().st_size
    assert int8_bin < 0.7 * fp32_bin  # weights really are 8-bit
    for name, variant in metrics["variants"].items():
        assert variant["ms_p50"] > 0 and variant["timed"] == 50, name


@pytest.mark.slow
def test_fp32_ir_and_onnx_give_pytorchs_detections(exported):
    for name in ("fp32", "onnx"):
        check = exported["metrics"]["variants"][name]["vs_pytorch"]
        assert check["matched"] > 0 and check["unmatched"] == 0 and check["max_count_diff"] == 0, (name, check)
        # FP32 rounding may flip an NMS or top-k tie (2026-11-30: 1 box of 1500 moved 7.9 px); a real
        # conversion error moves many boxes. Exact ties at the 300th place are the sort's choice
        # (2026-12-02, a CPU with AMX: 25 of 1500, all at the last score kept): counted apart
        assert check["moved"] <= 0.005 * check["matched"], (name, check)
        assert check["unmoved_max_box_diff_px"] < 1e-2 and check["unmoved_max_score_diff"] < 1e-4, (name, check)
        assert check["max_box_diff_px"] >= check["unmoved_max_box_diff_px"]


@pytest.mark.slow
def test_fp32_map_matches_odorch_evaluate(exported, trained_runs, tiny_data):
    metrics = exported["metrics"]["variants"]
    torch_eval = evaluate_json(trained_runs["small-a"], tiny_data)
    assert metrics["pytorch"]["stats"] == torch_eval["stats"]
    assert metrics["fp32"]["stats"]["AP"] == pytest.approx(torch_eval["stats"]["AP"], abs=0.01)
    assert metrics["fp32"]["stats"]["AP50"] == pytest.approx(torch_eval["stats"]["AP50"], abs=0.01)
    assert metrics["fp32"]["delta_AP"] == pytest.approx(metrics["fp32"]["stats"]["AP"] - torch_eval["stats"]["AP"])


@pytest.mark.slow
def test_int8_map_change_is_reported(exported):
    int8, pytorch = exported["metrics"]["variants"]["int8"], exported["metrics"]["variants"]["pytorch"]
    assert int8["delta_AP"] == pytest.approx(int8["stats"]["AP"] - pytorch["stats"]["AP"])
    assert int8["delta_AP50"] == pytest.approx(int8["stats"]["AP50"] - pytorch["stats"]["AP50"])
    assert int8["detections"] > 0 and int8["vs_pytorch"]["matched"] > 0


@pytest.mark.slow
def test_evaluate_and_predict_take_the_export(exported, tiny_data, tmp_path):
    out, metrics = exported["dir"], exported["metrics"]["variants"]
    assert evaluate_json(out / "fp32", tiny_data)["stats"] == metrics["fp32"]["stats"]
    assert evaluate_json(out / "onnx", tiny_data)["stats"] == metrics["onnx"]["stats"]
    assert evaluate_json(out, tiny_data)["stats"] == metrics["int8"]["stats"]  # the folder means its INT8 model
    image = sorted((tiny_data / "images").iterdir())[0]
    result = odorch("predict", out / "fp32", image, "--out", tmp_path / "drawn", "--min-score", 0)
    assert result.exit_code == 0, result.output
    predicted = json.loads((tmp_path / "drawn" / "predictions.json").read_text())[0]["detections"]
    assert predicted and {d["label"] for d in predicted} <= {"circle", "square"}
    assert (tmp_path / "drawn" / f"{image.stem}.png").is_file()


@pytest.mark.slow
def test_re_export_replaces_the_earlier_one(exported, trained_runs, tiny_data, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(exported["dir"], out)  # fp32, int8 and onnx of small-a
    result = odorch("export", trained_runs["small-b"], "--data", tiny_data, "--out", out)
    assert result.exit_code == 0, result.output
    assert not (out / "int8").exists() and not (out / "onnx").exists()  # a stale int8/ would be what OUT loads as
    assert set(json.loads((out / "metrics.json").read_text())["variants"]) == {"pytorch", "fp32"}
    assert json.loads((out / "fp32" / "config.json").read_text())["export"]["source"].endswith("small-b")
    assert "fp32" in result.output and "speed-up" in result.output


@pytest.mark.slow
def test_an_op_openvino_cannot_convert_is_named(trained_runs, tiny_data, tmp_path, monkeypatch):
    # MobileNetV3's hard-swish computed with torch.i0, which runs in PyTorch but has no OpenVINO conversion
    monkeypatch.setattr(torch.nn.Hardswish, "forward", lambda self, x: x * torch.i0(x).clamp(max=1))
    result = odorch("export", trained_runs["small-a"], "--data", tiny_data, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "cannot convert the op(s) aten::i0" in result.output
    assert not (tmp_path / "out" / "fp32").exists()


def test_missing_calibration_data_is_refused(trained_runs, tiny_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = odorch("export", trained_runs["small-a"], "--data", tiny_data, "--out", tmp_path / "out", "--int8",
                    "--calibration-data", empty)
    assert result.exit_code == 1
    assert f"no usable train split: {empty}: no annotations/train.json" in result.output
    assert "odorch convert" in result.output
    assert not (tmp_path / "out").exists()


def test_calibration_data_without_int8_is_a_usage_error(trained_runs, tiny_data, tmp_path):
    result = odorch("export", trained_runs["small-a"], "--data", tiny_data, "--out", tmp_path / "out",
                    "--calibration-data", tiny_data)
    assert result.exit_code == 2 and "--calibration-data is for --int8" in result.output


def test_builtin_od_model_is_refused(tiny_data, tmp_path):
    model = tmp_path / "builtin" / "model"
    model.mkdir(parents=True)
    (model / "model_algo_1-symbol.json").write_text("{}")
    (model / "model_algo_1-0000.params").write_bytes(b"\0")
    result = odorch("export", model, "--data", tiny_data, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "built-in Object Detection" in result.output


@pytest.mark.slow
def test_an_export_cannot_be_exported_again(exported, tiny_data, tmp_path):
    result = odorch("export", exported["dir"] / "fp32", "--data", tiny_data, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "already an exported model" in result.output


def test_branch_free_batched_nms_keeps_what_torchvision_keeps():
    from torchvision.ops import batched_nms

    from odorch.export import branch_free_batched_nms

    torch.manual_seed(0)
    corners = torch.rand(300, 2) * 200
    boxes = torch.cat([corners, corners + torch.rand(300, 2) * 60 + 1], dim=1)
    scores, labels = torch.rand(300), torch.randint(1, 4, (300,))
    assert torch.equal(branch_free_batched_nms(boxes, scores, labels, 0.5), batched_nms(boxes, scores, labels, 0.5))
    empty = branch_free_batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


def test_a_box_swapped_for_another_of_the_last_score_is_a_tie_not_a_move():
    from odorch.export import compare_detections

    def detector(boxes: list[list[float]], scores: list[float]):
        out = {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores), "labels": torch.ones(len(scores), dtype=torch.int64)}
        return lambda images: [out]

    reference = detector([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.4, 0.4])
    swapped = detector([[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]], [0.9, 0.4, 0.4])  # another 0.4 box last
    check = compare_detections(reference, swapped, [torch.zeros(3, 8, 8)])
    assert (check["moved"], check["tied_at_cutoff"], check["unmoved_max_box_diff_px"]) == (0, 1, 0.0)
    shifted = detector([[5, 0, 15, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.4, 0.4])  # the 0.9 box moved 5 px
    check = compare_detections(reference, shifted, [torch.zeros(3, 8, 8)])
    assert (check["moved"], check["tied_at_cutoff"], check["max_box_diff_px"]) == (1, 0, 5.0)


def test_unconvertible_ops_reads_openvinos_report():
    from odorch.export import unconvertible_ops

    report = (
        "FrontEnd API failed with OpConversionFailure:\nModel wasn't fully converted. Failed operations detailed log:\n"
        "-- prim::Constant with a message:\nNone constant cannot be converted to OpenVINO opset\nSummary:\n"
        "-- No conversion rule found for operations: aten::linalg_svd, aten::histc\n"
        "-- Conversion is failed for: prim::Constant\n"
    )
    assert unconvertible_ops(report) == ["aten::linalg_svd", "aten::histc"]
    assert unconvertible_ops("Summary:\n-- Conversion is failed for: prim::Constant\n") == ["prim::Constant"]


@pytest.mark.slow
def test_int8_export_does_not_warn_about_cuda(trained_runs, tiny_data, tmp_path):
    """NNCF imports torch's C++-extension builder, which warns "No CUDA runtime is found" on a CPU
    machine with a CUDA toolkit installed. A fresh process: the warning is printed once per process."""
    if not Path("/usr/local/cuda").exists() and not os.environ.get("CUDA_HOME"):
        pytest.skip("no CUDA toolkit on this machine: torch has nothing to warn about")
    command = [sys.executable, "-c", "from odorch.cli import main; main()", "export", str(trained_runs["small-a"]),
               "--data", str(tiny_data), "--out", str(tmp_path / "out"), "--int8", "--calibration-size", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "int8" / "model.xml").is_file()
    assert "No CUDA runtime" not in done.stderr + done.stdout

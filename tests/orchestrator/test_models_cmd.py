"""odorch models: every model of MODELS, parameters counted as torchvision's own weights metadata
counts them, bench numbers with their date, weights named by torchvision's enums."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from odorch.cli import main


@pytest.mark.slow
def test_models_lists_every_trainable_model():
    """Builds every architecture once (~15 s CPU, ~50 s on the shared box)."""
    import torchvision.models.detection as detection

    from odorch.catalog import CPU_MS, format_rows
    from odorch.runtime.models import MODELS

    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(MODELS)
    for row in rows:
        spec = MODELS[row["name"]]
        assert row["family"] == spec.family and row["input_size"] == spec.image_size
        if spec.family == "hf":  # a transformers model: its hub id; counting would download its config
            assert row["weights"]["coco"] == spec.weights_enum and row["parameters"] is None
        elif spec.weights_enum:  # torchvision's metadata of the COCO weights (no download) counts the same
            weights = getattr(detection, spec.weights_enum).DEFAULT
            assert row["parameters"] == weights.meta["num_params"], row["name"]
            assert row["weights"]["coco_url"] == weights.url
        else:
            assert row["weights"]["coco"] is None and row["weights"]["imagenet_url"].startswith("https://")
            assert 1e6 < row["parameters"] < 1e8
        measured = CPU_MS.get(row["name"])
        assert (row["cpu_ms"], row["cpu_ms_date"]) == ((measured[0], measured[1]) if measured else (None, None))
    assert "ssdlite320_mobilenet_v3_large" in CPU_MS and set(CPU_MS) <= set(MODELS)
    cells = {c[0]: c for c in format_rows(rows)}
    assert cells["ssdlite320_mobilenet_v3_large"][2:5] == ["320x320", "3.44M", "63.8 (2026-11-22)"]
    assert cells["fasterrcnn_resnet50_fpn_v2"][4] == "not measured"
    assert cells["fasterrcnn_resnet50_fpn_v2"][5] == "COCO: FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1"


def test_models_help_is_listed():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "models" in result.output

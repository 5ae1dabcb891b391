"""`odorch export`: OpenVINO and ONNX exports, checked and timed."""

from __future__ import annotations

import json
from pathlib import Path

import click

from odorch.cli.common import device_option, pick_device


@click.command("export")
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder written by `odorch convert`: the IR is checked and evaluated on --split of it.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Export folder.")
@click.option("--format", "formats", multiple=True, type=click.Choice(["openvino", "onnx"]), default=("openvino",),
              show_default=True, help="Repeatable: --format openvino --format onnx.")
@click.option("--split", default="test", show_default=True, help="Split of --data to check, evaluate and time on.")
@click.option("--int8", is_flag=True, help="Also an INT8 IR, by NNCF post-training quantization.")
@click.option("--calibration-data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="--int8: a folder written by `odorch convert` whose train split calibrates (default: --data).")
@click.option("--calibration-size", type=click.IntRange(1), default=300, show_default=True,
              help="--int8: calibration images (the first N).")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
@device_option
def export_cmd(run: Path, data: Path, out: Path, formats: tuple[str, ...], split: str, int8: bool,
               calibration_data: Path | None, calibration_size: int, as_json: bool, device: str = "auto") -> None:
    """Export RUN's model to OpenVINO (FP32; INT8 with --int8) and/or ONNX, check it against
    PyTorch on real images, evaluate it as `odorch evaluate` does and time it against PyTorch.

    Writes OUT/fp32/, OUT/int8/, OUT/onnx/ (model + config.json) and OUT/metrics.json, replacing
    those of an earlier export to OUT. Each model folder, and OUT itself (its INT8 model if there
    is one, else FP32), is a model for `odorch evaluate`, `predict`, `serve` and `compare`.
    """
    from odorch.export import ExportError, export_run

    if calibration_data is not None and not int8:
        raise click.UsageError("--calibration-data is for --int8")
    where = pick_device(device)
    try:
        metrics, lines = export_run(run, data=data, out=out, device=where, formats=formats, split=split, int8=int8,
                                    calibration_data=calibration_data, calibration_size=calibration_size,
                                    echo=lambda line: click.echo(line, err=as_json))
    except ExportError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    for line in lines:
        click.echo(line)

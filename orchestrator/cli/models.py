"""`odorch models`: the detectors odorch can train."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models_cmd(as_json: bool) -> None:
    """Every model `odorch train --model NAME` takes: family, default input size, parameters
    (COCO layout, counted by building the architecture), CPU ms/image as the benches measured it
    (with the date; 'not measured' where none) and where its pretrained weights come from.
    """
    from rich.console import Console
    from rich.table import Table

    from odorch.catalog import format_rows, model_rows

    rows = model_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("model", "family", "input", "parameters", "CPU ms/image (measured)", "pretrained weights"):
        table.add_column(column)
    for cells in format_rows(rows):
        table.add_row(*cells)
    Console(width=200).print(table)
    click.echo("CPU: 2-core AMD EPYC, torch eager, one image per call (odorch.catalog.CPU_MS says which bench measured each)")

"""`odorch models`: the detectors odorch can train."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.option("--jumpstart", is_flag=True,
              help="List the fine-tunable SageMaker JumpStart object-detection models instead "
                   "(`odorch train --algorithm jumpstart --model ID`), from the region's JumpStart manifest.")
@click.option("--region", help="--jumpstart: AWS region (default: boto3's, e.g. AWS_DEFAULT_REGION).")
def models_cmd(as_json: bool, jumpstart: bool = False, region: str | None = None) -> None:
    """Every model `odorch train --model NAME` takes: family, default input size, parameters
    (COCO layout, counted by building the architecture), CPU ms/image as the benches measured it
    (with the date; 'not measured' where none) and where its pretrained weights come from.
    """
    from rich.console import Console
    from rich.table import Table

    from odorch.catalog import format_rows, model_rows

    if region and not jumpstart:
        raise click.UsageError("--region only applies to --jumpstart")
    if jumpstart:
        _jumpstart_models(region, as_json=as_json)
        return

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


def _jumpstart_models(region: str | None, *, as_json: bool) -> None:
    """The manifest's fine-tunable object-detection models, newest version each (deprecated ones left out)."""
    from odorch.aws import AwsClients
    from odorch.jumpstart import od_models

    clients = AwsClients.from_env(region)
    rows = od_models(clients.s3, clients.region)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['model_id']}  {row['version']}  (default instance {row['default_instance'] or 'not given'})")
    click.echo(f"{len(rows)} fine-tunable object-detection model(s) in {clients.region}; "
               "train one: odorch train --algorithm jumpstart --model ID --instance TYPE --bucket B --role R --data D")

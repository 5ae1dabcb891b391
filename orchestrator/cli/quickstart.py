"""`odorch quickstart`: the whole product on synthetic data."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from odorch.cli.common import mlflow_option, tracking_options


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("quickstart"), show_default=True,
              help="Folder for everything the tour makes (data, runs, report, export).")
@click.option("--fast", is_flag=True, help="A smoke run (~3 min): tiny data, 1-2 epochs per model.")
@click.option("--weights", default="none", show_default=True,
              help="Starting weights of every model: none (offline), coco or imagenet (downloaded by torchvision).")
@mlflow_option
def quickstart(out: Path, fast: bool, weights: str, mlflow_uri: str | None = None) -> None:
    """The whole product in one command, on synthetic data, no GPU or AWS needed: demo data ->
    inspect -> convert -> train SSDlite and FCOS -> tune -> compare -> export the winner to
    OpenVINO INT8. Prints each step's odorch command; run it again to continue after a stop.
    The tour's steps are fixed: odorch.yaml sets only this command's own options, so that every
    machine runs the same tour."""
    from odorch.quickstart import QuickstartError, closing_lines, make_plan, run_quickstart

    tracking = tracking_options(mlflow_uri)  # a server that does not answer: say so before the first step
    try:
        state = run_quickstart(out=out, plan=make_plan(fast=fast, weights=weights), echo=click.echo, tracking=tracking)
    except QuickstartError as e:
        raise click.ClickException(str(e)) from e
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted: run `odorch quickstart --out {out}{' --fast' if fast else ''}` again to continue", err=True)
        sys.exit(130)
    for line in closing_lines(out, state):
        click.echo(line)

"""`odorch jobs list|describe|logs`: the runs folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from odorch.cli.common import runs_dir_option


@click.group()
def jobs() -> None:
    """List training jobs and show their records and logs."""


@jobs.command("list")
@runs_dir_option
def jobs_list(runs_dir: Path) -> None:
    """A table of the jobs in --runs-dir (a job whose process is gone is marked Failed)."""
    from odorch.runs import elapsed, list_jobs
    from odorch.runtime.metrics import OBJECTIVE

    records = list_jobs(runs_dir)
    if not records:
        click.echo(f"no jobs in {runs_dir}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("name", "status", "model", f"best {OBJECTIVE}", "epochs", "duration", "created"):
        table.add_column(column, no_wrap=column != "model")
    for r in records:
        best = r.best_value
        best_text = f"{best:.4f} (epoch {r.best.get('epoch')})" if best is not None else ""
        epochs = f"{r.epoch}/{r.epochs}" if r.epoch is not None else ""
        created = r.created[:16].replace("T", " ")
        table.add_row(r.job_name, r.status, r.model, best_text, epochs, elapsed(r), created)
    console = Console()
    if not console.is_terminal:  # piped: don't squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)


@jobs.command("describe")
@click.argument("job_name")
@runs_dir_option
def jobs_describe(job_name: str, runs_dir: Path) -> None:
    """The job's record (job.json), as JSON."""
    from odorch.runs import find_job, read_job, refresh_status

    job_dir = find_job(runs_dir, job_name)
    click.echo(json.dumps(refresh_status(read_job(job_dir), job_dir=job_dir).to_json(), indent=2))


@jobs.command("logs")
@click.argument("job_name")
@runs_dir_option
@click.option("--tail", type=click.IntRange(0), metavar="N", help="Only the last N lines.")
def jobs_logs(job_name: str, runs_dir: Path, tail: int | None) -> None:
    """The job's output (logs.txt): everything the entrypoint printed, all attempts."""
    from collections import deque

    from odorch.runs import LOG_FILE, find_job

    path = find_job(runs_dir, job_name) / LOG_FILE
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = deque(f, maxlen=tail) if tail is not None else f.readlines()
    click.echo("".join(lines), nl=False)


# ---------------------------------------------------------------- deploy / endpoints

"""The `odorch` command line: the root group and its command groups, one module each. Heavy
imports (torch, PIL, numpy) stay inside the commands so that `odorch --help` starts fast."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from odorch import __version__
from odorch.errors import OdorchError


class OdorchGroup(click.Group):
    """The root group: the one place a user's mistake (any OdorchError, raised anywhere below)
    or an AWS refusal (botocore's errors: credentials, permissions, limits) becomes
    `error: MESSAGE` on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except Exception as e:
            if not isinstance(e, (OdorchError, *_aws_errors())):
                raise
            raise UserError(str(e)) from e


class UserError(click.ClickException):
    """Shown as `error: MESSAGE` (exit status 1); a caller of main(standalone_mode=False), such
    as `odorch quickstart`, gets it raised like any ClickException."""

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _aws_errors() -> tuple[type[Exception], ...]:
    """botocore's error bases, if botocore was imported (else no AWS call can have failed)."""
    botocore = sys.modules.get("botocore.exceptions")
    return (botocore.BotoCoreError, botocore.ClientError) if botocore else ()


@click.group(cls=OdorchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="odorch")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Config file with defaults for any option (default: $ODORCH_CONFIG, else ./odorch.yaml if present).")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """odorch: fine-tune object detectors locally or on SageMaker, and find out which is best.

    Options of any command can be set in odorch.yaml (see `odorch config show`); flags win.
    """
    from odorch.config import default_map, find_config, read_config

    path = find_config(config_file)
    raw = read_config(path) if path else {}
    ctx.obj = {"config": path, "raw": raw}
    if path:
        ctx.default_map = default_map(raw, ctx.command, path)


def _register() -> None:
    from odorch.cli import config, data, deploy, evaluate, export, jobs, models, quickstart, train, tune

    for command in (config.config_group, data.convert, data.inspect_cmd, data.demo_data, quickstart.quickstart,
                    train.train, evaluate.evaluate, evaluate.predict, evaluate.compare_cmd, deploy.serve,
                    jobs.jobs, deploy.deploy, deploy.endpoints, tune.tune, export.export_cmd, models.models_cmd):
        main.add_command(command)


_register()

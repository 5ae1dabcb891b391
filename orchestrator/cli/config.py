"""`odorch config show`: the configuration in force and where each value came from."""

from __future__ import annotations

from typing import Any

import click


@click.group("config")
def config_group() -> None:
    """Show the configuration in force (odorch.yaml merged with defaults and flags)."""


@config_group.command("show", context_settings={"ignore_unknown_options": True})
@click.argument("command_line", nargs=-1, type=click.UNPROCESSED, metavar="[COMMAND [OPTIONS...]]")
@click.pass_context
def config_show(ctx: click.Context, command_line: tuple[str, ...]) -> None:
    """Every option of COMMAND with its value and where it came from (config file, command line or
    default), e.g. `odorch config show train --epochs 3`; with no COMMAND, what the file sets."""
    from odorch.config import explain

    root = ctx.find_root()
    config, raw = root.obj["config"], root.obj["raw"]
    click.echo(f"config file: {config or 'none (no --config, $ODORCH_CONFIG or ./odorch.yaml)'}")
    if not command_line:
        for line in _config_lines(root.default_map or {}, []):
            click.echo(line)
        return
    parent, cmd, args = root, root.command, list(command_line)
    while isinstance(cmd, click.Group):
        if not args or args[0] not in cmd.commands:
            raise click.UsageError(f"{' '.join(command_line)}: name a command of odorch (e.g. train, tune, convert voc2coco)")
        name = args.pop(0)
        cmd = cmd.commands[name]
        if isinstance(cmd, click.Group):
            parent = click.Context(cmd, info_name=name, parent=parent)
    sub = cmd.make_context(name, args, parent=parent, resilient_parsing=True)
    rows = explain(sub, config, raw)
    widths = [max(len(row[i]) for row in rows) for i in (0, 1)]
    for option, value, where in rows:
        click.echo(f"  {option:<{widths[0]}}  {value:<{widths[1]}}  {where}")


def _config_lines(node: dict[str, Any], names: list[str]) -> list[str]:
    lines = []
    for key, value in node.items():
        if isinstance(value, dict):
            lines.extend(_config_lines(value, [*names, key]))
        else:
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            lines.append(f"  odorch {' '.join(names)} --{key.replace('_', '-')} {shown}")
    return lines

"""The config file: `odorch.yaml` sets defaults for any option of any command; flags win.

The file maps command names to their options, nested as the commands are (``convert:
voc2coco: ...``), with option names as on the command line or as Python names (``max-jobs`` or
``max_jobs``). ``common:`` holds options that apply to every command that has them (bucket,
role, region, runs-dir...). ``hp`` may be a mapping; it merges with ``--hp`` key by key::

    common:
      runs-dir: runs
      region: eu-west-1
    train:
      model: ssdlite320_mobilenet_v3_large
      epochs: 15
      hp: {batch_size: 8, lr: 0.05}
    convert:
      voc2coco: {split: "0.7,0.15,0.15"}

Which file: ``odorch --config FILE``, else ``$ODORCH_CONFIG``, else ``./odorch.yaml`` when it
exists. The file becomes click's ``default_map``, so every value still goes through the
option's own type and checks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from odorch.errors import OdorchError

DEFAULT_FILE = "odorch.yaml"
ENV_VAR = "ODORCH_CONFIG"
COMMON = "common"


class ConfigError(OdorchError, click.ClickException):
    """The config file cannot be used; the message names the file, the key and the fix."""


def find_config(given: Path | None) -> Path | None:
    """The config file in force: --config, then $ODORCH_CONFIG, then ./odorch.yaml if present."""
    if given is not None:
        return given
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).is_file():
            raise ConfigError(f"{ENV_VAR}={env}: no such file; unset it or point it at a config file")
        return Path(env)
    local = Path(DEFAULT_FILE)
    return local if local.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The file as a dict. YAML aliases are refused: ./odorch.yaml is read by every command, and
    a few hundred bytes of nested aliases (a "billion laughs") expand to gigabytes."""
    import yaml

    from odorch.converters.reading import YamlAliasError, safe_load_yaml

    try:
        raw = safe_load_yaml(path.read_text(encoding="utf-8"), source=path)
    except YamlAliasError as e:
        raise ConfigError(str(e)) from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from e
    except RecursionError as e:
        raise ConfigError(f"{path}: nested too deeply to be a config file; fix the file") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix the file") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of command names to options, got {type(raw).__name__}")
    return raw


def default_map(raw: dict[str, Any], root: click.Group, path: Path) -> dict[str, Any]:
    """Check every key against the commands and options that exist, and turn the file into
    click's nested default_map (common options copied into each command that has them; an
    option set for the command itself wins over common)."""
    common = raw.get(COMMON) or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{path}: '{COMMON}' must be a mapping of option names to values")
    leaves = _leaf_commands(root)
    unknown = [k for k in common if not any(_python_name(k) in _names(cmd) for _, cmd in leaves)]
    if unknown:
        raise ConfigError(f"{path}: {COMMON}.{unknown[0]}: no command has this option")
    commands = {k: v for k, v in raw.items() if k != COMMON}
    out = _command_map(commands, root, path, prefix="")
    for names, cmd in leaves:
        params = _names(cmd)
        shared = {params[_python_name(k)]: v for k, v in common.items() if _python_name(k) in params}
        if shared:
            node = out
            for name in names:
                node = node.setdefault(name, {})
            for param, value in shared.items():
                node.setdefault(param.name, _value(value, param, f"{COMMON}.{_flag(param)}", path))
    return out


def _command_map(section: dict[str, Any], group: click.Group, path: Path, *, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, options in section.items():
        key = f"{prefix}{name}"
        cmd = group.commands.get(str(name))
        if cmd is None:
            raise ConfigError(f"{path}: {key}: no such command (commands: {', '.join(sorted(group.commands))})")
        if options is None:
            continue
        if not isinstance(options, dict):
            raise ConfigError(f"{path}: {key}: expected a mapping of options, got {options!r}")
        if isinstance(cmd, click.Group):
            out[name] = _command_map(options, cmd, path, prefix=f"{key}.")
        else:
            out[name] = _options(options, cmd, path, key)
    return out


def _options(options: dict[str, Any], cmd: click.Command, path: Path, key: str) -> dict[str, Any]:
    names = _names(cmd)
    out = {}
    for raw_name, value in options.items():
        param = names.get(_python_name(raw_name))
        if param is None:
            valid = ", ".join(sorted({_flag(p) for p in names.values()}))
            raise ConfigError(f"{path}: {key}.{raw_name}: no such option of 'odorch {key.replace('.', ' ')}' (options: {valid})")
        out[param.name] = _value(value, param, f"{key}.{raw_name}", path)
    return out


def _names(cmd: click.Command) -> dict[str, click.Parameter]:
    """Every name a parameter answers to in the file: its Python name and its long flags
    (`json` for `--json` whose Python name is `as_json`)."""
    names = {}
    for param in cmd.params:
        if not param.name or param.name == "help" or not param.expose_value:
            continue
        names[param.name] = param
        for opt in param.opts:
            if opt.startswith("--"):
                names[_python_name(opt[2:])] = param
    return names


def _flag(param: click.Parameter) -> str:
    long = [o[2:] for o in param.opts if o.startswith("--")]
    return long[0] if long else str(param.name)


def _value(value: Any, param: click.Parameter, key: str, path: Path) -> Any:
    """YAML values as click expects them; `hp` mappings become KEY=VALUE items."""
    if param.multiple or param.nargs != 1:
        if isinstance(value, dict):
            return [f"{k}={_scalar(v)}" for k, v in value.items()]
        if isinstance(value, list):
            return [_scalar(v) for v in value]
        raise ConfigError(f"{path}: {key}: expected a list or mapping, got {value!r}")
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{path}: {key}: expected one value, got {value!r}")
    if not isinstance(param.type, (click.Path, click.File)):  # paths are checked when the command runs
        try:
            param.type.convert(value, param, None)
        except click.BadParameter as e:
            raise ConfigError(f"{path}: {key}: {e.message}") from e
    return value


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _python_name(name: Any) -> str:
    return str(name).replace("-", "_")


def _leaf_commands(group: click.Group, names: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out.extend(_leaf_commands(cmd, (*names, name)))
        else:
            out.append(((*names, name), cmd))
    return out


def explain(ctx: click.Context, config: Path | None, raw: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(option, value as text, where it came from) for every parameter of the command `ctx` parsed."""
    from click.core import ParameterSource

    rows = []
    for param in ctx.command.params:
        if param.name is None or param.name == "help" or param.expose_value is False:
            continue
        source = ctx.get_parameter_source(param.name)
        value = ctx.params.get(param.name)
        from_file = f"{config} ({_config_key(raw, _command_path(ctx), param)})"
        if source is ParameterSource.DEFAULT_MAP:
            where = from_file
        elif source is ParameterSource.COMMANDLINE and param.name == "hp" and ctx.lookup_default("hp", call=False):
            where = f"command line + {from_file}"
        elif source is ParameterSource.COMMANDLINE:
            where = "command line"
        elif source is ParameterSource.ENVIRONMENT:
            where = "environment"
        else:
            where = "default"
        label = f"--{_flag(param)}" if isinstance(param, click.Option) else param.name.upper()
        rows.append((label, _shown(value), where))
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


def _config_key(raw: dict[str, Any], names: list[str], param: click.Parameter) -> str:
    """The key of the file that set `param` of the command at `names`: its own section or common."""
    option = str(param.name)
    aliases = {option, *(_python_name(o[2:]) for o in param.opts if o.startswith("--"))}
    node: Any = raw
    for name in names:
        node = node.get(name) if isinstance(node, dict) else None
    for section, prefix in ((node, ".".join(names)), (raw.get(COMMON), COMMON)):
        for key in section or {}:
            if _python_name(key) in aliases:
                return f"{prefix}.{key}"
    return ".".join([*names, option])


def _command_path(ctx: click.Context) -> list[str]:
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return names[::-1]

"""One search space for both tuning engines: a YAML file, Optuna distributions, AMT ranges.

A space file maps hyperparameter names (those of `entrypoints/train.py`) to ranges::

    lr: {type: float, low: 0.001, high: 0.1, log: true}
    batch_size: {type: int, low: 4, high: 16, step: 4}
    optimizer: {type: categorical, choices: [sgd, adamw]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odorch.errors import OdorchError

KINDS = ("float", "int", "categorical")


class SpaceError(OdorchError, ValueError):
    """A search space that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple[Any, ...] = ()


def _param(name: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: {name}: give a mapping such as {{type: float, low: 0.001, high: 0.1}}")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise SpaceError(f"{where}: {name}: unknown key(s) {', '.join(sorted(unknown))}; use type, low, high, log, step, choices")
    kind = spec.get("type")
    if kind not in KINDS:
        raise SpaceError(f"{where}: {name}: type must be one of {', '.join(KINDS)} (got {kind!r})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}: {name}: a categorical needs a non-empty list 'choices'")
        return Param(name, kind, choices=tuple(choices))
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError) as e:
        raise SpaceError(f"{where}: {name}: a {kind} needs numbers 'low' and 'high'") from e
    if not low < high or not (math.isfinite(low) and math.isfinite(high)):
        raise SpaceError(f"{where}: {name}: low ({low}) must be below high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise SpaceError(f"{where}: {name}: log scaling needs low > 0 (got {low})")
    step = spec.get("step")
    if kind == "int":
        if low != int(low) or high != int(high):
            raise SpaceError(f"{where}: {name}: an int needs whole 'low' and 'high'")
        if step is not None and (not isinstance(step, int) or step < 1 or log):
            raise SpaceError(f"{where}: {name}: 'step' must be a positive whole number, without log")
    elif step is not None:
        raise SpaceError(f"{where}: {name}: 'step' is for int ranges only")
    return Param(name, kind, low, high, log, step)


def parse_space(data: Any, *, where: str = "space") -> dict[str, Param]:
    if not isinstance(data, dict) or not data:
        raise SpaceError(f"{where}: give a mapping of hyperparameter names to ranges")
    return {str(name): _param(str(name), spec, where) for name, spec in data.items()}


def load_space(path: Path) -> dict[str, Param]:
    import yaml

    from odorch.converters.reading import YamlAliasError, safe_load_yaml

    try:
        data = safe_load_yaml(Path(path).read_text(encoding="utf-8"), source=path)
    except YamlAliasError as e:
        raise SpaceError(str(e)) from e
    except FileNotFoundError as e:
        raise SpaceError(f"{path}: not found") from e
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from e
    except (yaml.YAMLError, RecursionError) as e:
        raise SpaceError(f"{path}: not valid YAML ({str(e).splitlines()[0] if str(e) else 'nested too deeply'})") from e
    return parse_space(data, where=str(path))


def default_space(model: str) -> dict[str, Param]:
    """What matters most when fine-tuning each family (SGD), in ranges that train on a CPU too."""
    from odorch.runtime.models import spec_of

    spec = spec_of(model)
    round6 = lambda x: float(f"{x:.6g}")  # noqa: E731 - 0.15, not 0.15000000000000002, in files and AMT
    space: dict[str, Any] = {
        "lr": {"type": "float", "low": round6(spec.lr / 10), "high": round6(spec.lr * 3), "log": True},
        "momentum": {"type": "float", "low": 0.8, "high": 0.95},
        "weight_decay": {
            "type": "float", "low": round6(spec.weight_decay / 10), "high": round6(spec.weight_decay * 10), "log": True,
        },
        "head_lr_mult": {"type": "float", "low": 1.0, "high": 10.0, "log": True},
        "batch_size": {"type": "categorical", "choices": [4, 8, 16]},
    }  # no optimizer: AdamW diverges at SGD's learning rates; tune it in a space file with its own lr range
    if spec.family == "ssd":
        space["photometric"] = {"type": "categorical", "choices": ["false", "true"]}
    return parse_space(space, where=f"default space of {model}")


def check_names(space: dict[str, Param], *, valid: dict[str, Any] | list[str], fixed: dict[str, Any]) -> None:
    """Every tuned name must be a hyperparameter the training accepts, and not also fixed by --hp."""
    unknown = sorted(name for name in space if name not in valid)
    if unknown:
        raise SpaceError(f"space: {', '.join(unknown)} not accepted by this training; valid: {', '.join(valid)}")
    both = sorted(set(space) & set(fixed))
    if both:
        raise SpaceError(f"space: {', '.join(both)} both tuned and fixed with --hp: drop one")


def study_space(*, model: str, algorithm: Any, fixed: dict[str, Any], space_file: Path | None = None,
                as_grid: bool = False) -> dict[str, Param] | None:
    """The space a study tunes: the file's, else the model's default less what `fixed` sets (None
    when the algorithm has no default); names checked, and grid-able when `as_grid`. SpaceError."""
    if space_file is not None:
        space = load_space(space_file)
    elif algorithm.default_space:
        space = {k: v for k, v in default_space(model).items() if k not in fixed}
    else:
        return None
    check_names(space, valid=algorithm.hyperparameter_names(), fixed=fixed)
    if as_grid:
        grid(space)
    return space


def suggest(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    """A trial's values, drawn by Optuna."""
    values: dict[str, Any] = {}
    for p in space.values():
        if p.kind == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=p.step or 1, log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return values


def grid(space: dict[str, Param]) -> dict[str, list[Any]]:
    """Optuna's GridSampler search space: only categoricals and stepped ints can be a grid."""
    out: dict[str, list[Any]] = {}
    for p in space.values():
        if p.kind == "categorical":
            out[p.name] = list(p.choices)
        elif p.kind == "int" and p.step:
            out[p.name] = list(range(int(p.low), int(p.high) + 1, p.step))
        else:
            raise SpaceError(f"space: {p.name}: a grid search needs categorical or int-with-step ranges only")
    return out


def amt_ranges(space: dict[str, Param]) -> dict[str, list[dict[str, Any]]]:
    """SageMaker AMT ParameterRanges (values are strings; log scaling -> Logarithmic)."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for p in space.values():
        if p.kind == "categorical":
            ranges["CategoricalParameterRanges"].append({"Name": p.name, "Values": [str(c) for c in p.choices]})
            continue
        if p.step not in (None, 1):
            raise SpaceError(f"space: {p.name}: AMT has no step for integer ranges; use a categorical list instead")
        key = "IntegerParameterRanges" if p.kind == "int" else "ContinuousParameterRanges"
        low, high = (str(int(p.low)), str(int(p.high))) if p.kind == "int" else (repr(p.low), repr(p.high))
        scaling = "Logarithmic" if p.log else "Linear"
        ranges[key].append({"Name": p.name, "MinValue": low, "MaxValue": high, "ScalingType": scaling})
    return ranges

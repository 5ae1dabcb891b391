"""The one definition of odorch's metric lines.

The training entrypoint prints them; the local log parser, SageMaker MetricDefinitions and
Automatic Model Tuning all read them with these same regexes (first group = the value).

A line looks like: ``epoch=3/10 train:loss=0.812300 validation:mAP=0.412300 validation:mAP50=0.710000``.

A second format, BUILTIN_OD_METRICS, reads the SageMaker built-in Object Detection algorithm's own
log line ``#quality_metric: host=algo-1, epoch=3, validation mAP <score>=(0.412)`` (its epochs are
0-based and it does not say how many there are). SageMaker defines the built-in algorithm's
metrics itself, so these regexes are for odorch's local log parser only, never MetricDefinitions.
"""

from __future__ import annotations

import re

_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|nan|inf)"

METRICS: dict[str, str] = {
    "validation:mAP": r"validation:mAP=" + _NUMBER,
    "validation:mAP50": r"validation:mAP50=" + _NUMBER,
    "train:loss": r"train:loss=" + _NUMBER,
    "train:progress": r"train:progress=" + _NUMBER,
}
OBJECTIVE = "validation:mAP"
EPOCH = re.compile(r"\bepoch=([0-9]+)/([0-9]+)")
_COMPILED = {name: re.compile(pattern) for name, pattern in METRICS.items()}

_BUILTIN_OD_PREFIX = r"#quality_metric: host=[^,]*, epoch=([0-9]+),"
BUILTIN_OD_METRICS: dict[str, str] = {
    "validation:mAP": _BUILTIN_OD_PREFIX.replace("([0-9]+)", "[0-9]+") + r" validation mAP <score>=\(" + _NUMBER + r"\)",
}
BUILTIN_OD_EPOCH = re.compile(_BUILTIN_OD_PREFIX)
_BUILTIN_OD_COMPILED = {name: re.compile(pattern) for name, pattern in BUILTIN_OD_METRICS.items()}


def format_metrics(values: dict[str, float], *, epoch: int | None = None, epochs: int | None = None) -> str:
    """The line to print; unknown metric names are refused so the regexes stay the contract."""
    unknown = set(values) - set(METRICS)
    if unknown:
        raise KeyError(f"unknown metric(s) {sorted(unknown)}; known: {sorted(METRICS)}")
    parts = [f"epoch={epoch}/{epochs}"] if epoch is not None else []
    parts += [f"{name}={value:.6f}" for name, value in values.items()]
    return " ".join(parts)


def parse_metrics(line: str) -> dict[str, float]:
    """Every metric in one log line, by the same regexes SageMaker is given (or, for a line of the
    built-in Object Detection algorithm, by BUILTIN_OD_METRICS)."""
    out = {}
    for name, regex in _COMPILED.items():
        match = regex.search(line)
        if match:
            out[name] = float(match.group(1))
    if not out and "#quality_metric:" in line:
        for name, regex in _BUILTIN_OD_COMPILED.items():
            match = regex.search(line)
            if match:
                out[name] = float(match.group(1))
    return out


def parse_epoch(line: str) -> tuple[int, int | None] | None:
    """(epoch, epochs) of an odorch line; (epoch, None) of a built-in algorithm's quality_metric line."""
    match = EPOCH.search(line)
    if match:
        return int(match.group(1)), int(match.group(2))
    match = BUILTIN_OD_EPOCH.search(line)
    return (int(match.group(1)), None) if match else None


def metric_definitions() -> list[dict[str, str]]:
    """SageMaker's MetricDefinitions (also used by tuning jobs: at most 20 allowed)."""
    return [{"Name": name, "Regex": pattern} for name, pattern in METRICS.items()]

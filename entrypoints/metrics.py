"""The one definition of odorch's metric lines.

The training entrypoint prints them; the local log parser, SageMaker MetricDefinitions and
Automatic Model Tuning all read them with these same regexes (first group = the value).

A line looks like: ``epoch=3/10 train:loss=0.812300 validation:mAP=0.412300 validation:mAP50=0.710000``.
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


def format_metrics(values: dict[str, float], *, epoch: int | None = None, epochs: int | None = None) -> str:
    """The line to print; unknown metric names are refused so the regexes stay the contract."""
    unknown = set(values) - set(METRICS)
    if unknown:
        raise KeyError(f"unknown metric(s) {sorted(unknown)}; known: {sorted(METRICS)}")
    parts = [f"epoch={epoch}/{epochs}"] if epoch is not None else []
    parts += [f"{name}={value:.6f}" for name, value in values.items()]
    return " ".join(parts)


def parse_metrics(line: str) -> dict[str, float]:
    """Every metric in one log line, by the same regexes SageMaker is given."""
    out = {}
    for name, regex in _COMPILED.items():
        match = regex.search(line)
        if match:
            out[name] = float(match.group(1))
    return out


def parse_epoch(line: str) -> tuple[int, int] | None:
    match = EPOCH.search(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def metric_definitions() -> list[dict[str, str]]:
    """SageMaker's MetricDefinitions (also used by tuning jobs: at most 20 allowed)."""
    return [{"Name": name, "Regex": pattern} for name, pattern in METRICS.items()]

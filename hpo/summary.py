"""The result of a tuning run, whichever engine ran it (local Optuna or SageMaker AMT).

``write_summary`` writes ``<tune_dir>/summary.json`` (atomically), a ``best`` symlink to the best
trial's job folder, ``history.png`` and ``importance.png``. A trial is a dict with the keys
number, params, best_map, epochs, state, duration_s, cost_usd, job, job_dir.
"""

from __future__ import annotations

import io
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from odorch.converters.fsutil import atomic_write_bytes, atomic_write_json
from odorch.runs import SUMMARY_FILE

COMPLETE_STATES = ("COMPLETE", "COMPLETED")
FINISHED_STATES = ("COMPLETE", "COMPLETED", "PRUNED", "STOPPED")


def _state(trial: dict[str, Any]) -> str:
    return str(trial.get("state") or "").upper()


def _map(trial: dict[str, Any]) -> float | None:
    value = trial.get("best_map")
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def best_trial(trials: list[dict[str, Any]], *, minimize: bool = False) -> dict[str, Any] | None:
    """The complete trial with the highest objective (lowest with `minimize`, e.g. a loss AMT
    minimizes); a pruned/stopped one only when none completed. Ties: the earliest."""
    sign = -1.0 if minimize else 1.0
    for states in (COMPLETE_STATES, FINISHED_STATES):
        scored = [t for t in trials if _state(t) in states and _map(t) is not None]
        if scored:
            return max(scored, key=lambda t: (sign * (_map(t) or 0.0), -int(t.get("number") or 0)))
    return None


def _link_best(tune_dir: Path, best: dict[str, Any] | None) -> None:
    link = tune_dir / "best"
    job_dir = Path(best["job_dir"]) if best and best.get("job_dir") else None
    if job_dir is None or not job_dir.absolute().is_dir():
        if link.is_symlink():
            link.unlink()
        return
    target = os.path.relpath(job_dir.absolute(), tune_dir.absolute())
    tmp = tune_dir / f".best.{os.getpid()}.tmp"  # per process: workers sharing a runs dir write this together
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)  # rename(2) replaces the old link in one step


def _save_png(fig: Any, path: Path) -> None:
    """Atomically: workers sharing a runs dir write the same plots at the same time."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    atomic_write_bytes(path, buf.getvalue())


def _plot_history(path: Path, trials: list[dict[str, Any]], objective: str, *, minimize: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ordered = sorted(trials, key=lambda t: int(t.get("number") or 0))
    markers = {"COMPLETE": ("o", "tab:blue"), "COMPLETED": ("o", "tab:blue"), "PRUNED": ("x", "tab:orange"),
               "STOPPED": ("x", "tab:orange")}
    for state, (marker, color) in markers.items():
        pts = [(t["number"], _map(t)) for t in ordered if _state(t) == state and _map(t) is not None]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=color, label=f"{state.lower()} trial", zorder=3)
    best_x, best_y, best = [], [], None
    for t in ordered:
        if _state(t) in COMPLETE_STATES and _map(t) is not None:
            best = _map(t) if best is None else (min if minimize else max)(best, _map(t))
        if best is not None:
            best_x.append(t["number"])
            best_y.append(best)
    if best_x:
        ax.step(best_x, best_y, where="post", color="tab:red", label="best so far")
    if not best_x and not any(_map(t) is not None for t in ordered):
        ax.text(0.5, 0.5, "no trial reported " + objective, ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title("optimization history")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


def param_importances(trials: list[dict[str, Any]]) -> dict[str, float] | str:
    """Optuna's parameter importances over the complete trials, or why there are none."""
    complete = [t for t in trials if _state(t) in COMPLETE_STATES and _map(t) is not None and t.get("params")]
    if len(complete) < 2:
        return f"not enough trials ({len(complete)} complete; importance needs at least 2)"
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    names = sorted({k for t in complete for k in t["params"]})
    distributions: dict[str, Any] = {}
    for name in names:
        values = [t["params"].get(name) for t in complete]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and min(values) < max(values):
            distributions[name] = FloatDistribution(float(min(values)), float(max(values)))
        else:
            distributions[name] = CategoricalDistribution(sorted({json.dumps(v) for v in values}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for t in complete:
        params = {}
        for name in names:
            v = t["params"].get(name)
            params[name] = float(v) if isinstance(distributions[name], FloatDistribution) else json.dumps(v)
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=_map(t)))
    try:
        return dict(optuna.importance.get_param_importances(study))
    except Exception as e:  # noqa: BLE001 - a plot that says why beats no summary
        return f"importance not available: {e}"


def _plot_importance(path: Path, importances: dict[str, float] | str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if isinstance(importances, str) or not importances:
        ax.text(0.5, 0.5, importances or "not enough trials", ha="center", va="center", wrap=True,
                transform=ax.transAxes)
        ax.set_axis_off()
    else:
        items = sorted(importances.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        ax.set_xlabel("importance")
    ax.set_title("parameter importance")
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


def write_summary(tune_dir: Path, trials: list[dict], *, engine: str, study: str,
                  objective: str = "validation:mAP", minimize: bool = False) -> dict:
    """Write summary.json, the best symlink and the two plots; return the summary (`minimize`:
    the objective is one AMT minimizes, so the best trial is the lowest)."""
    tune_dir = Path(tune_dir)
    tune_dir.mkdir(parents=True, exist_ok=True)
    trials = sorted((dict(t) for t in trials), key=lambda t: int(t.get("number") or 0))
    best = best_trial(trials, minimize=minimize)
    counts: dict[str, int] = {}
    for t in trials:
        counts[_state(t)] = counts.get(_state(t), 0) + 1
    importances = param_importances(trials)
    costs = [t.get("cost_usd") for t in trials if t.get("cost_usd") is not None]
    summary = {
        "study": study,
        "engine": engine,
        "objective": objective,
        "direction": "minimize" if minimize else "maximize",
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": counts,
        "best": best,
        "importance": importances if isinstance(importances, dict) else None,
        "cost_usd": sum(costs) if costs else None,
        "trials": trials,
    }
    _plot_history(tune_dir / "history.png", trials, objective, minimize=minimize)
    _plot_importance(tune_dir / "importance.png", importances)
    _link_best(tune_dir, best)
    atomic_write_json(tune_dir / SUMMARY_FILE, summary, indent=2, default=str)
    return summary


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_summary(summary: dict) -> list[str]:
    """The summary as printed lines: a headline, a table of the trials, the best trial."""
    trials = summary.get("trials") or []
    counts = summary.get("counts") or {}
    objective = summary.get("objective") or "validation:mAP"
    lines = [
        f"study {summary.get('study')} ({summary.get('engine')}): {len(trials)} trial(s): "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    ]
    names = sorted({k for t in trials for k in (t.get("params") or {})})
    show_cost = any(t.get("cost_usd") is not None for t in trials)
    header = ["trial", "state", objective, "epochs", "time"] + (["cost"] if show_cost else []) + names
    rows = [header]
    for t in trials:
        m = _map(t)
        d = t.get("duration_s")
        row = [str(t.get("number")), _state(t).lower(), "-" if m is None else f"{m:.4f}",
               "-" if t.get("epochs") is None else str(t.get("epochs")), "-" if d is None else f"{float(d):.0f}s"]
        if show_cost:
            row.append("-" if t.get("cost_usd") is None else f"${float(t['cost_usd']):.2f}")
        row += [_fmt_value((t.get("params") or {}).get(n, "-")) for n in names]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    best = summary.get("best")
    if best:
        lines.append(f"best: trial {best.get('number')} {objective} {_map(best):.4f} (job {best.get('job')}: "
                     f"{best.get('job_dir')})")
    else:
        lines.append("best: none (no trial completed)")
    if summary.get("cost_usd") is not None:
        lines.append(f"cost: about ${summary['cost_usd']:.2f}")
    return lines

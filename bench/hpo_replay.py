#!/usr/bin/env python3
"""Pruner settings screened on the learning curves that hpo_bench's random-search studies recorded.

What is measured
    hpo_bench.py runs random search without pruning (`--sampler random --pruner none`, one trial
    at a time) and keeps each trial's validation mAP per epoch in WORK/runs/tune-hpo-random-S/
    study.db. This script replays those trials, in their order, through each of Optuna's pruners
    at several settings (median and percentile with start-up trials and warm-up epochs,
    successive halving and Hyperband with their minimum resource and reduction factor): a trial
    reports its recorded epochs one by one and stops where the pruner says so.

    For random search with pruning this is exact, not a model: the random sampler proposes the
    same parameters whatever earlier trials scored, and every training job is seeded, so a trial
    that runs epoch k scores what the recorded one scored. Per seed and as the mean over seeds:
    best mAP (best trial not pruned, as hpo_bench counts it) and epochs trained, over those of
    random search without pruning. TPE cannot be replayed (what it proposes depends on the
    scores); run hpo_bench.py for the settings this screen singles out.

    Hyperband puts each trial in a bracket by a hash of the study's name and the trial's number:
    its figures are the mean over --draws study names.

    Reads only: no training runs. Seconds, not hours, for three seeds of 16 trials.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from hpo_bench import DEFAULT_WORK, EPOCH_GOAL, MAP_GOAL, ROOT


def curves(work: Path, seed: int) -> list[list[float]]:
    """Validation mAP per epoch of each trial of random search's study for seed, in trial order."""
    import optuna

    db = work / "runs" / f"tune-hpo-random-{seed}" / "study.db"
    if not db.is_file():
        raise SystemExit(f"error: {db} not found: run hpo_bench.py --work {work} --seeds {seed} first")
    study = optuna.load_study(study_name=f"hpo-random-{seed}", storage=f"sqlite:///{db}")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return [[v for _, v in sorted(t.intermediate_values.items())] for t in trials if t.intermediate_values]


def replay(pruner: object, trials: list[list[float]], *, name: str) -> tuple[float, int]:
    """(best mAP of the trials not pruned, epochs trained) with pruner deciding after each epoch
    in a study called name."""
    import optuna

    study = optuna.create_study(study_name=name, direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(0))
    best, epochs = 0.0, 0
    for curve in trials:
        trial = study.ask()
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
            epochs += 1
            if step < len(curve) and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, max(curve))
            best = max(best, max(curve))
    return best, epochs


def settings(epochs: int) -> dict[str, Callable[[], object]]:
    """Name -> pruner factory for every setting screened."""
    import optuna

    p = optuna.pruners
    out: dict[str, Callable[[], object]] = {"none": p.NopPruner}
    for start, warm in itertools.product((1, 2, 3, 4, 5), range(epochs - 1)):
        out[f"median start {start} warm-up {warm}"] = lambda s=start, w=warm: p.MedianPruner(n_startup_trials=s, n_warmup_steps=w)
    for pct, warm in itertools.product((10, 25, 40, 60, 75), range(epochs - 1)):
        out[f"percentile {pct} (top {pct} % kept) start 3 warm-up {warm}"] = lambda q=pct, w=warm: p.PercentilePruner(q, n_startup_trials=3, n_warmup_steps=w)
    for low, factor in itertools.product((1, 2, 3), (2, 3, 4)):
        out[f"halving min {low} factor {factor}"] = lambda m=low, f=factor: p.SuccessiveHalvingPruner(min_resource=m, reduction_factor=f)
        out[f"hyperband min {low} factor {factor}"] = lambda m=low, f=factor: p.HyperbandPruner(min_resource=m, max_resource=epochs, reduction_factor=f)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Replay random search's recorded trials through Optuna's pruners "
                                 "at many settings: best-mAP and epochs ratios against no pruning.")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"hpo_bench's work folder (default {DEFAULT_WORK.relative_to(ROOT)})")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds whose random studies exist (default 0,1,2)")
    ap.add_argument("--draws", type=int, default=20,
                    help="Hyperband: study names replayed and averaged over, its brackets being a hash of the name (default 20)")
    args = ap.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seeds = [int(s) for s in args.seeds.split(",")]
    recorded = {seed: curves(args.work.resolve(), seed) for seed in seeds}
    epochs = max(len(c) for trials in recorded.values() for c in trials)
    unpruned = {seed: replay(optuna.pruners.NopPruner(), trials, name=f"hpo-replay-{seed}") for seed, trials in recorded.items()}
    rows = []
    for name, make in settings(epochs).items():
        draws = args.draws if name.startswith("hyperband") else 1
        pairs = []
        for seed, trials in recorded.items():
            full_best, full_used = unpruned[seed]
            runs = [replay(make(), trials, name=f"hpo-replay-{seed}-{k}") for k in range(draws)]
            pairs.append((sum(b for b, _ in runs) / draws / full_best, sum(e for _, e in runs) / draws / full_used))
        rows.append((name, sum(b for b, _ in pairs) / len(pairs), sum(e for _, e in pairs) / len(pairs), pairs))
    print(f"{len(seeds)} seeds, {sum(len(t) for t in recorded.values())} trials of up to {epochs} epochs; "
          f"goal: mean mAP ratio >= {MAP_GOAL}, mean epochs ratio <= {EPOCH_GOAL}\n")
    print("| pruner setting | mAP ratio | epochs ratio | per seed (mAP, epochs) | goal |")
    print("|----------------|----------:|-------------:|------------------------|------|")
    for name, best, used, pairs in sorted(rows, key=lambda r: (-round(r[1], 3), r[2])):
        per_seed = "; ".join(f"{b:.3f}, {e:.3f}" for b, e in pairs)
        met = "MET" if best >= MAP_GOAL and used <= EPOCH_GOAL else ""
        print(f"| {name} | {best:.3f} | {used:.3f} | {per_seed} | {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

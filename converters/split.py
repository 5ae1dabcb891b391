"""Seeded train/val/test splits, stratified over classes so rare classes land in every split."""

from __future__ import annotations

import random
from collections import Counter

from odorch.converters.dataset import DatasetError, ImageRecord, Problems

SPLIT_NAMES = ("train", "val", "test")


def parse_ratios(text: str) -> dict[str, float]:
    """'0.64,0.16,0.20' -> {'train': .64, 'val': .16, 'test': .2}; two numbers mean train,val."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as e:
        raise DatasetError(f"--split {text!r}: give 2 or 3 numbers separated by commas, e.g. 0.64,0.16,0.20") from e
    if len(values) not in (2, 3) or any(v <= 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise DatasetError(f"--split {text!r}: give 2 or 3 positive numbers that add up to 1, e.g. 0.64,0.16,0.20")
    return dict(zip(SPLIT_NAMES, values))


def stratified_split(
    images: list[ImageRecord], ratios: dict[str, float], *, seed: int, problems: Problems
) -> dict[str, list[ImageRecord]]:
    """Iterative stratification (Sechidis et al., 2011) over the classes each image contains.

    Images holding the rarest classes are placed first, each into the split that still
    wants most of that class; images without boxes fill the splits' remaining quotas.
    """
    rng = random.Random(seed)
    pool = sorted(images, key=lambda im: im.file_name)
    rng.shuffle(pool)
    labels = [{box.label for box in im.boxes} for im in pool]
    per_class = Counter(name for names in labels for name in names)
    want = {s: {c: n * r for c, n in per_class.items()} for s, r in ratios.items()}
    quota = {s: len(pool) * r for s, r in ratios.items()}
    out: dict[str, list[ImageRecord]] = {s: [] for s in ratios}

    def rarity(i: int) -> tuple[int, int]:
        return (min((per_class[c] for c in labels[i]), default=len(pool) + 1), i)

    for i in sorted(range(len(pool)), key=rarity):
        if labels[i]:
            rarest = min(labels[i], key=lambda c: (per_class[c], c))
            split = max(ratios, key=lambda s: (want[s][rarest], quota[s], rng.random()))
        else:
            split = max(ratios, key=lambda s: (quota[s], rng.random()))
        out[split].append(pool[i])
        quota[split] -= 1
        for c in labels[i]:
            want[split][c] -= 1
    for name, n in sorted(per_class.items()):
        if n < len(ratios):
            problems.add("class_too_rare_to_split", f"{name!r} in {n} image(s)")
    return out


def source_splits(images: list[ImageRecord], *, required: bool = False) -> dict[str, list[ImageRecord]]:
    """The splits the source declared (ImageSets, train/val/test files or folders), else one 'all'
    split; `required` (--split source) makes an image without a declared split an error."""
    missing = [im for im in images if im.split is None]
    if missing and required:
        raise DatasetError(
            f"--split source: {len(missing)} of {len(images)} images have no split in the source (e.g. "
            f"{missing[0].origin}: in no train/val/test folder, file or ImageSets list); give --split RATIOS"
        )
    if missing:
        return {"all": list(images)}
    out: dict[str, list[ImageRecord]] = {}
    for name in SPLIT_NAMES:
        chosen = [im for im in images if im.split == name]
        if chosen:
            out[name] = chosen
    return out


def choose_splits(images: list[ImageRecord], split: dict[str, float] | str | None, *, seed: int,
                  problems: Problems) -> dict[str, list[ImageRecord]]:
    """The split `convert --split` asks for: ratios (seeded, stratified), "source" (the split the
    data declares, required) or None (the data's own split if it has one, else all)."""
    if split is None or split == "source":
        return source_splits(images, required=split == "source")
    return stratified_split(images, split, seed=seed, problems=problems)

"""Algorithms: the code a training job runs, as objects that own their hyperparameter rules,
data checks, channels, image, metric definitions and what their model is. Backends and tuners
ask the algorithm; nothing else tests an algorithm's name.

Adding one (a JumpStart model, say) is one new subclass of Algorithm in this package, listed in
ALGORITHMS below.
"""

from __future__ import annotations

from odorch.algorithms.base import Algorithm, AlgorithmError, Prepared
from odorch.algorithms.builtin_od import BuiltinObjectDetection
from odorch.algorithms.pytorch import PyTorchEntrypoint

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmError", "Prepared", "get_algorithm"]

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (PyTorchEntrypoint(), BuiltinObjectDetection())}


def get_algorithm(name: str | Algorithm) -> Algorithm:
    """The algorithm of that name (an Algorithm is returned as it is)."""
    if isinstance(name, Algorithm):
        return name
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise AlgorithmError(f"--algorithm {name!r}: use one of {', '.join(ALGORITHMS)}") from None

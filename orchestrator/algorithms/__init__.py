"""Algorithms: the code a training job runs, as objects that own their hyperparameter rules,
data checks, channels, image, metric definitions and what their model is. Backends and tuners
ask the algorithm; nothing else tests an algorithm's name.

Adding one is one new subclass of Algorithm in this package, listed in ALGORITHMS below. One
whose rules depend on the model (JumpStart: a published spec per model) is bound to --model by
``for_model`` before use; the others return themselves.
"""

from __future__ import annotations

from odorch.algorithms.base import Algorithm, AlgorithmError, Prepared
from odorch.algorithms.builtin_od import BuiltinObjectDetection
from odorch.algorithms.jumpstart import JumpStart
from odorch.algorithms.pytorch import PyTorchEntrypoint

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmError", "Prepared", "get_algorithm"]

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (PyTorchEntrypoint(), BuiltinObjectDetection(), JumpStart())}


def get_algorithm(name: str | Algorithm) -> Algorithm:
    """The algorithm of that name (an Algorithm is returned as it is)."""
    if isinstance(name, Algorithm):
        return name
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise AlgorithmError(f"--algorithm {name!r}: use one of {', '.join(ALGORITHMS)}") from None

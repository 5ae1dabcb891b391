"""`odorch tune` as a user runs it (argv after the script name), except that every trial's job runs
tests/orchestrator/fake_entrypoint.py, the stdlib stand-in for the training script, with the
hyperparameters below added: each trial "trains" 3 epochs in a few seconds (it sleeps after the
first), so a test can run many workers and kill one mid-trial. The CLI, the study storage, the
heartbeat and the retries are the real ones.
"""

import sys
from pathlib import Path

import odorch.hpo.local
from odorch.algorithms.pytorch import PyTorchEntrypoint
from odorch.cli import main

FAKE_ENTRYPOINT = Path(__file__).resolve().parent.parent / "orchestrator" / "fake_entrypoint.py"
FAKE_HPS = {"epochs": "3", "sleep": "4", "maps": "0.2,0.5,0.4"}

real_run_local_tuning = odorch.hpo.local.run_local_tuning


class FakeTraining(PyTorchEntrypoint):
    """odorch's entrypoint with the stand-in script: its checks, less the stand-in's own knobs."""

    def entrypoint(self) -> Path:
        return FAKE_ENTRYPOINT

    def check(self, hyperparameters):
        return super().check({k: v for k, v in hyperparameters.items() if k not in ("sleep", "maps")})


def run_with_fake_entrypoint(**kwargs):
    kwargs["fixed"] = {**kwargs["fixed"], **FAKE_HPS}
    return real_run_local_tuning(**{**kwargs, "algorithm": FakeTraining()})


if __name__ == "__main__":
    odorch.hpo.local.run_local_tuning = run_with_fake_entrypoint
    sys.exit(main())

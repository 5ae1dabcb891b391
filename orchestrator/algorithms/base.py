"""The Algorithm base class and what it works with (see odorch.algorithms)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from odorch.errors import OdorchError
from odorch.runs import JobRecord


class AlgorithmError(OdorchError, ValueError):
    """An algorithm name, hyperparameter or dataset the algorithm cannot take; the message says why."""


@dataclass
class Prepared:
    """What an algorithm made of a dataset in preflight: the hyperparameters to send (strings),
    the local folder or file of each channel, and facts for the job record (classes, epochs)."""

    hyperparameters: dict[str, str]
    channels: dict[str, Path]
    record: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)  # the algorithm's own (e.g. RecordIO counts)
    channel_uris: dict[str, str] = field(default_factory=dict)  # set by the upload
    source_uri: str = ""


_SUBCLASSES: list[type[Algorithm]] = []


class Algorithm:
    """The base every algorithm derives from; subclasses set the class attributes and override
    the methods that differ."""

    name: ClassVar[str]
    title: ClassVar[str]  # how messages name it, e.g. "the PyTorch entrypoint"
    runs_locally: ClassVar[bool] = False  # the local and Docker backends can run it (else SageMaker only)
    model_loadable: ClassVar[bool] = True  # odorch evaluate/predict/export can load its model
    model_kind: ClassVar[str] = "an odorch PyTorch model"  # what the job's model/ holds
    default_space: ClassVar[bool] = False  # `odorch tune` has a default search space per --model
    gpu_only: ClassVar[bool] = False  # trains on GPU instance types only
    serves_itself: ClassVar[bool] = False  # its endpoint runs its own image and code (see hosting)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _SUBCLASSES.append(cls)

    def for_model(self, model: str, *, clients: Any) -> Algorithm:
        """The algorithm for --model MODEL in the clients' region. Most have no per-model state and
        return themselves; one whose rules come from a model's published spec reads it here."""
        return self

    def hyperparameter_names(self) -> Collection[str]:
        raise NotImplementedError

    def job_hyperparameters(self, *, model: str, hp: dict[str, str]) -> dict[str, str]:
        """The job's hyperparameters from the command's --model and --hp (--epochs/--weights folded in)."""
        raise NotImplementedError

    def default_job_name(self, model: str) -> str:
        return self.name

    def entrypoint(self) -> Path:
        """The script the local and Docker backends run (algorithms with runs_locally)."""
        raise NotImplementedError

    def check(self, hyperparameters: dict[str, Any]) -> list[str]:
        """Problems of names and values alone (no data), each with its fix."""
        raise NotImplementedError

    def prepare(self, data: Path, hyperparameters: dict[str, Any], work_dir: Path) -> tuple[Prepared | None, list[str]]:
        """Check the dataset against the hyperparameters and make the channels (files written
        under work_dir); (None, problems) when it cannot."""
        raise NotImplementedError

    def upload(self, clients: Any, prepared: Prepared, *, data: Path, bucket: str, job_name: str,
               echo: Callable[[str], None]) -> tuple[dict[str, str], str]:
        """Upload the channels (and code): ({channel: s3 uri}, the code's s3 uri or "")."""
        raise NotImplementedError

    def code_hyperparameters(self, source_uri: str, region: str) -> dict[str, str]:
        """What SageMaker needs to find the code (none for an algorithm whose image holds it)."""
        return {}

    def image(self, region: str, instance_type: str) -> str:
        """The training image URI (aws_tables' errors for an unknown region or instance)."""
        raise NotImplementedError

    def metric_definitions(self) -> list[dict[str, str]] | None:
        """SageMaker MetricDefinitions; None when SageMaker defines the algorithm's metrics itself."""
        return None

    def channel_options(self, channel: str) -> dict[str, str]:
        """Extra fields of the InputDataConfig channel (ContentType, ...)."""
        return {}

    def tags(self) -> list[dict[str, str]]:
        """Tags the training job carries besides odorch's own (e.g. a JumpStart model id)."""
        return []

    def objective(self) -> dict[str, str]:
        """The HyperParameterTuningJobObjective AMT tunes: odorch's validation:mAP by default."""
        from odorch.runtime.metrics import OBJECTIVE

        return {"Type": "Maximize", "MetricName": OBJECTIVE}

    def hosting(self, clients: Any, record: JobRecord, *, instance_type: str, bucket: str,
                key: str) -> dict[str, Any] | None:
        """The endpoint's PrimaryContainer for job RECORD when the algorithm serves with its own image
        and code, its model uploaded to s3://bucket/KEY (None: odorch's handler, the PyTorch image)."""
        return None

    def endpoint_request(self) -> tuple[str | None, str]:
        """(ContentType, Accept) of an InvokeEndpoint to its endpoint; None: the image's own type."""
        return None, "application/json"

    def endpoint_detections(self, reply: Any, *, width: int, height: int) -> Any:
        """The endpoint's reply as odorch's (the reply itself for odorch's handler)."""
        return reply

    def owner_of(self, name: str) -> Algorithm | None:
        """The other algorithm hyperparameter NAME belongs to when it is not one of this one's."""
        if name in self.hyperparameter_names():
            return None
        return next((other() for other in _SUBCLASSES
                     if not isinstance(self, other) and name in other().hyperparameter_names()), None)

    def foreign_names(self, hyperparameters: dict[str, Any]) -> list[str]:
        """Names that belong to another algorithm, not this one (a common mix-up)."""
        return [f"hyperparameter {name} belongs to {owner.title}, not {self.title}"
                for name in hyperparameters if (owner := self.owner_of(name)) is not None]

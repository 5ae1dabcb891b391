"""What a saved model folder holds, and the error for one that cannot be used: shared by the
PyTorch loader (models) and the OpenVINO one (openvino_model) without either importing the other."""

from odorch.runtime.errors import OdorchError

MODEL_FILE = "model.pth"
CONFIG_FILE = "config.json"


class ModelError(OdorchError):
    """A model cannot be built or loaded; the message says what to do."""

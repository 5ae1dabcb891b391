"""The one base of every error a user can cause and fix (bad data, options, hyperparameters, a
model file). It lives in the container code because that code ships alone (odorch/runtime/ in a
SageMaker archive) and must import nothing else of odorch; odorch.errors re-exports it, and the
CLI turns any OdorchError into a one-line message and exit status 1 in one place."""


class OdorchError(Exception):
    """A mistake the user can fix; the message says what and how (no traceback is shown)."""

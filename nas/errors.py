"""The errors ``nas`` raises, all in one place.

Every error a user can cause derives from :class:`~searchspace.errors.EffnasError` (the root of
the project's one hierarchy: ``SpecError``, ``WeightsError``, ``ScalingError``, ``ResultsError``
and these), which the ``nas`` command prints as one line with exit status 2. A candidate whose
loss turns NaN is not bad input but an outcome of training: :class:`NonFiniteLossError` is a
``RuntimeError``, recorded as a failed trial (``nas evaluate`` and ``nas train`` exit with 1).
"""

from __future__ import annotations

import math

from searchspace.errors import EffnasError

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EffnasError",
    "ExportError",
    "NonFiniteLossError",
    "RayAddressError",
    "ScheduleError",
    "WorkerError",
    "WorkerFailureError",
]


class ConfigError(EffnasError, ValueError):
    """A setting that is malformed or out of range (a search config, an evaluation or training
    setting, a command-line flag); the message names the field and the value."""


class ScheduleError(ConfigError):
    """A progressive-learning schedule that is malformed; names the field and the value."""


class DataError(EffnasError):
    """A dataset that cannot be found or read. The message is one line naming the dataset/path."""

    def __init__(self, message: str = "") -> None:
        # A DataLoader worker's exception is re-raised in the main process as
        # ``type(error)("Caught DataError in DataLoader worker ...\nOriginal Traceback ...")``
        # (torch.utils._utils.ExceptionWrapper): keep only the original one-line message.
        if "Original Traceback" in message:
            last = [line for line in message.splitlines() if line.strip()][-1]
            message = last.split("DataError: ", 1)[-1]
        super().__init__(message)


class ExportError(EffnasError):
    """Bad input to an export: a format, an option value, an output path, a missing extra."""


class RayAddressError(ConfigError):
    """A Ray address that is malformed, does not answer, or refuses this client."""


class CheckpointError(EffnasError):
    """A checkpoint that cannot be read, or that belongs to another spec or config."""


class WorkerError(EffnasError):
    """Bad input that a data-parallel training worker found where it runs (a dataset missing on
    its node, a step that cannot fit in its GPU); the message is the worker's one line."""


class WorkerFailureError(RuntimeError):
    """Data-parallel training failed more often than it may recover from (worker processes or
    nodes that died, or raised): not bad input. ``reason`` is one line naming the first error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the candidate failed and must not be scored.

    Attributes:
        reason: a one-line description, for the result record's ``failure`` field.
        loss: the offending loss value (NaN if not given).
        epoch: the epoch it happened in (from 1; 0 if not given).
        step: the step within that epoch (from 1; 0 if not given).
        seconds: training wall time until the failure (set by the loop; 0 before).
    """

    def __init__(
        self, reason: str, *, loss: float = math.nan, epoch: int = 0, step: int = 0
    ) -> None:
        self.reason = reason
        self.loss = loss
        self.epoch = epoch
        self.step = step
        self.seconds = 0.0
        super().__init__(reason)

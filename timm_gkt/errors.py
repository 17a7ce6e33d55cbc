"""Every failure a user can see, in two families; no torch import, so every command can catch them cheaply.

- :class:`BadInput`: refused before any compute, nothing written (exit code 2). Each subclass names what was
  wrong, and every message is ``<what is wrong>; <how to fix it>``.
- :class:`TrainingFailed`: the run stopped after it started (exit code 1); the message says where it stopped and
  how to go on.

The commands' error boundary (:mod:`timm_gkt.cli.boundary`) catches these two classes, never a list.
The second base of each bad-input class (``ValueError`` or ``RuntimeError``) is the one it had before
the classes moved here, so code that catches those still catches them.
"""
from __future__ import annotations

import math


class BadInput(Exception):
    """Input the run refuses before any evaluation or training; one sentence naming the fix."""


class ConfigError(BadInput, ValueError):
    """Flags that contradict each other or a config file with unknown keys."""


class TimmConfigError(ConfigError):
    """A ``-c`` config written by timm's train.py with keys timm_gkt cannot honour."""


class ModelSpecError(BadInput, ValueError):
    """A model spec that cannot be resolved (unknown name, missing folder)."""


class WeightsUnavailableError(ModelSpecError):
    """Weights that are neither cached nor reachable, or a local folder whose files are broken."""


class LabelSpaceError(BadInput, ValueError):
    """Student and teacher (or dataset) predict different label spaces."""


class DataUnavailableError(BadInput, RuntimeError):
    """The dataset is neither on disk nor downloadable, or cannot be read."""


class DataSplitError(DataUnavailableError):
    """A split that does not exist, a malformed slice, or train and evaluation images that overlap."""


class SubsetError(DataUnavailableError):
    """A subset size that cannot be honoured (negative, or fewer images than classes)."""


class RunFolderError(BadInput, ValueError):
    """An output folder that cannot be written, or a resume checkpoint that cannot continue this run."""


class CacheError(BadInput, ValueError):
    """A teacher cache that cannot serve this run (bad storage format, a folder that cannot be written)."""


class UpgradeCandidatesError(BadInput, LookupError):
    """``upgrade`` finds no Hub model the backbone could be compared with (none listed, none of them usable)."""


class PushAccessError(BadInput, RuntimeError):
    """The token is missing or may not write to the repository: fail before any training."""


class TrainingFailed(RuntimeError):
    """The run stopped; the message names where and what to do next."""


class NonFiniteLoss(TrainingFailed):
    """The loss of one batch is NaN or infinite; raised before that batch touches the weights."""

    def __init__(self, value: float, batch: int, step: int):
        # every process stops together, so on some of them the loss itself was fine
        what = value if not math.isfinite(value) else 'non-finite on another process'
        super().__init__(f'the loss became {what} at step {step} (batch {batch})')
        self.value, self.batch, self.step = value, batch, step


class ExportFailed(TrainingFailed):
    """Writing the export failed (e.g. a full disk); no partial export/ was left behind."""

"""Failures during a run that end in one ``error:`` line and exit code 1 instead of a traceback.

Bad input is refused before any compute (see :data:`timm_gkt.preflight.BAD_INPUT_ERRORS`, exit
code 2); these happen later, and each message says where the run stopped and how to go on.
No torch import: the CLI catches these without loading anything.
"""
from __future__ import annotations

import math


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

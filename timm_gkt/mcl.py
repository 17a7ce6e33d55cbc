"""Momentum weight interpolation (MCL): how the slow copy's momentum follows the run length.

The interpolation itself is timm's ``ModelEmaV3`` (see ``tasks.XEKLMCLTask``): it deep-copies
the student, interpolates floating parameters and buffers and copies integer buffers.
"""
from __future__ import annotations

import math

PAPER_MOMENTUM = 0.9999
PAPER_INTERVAL = 2
# 20 epochs over ~128k images at batch 256 is ~10k steps, one interpolation every 2 of them
PAPER_UPDATES = 5000


def retained_share(momentum: float, updates: int) -> float:
    """Weight of the initial student in the slow copy after ``updates`` interpolations: τ^updates."""
    return momentum ** updates


def scaled_mcl_momentum(total_steps: int, interval: int = PAPER_INTERVAL, reference_momentum: float = PAPER_MOMENTUM,
                        reference_updates: int = PAPER_UPDATES) -> float:
    """τ for a run of ``total_steps`` optimizer steps, keeping the paper's share of the initial student.

    The paper's run ends with τ^5000 = 0.9999^5000 = e^-0.5 ≈ 61% of the slow copy still
    made of the initial weights. A run with U = total_steps // interval updates gets
    τ = 0.9999^(5000/U), which ends at the same 61%. Unscaled, a 500-step run would keep
    97.5% and the transfer would barely show.
    """
    updates = max(1, total_steps // max(1, interval))
    return math.exp(math.log(reference_momentum) * reference_updates / updates)

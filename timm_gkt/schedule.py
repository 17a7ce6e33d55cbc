"""How many optimizer updates a stage makes: the count the cosine schedule, MCL's τ and a resume all use.

timm's training loader drops the last incomplete batch; Accelerate then deals the batches
out to the processes, each getting ``len // P`` of them when the loader drops its last batch;
with gradient accumulation each process updates every ``grad_accum_steps`` batches and at the
end of the epoch. Counting before the sharding (``ceil(n / accum) // P``) ends the schedule
early with several processes and accumulation.
"""
from __future__ import annotations

import math


def batches_per_process(images: int, batch_size: int, processes: int = 1) -> int:
    """Training batches each process sees per epoch (what ``len(prepared_loader)`` is)."""
    return (images // batch_size) // processes


def updates_per_epoch(batches: int, grad_accum_steps: int = 1) -> int:
    """Optimizer updates per epoch for ``batches`` batches on one process."""
    return math.ceil(batches / grad_accum_steps)

"""Stages: how many, with which teachers, in which order, and how long each one runs.

A run is one stage per teacher (sequential), one stage with every teacher (parallel), or one stage per
teacher from the initial student whose results are averaged (soup); the CE control is one stage without a
teacher. :func:`plan_stages` is the one planner, used by the run and by ``--dry-run``.

How many optimizer updates a stage makes is the count the cosine schedule, MCL's τ and a resume all use:
timm's training loader drops the last incomplete batch; Accelerate then deals the batches out to the
processes, each getting ``len // P`` of them; with gradient accumulation each process updates every
``grad_accum_steps`` batches and at the end of the epoch. Counting before the sharding
(``ceil(n / accum) // P``) would end the schedule early with several processes and accumulation.

MCL's momentum follows the run length (:func:`scaled_mcl_momentum`); the interpolation itself is timm's
``ModelEmaV3`` (see :class:`~timm_gkt.transfer.tasks.XEKLMCLTask`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

MULTI_TEACHER_MODES = ('sequential', 'parallel', 'soup')
TEACHER_ORDERS = ('ascending', 'descending', 'given')


@dataclass(frozen=True)
class Stage:
    """One transfer run: its teachers and whether it starts from the initial student (soup)."""
    index: int
    teachers: tuple[str, ...]
    from_initial: bool = False

    @property
    def label(self) -> str:
        return ' + '.join(self.teachers) if self.teachers else 'no teacher'


def order_teachers(teachers: Sequence[str], top1: Mapping[str, float], order: str = 'ascending') -> list[str]:
    """Stage order for sequential transfer.

    Ascending accuracy by default: METHOD.md observes that transferring from the
    strongest teacher first makes the student forget more in the later stages.
    """
    if order == 'given':
        return list(teachers)
    if order not in ('ascending', 'descending'):
        raise ValueError(f'teacher order must be one of {TEACHER_ORDERS}, not {order!r}')
    # sorted() is stable, so equal accuracies keep the order the user gave
    return sorted(teachers, key=lambda t: top1[t], reverse=(order == 'descending'))


def plan_stages(teachers: Sequence[str], mode: str | None, needs_teacher: bool = True) -> list[Stage]:
    """Stages for the given (already ordered) teachers; a method without a teacher (the CE control) is one stage."""
    teachers = list(teachers)
    if not needs_teacher:
        return [Stage(0, ())]
    if len(teachers) <= 1:
        return [Stage(0, tuple(teachers))]
    if mode == 'sequential':
        return [Stage(i, (t,)) for i, t in enumerate(teachers)]
    if mode == 'parallel':
        return [Stage(0, tuple(teachers))]
    if mode == 'soup':
        return [Stage(i, (t,), from_initial=True) for i, t in enumerate(teachers)]
    raise ValueError(f'multi-teacher mode must be one of {MULTI_TEACHER_MODES}, not {mode!r}')


def soup(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of floating tensors; integer buffers (e.g. num_batches_tracked) from the first."""
    if not state_dicts:
        raise ValueError('a soup needs at least one state dict')
    out = {}
    for key, first in state_dicts[0].items():
        if torch.is_floating_point(first):
            out[key] = torch.stack([sd[key].float() for sd in state_dicts]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


# ----------------------------------------------------------------------------- updates per stage

def batches_per_process(images: int, batch_size: int, processes: int = 1) -> int:
    """Training batches each process sees per epoch (what ``len(prepared_loader)`` is)."""
    return (images // batch_size) // processes


def updates_per_epoch(batches: int, grad_accum_steps: int = 1) -> int:
    """Optimizer updates per epoch for ``batches`` batches on one process."""
    return math.ceil(batches / grad_accum_steps)


# ----------------------------------------------------------------------------- MCL

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

"""Several teachers: sequential stages, one parallel stage, or a soup of single-teacher runs."""
from __future__ import annotations

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


def plan_stages(teachers: Sequence[str], mode: str | None) -> list[Stage]:
    """Stages for the given (already ordered) teachers."""
    teachers = list(teachers)
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

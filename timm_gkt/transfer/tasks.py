"""Transfer objectives as ``timm.task.TrainingTask`` subclasses.

Each task's forward takes ``(input, target)`` (the student's batch) and returns a dict
with ``loss`` and ``output`` plus named parts for logging, so it drops into any
timm-style loop. The student is ``trainable_module``; teachers and the frozen student
are plain attributes wrapped in :class:`~timm_gkt.frozen.FrozenModel` (eval mode, no
grad, never wrapped by DDP). Each frozen model sees the batch the way it was trained
(:class:`~timm_gkt.models.InputAdaptor`) and answers in the student's class order.
Which task a ``--transfer-method`` builds, and with which hyperparameters, is
:mod:`timm_gkt.methods`.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn as nn
from timm.task import TrainingTask

from ..models.frozen import FrozenModel, frozen_copy  # noqa: F401  (re-exported: the tasks are built around them)
from .objectives import (
    cross_entropy, flip_routing_counts, kl_div_loss, kldp_loss, parallel_kldp_loss, soft_routing_loss, three_way_loss,
    xekl_loss,
)


DP_MODES = ('supervised', 'unsupervised')
DP_ROUTINGS = ('two-way', 'three-way', 'soft')  # two-way: the paper's


def _check_dp_mode(dp_mode: str) -> str:
    if dp_mode not in DP_MODES:
        raise ValueError(f'dp_mode must be supervised or unsupervised, not {dp_mode!r}')
    return dp_mode


def _hard_target(target: torch.Tensor | None, dp_mode: str) -> torch.Tensor | None:
    return None if dp_mode == 'unsupervised' else target


class TransferTask(TrainingTask):
    """Common parts: the student as ``trainable_module`` and the KD temperature."""

    def __init__(self, student: nn.Module, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.trainable_module = student
        self.temperature = temperature
        self.derived: dict = {}  # values the builder computed from the stage (results.json reports them)

    def after_optimizer_step(self, step: int) -> None:
        """Hook called by the loop after each optimizer step (MCL interpolates here)."""

    def eval_module(self) -> nn.Module:
        """The weights that are evaluated, checkpointed and exported."""
        return self.trainable_module


class CrossEntropyTask(TransferTask):
    """Control: continue training with cross-entropy only (tells transfer from "more training")."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        output = self.trainable_module(input)
        loss = cross_entropy(output, target)
        return {'loss': loss, 'output': output, 'ce': loss.detach()}


class KLDistillationTask(TransferTask):
    """KL-Dist: the teacher's logits are the target for every sample."""

    def __init__(self, student: nn.Module, teacher: FrozenModel, temperature: float = 1.0, **kwargs):
        super().__init__(student, temperature, **kwargs)
        self.teacher = teacher

    def forward(self, input, target):
        output = self.trainable_module(input)
        loss = kl_div_loss(output, self.teacher(input), self.temperature)
        return {'loss': loss, 'output': output, 'kl': loss.detach()}


class XEKLTask(TransferTask):
    """XE-KL: ``(1 - xe_weight)·KL + xe_weight·CE`` (CE on logits)."""

    def __init__(self, student, teacher: FrozenModel, temperature: float = 1.0, xe_weight: float = 0.3, **kwargs):
        super().__init__(student, temperature, **kwargs)
        self.teacher = teacher
        self.xe_weight = xe_weight

    def forward(self, input, target):
        output = self.trainable_module(input)
        loss, kl, ce = xekl_loss(output, self.teacher(input), target, self.xe_weight, self.temperature)
        return {'loss': loss, 'output': output, 'kl': kl.detach(), 'ce': ce.detach()}


class XEKLMCLTask(XEKLTask):
    """XE-KL + momentum weight interpolation.

    The slow weights are timm's ``ModelEmaV3`` (a deep copy: floating params and buffers
    interpolated, integer buffers such as ``num_batches_tracked`` copied). Every
    ``interval`` optimizer steps: θ_slow ← τ·θ_slow + (1-τ)·θ_fast. Training continues on
    the fast weights; the slow copy is what is evaluated and exported.
    """

    def __init__(self, student, teacher, temperature=1.0, xe_weight=0.3, momentum=0.9999, interval=2, **kwargs):
        super().__init__(student, teacher, temperature, xe_weight, **kwargs)
        self.interval = interval
        self.momentum = momentum
        self.setup_ema(decay=momentum, use_warmup=False)

    def after_optimizer_step(self, step: int) -> None:
        if step % self.interval == 0:
            # no step argument: ModelEmaV3 treats early steps as warm-up and copies the fast weights
            # outright (decay 0 at step 1), which would discard the initial student
            self.update_ema()

    def train(self, mode: bool = True):
        super().train(mode)
        # the slow copy is only ever evaluated: keep its BatchNorm/dropout in eval mode
        self.get_trainable_module(ema=True).eval()
        return self

    def eval_module(self) -> nn.Module:
        return self.get_trainable_module(ema=True).module


class KLDPTask(TransferTask):
    """KL + data partitioning: per sample, distil from the teacher or the frozen initial student.

    Supervised: the teacher is the target where its true-class probability beats the
    frozen student's; unsupervised: where its confidence does (labels unused).

    This project's extensions (METHOD.md; each off by default, which is the paper's KL+DP):
    ``xe_weight`` λ adds the labels, ``(1 − λ)·KL+DP + λ·CE``; ``routing`` 'three-way' sends a sample to the
    label where the chosen model is wrong, 'soft' mixes both models' distributions by their true-class
    probabilities; ``calibration`` (T_teacher, T_frozen_student) makes routing compare calibrated probabilities.
    """

    def __init__(self, student, teacher: FrozenModel, frozen_student: FrozenModel, temperature: float = 1.0,
                 dp_mode: str = 'supervised', xe_weight: float = 0.0, routing: str = 'two-way',
                 calibration: tuple[float, float] = (1.0, 1.0), **kwargs):
        super().__init__(student, temperature, **kwargs)
        self.teacher = teacher
        self.frozen_student = frozen_student
        self.dp_mode = _check_dp_mode(dp_mode)
        if routing not in DP_ROUTINGS:
            raise ValueError(f'routing must be one of {", ".join(DP_ROUTINGS)}, not {routing!r}')
        if dp_mode == 'unsupervised' and (xe_weight or routing != 'two-way'):
            raise ValueError('labels are needed for xe_weight > 0 and three-way or soft routing; '
                             'use supervised routing')
        self.xe_weight, self.routing, self.calibration = float(xe_weight), routing, tuple(calibration)

    def forward(self, input, target):
        output = self.trainable_module(input)
        teacher_logits, frozen_logits = self.teacher(input), self.frozen_student(input)
        parts = {}
        if self.routing == 'three-way':
            kl, source = three_way_loss(output, teacher_logits, frozen_logits, target, self.temperature,
                                        self.calibration)
            mask = source == 1  # distilled from the teacher; source 2 learnt the label
            parts['to_label'] = (source == 2).float().mean()
        elif self.routing == 'soft':
            kl, weight = soft_routing_loss(output, teacher_logits, frozen_logits, target, self.temperature,
                                           self.calibration)
            mask = weight > 0.5  # the teacher weighs more
            parts['teacher_weight'] = weight.mean()
        else:
            kl, mask = kldp_loss(output, teacher_logits, frozen_logits, _hard_target(target, self.dp_mode),
                                 self.temperature, self.calibration)
        loss = kl
        if self.xe_weight:
            ce = cross_entropy(output, target)
            loss = (1.0 - self.xe_weight) * kl + self.xe_weight * ce
            parts['ce'] = ce.detach()
        # routing among flips always uses the labels, also when the routing itself did not
        flips = flip_routing_counts(teacher_logits, frozen_logits, target, mask)
        return {'loss': loss, 'output': output, 'kl': kl.detach(), 'routed_share': mask.float().mean(),
                'route_counts': torch.stack([(~mask).sum(), mask.sum()]), 'flip_counts': flips, **parts}


class ParallelKLDPTask(TransferTask):
    """Parallel multi-teacher KL+DP: per sample, the target is whichever of {frozen student, teachers} fits best;
    ``xe_weight`` λ adds the labels as for :class:`KLDPTask`."""

    def __init__(self, student, teachers: Sequence[FrozenModel], frozen_student: FrozenModel,
                 temperature: float = 1.0, dp_mode: str = 'supervised', xe_weight: float = 0.0, **kwargs):
        super().__init__(student, temperature, **kwargs)
        self.teachers = nn.ModuleList(teachers)
        self.frozen_student = frozen_student
        self.dp_mode = _check_dp_mode(dp_mode)
        if dp_mode == 'unsupervised' and xe_weight:
            raise ValueError('labels are needed for xe_weight > 0; use supervised routing')
        self.xe_weight = float(xe_weight)

    def forward(self, input, target):
        output = self.trainable_module(input)
        candidates = torch.stack([self.frozen_student(input)] + [t(input) for t in self.teachers])
        kl, choice = parallel_kldp_loss(output, candidates, _hard_target(target, self.dp_mode), self.temperature)
        loss, parts = kl, {}
        if self.xe_weight:
            ce = cross_entropy(output, target)
            loss = (1.0 - self.xe_weight) * kl + self.xe_weight * ce
            parts['ce'] = ce.detach()
        counts = torch.bincount(choice, minlength=candidates.shape[0])
        return {'loss': loss, 'output': output, 'kl': kl.detach(), 'routed_share': (choice > 0).float().mean(),
                'route_counts': counts, **parts}

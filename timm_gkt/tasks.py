"""Transfer objectives as ``timm.task.TrainingTask`` subclasses.

Each task's forward takes ``(input, target)`` (the student's batch) and returns a dict
with ``loss`` and ``output`` plus named parts for logging, so it drops into any
timm-style loop. The student is ``trainable_module``; teachers and the frozen student
are plain attributes wrapped in :class:`FrozenModel` (eval mode, no grad, never
wrapped by DDP). Each frozen model sees the batch the way it was trained
(:class:`~timm_gkt.models.InputAdaptor`) and answers in the student's class order.
"""
from __future__ import annotations

import copy
from typing import Dict, Sequence

import torch
import torch.nn as nn
from timm.task import TrainingTask

from .models import InputAdaptor, Preprocessing
from .objectives import cross_entropy, kl_div_loss, kldp_loss, parallel_kldp_loss, xekl_loss


class FrozenModel(nn.Module):
    """A teacher or frozen student: adapts the student's batch, runs without grad, reorders classes."""

    def __init__(
            self,
            model: nn.Module,
            student_preprocessing: Preprocessing,
            preprocessing: Preprocessing,
            label_perm: torch.Tensor | None = None,
            name: str = 'teacher',
    ):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.adaptor = InputAdaptor(student_preprocessing, preprocessing)
        self.name = name
        self.register_buffer('label_perm', label_perm, persistent=False)

    def train(self, mode: bool = True):
        # frozen means frozen: BatchNorm statistics and dropout stay in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(self.adaptor(x))
        if self.label_perm is not None:
            logits = logits[:, self.label_perm]
        return logits.float()


def frozen_copy(student: nn.Module, student_preprocessing: Preprocessing, name: str = 'frozen student') -> FrozenModel:
    """A *clone* of the student as it is now (not an alias of its tensors)."""
    return FrozenModel(copy.deepcopy(student), student_preprocessing, student_preprocessing, name=name)


DP_MODES = ('supervised', 'unsupervised')


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
    """

    def __init__(self, student, teacher: FrozenModel, frozen_student: FrozenModel, temperature: float = 1.0,
                 dp_mode: str = 'supervised', **kwargs):
        super().__init__(student, temperature, **kwargs)
        self.teacher = teacher
        self.frozen_student = frozen_student
        self.dp_mode = _check_dp_mode(dp_mode)

    def forward(self, input, target):
        output = self.trainable_module(input)
        loss, mask = kldp_loss(output, self.teacher(input), self.frozen_student(input),
                               _hard_target(target, self.dp_mode), self.temperature)
        return {'loss': loss, 'output': output, 'kl': loss.detach(), 'routed_share': mask.float().mean(),
                'route_counts': torch.stack([(~mask).sum(), mask.sum()])}


class ParallelKLDPTask(TransferTask):
    """Parallel multi-teacher KL+DP: per sample, the target is whichever of {frozen student, teachers} fits best."""

    def __init__(self, student, teachers: Sequence[FrozenModel], frozen_student: FrozenModel,
                 temperature: float = 1.0, dp_mode: str = 'supervised', **kwargs):
        super().__init__(student, temperature, **kwargs)
        self.teachers = nn.ModuleList(teachers)
        self.frozen_student = frozen_student
        self.dp_mode = _check_dp_mode(dp_mode)

    def forward(self, input, target):
        output = self.trainable_module(input)
        candidates = torch.stack([self.frozen_student(input)] + [t(input) for t in self.teachers])
        loss, choice = parallel_kldp_loss(output, candidates, _hard_target(target, self.dp_mode), self.temperature)
        counts = torch.bincount(choice, minlength=candidates.shape[0])
        return {'loss': loss, 'output': output, 'kl': loss.detach(), 'routed_share': (choice > 0).float().mean(),
                'route_counts': counts}


# One entry per --transfer-method; each builder takes the same keyword arguments.
def _build_ce(student, teachers, frozen_student, args):
    return CrossEntropyTask(student)


def _build_kl(student, teachers, frozen_student, args):
    return KLDistillationTask(student, teachers[0], args.kd_temperature)


def _build_xekl(student, teachers, frozen_student, args):
    return XEKLTask(student, teachers[0], args.kd_temperature, args.xe_weight)


def _build_xekl_mcl(student, teachers, frozen_student, args):
    return XEKLMCLTask(student, teachers[0], args.kd_temperature, args.xe_weight, args.mcl_momentum,
                       args.mcl_interval)


def _build_kldp(student, teachers, frozen_student, args):
    if len(teachers) > 1:
        return ParallelKLDPTask(student, teachers, frozen_student, args.kd_temperature, args.dp_mode)
    return KLDPTask(student, teachers[0], frozen_student, args.kd_temperature, args.dp_mode)


TASKS = {
    'ce': _build_ce,
    'kl': _build_kl,
    'xekl': _build_xekl,
    'xekl-mcl': _build_xekl_mcl,
    'kldp': _build_kldp,
}
METHODS_NEEDING_FROZEN_STUDENT = frozenset({'kldp'})
METHODS_WITHOUT_TEACHER = frozenset({'ce'})
METHOD_TITLES = {
    'ce': 'CE control (no teacher)',
    'kl': 'KL-Dist',
    'xekl': 'XE-KL',
    'xekl-mcl': 'XE-KL + MCL',
    'kldp': 'KL + DP',
}


def create_task(method: str, student, teachers, frozen_student, args) -> TransferTask:
    try:
        builder = TASKS[method]
    except KeyError:
        raise ValueError(f'Unknown transfer method {method!r}; choose one of {", ".join(TASKS)}.') from None
    return builder(student, list(teachers), frozen_student, args)

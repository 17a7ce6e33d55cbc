"""The models a transfer does not train: teachers and the frozen student, built here and nowhere else.

- :class:`InStudentOrder` is the one place a teacher's label permutation is applied
  (evaluation and training both go through it).
- :class:`FrozenModel` is what a task sees: the student's batch adapted to the model's
  own input (:class:`~timm_gkt.models.InputAdaptor`), eval mode, no grad, logits in the
  student's class order.
- :class:`Teacher` is a teacher as a run knows it: its spec, preprocessing and label
  permutation, and its network, loaded lazily and released between stages.
- :func:`stage_frozen_models` builds a stage's frozen models; with ``--teacher-cache`` the
  engine wraps them (:func:`timm_gkt.cache.cache_frozen_models`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from .load import InputAdaptor, Preprocessing, ResolvedModel, label_permutation, load_model
from .spec import ModelSpec


class InStudentOrder(nn.Module):
    """A model whose logits come out in the student's class order (``label_perm`` None: already aligned)."""

    def __init__(self, model: nn.Module, label_perm: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.register_buffer('label_perm', label_perm, persistent=False)
        self.train(model.training)  # a wrapper of an eval-mode model is in eval mode (predict restores modes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if self.label_perm is not None:
            logits = logits[:, self.label_perm.to(logits.device)]
        return logits


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
        self.net = InStudentOrder(model.eval().requires_grad_(False), label_perm)
        self.adaptor = InputAdaptor(student_preprocessing, preprocessing)
        self.name = name

    @property
    def model(self) -> nn.Module:
        return self.net.model

    def train(self, mode: bool = True):
        # frozen means frozen: BatchNorm statistics and dropout stay in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adaptor(x)).float()


def frozen_copy(student: nn.Module, student_preprocessing: Preprocessing, name: str = 'frozen student') -> FrozenModel:
    """A *clone* of the student as it is now (not an alias of its tensors)."""
    return FrozenModel(copy.deepcopy(student), student_preprocessing, student_preprocessing, name=name)


class Teacher:
    """A teacher: what was learnt about it once (preprocessing, label permutation) and its network, loaded on demand.

    Sequential and soup stages need one teacher at a time, so a teacher's network is
    released after the baseline evaluation and after its stage, and loaded again from its
    spec when a stage asks for it.
    """

    def __init__(self, resolved: ResolvedModel, label_perm: torch.Tensor | None):
        self.spec: ModelSpec = resolved.spec
        self.preprocessing = resolved.preprocessing
        self.label_names = resolved.label_names
        self.num_classes = resolved.num_classes
        self.source = resolved.source
        self.revision = resolved.revision
        self.label_perm = label_perm
        self._model: nn.Module | None = resolved.model
        self.pretrained = True

    @classmethod
    def load(cls, spec: str | ModelSpec, student: ResolvedModel | None = None, pretrained: bool = True,
             trust_order: bool = False) -> 'Teacher':
        """Load a teacher; with ``student``, map its classes onto the student's at once (:meth:`align`).

        ``pretrained=False`` (a dry run) creates the network without its weights.
        """
        teacher = cls(load_model(spec, pretrained=pretrained), None)
        teacher.pretrained = pretrained
        if student is not None:
            teacher.align(student.label_names, student.num_classes, trust_order)
        return teacher

    def align(self, student_names, student_classes: int, trust_order: bool = False) -> 'Teacher':
        """Decide the label permutation against the student's class names, which a run knows only once the
        dataset has named a student without label names; LabelSpaceError when the two cannot be matched."""
        self.label_perm = label_permutation(student_names, self.label_names, student_classes, self.num_classes,
                                            teacher=f'teacher {self.name}', trust_order=trust_order)
        return self

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def model(self) -> nn.Module:
        """The teacher's own network (its class order), loaded again if it was released."""
        if self._model is None:
            self._model = load_model(self.spec, pretrained=self.pretrained).model
        return self._model

    @property
    def network(self) -> InStudentOrder:
        """For evaluation on the teacher's own eval transform: logits in the student's class order."""
        return InStudentOrder(self.model, self.label_perm)

    def frozen(self, student_preprocessing: Preprocessing) -> FrozenModel:
        """For training: the student's batch adapted to this teacher, no grad, the student's class order."""
        return FrozenModel(self.model, student_preprocessing, self.preprocessing, self.label_perm, name=self.name)

    def release(self) -> None:
        self._model = None

    @property
    def loaded(self) -> bool:
        return self._model is not None


@dataclass
class FrozenModels:
    """What a stage's task distils from."""
    teachers: list[FrozenModel]
    frozen_student: FrozenModel | None


def stage_frozen_models(method, student: nn.Module, student_preprocessing: Preprocessing,
                        teachers: Sequence[Teacher], device) -> FrozenModels:
    """The frozen student (a clone of the stage's starting weights) and the stage's teachers, on ``device``.

    Built in this order (frozen student, then teachers): loading a released teacher creates
    its network and draws from the global RNG, and the order is part of a run's reproducibility.
    """
    frozen_student = frozen_copy(student, student_preprocessing).to(device) if method.needs_frozen_student else None
    stage_teachers = [t.frozen(student_preprocessing).to(device) for t in teachers] if method.needs_teacher else []
    return FrozenModels(stage_teachers, frozen_student)


__all__ = ['FrozenModel', 'FrozenModels', 'InStudentOrder', 'Teacher', 'frozen_copy',
           'stage_frozen_models']

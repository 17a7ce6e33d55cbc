"""Preflight: everything that can fail fails here, before any evaluation or training.

:func:`preflight` turns a :class:`~timm_gkt.config.TransferConfig` into a :class:`Plan`:
flags checked, model specs resolved, Hub access checked, student and teachers loaded and
their label spaces matched, datasets opened, the run folder chosen. Each step is one
function so that new checks (dataset label spaces, split resolution, offline Hub) slot in
as one more call. Bad input raises one of :data:`BAD_INPUT_ERRORS`; the CLI turns it into
``error: ...`` and exit code 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .cache import CacheError, check_cache_dir
from .config import ConfigError, TransferConfig, check_flags
from .data import DataUnavailableError, create_image_dataset
from .frozen import Teacher
from .hub.publish import PushAccessError, PushTarget
from .methods import Method
from .models import (
    LabelSpaceError, ModelSpecError, ResolvedModel, check_dataset_labels, check_model_spec, count_parameters,
    load_model, read_model_config,
)
from .multi import plan_stages
from .rundir import resolve_run_dir

BAD_INPUT_ERRORS = (ModelSpecError, LabelSpaceError, DataUnavailableError, ConfigError, PushAccessError, CacheError)


@dataclass
class Plan:
    """A run that passed preflight: what it trains, from what, on which data, into which folder."""
    config: TransferConfig
    accelerator: object
    student: ResolvedModel
    student_config: dict  # the student's config.json (carries earlier generations' lineage)
    teachers: dict[str, Teacher]  # by spec, in the order given
    train_ds: object
    eval_ds: object
    run_dir: Path
    resume_from: Path | None

    @property
    def method(self) -> Method:
        return self.config.method

    def say(self, *args) -> None:
        self.accelerator.print(*args)


def preflight(config: TransferConfig) -> Plan:
    from accelerate.utils import set_seed

    from .engine import make_accelerator
    check_flags(config)
    for spec in (config.model, *config.teachers):
        check_model_spec(spec)
    if config.push_to_hub:
        push_target(config).check_access()
    if config.teacher_cache:
        check_cache_dir(config.teacher_cache, config.teacher_cache_storage)
    accelerator = make_accelerator(config)
    # seeded before the first model is created: creating a network draws its initial weights from the RNG
    set_seed(config.seed)
    student = load_model(config.model, pretrained=config.pretrained, checkpoint=config.initial_checkpoint or None)
    teachers = load_teachers(config, student, accelerator.print)
    train_ds, eval_ds = load_datasets(config)
    check_dataset_labels(student, train_ds, config.dataset)
    run_dir, resume_from = resolve_run_dir(config)
    return Plan(config, accelerator, student, read_model_config(config.model) or {}, teachers, train_ds, eval_ds,
                run_dir, resume_from)


def push_target(config: TransferConfig) -> PushTarget | None:
    if not config.push_to_hub:
        return None
    return PushTarget(config.push_to_hub, private=config.hub_private, revision=config.hub_revision,
                      create_pr=config.hub_create_pr, min_delta=config.push_min_delta,
                      max_p_value=config.push_max_pvalue)


def load_teachers(config: TransferConfig, student: ResolvedModel, say) -> dict[str, Teacher]:
    teachers = {}
    for spec in config.teachers:
        t = Teacher.load(spec, student)
        if t.label_perm is not None:
            say(f'note: teacher {t.name} orders its classes differently; its logits are mapped to the student\'s '
                f'classes by label name')
        elif not (student.label_names and t.label_names):
            say(f'warning: {"student" if not student.label_names else "teacher " + t.name} has no label names; '
                f'trusting that the {t.num_classes} classes are in the same order')
        teachers[spec.text] = t
    return teachers


def subset(ds, n: int):
    """The first ``n`` samples (0: all)."""
    if n and n < len(ds):
        return torch.utils.data.Subset(ds, range(n))
    return ds


def load_datasets(config: TransferConfig):
    """(transfer data, evaluation data) as timm datasets of PIL images, subsets applied."""
    def split(name: str, n: int):
        return subset(create_image_dataset(config.dataset, config.data_dir, name,
                                           download=config.dataset_download), n)
    return split(config.train_split, config.train_subset), split(config.val_split, config.eval_subset)


def describe_plan(plan: Plan) -> list[str]:
    """What a dry run prints: the checks passed and what the run would do."""
    config, student = plan.config, plan.student
    prep = student.preprocessing
    lines = [f'plan: {plan.method.title} into {student.name} '
             f'(input {prep.input_size}, {count_parameters(student.model) / 1e6:.2f} M params)']
    for t in plan.teachers.values():
        lines.append(f'  teacher {t.name}: input {t.preprocessing.input_size}, {t.num_classes} classes, '
                     f'{count_parameters(t.model) / 1e6:.2f} M params')
    n_stages = len(plan_stages(list(plan.teachers), config.multi)) if plan.method.needs_teacher else 1
    lines.append(f'  stages: {n_stages} '
                 f'({config.multi or "single"}; order: {config.teacher_order} teacher top-1, measured before '
                 f'training), {config.epochs} epoch(s) each, batch {config.batch_size}, lr {config.learning_rate}')
    lines.append(f'  data: {config.dataset} {config.train_split} ({len(plan.train_ds)} images) -> '
                 f'eval on {config.val_split} ({len(plan.eval_ds)} images)')
    lines.append(f'  output: {plan.run_dir}' + (f'; push to {config.push_to_hub} if Δtransf > {config.push_min_delta}'
                                                if config.push_to_hub else ''))
    lines.append('dry run: all checks passed')
    return lines

"""Preflight: everything that can fail fails here, before any evaluation or training.

:func:`preflight` turns a :class:`~timm_gkt.config.TransferConfig` into a :class:`Plan`, cheap
checks first: flags; the process count; short model names resolved (``pit_b`` -> ``pit_b_224``);
specs; the dataset source and both splits (:func:`~timm_gkt.dataplan.check_data`, no image read);
weights available in the cache or on the Hub, decided in seconds and never downloaded by a dry
run (:mod:`~timm_gkt.weights`); Hub write access; then the student and teachers are loaded, their
label spaces matched, the splits opened, matched to the student's classes and subset
(:func:`~timm_gkt.dataplan.open_data`), and the run folder chosen. Bad input raises one of
:data:`BAD_INPUT_ERRORS`; the CLI turns it into ``error: ...`` and exit code 2.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, TransferConfig, check_flags
from .data import DataUnavailableError
from .dataplan import RunData, check_data, open_data
from .frozen import Teacher
from .hub.publish import PushAccessError, PushTarget
from .methods import Method
from .models import (
    LabelSpaceError, ModelSpecError, ResolvedModel, check_model_spec, count_parameters, load_model, read_model_config,
)
from .multi import plan_stages
from .resolve import resolve_model_names
from .rundir import resolve_run_dir
from .spec import parse_spec
from .weights import WeightsCheck, check_weights_available

BAD_INPUT_ERRORS = (ModelSpecError, LabelSpaceError, DataUnavailableError, ConfigError, PushAccessError)


@dataclass
class Plan:
    """A run that passed preflight: what it trains, from what, on which data, into which folder."""
    config: TransferConfig  # with short model names resolved
    accelerator: object
    student: ResolvedModel
    student_config: dict  # the student's config.json (carries earlier generations' lineage)
    teachers: dict[str, Teacher]  # by spec, in the order given
    data: RunData
    run_dir: Path
    resume_from: Path | None
    weights: list[WeightsCheck] = field(default_factory=list)

    @property
    def method(self) -> Method:
        return self.config.method

    @property
    def train_ds(self):
        return self.data.train.dataset

    @property
    def eval_ds(self):
        return self.data.eval.dataset

    def say(self, *args) -> None:
        self.accelerator.print(*args)


def preflight(config: TransferConfig) -> Plan:
    from accelerate.utils import set_seed
    check_flags(config)
    accelerator = create_accelerator(config)
    say = accelerator.print
    config = resolve_names(config, say)
    for spec in (config.model, *config.teachers):
        check_model_spec(spec)
    source = check_data(config)
    weights = check_weights(config)
    if config.push_to_hub:
        push_target(config).check_access()
    # seeded before the first model is created: creating a network draws its initial weights from the RNG
    set_seed(config.seed)
    # a dry run has checked that the weights exist; it creates the models without them (labels, sizes, counts)
    load_weights = not config.dry_run
    student = load_model(config.model, pretrained=config.pretrained and load_weights,
                         checkpoint=(config.initial_checkpoint or None) if load_weights else None)
    teachers = load_teachers(config, student, say, pretrained=load_weights)
    data = open_data(config, source, student, say)
    student.label_names = data.head_label_names  # what the exported config.json says the head predicts
    if config.data_in_memory:
        check_fits_in_memory(len(data.train.dataset), student.preprocessing.input_size)
    run_dir, resume_from = resolve_run_dir(config)
    return Plan(config, accelerator, student, read_model_config(config.model) or {}, teachers, data, run_dir,
                resume_from, weights)


def _has_accelerator_device() -> bool:
    import torch
    accel = getattr(torch, 'accelerator', None)
    return accel.is_available() if accel is not None else torch.cuda.is_available()


def create_accelerator(config: TransferConfig):
    """Accelerate's accelerator; several launched processes on a machine without GPUs become gloo processes.

    ``accelerate launch --multi_gpu --num_processes N`` starts N processes with WORLD_SIZE=N; without
    a GPU, Accelerate would make each of them a one-process job of its own (N copies of the whole
    run writing one folder) unless it is told to use the CPU, which is what ``cpu=True`` does.
    """
    from .engine import make_accelerator
    world_size = int(os.environ.get('WORLD_SIZE') or 1)
    accelerator = make_accelerator(config, cpu=world_size > 1 and not _has_accelerator_device())
    if world_size > 1 and accelerator.num_processes == 1:
        raise ConfigError(f'this job was launched as {world_size} processes (WORLD_SIZE={world_size}) but Accelerate '
                          f'sees one, so each would run the whole job on its own; on a machine without GPUs set '
                          f'ACCELERATE_USE_CPU=1 for accelerate launch --multi_gpu --num_processes {world_size}')
    return accelerator


def resolve_names(config: TransferConfig, say=print) -> TransferConfig:
    """The config with the paper's short names (``pit_b``) replaced by timm's (``pit_b_224``), one log line each."""
    given = [config.model.text] + [t.text for t in config.teachers]
    resolved = resolve_model_names(given, say)
    if resolved == given:
        return config
    return dataclasses.replace(config, model=parse_spec(resolved[0]),
                               teachers=tuple(parse_spec(t) for t in resolved[1:]))


def check_weights(config: TransferConfig) -> list[WeightsCheck]:
    """Every model's weights in the Hugging Face cache, a local folder or (one HEAD request each) on the Hub."""
    checks = [check_weights_available(config.model.text, pretrained=config.pretrained)]
    return checks + [check_weights_available(t.text) for t in config.teachers]


def check_fits_in_memory(num_images: int, input_size) -> None:
    from .memdata import MAX_BYTES, decoded_bytes
    size = decoded_bytes(num_images, input_size)
    if size > MAX_BYTES:
        raise ConfigError(f'--data-in-memory would hold {size / 1024 ** 3:.1f} GiB of decoded training images '
                          f'(limit {MAX_BYTES / 1024 ** 3:.0f} GiB); drop --data-in-memory or use --train-subset.')


def push_target(config: TransferConfig) -> PushTarget | None:
    if not config.push_to_hub:
        return None
    return PushTarget(config.push_to_hub, private=config.hub_private, revision=config.hub_revision,
                      create_pr=config.hub_create_pr, min_delta=config.push_min_delta,
                      max_p_value=config.push_max_pvalue)


def load_teachers(config: TransferConfig, student: ResolvedModel, say, pretrained: bool = True) -> dict[str, Teacher]:
    teachers = {}
    for spec in config.teachers:
        t = Teacher.load(spec, student, pretrained=pretrained)
        if t.label_perm is not None:
            say(f'note: teacher {t.name} orders its classes differently; its logits are mapped to the student\'s '
                f'classes by label name')
        elif not (student.label_names and t.label_names):
            say(f'warning: {"student" if not student.label_names else "teacher " + t.name} has no label names; '
                f'trusting that the {t.num_classes} classes are in the same order')
        teachers[spec.text] = t
    return teachers


_WHERE = {'cache': 'in the Hugging Face cache', 'hub': 'on the Hub (not downloaded by a dry run)',
          'local-dir': 'in a local folder', 'none': 'none (random initialisation, --no-pretrained)'}


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
                 f'training), {config.epochs} epoch(s) each, batch {config.batch_size} per process x '
                 f'{plan.accelerator.num_processes} process(es), lr {config.learning_rate}')
    lines += plan.data.describe()
    lines += [f'  weights of {parse_spec(w.spec).name}: {_WHERE[w.where]}' for w in plan.weights]
    lines.append(f'  output: {plan.run_dir}' + (f'; push to {config.push_to_hub} if Δtransf > {config.push_min_delta}'
                                                if config.push_to_hub else ''))
    lines.append('dry run: all checks passed')
    return lines

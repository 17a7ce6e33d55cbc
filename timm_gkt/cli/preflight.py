"""Preflight: everything that can fail fails here, before any evaluation or training.

:func:`preflight` turns a :class:`~timm_gkt.config.TransferConfig` into a :class:`Plan`, cheap
checks first: flags; the process count; short model names resolved (``pit_b`` -> ``pit_b_224``);
specs; the dataset source and both splits (:func:`~timm_gkt.data.plan.check_data`, no image read);
weights available in the cache or on the Hub, decided in seconds and never downloaded by a dry
run (:mod:`~timm_gkt.models.weights`); Hub write access; then the student and teachers are loaded, their
label spaces matched, the splits opened, matched to the student's classes and subset
(:func:`~timm_gkt.data.plan.open_data`), and the run folder chosen. Bad input raises a
:class:`~timm_gkt.errors.BadInput`; the boundary turns it into ``error: ...`` and exit code 2.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path


from ..cache.frozen import RunCache
from ..cache.store import TeacherCache, check_cache_dir
from ..data.plan import RunData, check_data, open_data
from ..errors import ConfigError
from ..hub.publish import PushTarget
from ..models.frozen import Teacher
from ..models.load import ResolvedModel, check_model_spec, count_parameters, load_model, read_model_config
from ..models.weights import WeightsCheck, check_weights_available
from ..transfer.methods import Method
from ..transfer.rundir import check_checkpoint, check_resume_matches, check_run_folder, resolve_run_dir, student_fingerprint
from ..transfer.stages import batches_per_process, plan_stages, updates_per_epoch
from .checks import (
    align_teachers, check_distinct_models, check_models, check_models_answer, check_not_student_weights,
)
from .config import TransferConfig, check_flags, flag_name
from .decisions import control_cost
from .processes import describe_processes, requested_processes


@dataclass
class Plan:
    """A run that passed preflight: what it trains, from what, on which data, into which folder."""
    config: TransferConfig
    accelerator: object
    student: ResolvedModel
    student_config: dict  # the student's config.json (carries earlier generations' lineage)
    teachers: dict[str, Teacher]  # by spec, in the order given
    data: RunData
    run_dir: Path
    resume_from: Path | None
    student_fingerprint: dict  # what a checkpoint of this run records about the initial student
    weights: list[WeightsCheck] = field(default_factory=list)
    cache: RunCache | None = None  # --teacher-cache, as the engine uses it
    selection: dict | None = None  # --teachers auto: the choice (timm_gkt.cli.selection); the stages keep its order
    processes_requested: int | None = None  # what the launcher asked for (timm_gkt.cli.processes)

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
        speaker(self.accelerator)(*args)


def speaker(accelerator):
    """How a run speaks: rank 0 only, each line flushed as it is said (piped to a CI log or to the launcher, a
    buffered line would arrive only at exit)."""
    return partial(accelerator.print, flush=True)


def preflight(config: TransferConfig) -> Plan:
    from accelerate.utils import set_seed
    check_flags(config)
    check_distinct_models(config)
    accelerator = create_accelerator(config)
    say = speaker(accelerator)  # the header lines said before the Plan exists, flushed as the Plan's are
    requested = requested_processes()
    for line in describe_processes(accelerator, requested):  # the run header says how many run, and warns
        say(line)
    for spec in (config.model, *config.teacher_candidates):  # short names were resolved when the flags were parsed
        if spec.note:
            say(spec.note)
    run_dir, resume_from = resolve_run_dir(config)
    resume_state = check_checkpoint(resume_from) if resume_from is not None else None
    check_run_folder(run_dir)
    for spec in (config.model, *config.teacher_candidates):
        check_model_spec(spec)
    source = check_data(config)
    weights = check_weights(config)
    if config.push_to_hub:
        push_target(config).check_access()
    if config.teacher_cache:
        check_cache_dir(config.teacher_cache, config.teacher_cache_storage)
    # seeded before the first model is created: creating a network draws its initial weights from the RNG
    set_seed(config.seed)
    # a dry run has checked that the weights exist; it loads only those already on this machine (never a download),
    # unless it must scan a teacher pool to print the choice
    loaded = {w.spec.text: not config.dry_run or config.auto_teachers or w.where in ('local-dir', 'cache')
              for w in weights}
    load_weights = loaded[config.model.text]
    student = load_model(config.model, pretrained=config.pretrained and load_weights,
                         checkpoint=(config.initial_checkpoint or None) if load_weights else None)
    fingerprint = student_fingerprint(student.model)
    if resume_state is not None and load_weights:
        check_resume_matches(resume_from, resume_state, fingerprint, config.model.text, config.transfer_method)
    teachers = load_teachers(config, loaded)
    check_models(student, teachers, loaded)  # channels, a head, finite weights: before classes are matched
    data = open_data(config, source, student, say)
    student.label_names = data.head_label_names  # what the exported config.json says the head predicts
    align_teachers(config, student, teachers, say)  # after the dataset named a student that had no names
    check_models_answer(student, teachers, data.eval.dataset, loaded)
    if all(loaded.values()):
        check_not_student_weights(student, teachers)
    if config.data_in_memory:
        check_fits_in_memory(len(data.train.dataset), student.preprocessing.input_size)
    check_schedule(config, len(data.train.dataset), accelerator.num_processes)
    cache = RunCache(TeacherCache(config.teacher_cache, config.teacher_cache_storage), frozen_precision(accelerator)) \
        if config.teacher_cache else None
    return Plan(config, accelerator, student, read_model_config(config.model) or {}, teachers, data, run_dir,
                resume_from, fingerprint, weights, cache, processes_requested=requested[0])


def frozen_precision(accelerator) -> str:
    """How frozen models compute under this accelerator (part of a cache key: bf16 autocast changes the logits)."""
    return 'float32' if accelerator.mixed_precision == 'no' else f'{accelerator.mixed_precision}-autocast'


def check_schedule(config: TransferConfig, train_images: int, processes: int) -> None:
    """Every stage makes at least one optimizer update, and MCL at least one interpolation."""
    batches = batches_per_process(train_images, config.batch_size, processes)
    if batches == 0:
        per = f' per process ({processes} processes)' if processes > 1 else ''
        raise ConfigError(f'{train_images} transfer images make no full batch of {config.batch_size}{per}, so '
                          f'nothing would be trained; lower --batch-size or use more images')
    if config.method.uses('mcl_interval'):
        total = updates_per_epoch(batches, config.grad_accum_steps) * config.epochs
        if total < config.mcl_interval:
            raise ConfigError(f'{flag_name("mcl_interval")} {config.mcl_interval} is more than the {total} optimizer '
                              f'updates of a stage, so the slow weights would never move; use --mcl-interval '
                              f'{total} or less, or train longer')


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
    from ..transfer.engine import make_accelerator
    world_size = int(os.environ.get('WORLD_SIZE') or 1)
    accelerator = make_accelerator(config, cpu=world_size > 1 and not _has_accelerator_device())
    if world_size > 1 and accelerator.num_processes == 1:
        raise ConfigError(f'this job was launched as {world_size} processes (WORLD_SIZE={world_size}) but Accelerate '
                          f'sees one, so each would run the whole job on its own; on a machine without GPUs set '
                          f'ACCELERATE_USE_CPU=1 for accelerate launch --multi_gpu --num_processes {world_size}')
    return accelerator


def check_weights(config: TransferConfig) -> list[WeightsCheck]:
    """Every model's weights in the Hugging Face cache, a local folder or (one HEAD request each) on the Hub."""
    checks = [check_weights_available(config.model, pretrained=config.pretrained)]
    return checks + [check_weights_available(t) for t in config.teacher_candidates]


def check_fits_in_memory(num_images: int, input_size) -> None:
    from ..data.memory import MAX_BYTES, decoded_bytes
    size = decoded_bytes(num_images, input_size)
    if size > MAX_BYTES:
        raise ConfigError(f'--data-in-memory would hold {size / 1024 ** 3:.1f} GiB of decoded training images '
                          f'(limit {MAX_BYTES / 1024 ** 3:.0f} GiB); drop --data-in-memory or use --train-subset.')


def push_target(config: TransferConfig) -> PushTarget | None:
    if not config.push_to_hub:
        return None
    return PushTarget(config.push_to_hub, private=config.hub_private, revision=config.hub_revision,
                      create_pr=config.hub_create_pr, min_delta=config.push_min_delta,
                      max_p_value=config.push_max_pvalue, beat_control=config.push_beat_control)


def load_teachers(config: TransferConfig, loaded: dict[str, bool]) -> dict[str, Teacher]:
    """Every teacher's network (with its weights where ``loaded`` says so); classes are matched later."""
    return {spec.text: Teacher.load(spec, pretrained=loaded[spec.text]) for spec in config.teacher_candidates}


_WHERE = {'cache': 'in the Hugging Face cache', 'hub': 'on the Hub (not downloaded by a dry run)',
          'local-dir': 'in a local folder', 'none': 'none (random initialisation, --no-pretrained)'}


def global_batch(plan: Plan) -> str:
    config, processes = plan.config, plan.accelerator.num_processes
    parts = [f'{config.batch_size}'] + ([f'{processes} processes'] if processes > 1 else []) + \
        ([f'{config.grad_accum_steps} accumulated'] if config.grad_accum_steps > 1 else [])
    total = config.batch_size * processes * config.grad_accum_steps
    return f'batch {total}' + (f' ({" x ".join(parts)})' if len(parts) > 1 else '')


def stage_count(plan: Plan) -> int:
    return len(plan_stages(list(plan.teachers), plan.config.multi, plan.method.needs_teacher))


def describe_plan(plan: Plan) -> list[str]:
    """What a dry run prints: the checks passed and what the run would do."""
    config, student = plan.config, plan.student
    prep = student.preprocessing
    lines = [f'plan: {plan.method.title_with(config.task_hyperparameters())} into {student.name} '
             f'(input {prep.input_size}, {count_parameters(student.model) / 1e6:.2f} M params)']
    for t in plan.teachers.values():
        lines.append(f'  teacher {t.name}: input {t.preprocessing.input_size}, {t.num_classes} classes, '
                     f'{count_parameters(t.model) / 1e6:.2f} M params')
    n_stages = stage_count(plan)
    order = 'chosen above by --teachers auto' if plan.selection else \
        f'{config.teacher_order} teacher top-1, measured before training'
    lines.append(f'  stages: {n_stages} '
                 f'({config.multi or "single"}; order: {order}), {config.epochs} epoch(s) each, {global_batch(plan)}, '
                 f'lr {config.learning_rate} (absolute: not scaled by the batch)')
    lines += plan.data.describe()
    lines += [f'  weights of {w.spec.name}: {_WHERE[w.where]}' for w in plan.weights]
    if config.control:
        lines.append(control_cost(config, n_stages))
    lines.append(f'  output: {plan.run_dir}' + (f'; push to {config.push_to_hub} if Δtransf > {config.push_min_delta}'
                                                if config.push_to_hub else '')
                 + (' and it beats the control' if config.push_beat_control and config.push_to_hub else ''))
    lines.append('dry run: all checks passed')
    return lines

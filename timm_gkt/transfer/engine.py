"""The engine: the "before" evaluation, then stage after stage of training, each epoch evaluated and checkpointed.

Accelerate style: the loop of :func:`train_one_epoch` fits one screen, ``accelerator.prepare``
is called once per stage, evaluation gathers with ``gather_for_metrics``. A stage
(:func:`run_stage`) trains one task (:mod:`~timm_gkt.transfer.methods`) against the stage's frozen
models (:mod:`~timm_gkt.models.frozen`) and is resumable from its epoch checkpoints. The training loader
replays each sample's augmentation from (seed, epoch, index). With ``--teacher-cache`` the plan carries a
cache object (``plan.cache``, built by the CLI) that the engine asks for the "before" predictions, to wrap a
stage's frozen models, to bind each batch's sample indices and to publish each epoch; the engine itself
imports nothing from the cache.

``plan`` is the CLI's preflight result (:class:`~timm_gkt.cli.preflight.Plan`): the engine reads its
config, accelerator, student, teachers, data, run folder and cache (and whether ``--teachers auto`` chose the
teachers' order).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import NonFiniteLoss, TrainingFailed
from .epoch import diverged_message, epoch_row, format_epoch, sync_batchnorm, train_one_epoch
from ..data.unreadable import check_unreadable
from ..evaluation.predictions import predict, top1
from ..models.frozen import stage_frozen_models
from .methods import create_task
from ..evaluation.metrics import transfer_metrics
from .stages import Stage, order_teachers, plan_stages, soup, updates_per_epoch
from .rundir import (
    RunState, latest_checkpoint, load_checkpoint, load_stage_result, save_checkpoint, save_stage_result,
    set_aside_previous_run, write_summary,
)


def make_accelerator(config, cpu: bool = False):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    mixed = ('bf16' if config.amp_dtype == 'bfloat16' else 'fp16') if config.amp else 'no'
    return Accelerator(cpu=cpu, mixed_precision=mixed, gradient_accumulation_steps=config.grad_accum_steps,
                       dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))


def create_train_loader(config, train_ds, student):
    """timm's training loader over a :class:`~timm_gkt.replay.ReplayDataset` (items: image, target, index).

    Replay is always on, not only with ``--teacher-cache``: each sample's augmentation is a
    function of (seed, epoch, index), so a run sees the same pixels with or without the
    cache (the flag changes speed, never results), whatever the loader workers or process
    count, and a resumed epoch replays exactly. Call ``loader.dataset.set_epoch`` per epoch.
    """
    from timm.data import create_loader

    from ..data.replay import ReplayDataset
    prep = student.preprocessing
    return create_loader(
        ReplayDataset(train_ds, prep.image_mode, seed=config.seed), input_size=prep.input_size,
        batch_size=config.batch_size,
        is_training=True, no_aug=config.no_aug, scale=tuple(config.scale), ratio=tuple(config.ratio),
        hflip=config.hflip, vflip=config.vflip, color_jitter=config.color_jitter, auto_augment=config.aa,
        re_prob=config.reprob, interpolation=prep.interpolation, mean=prep.mean, std=prep.std,
        num_workers=config.loader_workers, use_prefetcher=False, device=torch.device('cpu'), persistent_workers=False)


def create_mixup(config, num_classes):
    if not (config.mixup > 0 or config.cutmix > 0):
        return None
    from timm.data import Mixup
    # explicit: Mixup's own default smooths the targets by 0.1, which would change CE, XE-KL and DP routing
    return Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, prob=config.mixup_prob,
                 label_smoothing=config.smoothing, num_classes=num_classes)


# ----------------------------------------------------------------------------- before

@dataclass(frozen=True)
class Baseline:
    """The "before" pass: every model's predictions on the evaluation split, what all metrics compare with."""
    student_pred: torch.Tensor
    teacher_preds: dict[str, torch.Tensor]  # by teacher spec
    target: torch.Tensor
    num_classes: int

    @property
    def student_top1(self) -> float:
        return top1(self.student_pred, self.target)

    @property
    def teacher_top1(self) -> dict[str, float]:
        return {spec: top1(p, self.target) for spec, p in self.teacher_preds.items()}

    def metrics(self, pred: torch.Tensor) -> dict:
        """Δtransf, flips and p-value of a student's predictions against this baseline."""
        m = transfer_metrics(self.student_pred, pred, self.teacher_preds, self.target, self.num_classes)
        m['eval_samples'] = int(self.target.numel())
        return m


def measure_baseline(plan) -> Baseline:
    """One pass over the evaluation split for the student and every teacher, each through its own eval transform
    (read from ``--teacher-cache`` for models whose predictions on this split are already there)."""
    student, teachers = plan.student, list(plan.teachers.values())
    models = [student.model] + [t.network for t in teachers]
    for m in models:
        m.to(plan.accelerator.device)
    run_predict = plan.cache.predict if plan.cache is not None else predict
    preds, target = run_predict(models, [student.preprocessing] + [t.preprocessing for t in teachers], plan.eval_ds,
                                accelerator=plan.accelerator, batch_size=plan.config.eval_batch_size,
                                desc='eval before')
    check_unreadable(plan.data.eval, plan.accelerator, plan.say)
    return Baseline(preds[0], dict(zip(plan.teachers, preds[1:])), target, student.num_classes)


# ----------------------------------------------------------------------------- stages

def open_run_dir(plan) -> None:
    """Make the run folder; an earlier run in it (not resumed) is kept aside under its time."""
    if plan.accelerator.is_main_process:
        if plan.resume_from is None:
            kept = set_aside_previous_run(plan.run_dir)
            if kept is not None:
                plan.say(f'note: {plan.run_dir} held an earlier run; it is kept as {kept}')
        plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.accelerator.wait_for_everyone()


def order_stages(plan, baseline: Baseline) -> tuple[list[str], list[Stage]]:
    """The teachers' stage order (by their measured top-1) and the stages; teachers the first stage does not
    use are released (the control trains without teachers; they served the flip metrics of the baseline)."""
    config = plan.config
    # --teachers auto has chosen the order already, on its selection split (plan.teachers holds it)
    order = 'given' if getattr(plan, 'selection', None) else config.teacher_order
    ordered = order_teachers(list(plan.teachers), baseline.teacher_top1, order)
    stages = plan_stages(ordered, config.multi, plan.method.needs_teacher)
    release_teachers(plan.teachers, keep=stages[0].teachers)
    top1 = baseline.teacher_top1
    plan.say(f'student {plan.student.name}: top-1 {baseline.student_top1:.2f}; '
             + ', '.join(f'teacher {plan.teachers[s].name}: {top1[s]:.2f}' for s in ordered))
    if len(stages) > 1 or (config.multi and plan.method.needs_teacher):
        plan.say(f'{config.multi} transfer, stage order: {" -> ".join(plan.teachers[s].name for s in ordered)}')
    return ordered, stages


@dataclass
class Transfer:
    """The stages' outcome: the final student, its predictions and metrics, the per-epoch history."""
    model: torch.nn.Module
    pred: torch.Tensor
    metrics: dict
    history: list[dict]
    derived: dict = field(default_factory=dict)  # values computed from the config, e.g. the MCL τ used


def run_stages(plan, baseline: Baseline, stages: list[Stage]) -> Transfer:
    """Every stage in order (finished ones read back on resume), then the soup if any, then the final metrics."""
    state = RunState.read(plan.resume_from)
    # what a resume of this run must continue (preflight compares it with the --model given then)
    state.student, state.method = plan.student_fingerprint, plan.method.name
    resume_from = plan.resume_from
    initial_state = {k: v.detach().cpu().clone() for k, v in plan.student.model.state_dict().items()}
    current, soup_parts, last_pred, derived, calibrations = initial_state, [], None, {}, {}
    for stage, next_stage in zip(stages, [*stages[1:], None]):
        if stage.index < state.stage:  # finished before the interruption
            stage_state, last_pred = load_stage_result(plan.run_dir, stage.index), None
        else:
            resuming = resume_from is not None and stage.index == state.stage and state.epoch > 0
            if not resuming:
                state.epoch = 0
            state.stage = stage.index
            start = initial_state if stage.from_initial else current
            stage_state, last_pred, derived = run_stage(plan, stage, start, baseline, state,
                                                        resume_from if resuming else None)
            if 'calibration' in derived:
                calibrations[stage.index] = derived['calibration']
            if plan.accelerator.is_main_process:
                save_stage_result(plan.run_dir, stage.index, stage_state)
            resume_from = None
        release_teachers(plan.teachers, keep=next_stage.teachers if next_stage is not None else ())
        soup_parts.append(stage_state)
        current = stage_state
    is_soup = plan.config.multi == 'soup'
    model = copy.deepcopy(plan.student.model)
    model.load_state_dict(soup(soup_parts) if is_soup else current)
    model.to(plan.accelerator.device)
    # no BatchNorm sync needed here: every stage result was taken after its last sync, so all processes
    # hold the same weights, and the export (rank 0's) is what they evaluate
    if is_soup or last_pred is None:  # a soup (or a run resumed at its end) has not been evaluated yet
        (last_pred,), _ = predict([model], [plan.student.preprocessing], plan.eval_ds,
                                  batch_size=plan.config.eval_batch_size, accelerator=plan.accelerator,
                                  desc='eval after')
    # otherwise the last epoch's evaluation already saw exactly these weights
    if calibrations:  # per stage: a sequential run calibrates each stage's frozen student anew
        derived = {**derived, 'calibration': [calibrations[k] for k in sorted(calibrations)]}
    return Transfer(model, last_pred, baseline.metrics(last_pred), state.history, derived)


def release_teachers(teachers: dict, keep=()) -> None:
    """Release every teacher's network except those in ``keep`` (the next stage loads its own): one teacher
    in memory at a time in a sequential run, and a single-teacher run builds its teacher once."""
    for spec, teacher in teachers.items():
        if spec not in keep:
            teacher.release()


@dataclass
class StageSetup:
    """A stage's prepared objects."""
    student: torch.nn.Module
    task: torch.nn.Module
    loader: object
    replay: object  # the loader's ReplayDataset (its epoch decides the augmentation)
    optimizer: object
    scheduler: object
    num_epochs: int
    updates_per_epoch: int
    mixup: object
    derived: dict


def setup_stage(plan, stage: Stage, start_state: dict) -> StageSetup:
    """Student from ``start_state``, the stage's frozen models, loader, optimizer, schedule, task; prepared.

    The order of these steps is the order the global RNG is drawn in (model creation,
    loader seeds), so it stays fixed for runs to reproduce.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    config, accelerator, method = plan.config, plan.accelerator, plan.method
    student = copy.deepcopy(plan.student.model)
    student.load_state_dict(start_state)
    student.train()
    frozen = stage_frozen_models(method, student, plan.student.preprocessing,
                                 [plan.teachers[t] for t in stage.teachers], accelerator.device)
    # sharded first: the schedule counts the updates each process makes (preflight checked there is one)
    if config.data_in_memory:  # already sharded and on the device; Accelerate leaves it alone
        from ..data.memory import create_memory_loader
        loader = create_memory_loader(config, plan.train_ds, plan.student, accelerator,
                                      store=plan.cache.decoded if plan.cache is not None else None)
        # the per-image loader's dataset is never iterated: it says what the batches are (they are the same),
        # which is what the teacher cache keys on
        replay = create_train_loader(config, plan.train_ds, plan.student).dataset
    else:
        raw = create_train_loader(config, plan.train_ds, plan.student)
        replay = raw.dataset
        loader = accelerator.prepare(raw)
    calibration = calibration_temperatures(plan, stage, frozen) if _calibrates(plan, stage) else None
    if plan.cache is not None:
        frozen = plan.cache.wrap(frozen, replay)
    # timm filters weight decay: 1-D parameters (biases, norm weights) get none
    optimizer = create_optimizer_v2(student, opt=config.opt, lr=config.learning_rate,
                                    weight_decay=config.weight_decay, momentum=config.momentum)
    num_updates = updates_per_epoch(len(loader), config.grad_accum_steps)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=config.sched, num_epochs=config.epochs, warmup_epochs=config.warmup_epochs,
        warmup_lr=config.warmup_lr, min_lr=config.min_lr, step_on_epochs=not config.sched_on_updates,
        updates_per_epoch=num_updates)
    # the task (and MCL's slow copy) is built on the unwrapped student, before DDP wraps it
    task = create_task(method, student, frozen.teachers, frozen.frozen_student, updates=num_updates * num_epochs,
                       calibration=calibration, **config.task_hyperparameters()).to(accelerator.device)
    student, optimizer = accelerator.prepare(student, optimizer)
    task.trainable_module = student
    mixup = create_mixup(config, plan.student.num_classes)
    return StageSetup(student, task, loader, replay, optimizer, scheduler, num_epochs, num_updates, mixup,
                      dict(task.derived))


def _calibrates(plan, stage: Stage) -> bool:
    return plan.method.uses('dp_calibration') and plan.config.dp_calibration != 'none' and len(stage.teachers) == 1


def calibration_temperatures(plan, stage: Stage, frozen) -> tuple[float, float]:
    """(T_teacher, T_frozen_student) fitted by NLL on a seeded class-stratified sample of the transfer images, each
    model through its own eval transform (one forward each, read from the cache where it holds them)."""
    from ..data.subsets import take_subset
    from .objectives import fit_temperature
    config = plan.config
    images, _ = take_subset(plan.train_ds, config.dp_calibration_images, config.seed, '--dp-calibration-images')
    teacher = plan.teachers[stage.teachers[0]]
    run_predict = plan.cache.predict if plan.cache is not None else predict
    (teacher_logits, student_logits), target = run_predict(
        [teacher.network, frozen.frozen_student.net], [teacher.preprocessing, plan.student.preprocessing], images,
        accelerator=plan.accelerator, batch_size=config.eval_batch_size, desc='calibration', logits=True)
    temperatures = fit_temperature(teacher_logits, target), fit_temperature(student_logits, target)
    plan.say(f'  calibration on {len(target)} transfer images: temperature {temperatures[0]:.3f} for {teacher.name}, '
             f'{temperatures[1]:.3f} for the frozen student')
    return temperatures


def run_stage(plan, stage: Stage, start_state: dict, baseline: Baseline, state: RunState,
              resume_from: Path | None) -> tuple[dict, torch.Tensor | None, dict]:
    """Train one stage; returns its student's weights, its last evaluation's predictions and derived values."""
    from timm.utils import unwrap_model
    s = setup_stage(plan, stage, start_state)
    name = ' + '.join(plan.teachers[t].name for t in stage.teachers) if plan.method.needs_teacher \
        else 'cross-entropy control'
    start_epoch = 0
    if resume_from is not None:
        load_checkpoint(plan.accelerator, resume_from, s.scheduler, s.task)
        start_epoch = state.epoch
        plan.say(f'resumed from {resume_from} (stage {stage.index + 1}, epoch {start_epoch})')
    num_updates = start_epoch * s.updates_per_epoch
    pred = None
    for epoch in range(start_epoch, s.num_epochs):
        pred, num_updates = run_epoch(plan, stage, name, s, baseline, state, epoch, num_updates)
    report = plan.cache.report(s.task) if plan.cache is not None else None
    if report:
        plan.say(f'  {report}')
    result = {k: v.detach().cpu().clone() for k, v in unwrap_model(s.task.eval_module()).state_dict().items()}
    derived = s.derived
    plan.accelerator.free_memory()  # forget this stage's prepared objects before the next stage prepares its own
    del s
    return result, pred, derived


def run_epoch(plan, stage: Stage, name: str, s: StageSetup, baseline: Baseline, state: RunState, epoch: int,
              num_updates: int) -> tuple[torch.Tensor, int]:
    """One epoch of a stage: train, synchronise, publish the cache, evaluate, record, checkpoint."""
    from timm.utils import unwrap_model
    if hasattr(s.loader, 'set_epoch'):
        s.loader.set_epoch(epoch)
    if s.replay is not None:
        s.replay.set_epoch(epoch)
    desc = f'stage {stage.index + 1} [{name}] epoch {epoch + 1}/{s.num_epochs}'
    t0 = time.time()
    try:
        loss, counts, num_updates = train_one_epoch(
            plan.accelerator, s.task, s.student, s.loader, s.optimizer, s.scheduler, s.mixup, epoch, num_updates,
            plan.config.clip_grad, desc, bind=plan.cache.bind if plan.cache is not None else None)
    except NonFiniteLoss as e:
        raise TrainingFailed(diverged_message(e, f'stage {stage.index + 1} [{name}], epoch {epoch + 1}',
                                              latest_checkpoint(plan.run_dir))) from None
    seconds = time.time() - t0
    check_unreadable(plan.data.train, plan.accelerator, plan.say)  # one full pass: every unreadable image seen
    sync_batchnorm(plan.accelerator, s.task)
    if plan.cache is not None:  # before the checkpoint: a resumed run reads what this epoch computed
        plan.cache.commit(s.task, epoch)
    (pred,), _ = predict([unwrap_model(s.task.eval_module())], [plan.student.preprocessing], plan.eval_ds,
                         batch_size=plan.config.eval_batch_size, accelerator=plan.accelerator, desc='eval')
    m = baseline.metrics(pred)
    row = epoch_row(stage, name, epoch, loss, m, counts, s.optimizer,
                    len(s.loader.dataset) / seconds if seconds > 0 else None)
    state.history.append(row)
    state.epoch = epoch + 1
    plan.say(format_epoch(desc, loss, m, row))
    if plan.accelerator.is_main_process:
        write_summary(plan.run_dir / 'summary.csv', state.history)
    save_checkpoint(plan.accelerator, plan.run_dir, stage.index, epoch + 1, s.scheduler, s.task, state,
                    plan.config.checkpoint_hist)
    return pred, num_updates

"""The engine: the "before" evaluation, then stage after stage of training, each epoch evaluated and checkpointed.

Accelerate style: the loop of :func:`train_one_epoch` fits one screen, ``accelerator.prepare``
is called once per stage, evaluation gathers with ``gather_for_metrics``. A stage
(:func:`run_stage`) trains one task (:mod:`timm_gkt.methods`) against the stage's frozen
models (:mod:`timm_gkt.frozen`) and is resumable from its epoch checkpoints. The training loader
replays each sample's augmentation from (seed, epoch, index); with ``--teacher-cache`` the frozen
models read and fill :mod:`timm_gkt.cache` and the "before" predictions are cached too.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cache import TeacherCache, cache_frozen_models, cache_report, cached_predict, commit_cached
from .errors import NonFiniteLoss, TrainingFailed
from .evaluation import predict, top1
from .frozen import stage_frozen_models
from .methods import create_task
from .metrics import transfer_metrics
from .models import ResolvedModel
from .multi import Stage, soup
from .rundir import (
    RunState, latest_checkpoint, load_checkpoint, load_stage_result, save_checkpoint, save_stage_result, write_summary,
)
from .schedule import updates_per_epoch


def make_accelerator(config, cpu: bool = False):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    mixed = ('bf16' if config.amp_dtype == 'bfloat16' else 'fp16') if config.amp else 'no'
    return Accelerator(cpu=cpu, mixed_precision=mixed, gradient_accumulation_steps=config.grad_accum_steps,
                       dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))


def create_train_loader(config, train_ds, student: ResolvedModel):
    """timm's training loader over a :class:`~timm_gkt.replay.ReplayDataset` (items: image, target, index).

    Replay is always on, not only with ``--teacher-cache``: each sample's augmentation is a
    function of (seed, epoch, index), so a run sees the same pixels with or without the
    cache (the flag changes speed, never results), whatever the loader workers or process
    count, and a resumed epoch replays exactly. Call ``loader.dataset.set_epoch`` per epoch.
    """
    from timm.data import create_loader

    from .replay import ReplayDataset
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


def teacher_cache(config) -> TeacherCache | None:
    return TeacherCache(config.teacher_cache, config.teacher_cache_storage) if config.teacher_cache else None


def frozen_precision(accelerator) -> str:
    """How frozen models compute under this accelerator (part of a cache key: bf16 autocast changes the logits)."""
    return 'float32' if accelerator.mixed_precision == 'no' else f'{accelerator.mixed_precision}-autocast'


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
    preds, target = cached_predict(teacher_cache(plan.config), models,
                                   [student.preprocessing] + [t.preprocessing for t in teachers], plan.eval_ds,
                                   precision=frozen_precision(plan.accelerator), accelerator=plan.accelerator,
                                   batch_size=plan.config.eval_batch_size, desc='eval before')
    return Baseline(preds[0], dict(zip(plan.teachers, preds[1:])), target, student.num_classes)


# ----------------------------------------------------------------------------- stages

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
    current, soup_parts, last_pred, derived = initial_state, [], None, {}
    for stage in stages:
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
            if plan.accelerator.is_main_process:
                save_stage_result(plan.run_dir, stage.index, stage_state)
            resume_from = None
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
    return Transfer(model, last_pred, baseline.metrics(last_pred), state.history, derived)


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
        from .memdata import create_memory_loader
        loader, replay = create_memory_loader(config, plan.train_ds, plan.student, accelerator), None
    else:
        raw = create_train_loader(config, plan.train_ds, plan.student)
        replay = raw.dataset
        loader = accelerator.prepare(raw)
    cache = teacher_cache(config)
    if cache is not None:  # keyed by what decides the outputs: a stage-2 frozen student is stage 1's result
        frozen = cache_frozen_models(cache, frozen, replay, frozen_precision(accelerator))
    # timm filters weight decay: 1-D parameters (biases, norm weights) get none
    optimizer = create_optimizer_v2(student, opt=config.opt, lr=config.learning_rate,
                                    weight_decay=config.weight_decay, momentum=config.momentum)
    num_updates = updates_per_epoch(len(loader), config.grad_accum_steps)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=config.sched, num_epochs=config.epochs, warmup_epochs=config.warmup_epochs,
        warmup_lr=config.warmup_lr, min_lr=config.min_lr, step_on_epochs=not config.sched_on_updates,
        updates_per_epoch=num_updates)
    hyper = config.task_hyperparameters()
    derived = {}
    if method.uses('mcl_momentum') and config.mcl_momentum is None:
        from .mcl import scaled_mcl_momentum
        derived['mcl_momentum'] = hyper['mcl_momentum'] = scaled_mcl_momentum(num_updates * num_epochs,
                                                                              config.mcl_interval)
    # the task (and MCL's slow copy) is built on the unwrapped student, before DDP wraps it
    task = create_task(method, student, frozen.teachers, frozen.frozen_student, **hyper).to(accelerator.device)
    student, optimizer = accelerator.prepare(student, optimizer)
    task.trainable_module = student
    mixup = create_mixup(config, plan.student.num_classes)
    return StageSetup(student, task, loader, replay, optimizer, scheduler, num_epochs, num_updates, mixup, derived)


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
        if hasattr(s.loader, 'set_epoch'):
            s.loader.set_epoch(epoch)
        if s.replay is not None:
            s.replay.set_epoch(epoch)
        desc = f'stage {stage.index + 1} [{name}] epoch {epoch + 1}/{s.num_epochs}'
        t0 = time.time()
        try:
            loss, counts, num_updates = train_one_epoch(
                plan.accelerator, s.task, s.student, s.loader, s.optimizer, s.scheduler, s.mixup, epoch, num_updates,
                plan.config.clip_grad, desc)
        except NonFiniteLoss as e:
            raise TrainingFailed(diverged_message(e, f'stage {stage.index + 1} [{name}], epoch {epoch + 1}',
                                                  latest_checkpoint(plan.run_dir))) from None
        seconds = time.time() - t0
        sync_batchnorm(plan.accelerator, s.task)
        commit_cached(s.task, epoch)  # before the checkpoint: a resumed run reads what this epoch computed
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
    report = cache_report(s.task)
    if report:
        plan.say(f'  {report}')
    result = {k: v.detach().cpu().clone() for k, v in unwrap_model(s.task.eval_module()).state_dict().items()}
    derived = s.derived
    plan.accelerator.free_memory()  # forget this stage's prepared objects before the next stage prepares its own
    del s
    if len(stage.teachers) == 1:
        plan.teachers[stage.teachers[0]].release()  # the next stage loads its own teacher
    return result, pred, derived


def diverged_message(e: NonFiniteLoss, where: str, checkpoint: Path | None) -> str:
    head = f'{e} of {where}; the run stopped there and nothing was exported or pushed'
    if checkpoint is None:
        return f'{head}. No checkpoint was written yet; rerun with a lower --lr (or --clip-grad)'
    return (f'{head}. Last good checkpoint: {checkpoint}; continue from it with --resume {checkpoint} and a lower '
            f'--lr (or --clip-grad)')


def sync_batchnorm(accelerator, task) -> None:
    """Average BatchNorm running statistics over the processes (student and MCL slow copy), timm's way.

    Each process updates its own statistics from its shard; without this, evaluation would score
    each shard with its own process's statistics while the export carries rank 0's.
    """
    if accelerator.num_processes == 1:
        return
    from timm.utils import distribute_bn
    distribute_bn(task.get_trainable_module(), accelerator.num_processes, reduce=True)
    if task.has_ema():
        distribute_bn(task.get_trainable_module(ema=True), accelerator.num_processes, reduce=True)


def all_finite(accelerator, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (they must agree to stop together)."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction='sum')
    return bad.item() == 0


def epoch_row(stage: Stage, name: str, epoch: int, loss: float, m: dict, counts: dict, optimizer,
              img_per_s: float | None) -> dict:
    """One line of the run's history (summary.csv, results.json ``epochs``)."""
    routed = None
    route_counts, flips = counts.get('route_counts'), counts.get('flip_counts')
    if route_counts is not None and route_counts.sum() > 0:
        # index 0 counts the frozen student, 1.. the stage's teachers in order
        routed = {t: 100.0 * route_counts[i + 1].item() / route_counts.sum().item()
                  for i, t in enumerate(stage.teachers)}
    return {'stage': stage.index, 'teacher': name, 'epoch': epoch + 1, 'train_loss': round(loss, 5),
            'top1': round(m['top1_after'], 2), 'transfer_delta': round(m['transfer_delta'], 2),
            'knowledge_gain': round(m['knowledge_gain'], 2), 'knowledge_loss': round(m['knowledge_loss'], 2),
            'p_value': m['p_value'], 'routed_share': None if routed is None else round(sum(routed.values()), 2),
            'routed': routed, 'routed_flips': None if flips is None else flip_shares(flips),
            'lr': optimizer.param_groups[0]['lr'],
            'img_per_s': round(img_per_s, 1) if img_per_s is not None else None}


def flip_shares(flips: torch.Tensor) -> dict:
    """Percent of the epoch's positive- and negative-flip training samples routed to the teacher."""
    pos, pos_routed, neg, neg_routed = (int(v) for v in flips.tolist())
    return {'positive_flips': pos, 'negative_flips': neg,
            'routed_pos_flips': round(100.0 * pos_routed / pos, 2) if pos else None,
            'routed_neg_flips': round(100.0 * neg_routed / neg, 2) if neg else None}


def format_epoch(desc: str, loss: float, m: dict, row: dict) -> str:
    return (f'  {desc}: loss {loss:.4f}  top-1 {m["top1_after"]:.2f} (Δ {m["transfer_delta"]:+.2f}, '
            f'gain {m["knowledge_gain"]:.2f}, loss {m["knowledge_loss"]:.2f}, p={m["p_value"]:.3g})'
            + (f'  routed to teacher {row["routed_share"]:.1f}%' if row['routed'] else '')
            + f'  [{row["img_per_s"]} img/s]')


def unpack_batch(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(input, target, sample indices or None): loaders that also yield each sample's index pass it on."""
    return (batch[0], batch[1], batch[2]) if len(batch) > 2 else (batch[0], batch[1], None)


def train_one_epoch(accelerator, task, student, loader, optimizer, scheduler, mixup, epoch: int, num_updates: int,
                    clip_grad: float | None, desc: str):
    from tqdm.auto import tqdm
    task.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    steps = 0
    counts = {}  # route_counts / flip_counts summed over the epoch, when the task reports them
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_main_process, leave=False, mininterval=1):
        x, y, index = unpack_batch(batch)
        if mixup is not None:
            x, y = mixup(x, y)
        task.begin_batch(epoch, index)
        with accelerator.accumulate(student):
            with accelerator.autocast():
                out = task(x, y)
            if not all_finite(accelerator, out['loss']):  # before backward: this batch never reaches the weights
                raise NonFiniteLoss(out['loss'].item(), steps + 1, num_updates + 1)
            accelerator.backward(out['loss'])
            if accelerator.sync_gradients and clip_grad:
                accelerator.clip_grad_norm_(student.parameters(), clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                num_updates += 1
                scheduler.step_update(num_updates=num_updates)
                task.after_optimizer_step(num_updates)
        loss_sum += out['loss'].detach().float()
        steps += 1
        for key in ('route_counts', 'flip_counts'):
            if key in out:
                value = out[key].detach().to(accelerator.device)
                counts[key] = counts[key] + value if key in counts else value
    scheduler.step(epoch + 1)
    loss = accelerator.reduce(loss_sum, reduction='mean').item() / max(steps, 1)
    counts = {k: accelerator.reduce(v, reduction='sum').cpu() for k, v in counts.items()}
    return loss, counts, num_updates

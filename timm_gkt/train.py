#!/usr/bin/env python
"""Transfer a teacher's complementary knowledge into a pretrained timm student.

    accelerate launch timm_gkt/train.py --model pit_b --teachers volo_d2,resmlp_36
    python -m timm_gkt.train --model local-dir:zoo/vit_a --teachers local-dir:zoo/convnext_a \\
        --dataset torch/fashion_mnist --data-dir data

Flags follow timm's train.py names and meanings; transfer flags are grouped below.
Defaults follow METHOD.md: ``--model X --teachers Y`` runs supervised KL+DP, one
sequential stage per teacher (weakest first).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ''):  # run as a file: accelerate launch timm_gkt/train.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = 'timm_gkt'

import torch
import yaml

from timm_gkt import __version__
from timm_gkt.data import DataUnavailableError, ModeDataset, create_image_dataset
from timm_gkt.evaluation import predict, top1
from timm_gkt.metrics import transfer_metrics
from timm_gkt.models import (
    LabelSpaceError, ModelSpecError, ResolvedModel, check_dataset_labels, check_model_spec, label_permutation,
    load_model, read_model_config, short_name,
)
from timm_gkt.multi import MULTI_TEACHER_MODES, TEACHER_ORDERS, Stage, order_teachers, plan_stages, soup
from timm_gkt.tasks import (
    METHOD_TITLES, METHODS_NEEDING_FROZEN_STUDENT, METHODS_WITHOUT_TEACHER, TASKS, FrozenModel, create_task,
    frozen_copy,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_IMPROVED = 3


class ConfigError(ValueError):
    """Flags that contradict each other or a config file with unknown keys."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='timm_gkt.train', description=__doc__.split('\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group('Dataset')
    g.add_argument('--data-dir', default='data', help='dataset root')
    g.add_argument('--dataset', '-d', default='torch/fashion_mnist', help='timm dataset name (torch/..., hfds/..., folder)')
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='test', help='held-out split every metric is computed on')
    g.add_argument('--dataset-download', action='store_true', help='let torch/ datasets download when missing')
    g.add_argument('--train-subset', type=int, default=0, metavar='N',
                   help='use the first N transfer images (quick runs; 0 = all)')
    g.add_argument('--eval-subset', type=int, default=0, metavar='N',
                   help='evaluate on the first N images only (quick runs; 0 = all)')

    g = p.add_argument_group('Model')
    g.add_argument('--model', required=False, help='student: timm name, hf-hub:ORG/REPO or local-dir:PATH')
    g.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=True,
                   help='load the student\'s pretrained weights (a transfer needs a trained student)')
    g.add_argument('--initial-checkpoint', default='', help='load these student weights after creation')
    g.add_argument('--resume', default='', help="continue from a checkpoint folder of this trainer, or 'auto'")
    g.add_argument('-b', '--batch-size', type=int, default=128)
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None)
    g.add_argument('-j', '--workers', type=int, default=None,
                   help='loader processes per rank (default: 0 on machines with 2 cores or fewer, else 4)')
    g.add_argument('--grad-accum-steps', type=int, default=1)

    g = p.add_argument_group('Optimizer and schedule')
    g.add_argument('--opt', default='sgd', help='timm optimizer name')
    g.add_argument('--lr', type=float, default=None,
                   help='learning rate (default: 1e-3 for the small zoo-scale runs of METHOD.md; the paper used 1e-4 * batch/256)')
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--weight-decay', type=float, default=1e-4)
    g.add_argument('--clip-grad', type=float, default=None)
    g.add_argument('--sched', default='cosine')
    g.add_argument('--sched-on-updates', action=argparse.BooleanOptionalAction, default=True)
    g.add_argument('--epochs', type=int, default=2, help='epochs per stage')
    g.add_argument('--warmup-epochs', type=int, default=0)
    g.add_argument('--warmup-lr', type=float, default=1e-5)
    g.add_argument('--min-lr', type=float, default=0.0)

    g = p.add_argument_group('Augmentation (timm transforms; gentle defaults for small images)')
    g.add_argument('--scale', type=float, nargs=2, default=(0.8, 1.0), metavar=('MIN', 'MAX'))
    g.add_argument('--ratio', type=float, nargs=2, default=(0.9, 1.1), metavar=('MIN', 'MAX'))
    g.add_argument('--hflip', type=float, default=0.5)
    g.add_argument('--vflip', type=float, default=0.0)
    g.add_argument('--color-jitter', type=float, default=0.0)
    g.add_argument('--aa', default=None, help='auto-augment policy, e.g. rand-m9-mstd0.5')
    g.add_argument('--reprob', type=float, default=0.0)
    g.add_argument('--mixup', type=float, default=0.0)
    g.add_argument('--cutmix', type=float, default=0.0)
    g.add_argument('--mixup-prob', type=float, default=1.0)
    g.add_argument('--no-aug', action='store_true')

    g = p.add_argument_group('Knowledge transfer')
    g.add_argument('--teachers', default='', help='comma-separated teacher specs')
    g.add_argument('--transfer-teacher', action='append', default=[], metavar='SPEC', help='one teacher (repeatable)')
    g.add_argument('--transfer-method', default='kldp', choices=list(TASKS),
                   help='kldp: KL + data partitioning; kl: KL-Dist; xekl: XE-KL; xekl-mcl: XE-KL + momentum '
                        'interpolation; ce: control, cross-entropy only')
    g.add_argument('--dp-mode', default='supervised', choices=('supervised', 'unsupervised'),
                   help='KL+DP routing by true-class probability (supervised) or confidence (no labels)')
    g.add_argument('--kd-temperature', type=float, default=1.0)
    g.add_argument('--xe-weight', type=float, default=0.3, help='XE-KL: weight of CE; KL gets 1 - this (paper λ = 0.7)')
    g.add_argument('--mcl-momentum', type=float, default=None,
                   help='MCL τ (default: 0.9999 scaled to the run length so the initial student keeps ~61%%)')
    g.add_argument('--mcl-interval', type=int, default=2, help='MCL: interpolate every N optimizer steps')
    g.add_argument('--multi-teacher', default='sequential', choices=MULTI_TEACHER_MODES)
    g.add_argument('--teacher-order', default='ascending', choices=TEACHER_ORDERS,
                   help='sequential stage order by measured teacher top-1')
    g.add_argument('--dry-run', action='store_true', help='resolve models, check labels, data and credentials, print the plan, exit')

    g = p.add_argument_group('Hub')
    g.add_argument('--push-to-hub', default=None, metavar='REPO_ID', help='push the student if it improved')
    g.add_argument('--hub-private', action='store_true')
    g.add_argument('--hub-revision', default=None)
    g.add_argument('--hub-create-pr', action='store_true')
    g.add_argument('--push-min-delta', type=float, default=0.0, help='push only if Δtransf exceeds this (points)')
    g.add_argument('--push-max-pvalue', type=float, default=None, help='push only if McNemar p is at most this')

    g = p.add_argument_group('Misc')
    g.add_argument('--amp', action='store_true', help='mixed precision (Accelerate)')
    g.add_argument('--amp-dtype', default='bfloat16', choices=('bfloat16', 'float16'))
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--log-interval', type=int, default=50)
    g.add_argument('--checkpoint-hist', type=int, default=2, help='epoch checkpoints to keep')
    g.add_argument('--output', default='output/train')
    g.add_argument('--experiment', default='')
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """timm's two-step parse: ``-c config.yaml`` sets defaults, the command line overrides them."""
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='')
    config_args, remaining = config_parser.parse_known_args(argv)
    parser = build_parser()
    parser.add_argument('-c', '--config', default='', help='YAML file of flag defaults (timm style)')
    if config_args.config:
        cfg_path = Path(config_args.config)
        if not cfg_path.is_file():
            parser.error(f'config file {cfg_path} does not exist')
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(k for k in cfg if k.replace('-', '_') not in known)
        if unknown:
            parser.error(f'unknown keys in {cfg_path}: {", ".join(unknown)} (use flag names with _ for -)')
        cfg = {k.replace('-', '_'): (','.join(v) if k in ('teachers',) and isinstance(v, list) else v)
               for k, v in cfg.items()}
        parser.set_defaults(**cfg)
    args = parser.parse_args(remaining)
    if not args.model:
        parser.error('--model is required (a timm name, hf-hub:ORG/REPO or local-dir:PATH)')
    return args


def teacher_specs(args) -> list[str]:
    specs = [t.strip() for t in args.teachers.split(',') if t.strip()] + list(args.transfer_teacher)
    return list(dict.fromkeys(specs))  # keep order, drop repeats


def check_flags(args, teachers: list[str]) -> None:
    method = args.transfer_method
    if method not in METHODS_WITHOUT_TEACHER and not teachers:
        raise ConfigError(f'--transfer-method {method} needs a teacher: add --teachers SPEC[,SPEC...].')
    if args.multi_teacher == 'parallel' and method != 'kldp' and len(teachers) > 1:
        raise ConfigError('--multi-teacher parallel routes samples between teachers, which only KL+DP does; '
                          'use --transfer-method kldp or --multi-teacher sequential.')
    if args.dp_mode == 'unsupervised' and method != 'kldp':
        raise ConfigError('--dp-mode applies to --transfer-method kldp only.')
    if args.mcl_momentum is not None and method != 'xekl-mcl':
        raise ConfigError('--mcl-momentum applies to --transfer-method xekl-mcl only.')
    if args.mcl_momentum is not None and not 0.0 < args.mcl_momentum < 1.0:
        raise ConfigError('--mcl-momentum must lie strictly between 0 and 1.')
    if args.kd_temperature <= 0:
        raise ConfigError('--kd-temperature must be positive.')
    if not 0.0 <= args.xe_weight <= 1.0:
        raise ConfigError('--xe-weight must lie in [0, 1].')
    if args.epochs < 1:
        raise ConfigError('--epochs must be at least 1.')
    if args.resume and args.resume != 'auto' and not Path(args.resume).is_dir():
        raise ConfigError(f'--resume {args.resume}: no such checkpoint folder; give one under '
                          f'OUTPUT/EXPERIMENT/checkpoints/ or use --resume auto.')


def default_workers() -> int:
    # torch threads plus loader processes oversubscribe a 2-core machine (measured 163 vs 950 img/s)
    return 0 if (os.cpu_count() or 1) <= 2 else 4


def make_accelerator(args):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration
    mixed = ('bf16' if args.amp_dtype == 'bfloat16' else 'fp16') if args.amp else 'no'
    return Accelerator(mixed_precision=mixed, gradient_accumulation_steps=args.grad_accum_steps,
                       dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))


# ----------------------------------------------------------------------------- data

def subset(ds, n: int):
    if n and n < len(ds):
        return torch.utils.data.Subset(ds, range(n))
    return ds


def create_train_loader(args, train_ds, student: ResolvedModel):
    from timm.data import create_loader
    prep = student.preprocessing
    ds = ModeDataset(train_ds, prep.image_mode)
    return create_loader(
        ds, input_size=prep.input_size, batch_size=args.batch_size, is_training=True, no_aug=args.no_aug,
        scale=tuple(args.scale), ratio=tuple(args.ratio), hflip=args.hflip, vflip=args.vflip,
        color_jitter=args.color_jitter, auto_augment=args.aa, re_prob=args.reprob, interpolation=prep.interpolation,
        mean=prep.mean, std=prep.std, num_workers=args.workers, use_prefetcher=False, device=torch.device('cpu'),
        persistent_workers=False)


def create_mixup(args, num_classes):
    if not (args.mixup > 0 or args.cutmix > 0):
        return None
    from timm.data import Mixup
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob, num_classes=num_classes)


# ----------------------------------------------------------------------------- checkpoints

class RunState:
    """What a run has done so far, saved beside each checkpoint so a resume knows where it is."""

    def __init__(self):
        self.history: list[dict] = []
        self.stage = 0
        self.epoch = 0  # epochs finished in the current stage

    def to_dict(self):
        return {'history': self.history, 'stage': self.stage, 'epoch': self.epoch}

    @classmethod
    def load(cls, data: dict) -> 'RunState':
        s = cls()
        s.history, s.stage, s.epoch = data['history'], data['stage'], data['epoch']
        return s


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / 'checkpoints').glob('stage*-epoch*'), key=lambda p: p.stat().st_mtime)
    complete = [c for c in ckpts if (c / 'run_state.json').is_file()]
    return complete[-1] if complete else None


def resolve_run_dir(args) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to resume from (if any)."""
    if args.resume and args.resume != 'auto':
        ckpt = Path(args.resume)
        return ckpt.parent.parent, ckpt
    name = args.experiment or '-'.join([time.strftime('%Y%m%d-%H%M%S'), short_name(args.model).replace('/', '_'),
                                        args.transfer_method])
    run_dir = Path(args.output) / name
    if args.resume == 'auto':
        if not args.experiment:
            raise ConfigError('--resume auto needs --experiment NAME to know which run to continue.')
        if not (run_dir / 'results.json').is_file():  # a finished run is not resumed: the job starts afresh
            return run_dir, latest_checkpoint(run_dir)
    return run_dir, None


def set_aside_previous_run(run_dir: Path) -> Path | None:
    """A new run in a used folder: keep the old one, renamed with its time, rather than mixing or deleting."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    stamp = time.strftime('%Y%m%d-%H%M%S', time.localtime(run_dir.stat().st_mtime))
    target = run_dir.with_name(f'{run_dir.name}-{stamp}')
    n = 1
    while target.exists():
        target = run_dir.with_name(f'{run_dir.name}-{stamp}-{n}')
        n += 1
    run_dir.rename(target)
    return target


def save_checkpoint(accelerator, run_dir: Path, stage: int, epoch: int, scheduler, task, state: RunState, keep: int):
    ckpt = run_dir / 'checkpoints' / f'stage{stage}-epoch{epoch}'
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        extra = {'scheduler': scheduler.state_dict()}
        if task.has_ema():
            extra['ema'] = task.get_trainable_module(ema=True).state_dict()
        torch.save(extra, ckpt / 'timm_gkt_extra.pt')
        # written last: a folder without run_state.json is an interrupted save and is never resumed from
        (ckpt / 'run_state.json').write_text(json.dumps(state.to_dict(), indent=1))
        ckpts = sorted((run_dir / 'checkpoints').glob('stage*-epoch*'), key=lambda p: p.stat().st_mtime)
        for old in ckpts[:-keep] if keep > 0 else []:
            import shutil
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- one stage

def train_one_epoch(accelerator, task, student, loader, optimizer, scheduler, mixup, epoch, num_updates, args,
                    desc):
    from tqdm.auto import tqdm
    task.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    steps = 0
    route_counts = None
    for x, y in tqdm(loader, desc=desc, disable=not accelerator.is_main_process, leave=False, mininterval=1):
        if mixup is not None:
            x, y = mixup(x, y)
        with accelerator.accumulate(student):
            with accelerator.autocast():
                out = task(x, y)
            accelerator.backward(out['loss'])
            if accelerator.sync_gradients and args.clip_grad:
                accelerator.clip_grad_norm_(student.parameters(), args.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                num_updates += 1
                scheduler.step_update(num_updates=num_updates)
                task.after_optimizer_step(num_updates)
        loss_sum += out['loss'].detach().float()
        steps += 1
        if 'route_counts' in out:
            counts = out['route_counts'].detach().to(accelerator.device)
            route_counts = counts if route_counts is None else route_counts + counts
    scheduler.step(epoch + 1)
    loss = accelerator.reduce(loss_sum, reduction='mean').item() / max(steps, 1)
    if route_counts is not None:
        route_counts = accelerator.reduce(route_counts, reduction='sum').cpu()
    return loss, route_counts, num_updates


def run_stage(accelerator, args, stage: Stage, start_state: dict, student_res: ResolvedModel,
              teachers: dict[str, ResolvedModel], train_ds, eval_ds, initial_pred, teacher_preds, target,
              state: RunState, run_dir: Path, resume_from: Path | None):
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import unwrap_model

    student = copy.deepcopy(student_res.model)
    student.load_state_dict(start_state)
    student.train()
    student_prep = student_res.preprocessing
    device = accelerator.device
    frozen = frozen_copy(student, student_prep).to(device) if args.transfer_method in METHODS_NEEDING_FROZEN_STUDENT \
        else None
    stage_teachers = [
        FrozenModel(teacher_model(teachers[t]), student_prep, teachers[t].preprocessing,
                    teachers[t].extra.get('label_perm'), name=teachers[t].name).to(device)
        for t in stage.teachers
    ] if args.transfer_method not in METHODS_WITHOUT_TEACHER else []

    loader = create_train_loader(args, train_ds, student_res)
    optimizer = create_optimizer_v2(student, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum)
    updates_per_epoch = max(1, (len(loader) + args.grad_accum_steps - 1) // args.grad_accum_steps
                            // accelerator.num_processes)
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=not args.sched_on_updates,
        updates_per_epoch=updates_per_epoch)
    if args.transfer_method == 'xekl-mcl' and args.mcl_momentum is None:
        from timm_gkt.mcl import scaled_mcl_momentum
        args.mcl_momentum_used = scaled_mcl_momentum(updates_per_epoch * num_epochs, args.mcl_interval)
    task_args = argparse.Namespace(**vars(args))
    task_args.mcl_momentum = getattr(args, 'mcl_momentum_used', args.mcl_momentum)
    # the task (and MCL's slow copy) is built on the unwrapped student, before DDP wraps it
    task = create_task(args.transfer_method, student, stage_teachers, frozen, task_args).to(device)
    student, optimizer, loader = accelerator.prepare(student, optimizer, loader)
    task.trainable_module = student
    mixup = create_mixup(args, student_res.num_classes)
    stage_name = ('cross-entropy control' if args.transfer_method in METHODS_WITHOUT_TEACHER
                  else ' + '.join(teachers[t].name for t in stage.teachers))

    start_epoch = 0
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        extra = torch.load(resume_from / 'timm_gkt_extra.pt', map_location='cpu', weights_only=False)
        scheduler.load_state_dict(extra['scheduler'])
        if task.has_ema():
            task.get_trainable_module(ema=True).load_state_dict(extra['ema'])
        start_epoch = state.epoch
        accelerator.print(f'resumed from {resume_from} (stage {stage.index + 1}, epoch {start_epoch})')
    num_updates = start_epoch * updates_per_epoch

    for epoch in range(start_epoch, num_epochs):
        if hasattr(loader, 'set_epoch'):
            loader.set_epoch(epoch)
        desc = f'stage {stage.index + 1} [{stage_name}] epoch {epoch + 1}/{num_epochs}'
        t0 = time.time()
        loss, route_counts, num_updates = train_one_epoch(
            accelerator, task, student, loader, optimizer, scheduler, mixup, epoch, num_updates, args, desc)
        seconds = time.time() - t0
        eval_model = unwrap_model(task.eval_module())
        (pred,), _ = predict([eval_model], [student_prep], eval_ds, batch_size=args.validation_batch_size,
                             accelerator=accelerator, desc='eval')
        m = transfer_metrics(initial_pred, pred, teacher_preds, target, student_res.num_classes)
        routed = None
        if route_counts is not None and route_counts.sum() > 0:
            routed = {t: 100.0 * route_counts[i + 1].item() / route_counts.sum().item()
                      for i, t in enumerate(stage.teachers)}
        row = {'stage': stage.index, 'teacher': stage_name, 'epoch': epoch + 1, 'train_loss': round(loss, 5),
               'top1': round(m['top1_after'], 2), 'transfer_delta': round(m['transfer_delta'], 2),
               'knowledge_gain': round(m['knowledge_gain'], 2), 'knowledge_loss': round(m['knowledge_loss'], 2),
               'p_value': m['p_value'], 'routed_share': None if routed is None else round(sum(routed.values()), 2),
               'routed': routed, 'lr': optimizer.param_groups[0]['lr'],
               'img_per_s': round(len(loader.dataset) / seconds, 1) if seconds > 0 else None}
        state.history.append(row)
        state.epoch = epoch + 1
        accelerator.print(
            f'  {desc}: loss {loss:.4f}  top-1 {m["top1_after"]:.2f} (Δ {m["transfer_delta"]:+.2f}, '
            f'gain {m["knowledge_gain"]:.2f}, loss {m["knowledge_loss"]:.2f}, p={m["p_value"]:.3g})'
            + (f'  routed to teacher {row["routed_share"]:.1f}%' if routed else '')
            + f'  [{row["img_per_s"]} img/s]')
        if accelerator.is_main_process:
            write_summary(run_dir / 'summary.csv', state.history)
        save_checkpoint(accelerator, run_dir, stage.index, epoch + 1, scheduler, task, state, args.checkpoint_hist)

    result = {k: v.detach().cpu().clone() for k, v in unwrap_model(task.eval_module()).state_dict().items()}
    last_pred = pred if start_epoch < num_epochs else None
    accelerator.free_memory()  # forget this stage's prepared objects before the next stage prepares its own
    del task, frozen, stage_teachers
    if len(stage.teachers) == 1:
        teachers[stage.teachers[0]].model = None  # the next stage loads its own teacher
    return result, last_pred


def teacher_model(teacher: ResolvedModel):
    """The teacher's network, loaded again if it was released after the first evaluation."""
    if teacher.model is None:
        teacher.model = load_model(teacher.spec).model
    return teacher.model


def release_teachers(teachers: dict[str, ResolvedModel]) -> None:
    """Sequential and soup stages need one teacher at a time: drop the networks, keep what was learnt about them."""
    for t in teachers.values():
        t.model = None


def write_summary(path: Path, history: list[dict]) -> None:
    # rewritten whole from the run state, so a resumed run has no rows from after its checkpoint
    fields = ['stage', 'teacher', 'epoch', 'train_loss', 'top1', 'transfer_delta', 'knowledge_gain',
              'knowledge_loss', 'p_value', 'routed_share', 'lr', 'img_per_s']
    with path.open('w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction='ignore')
        w.writeheader()
        w.writerows(history)


# ----------------------------------------------------------------------------- reporting

def versions() -> dict:
    import accelerate
    import huggingface_hub
    import timm
    return {'timm_gkt': __version__, 'timm': timm.__version__, 'torch': torch.__version__,
            'accelerate': accelerate.__version__, 'huggingface_hub': huggingface_hub.__version__}


def format_table(results: dict) -> str:
    lines = []
    method = METHOD_TITLES[results['method']]
    mode = f", {results['multi_teacher']}" if results.get('multi_teacher') else ''
    lines.append(f"Transfer into {results['student_name']} from {', '.join(results['stage_order']) or 'no teacher'} "
                 f"({method}{mode}, {results['hyperparameters']['epochs']} epoch(s) per stage, "
                 f"{results['eval_samples']} eval images)")
    lines.append(f"{'':34s}{'before':>9s}{'after':>9s}{'Δ':>9s}")
    lines.append(f"{'student top-1':34s}{results['top1_before']:9.2f}{results['top1_after']:9.2f}"
                 f"{results['transfer_delta']:+9.2f}")
    lines.append(f"{'  knowledge gained / lost':34s}{'':9s}{'':9s}  +{results['knowledge_gain']:.2f} / "
                 f"-{results['knowledge_loss']:.2f}  (McNemar p = {results['p_value']:.3g})")
    for t in results['teachers']:
        lines.append(f"teacher {t['name']} (top-1 {t['top1']:.2f})"
                     + (f", routed {t['routed_share']:.1f}%" if t.get('routed_share') is not None else ''))
        lines.append(f"{'  ρpos, complementary knowledge':34s}{t['rho_pos']:9.2f}{t['rho_pos_after']:9.2f}"
                     f"{t['pos_flips_delta']:+9.2f}")
        lines.append(f"{'  ρneg':34s}{t['rho_neg']:9.2f}{t['rho_neg_after']:9.2f}{t['neg_flips_delta']:+9.2f}")
    verdict = 'improved' if results['transfer_delta'] > 0 else 'not improved'
    lines.append(f"result: {verdict} ({results['transfer_delta']:+.2f} points; one image = "
                 f"{100.0 / results['eval_samples']:.2f})")
    return '\n'.join(lines)


def export_student(model, student_res: ResolvedModel, export_dir: Path, lineage: list[dict]) -> None:
    from timm.models import save_for_hf
    model = copy.deepcopy(model).eval()
    # the export is a new checkpoint: the source's hub id and tag describe other weights
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in ('tag', 'hf_hub_id', 'hf_hub_revision')}
    model.pretrained_cfg = cfg
    model_config = {'timm_gkt': {'version': __version__, 'lineage': lineage}}
    if student_res.label_names:
        model_config['label_names'] = list(student_res.label_names)
    save_for_hf(model, export_dir, model_config=model_config, safe_serialization=True)


def write_results(run_dir: Path, export_dir: Path, results: dict, args) -> None:
    args_dict = {k: v for k, v in vars(args).items() if not k.startswith('_')}
    for path in (run_dir, export_dir):
        path.mkdir(parents=True, exist_ok=True)
        (path / 'results.json').write_text(json.dumps(results, indent=2))
        (path / 'args.yaml').write_text(yaml.safe_dump(args_dict, sort_keys=False))


# ----------------------------------------------------------------------------- main

def run(args) -> int:
    from accelerate.utils import set_seed
    teachers_given = teacher_specs(args)
    check_flags(args, teachers_given)
    if args.lr is None:
        args.lr = 1e-3
    if args.workers is None:
        args.workers = default_workers()
    args.validation_batch_size = args.validation_batch_size or 2 * args.batch_size

    # --- preflight: everything that can fail fails here, before any compute
    for spec in [args.model] + teachers_given:
        check_model_spec(spec)
    if args.push_to_hub:
        from timm_gkt.hub import check_push_access, check_push_options
        check_push_options(args.hub_revision, args.hub_create_pr)
        check_push_access(args.push_to_hub, revision=args.hub_revision, create_pr=args.hub_create_pr)
    accelerator = make_accelerator(args)
    set_seed(args.seed)
    say = accelerator.print
    student_res = load_model(args.model, pretrained=args.pretrained, checkpoint=args.initial_checkpoint or None)
    student_config = read_model_config(args.model) or {}
    teachers: dict[str, ResolvedModel] = {}
    for spec in teachers_given:
        t = load_model(spec)
        perm = label_permutation(student_res.label_names, t.label_names, student_res.num_classes, t.num_classes,
                                 teacher=f'teacher {t.name}')
        if perm is not None:
            say(f'note: teacher {t.name} orders its classes differently; its logits are mapped to the student\'s '
                f'classes by label name')
        elif not (student_res.label_names and t.label_names):
            say(f'warning: {"student" if not student_res.label_names else "teacher " + t.name} has no label names; '
                f'trusting that the {t.num_classes} classes are in the same order')
        t.extra['label_perm'] = perm
        teachers[spec] = t
    train_ds = subset(create_image_dataset(args.dataset, args.data_dir, args.train_split,
                                           download=args.dataset_download), args.train_subset)
    eval_ds = subset(create_image_dataset(args.dataset, args.data_dir, args.val_split,
                                          download=args.dataset_download), args.eval_subset)
    check_dataset_labels(student_res, train_ds, args.dataset)
    multi = args.multi_teacher if len(teachers_given) > 1 else None

    run_dir, resume_from = resolve_run_dir(args)
    if args.dry_run:
        prep = student_res.preprocessing
        say(f'plan: {METHOD_TITLES[args.transfer_method]} into {student_res.name} '
            f'(input {prep.input_size}, {sum(p.numel() for p in student_res.model.parameters()) / 1e6:.2f} M params)')
        for spec, t in teachers.items():
            say(f'  teacher {t.name}: input {t.preprocessing.input_size}, {t.num_classes} classes, '
                f'{sum(p.numel() for p in t.model.parameters()) / 1e6:.2f} M params')
        n_stages = 1 if args.transfer_method in METHODS_WITHOUT_TEACHER else len(plan_stages(teachers_given, multi))
        say(f'  stages: {n_stages} '
            f'({multi or "single"}; order: {args.teacher_order} teacher top-1, measured before training), '
            f'{args.epochs} epoch(s) each, batch {args.batch_size}, lr {args.lr}')
        say(f'  data: {args.dataset} {args.train_split} ({len(train_ds)} images) -> '
            f'eval on {args.val_split} ({len(eval_ds)} images)')
        say(f'  output: {run_dir}' + (f'; push to {args.push_to_hub} if Δtransf > {args.push_min_delta}'
                                      if args.push_to_hub else ''))
        say('dry run: all checks passed')
        return EXIT_OK

    if accelerator.is_main_process:
        if resume_from is None:
            kept = set_aside_previous_run(run_dir)
            if kept is not None:
                say(f'note: {run_dir} held an earlier run; it is kept as {kept}')
        run_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    # --- before: one pass over the eval split for the student and every teacher
    device = accelerator.device
    for m in [student_res.model] + [t.model for t in teachers.values()]:
        m.to(device)
    models = [student_res.model] + [t.model for t in teachers.values()]
    preds, target = predict(models, [student_res.preprocessing] + [t.preprocessing for t in teachers.values()],
                            eval_ds, batch_size=args.validation_batch_size, accelerator=accelerator,
                            desc='eval before', label_perms=[None] + [t.extra['label_perm'] for t in teachers.values()])
    initial_pred = preds[0]
    teacher_preds = {spec: p for spec, p in zip(teachers, preds[1:])}
    teacher_top1 = {spec: top1(p, target) for spec, p in teacher_preds.items()}
    ordered = order_teachers(teachers_given, teacher_top1, args.teacher_order)
    if multi != 'parallel':
        release_teachers(teachers)
    # the control trains without teachers (one stage); they still serve the flip metrics
    stages = [Stage(0, ())] if args.transfer_method in METHODS_WITHOUT_TEACHER else plan_stages(ordered, multi)
    say(f'student {student_res.name}: top-1 {top1(initial_pred, target):.2f}; '
        + ', '.join(f'teacher {teachers[s].name}: {teacher_top1[s]:.2f}' for s in ordered))
    if len(stages) > 1 or (multi and args.transfer_method not in METHODS_WITHOUT_TEACHER):
        say(f'{multi} transfer, stage order: {" -> ".join(teachers[s].name for s in ordered)}')

    # --- transfer, stage by stage (each stage resumable)
    state = RunState()
    if resume_from is not None:
        state = RunState.load(json.loads((resume_from / 'run_state.json').read_text()))
    initial_state = {k: v.detach().cpu().clone() for k, v in student_res.model.state_dict().items()}
    current = initial_state
    soup_parts = []
    last_pred = None
    for stage in stages:
        if stage.index < state.stage:  # finished before the interruption
            stage_state, last_pred = load_stage_result(run_dir, stage.index), None
        else:
            resuming = resume_from is not None and stage.index == state.stage and state.epoch > 0
            if not resuming:
                state.epoch = 0
            state.stage = stage.index
            start = initial_state if stage.from_initial else current
            stage_state, last_pred = run_stage(
                accelerator, args, stage, start, student_res, teachers, train_ds, eval_ds, initial_pred,
                teacher_preds, target, state, run_dir, resume_from if resuming else None)
            if accelerator.is_main_process:
                save_stage_result(run_dir, stage.index, stage_state)
            resume_from = None
        soup_parts.append(stage_state)
        current = stage_state
    final_state = soup(soup_parts) if multi == 'soup' else current
    final_model = copy.deepcopy(student_res.model)
    final_model.load_state_dict(final_state)
    final_model.to(device)
    if multi == 'soup' or last_pred is None:  # a soup (or a run resumed at its end) has not been evaluated yet
        (final_pred,), _ = predict([final_model], [student_res.preprocessing], eval_ds,
                                   batch_size=args.validation_batch_size, accelerator=accelerator, desc='eval after')
    else:  # the last epoch's evaluation already saw exactly these weights
        final_pred = last_pred
    m = transfer_metrics(initial_pred, final_pred, teacher_preds, target, student_res.num_classes)

    # --- results, export, card, push
    routed_by_teacher = {}
    for row in state.history:
        for name, share in (row.get('routed') or {}).items():
            routed_by_teacher[name] = share  # last epoch of the stage that used that teacher
    lineage = list(student_config.get('timm_gkt', {}).get('lineage', []))
    lineage.append({'generation': len(lineage) + 1, 'student': args.model, 'teachers': ordered,
                    'method': args.transfer_method, 'transfer_delta': round(m['transfer_delta'], 4),
                    'top1_after': round(m['top1_after'], 4)})
    results = {
        'student': args.model,
        'student_name': student_res.name,
        'method': args.transfer_method,
        'method_title': METHOD_TITLES[args.transfer_method],
        'dp_mode': args.dp_mode if args.transfer_method == 'kldp' else None,
        'multi_teacher': multi,
        'stage_order': [teachers[s].name for s in ordered],
        'dataset': args.dataset, 'train_split': args.train_split, 'eval_split': args.val_split,
        'eval_samples': int(target.numel()),
        'label_names': list(student_res.label_names) if student_res.label_names else None,
        **{k: m[k] for k in ('top1_before', 'top1_after', 'transfer_delta', 'knowledge_gain', 'knowledge_loss',
                             'gains', 'losses', 'p_value')},
        'teachers': [
            {'name': teachers[s].name, 'spec': s, 'source': teachers[s].source, 'revision': teachers[s].revision,
             **m['teachers'][s], 'routed_share': routed_by_teacher.get(s)}
            for s in ordered
        ],
        'epochs': state.history,
        'hyperparameters': {
            'epochs': args.epochs, 'lr': args.lr, 'opt': args.opt, 'momentum': args.momentum,
            'weight_decay': args.weight_decay, 'batch_size': args.batch_size, 'sched': args.sched,
            'kd_temperature': args.kd_temperature,
            'xe_weight': args.xe_weight if args.transfer_method.startswith('xekl') else None,
            'mcl_momentum': getattr(args, 'mcl_momentum_used', args.mcl_momentum)
            if args.transfer_method == 'xekl-mcl' else None,
            'mcl_interval': args.mcl_interval if args.transfer_method == 'xekl-mcl' else None,
            'train_images': len(train_ds), 'mixup': args.mixup, 'cutmix': args.cutmix,
            'num_processes': accelerator.num_processes, 'mixed_precision': accelerator.mixed_precision,
        },
        'seed': args.seed,
        'versions': versions(),
        'student_source': {
            'spec': args.model, 'source': student_res.source, 'revision': student_res.revision,
            'hub_id': student_res.spec[len('hf-hub:'):] if student_res.source == 'hf-hub'
            else student_res.model.pretrained_cfg.get('hf_hub_id'),
            'license': student_res.model.pretrained_cfg.get('license'),
        },
        'lineage': lineage,
        'pushed': None,
    }
    exit_code = EXIT_OK
    export_dir = run_dir / 'export'
    if accelerator.is_main_process:
        export_student(final_model.cpu(), student_res, export_dir, lineage)
        write_results(run_dir, export_dir, results, args)
        say('\n' + format_table(results))
        from timm_gkt import hub
        decision = 'not pushed (no --push-to-hub)'
        passed = False
        if args.push_to_hub:
            passed, reason = hub.push_gate(results, args.push_min_delta, args.push_max_pvalue)
            decision = f'pushing to {args.push_to_hub}: {reason}' if passed else f'not pushed: {reason}'
        # the card names the repo only when the student is going there
        hub.write_card(results, export_dir, args.push_to_hub if passed else None)
        if args.push_to_hub and not passed:
            say(decision)
            exit_code = EXIT_NOT_IMPROVED
        elif passed:
            try:
                url = hub.push_export(export_dir, args.push_to_hub, private=args.hub_private,
                                      revision=args.hub_revision, create_pr=args.hub_create_pr, run_dir=run_dir)
            except hub.PushError as e:
                say(f'error: {e}')
                decision, exit_code = f'push failed: {e}', EXIT_ERROR
            else:
                results['pushed'] = url
                decision = f'pushed to {args.push_to_hub}: {url}'
                say(decision)
                write_results(run_dir, export_dir, results, args)
        hub.write_step_summary(results, decision)
        say(f'results: {run_dir / "results.json"}; student exported to {export_dir} '
            f"(timm.create_model('local-dir:{export_dir}', pretrained=True))")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return exit_code


def save_stage_result(run_dir: Path, index: int, state_dict: dict) -> None:
    from safetensors.torch import save_file
    path = run_dir / 'stages' / f'stage{index}.safetensors'
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))


def load_stage_result(run_dir: Path, index: int) -> dict:
    from safetensors.torch import load_file
    return load_file(str(run_dir / 'stages' / f'stage{index}.safetensors'))


def main(argv=None) -> int:
    args = parse_args(argv)
    from timm_gkt.hub import PushAccessError
    try:
        return run(args)
    except (ModelSpecError, LabelSpaceError, DataUnavailableError, ConfigError, PushAccessError) as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == '__main__':
    sys.exit(main())

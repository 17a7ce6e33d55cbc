#!/usr/bin/env python
"""What a transfer step costs next to plain fine-tuning: every contender in one process, interleaved, medians.

    python scripts/benchmark.py --threads 1                    # zoo pair on CPU (vit_a <- convnext_a)
    python scripts/benchmark.py --threads 1 --json             # one JSON object; ratio_to_plain has the step ratios
    python scripts/benchmark.py --device cuda --amp --channels-last --random-init \\
        --student pit_b_224 --teacher volo_d2_224 --teacher2 resmlp_36_224 -b 256

Steps on one fixed batch (each contender trains its own copy of the student): plain
fine-tuning (cross-entropy), timm's ``LogitDistillationTask``, KL+DP online, KL+DP with
teacher and frozen-student logits read from the cache, the separate parts (student step,
teacher forward, frozen-student forward), and one batch through both stages of a
sequential two-teacher transfer, online and cached. Then whole epochs with data loading
over a replayable subset: plain (with and without replay), KL+DP online, KL+DP filling an
empty cache (first run) and KL+DP reading it (later runs). Ratios are throughput
relative to plain (higher is faster); step repeats are interleaved so load on the machine
hits every contender alike.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--student', default='local-dir:zoo/vit_a')
    p.add_argument('--teacher', default='local-dir:zoo/convnext_a')
    p.add_argument('--teacher2', default='local-dir:zoo/resnet_a', help="second stage's teacher ('' skips the row)")
    p.add_argument('--data-dir', default='data')
    p.add_argument('-b', '--batch-size', type=int, default=128)
    p.add_argument('--repeats', type=int, default=15, help='timed steps per contender (median)')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--epoch-images', type=int, default=2048, help='images per timed epoch (0 skips the epochs)')
    p.add_argument('--epoch-repeats', type=int, default=3)
    p.add_argument('-j', '--workers', type=int, default=0, help='loader processes for the epochs')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    p.add_argument('--storage', default='float32', help='cache storage: float32, float16 or topk:K')
    p.add_argument('--exactness', action='store_true',
                   help='also train one epoch from cached float32/float16/top-k logits and compare losses with online')
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', action='store_true', help='bf16 autocast; teachers and frozen student held in bf16')
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--random-init', action='store_true', help='timm architectures without weights, synthetic batch')
    p.add_argument('--json', action='store_true')
    return p.parse_args(argv)


def check_args(args) -> None:
    """Bad input: one sentence, exit 2, before any model is built."""
    problems = []
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        problems.append(f'--device {args.device} needs a CUDA GPU but torch.cuda.is_available() is False; '
                        f'run on a GPU machine or use --device cpu')
    if args.batch_size < 1 or args.repeats < 1:
        problems.append('--batch-size and --repeats must be at least 1; give positive numbers')
    if args.epoch_images and not args.random_init and args.epoch_images < args.batch_size:
        problems.append(f'--epoch-images {args.epoch_images} is less than one batch; give at least {args.batch_size}')
    if problems:
        print(f'error: {problems[0]}', file=sys.stderr)
        raise SystemExit(2)


# ----------------------------------------------------------------------------- timing

class Clock:
    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'

    def __call__(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def interleaved(contenders: dict, clock: Clock, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call; each repeat calls every contender once, starting one further along each time.

    A contender with a ``prepare`` method has it called, untimed, before each timed call.
    """
    names = list(contenders)
    for _ in range(warmup):
        for n in names:
            contenders[n]()
    times = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            if hasattr(contenders[n], 'prepare'):  # untimed set-up of this call
                contenders[n].prepare()
            times[n].append(clock(contenders[n]))
    return {n: statistics.median(t) for n, t in times.items()}


# ----------------------------------------------------------------------------- models

class SizedForTeacher(nn.Module):
    """timm's DistillationTeacher re-normalises the student's batch but neither resizes it nor maps its channels.

    This wrapper does both (as timm_gkt's InputAdaptor does), so timm's task can run on
    the same student/teacher pair and input as KL+DP.
    """

    def __init__(self, model: nn.Module, prep):
        super().__init__()
        self.model, self.size, self.chans = model, tuple(prep.input_size[1:]), prep.in_chans
        self.pretrained_cfg = {**model.pretrained_cfg, 'mean': prep.mean, 'std': prep.std}

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode='bilinear', antialias=True, align_corners=False)
        if x.shape[1] != self.chans:
            x = x.mean(1, keepdim=True) if self.chans == 1 else x.expand(-1, self.chans, -1, -1)
        return self.model(x)


def frozen_models(args, student, teacher_res, device):
    """The teacher and the frozen student as timm_gkt's FrozenModel, in bf16 under --amp."""
    from timm_gkt.models.frozen import FrozenModel, frozen_copy
    teacher = FrozenModel(copy.deepcopy(teacher_res.model), student.preprocessing, teacher_res.preprocessing,
                          name=teacher_res.name)
    frozen = frozen_copy(student.model, student.preprocessing)
    for m in (teacher, frozen):
        m.to(device)
        if args.amp:
            m.to(torch.bfloat16)
        if args.channels_last:
            m.to(memory_format=torch.channels_last)
    return teacher, frozen


def autocast(args, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)


class Trainer:
    """One student copy, its optimizer and a loss: ``step(x, y)`` is a full training step."""

    def __init__(self, args, device, model, loss_fn):
        self.args, self.device, self.model, self.loss_fn = args, device, model, loss_fn
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(self, x, y):
        with autocast(self.args, self.device):
            loss = self.loss_fn(self.model, x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def student_copy(args, student, device):
    m = copy.deepcopy(student.model).to(device).train()
    return m.to(memory_format=torch.channels_last) if args.channels_last else m


def task_trainer(args, device, task):
    return Trainer(args, device, task.trainable_module, lambda _m, x, y: task(x, y)['loss'])


# ----------------------------------------------------------------------------- data

def load_everything(args, device):
    from timm_gkt.models.load import load_model
    pretrained = not args.random_init
    student = load_model(args.student, pretrained=pretrained)
    teachers = [load_model(s, pretrained=pretrained) for s in (args.teacher, args.teacher2) if s]
    for m in [student.model] + [t.model for t in teachers]:
        m.to(device)
    return student, teachers


def train_config(args):
    """The training CLI's defaults (augmentation, seed) with this benchmark's batch size and workers."""
    from timm_gkt.cli.config import parse_args
    return parse_args(['--model', args.student, '-b', str(args.batch_size), '-j', str(args.workers), '--seed', '0'])


def replay_subset(args, student, n: int):
    """The first ``n`` training images through the engine's training loader (replayable, yields indices)."""
    from timm_gkt.data.sources import create_image_dataset
    from timm_gkt.transfer.engine import create_train_loader
    base = torch.utils.data.Subset(create_image_dataset('torch/fashion_mnist', args.data_dir, 'train'), range(n))
    loader = create_train_loader(train_config(args), base, student)
    return loader.dataset, loader


def fixed_batch(args, student, device):
    """One batch of the student's augmented images and their sample indices (synthetic with --random-init)."""
    b = args.batch_size
    if args.random_init:
        g = torch.Generator().manual_seed(0)
        x = torch.randn((b,) + tuple(student.preprocessing.input_size), generator=g)
        y = torch.randint(0, student.num_classes, (b,), generator=g)
        index = torch.arange(b)
    else:
        ds, _ = replay_subset(args, student, b)  # timm's loader factory set the training transform
        x, y, index = torch.utils.data.default_collate([ds[i] for i in range(b)])
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device), y.to(device), index


# ----------------------------------------------------------------------------- step contenders

def prefilled(args, cache_root, frozen, name, x, index, num_samples, num_classes):
    """A cached wrapper around ``frozen`` whose rows for this batch are already published."""
    from timm_gkt.cache.frozen import CachedFrozenModel
    from timm_gkt.cache.store import TeacherCache
    from timm_gkt.cache.keys import CacheKey
    outputs = TeacherCache(cache_root).open(CacheKey({'benchmark': name}), num_samples, num_classes)
    wrapped = CachedFrozenModel(frozen, outputs)
    wrapped.bind(0, index)
    with autocast(args, x.device):  # under --amp the frozen models hold bf16 weights
        wrapped(x)  # fills
    outputs.commit(0)
    wrapped.unbind()
    outputs.stats.update(hits=0, misses=0)
    return wrapped


def step_contenders(args, device, student, teachers, batch, cache_root):
    from timm.task import LogitDistillationTask
    from timm_gkt.cache.frozen import cached_batch
    from timm_gkt.transfer.objectives import cross_entropy, kl_div_loss
    from timm_gkt.transfer.tasks import KLDPTask
    x, y, index = batch
    n, classes = int(index.max()) + 1, student.num_classes
    teacher, frozen = frozen_models(args, student, teachers[0], device)
    cached_t = prefilled(args, cache_root, teacher, 'teacher', x, index, n, classes)
    cached_fs = prefilled(args, cache_root, frozen, 'frozen', x, index, n, classes)
    with torch.no_grad(), autocast(args, device):
        targets = teacher(x)

    plain = Trainer(args, device, student_copy(args, student, device), lambda m, x, y: cross_entropy(m(x), y))
    parts_student = Trainer(args, device, student_copy(args, student, device),
                            lambda m, x, y: kl_div_loss(m(x), targets))
    timm_teacher = SizedForTeacher(copy.deepcopy(teachers[0].model), teachers[0].preprocessing).to(device)
    timm_kd = task_trainer(args, device, LogitDistillationTask(
        student_copy(args, student, device), timm_teacher, criterion=nn.CrossEntropyLoss(), verbose=False))
    online = task_trainer(args, device, KLDPTask(student_copy(args, student, device), teacher, frozen))
    cached_task = KLDPTask(student_copy(args, student, device), cached_t, cached_fs)
    cached = task_trainer(args, device, cached_task)

    def with_cache(trainer, task):
        def run():
            with cached_batch(task, 0, index):
                trainer.step(x, y)
        return run

    def frozen_forward(m):
        def run():
            with torch.no_grad(), autocast(args, device):
                m(x)
        return run

    contenders = {
        'plain': lambda: plain.step(x, y),
        'timm_kd': lambda: timm_kd.step(x, y),
        'kldp_online': lambda: online.step(x, y),
        'kldp_cached': with_cache(cached, cached_task),
        'part_student_step': lambda: parts_student.step(x, y),
        'part_teacher_fwd': frozen_forward(teacher),
        'part_frozen_student_fwd': frozen_forward(frozen),
    }
    if len(teachers) > 1:
        contenders.update(two_teacher_contenders(args, device, student, teachers, batch, cache_root,
                                                 online, cached, cached_task, with_cache))
    return contenders, [cached_t, cached_fs]


def two_teacher_contenders(args, device, student, teachers, batch, cache_root, online, cached, cached_task,
                           with_cache):
    """One batch through both sequential stages: stage 2's frozen student is stage 1's result."""
    from timm_gkt.transfer.tasks import KLDPTask
    from timm_gkt.models.frozen import frozen_copy
    x, y, index = batch
    n = int(index.max()) + 1
    teacher2, _ = frozen_models(args, student, teachers[1], device)
    stage1_result = frozen_copy(online.model, student.preprocessing).to(device)
    if args.amp:
        stage1_result.to(torch.bfloat16)
    stage2_online = task_trainer(args, device, KLDPTask(student_copy(args, student, device), teacher2, stage1_result))
    t2 = prefilled(args, cache_root, teacher2, 'teacher2', x, index, n, student.num_classes)
    fs2 = prefilled(args, cache_root, stage1_result, 'frozen2', x, index, n, student.num_classes)
    stage2_task = KLDPTask(student_copy(args, student, device), t2, fs2)
    stage2_cached = task_trainer(args, device, stage2_task)
    stage1_cached_step, stage2_cached_step = with_cache(cached, cached_task), with_cache(stage2_cached, stage2_task)

    def seq_online():
        online.step(x, y)
        stage2_online.step(x, y)

    def seq_cached():
        stage1_cached_step()
        stage2_cached_step()

    return {'kldp_seq2_online': seq_online, 'kldp_seq2_cached': seq_cached}


# ----------------------------------------------------------------------------- epochs with data loading

def epoch_contenders(args, device, student, teachers, cache_root: Path):
    """Whole epochs over a replayable subset; the cache rows are real: keyed by content, filled, committed."""
    from timm.data import create_loader
    from timm_gkt.cache.store import TeacherCache
    from timm_gkt.cache.frozen import cached_batch, cached_frozen_model, commit_cached
    from timm_gkt.data.sources import ModeDataset
    from timm_gkt.transfer.objectives import cross_entropy
    from timm_gkt.transfer.tasks import KLDPTask
    ds, loader = replay_subset(args, student, args.epoch_images)
    prep, config = student.preprocessing, train_config(args)
    # the same loader without replay: what seeding every sample's augmentation costs
    plain_loader = create_loader(ModeDataset(ds.dataset, prep.image_mode), input_size=prep.input_size,
                                 batch_size=args.batch_size, is_training=True, scale=config.scale, ratio=config.ratio,
                                 hflip=config.hflip, interpolation=prep.interpolation, mean=prep.mean, std=prep.std,
                                 num_workers=config.loader_workers, use_prefetcher=False, device=torch.device('cpu'),
                                 persistent_workers=False)
    teacher, frozen = frozen_models(args, student, teachers[0], device)
    setup_times, fills = [], iter(range(10 ** 6))

    class Epoch:
        """``prepare`` (untimed: a fresh student copy; with a cache, key + open) then one timed epoch + commit."""

        def __init__(self, batches, kldp=False, cache_dir=None):
            self.batches, self.kldp, self.cache_dir = batches, kldp, cache_dir

        def prepare(self):
            model = student_copy(args, student, device)
            if not self.kldp:
                self.task, self.trainer = None, Trainer(args, device, model, lambda m, x, y: cross_entropy(m(x), y))
                return
            t, fs = teacher, frozen
            if self.cache_dir is not None:
                t0 = time.perf_counter()
                root = self.cache_dir() if callable(self.cache_dir) else self.cache_dir
                cache = TeacherCache(root, args.storage)
                t, fs = cached_frozen_model(cache, teacher, ds), cached_frozen_model(cache, frozen, ds)
                setup_times.append(time.perf_counter() - t0)
            self.task = KLDPTask(model, t, fs)
            self.trainer = task_trainer(args, device, self.task)

        def __call__(self):
            for batch in self.batches:
                x, y = batch[0].to(device), batch[1].to(device)
                if self.cache_dir is None:
                    self.trainer.step(x, y)
                else:
                    with cached_batch(self.task, 0, batch[2]):
                        self.trainer.step(x, y)
            if self.task is not None:
                commit_cached(self.task, 0)

    ds.set_epoch(0)
    read_root = cache_root / 'epochs-read'
    first = Epoch(loader, kldp=True, cache_dir=read_root)  # the first run, untimed: "cached" epochs read it
    first.prepare()
    first()
    setup_times.clear()
    contenders = {
        'epoch_plain': Epoch(loader),
        'epoch_plain_no_replay': Epoch(plain_loader),
        'epoch_kldp_online': Epoch(loader, kldp=True),
        'epoch_kldp_fill': Epoch(loader, kldp=True, cache_dir=lambda: cache_root / f'epochs-fill-{next(fills)}'),
        'epoch_kldp_cached': Epoch(loader, kldp=True, cache_dir=read_root),
    }
    return contenders, setup_times, read_root


def cache_sizes(read_root: Path, epoch_images: int, num_classes: int) -> dict:
    from timm_gkt.cache.store import storage_format
    files = sorted(read_root.glob('*/epoch-00000.*.npy'))
    per_view = {name: storage_format(name, num_classes).dtype.itemsize * 10_000
                for name in ['float32', 'float16'] + ([f'topk:{min(5, num_classes - 1)}'] if num_classes > 2 else [])}
    return {'measured_bytes_per_10k_per_view': [round(f.stat().st_size / epoch_images * 10_000) for f in files],
            'bytes_per_10k_per_view_by_storage': per_view}


# ----------------------------------------------------------------------------- exactness of the storage formats

def exactness(args, device, student, teachers, cache_root: Path) -> dict:
    """One epoch from the same start, online and from cached logits: per-step relative loss differences."""
    from timm_gkt.cache.store import TeacherCache
    from timm_gkt.cache.frozen import cached_batch, cached_frozen_model, commit_cached
    from timm_gkt.transfer.tasks import KLDistillationTask, KLDPTask
    ds, loader = replay_subset(args, student, args.epoch_images)
    ds.set_epoch(0)
    torch.manual_seed(0)
    batches = list(loader)
    teacher, frozen = frozen_models(args, student, teachers[0], device)
    storages = ['float32', 'float16'] + ([f'topk:{min(5, student.num_classes - 1)}'] if student.num_classes > 2 else [])

    def losses(method, t, fs):
        model = student_copy(args, student, device)
        task = KLDPTask(model, t, fs) if method == 'kldp' else KLDistillationTask(model, t)
        trainer = task_trainer(args, device, task)
        out = []
        for x, y, index in batches:
            with cached_batch(task, 0, index):
                out.append(trainer.step(x.to(device), y.to(device)).item())
        commit_cached(task, 0)
        return out

    results = {}
    for method in ('kl', 'kldp'):
        online = losses(method, teacher, frozen)
        results[method] = {}
        for storage in storages:
            root = cache_root / f'exactness-{storage.replace(":", "")}'
            losses(method, *(cached_frozen_model(TeacherCache(root, storage), m, ds) for m in (teacher, frozen)))  # fills
            cached = losses(method, *(cached_frozen_model(TeacherCache(root, storage), m, ds) for m in (teacher, frozen)))
            rel = [abs(a - b) / abs(a) for a, b in zip(online, cached)]
            results[method][storage] = {'max_rel': max(rel), 'median_rel': statistics.median(rel),
                                        'steps': len(rel)}
    return results


# ----------------------------------------------------------------------------- report

def summarise(args, step_times, epoch_times, setup_times, sizes, exact, cached_models, device) -> dict:
    plain = step_times['plain']
    b = args.batch_size
    steps = {n: {'median_ms': round(1000 * t, 2), 'img_per_s': round(b / t, 1),
                 'ratio_to_plain': round((2 * plain if n.startswith('kldp_seq2') else plain) / t, 3)}
             for n, t in step_times.items()}
    parts = step_times['part_student_step'] + step_times['part_teacher_fwd'] + step_times['part_frozen_student_fwd']
    report = {
        'device': str(device), 'threads': torch.get_num_threads(), 'amp': args.amp, 'channels_last': args.channels_last,
        'student': args.student, 'teacher': args.teacher, 'teacher2': args.teacher2 or None,
        'batch_size': b, 'repeats': args.repeats, 'storage': args.storage,
        'ratio_to_plain': {k: steps[k]['ratio_to_plain'] for k in ('timm_kd', 'kldp_online', 'kldp_cached',
                                                                   'kldp_seq2_online', 'kldp_seq2_cached')
                           if k in steps},
        'steps': steps,
        'online_over_sum_of_parts': round(step_times['kldp_online'] / parts, 3),
        'cached_over_online_speedup': round(step_times['kldp_online'] / step_times['kldp_cached'], 3),
        'cached_over_timm_kd_speedup': round(step_times['timm_kd'] / step_times['kldp_cached'], 3),
        'cached_misses_while_timed': sum(m.outputs.stats['misses'] for m in cached_models),
    }
    if epoch_times:
        ep_plain = epoch_times['epoch_plain']
        n = args.epoch_images // b * b
        report['epochs'] = {k: {'median_s': round(t, 3), 'img_per_s': round(n / t, 1),
                                'ratio_to_plain': round(ep_plain / t, 3)} for k, t in epoch_times.items()}
        report['cache_fill_overhead'] = round(epoch_times['epoch_kldp_fill'] / epoch_times['epoch_kldp_online'] - 1, 4)
        report['cache_setup_s'] = round(statistics.median(setup_times), 3)
        report['replay_overhead'] = round(epoch_times['epoch_plain'] / epoch_times['epoch_plain_no_replay'] - 1, 4)
        report['cache_size'] = sizes
    if exact:
        report['exactness'] = exact
    if device.type == 'cuda':
        report['peak_gpu_mem_gb'] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    report['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report['targets'] = {
        'cached_step_ge_0.9x_plain': report['ratio_to_plain']['kldp_cached'] >= 0.9,
        'online_within_10pct_of_parts': abs(report['online_over_sum_of_parts'] - 1) <= 0.1,
        **({'cache_fill_le_10pct': report['cache_fill_overhead'] <= 0.10} if epoch_times else {}),
    }
    return report


def print_table(r: dict) -> None:
    print(f"student {r['student']}, teacher {r['teacher']}" + (f", second teacher {r['teacher2']}" if r['teacher2'] else '')
          + f"; batch {r['batch_size']}, {r['device']}, {r['threads']} thread(s)" + (', bf16 autocast' if r['amp'] else '')
          + f"; median of {r['repeats']} interleaved steps")
    print(f"{'step':28s}{'ms':>10s}{'img/s':>10s}{'× plain':>10s}")
    for name, s in r['steps'].items():
        print(f"{name:28s}{s['median_ms']:10.1f}{s['img_per_s']:10.1f}{s['ratio_to_plain']:10.2f}")
    print(f"online / (student step + teacher fwd + frozen-student fwd) = {r['online_over_sum_of_parts']:.3f}; "
          f"cached is {r['cached_over_online_speedup']:.2f}x online and {r['cached_over_timm_kd_speedup']:.2f}x timm KD")
    if 'epochs' in r:
        print(f"{'epoch with data loading':28s}{'s':>10s}{'img/s':>10s}{'× plain':>10s}")
        for name, s in r['epochs'].items():
            print(f"{name:28s}{s['median_s']:10.2f}{s['img_per_s']:10.1f}{s['ratio_to_plain']:10.2f}")
        print(f"cache fill overhead on a first run: {100 * r['cache_fill_overhead']:+.1f}% per epoch, plus "
              f"{r['cache_setup_s']:.2f} s once per run (keys and opening, teacher and frozen student); replay "
              f"seeding costs {100 * r['replay_overhead']:+.1f}% of a plain epoch")
        print(f"cache size per 10k samples and view, per frozen model: "
              f"{r['cache_size']['bytes_per_10k_per_view_by_storage']} (measured files: "
              f"{r['cache_size']['measured_bytes_per_10k_per_view']})")
    for method, by_storage in r.get('exactness', {}).items():
        print(f"exactness {method}: " + ', '.join(f"{s}: max rel {v['max_rel']:.1e}" for s, v in by_storage.items()))
    print(f"peak RSS {r['peak_rss_mb']} MB; targets: {r['targets']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.random_init:
        args.epoch_images = 0  # no dataset speaks these models' label space: steps on a synthetic batch only
        args.exactness = False
    student, teachers = load_everything(args, device)
    clock = Clock(device)
    with tempfile.TemporaryDirectory(prefix='gkt-bench-') as tmp:
        tmp = Path(tmp)
        batch = fixed_batch(args, student, device)
        contenders, cached_models = step_contenders(args, device, student, teachers, batch, tmp / 'steps')
        step_times = interleaved(contenders, clock, args.repeats, args.warmup)
        epoch_times, setup_times, sizes = {}, [], None
        if args.epoch_images:
            epochs, setup_times, read_root = epoch_contenders(args, device, student, teachers, tmp)
            epoch_times = interleaved(epochs, clock, args.epoch_repeats, 0)
            sizes = cache_sizes(read_root, args.epoch_images, student.num_classes)
        exact = exactness(args, device, student, teachers, tmp) if args.exactness else None
        report = summarise(args, step_times, epoch_times, setup_times, sizes, exact, cached_models, device)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())

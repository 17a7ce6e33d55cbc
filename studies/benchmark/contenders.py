"""The benchmark's contenders: the models, data and steps it times (see :mod:`studies.benchmark.run`)."""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    from timm_gkt.models import FrozenModel, frozen_copy
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
    from timm_gkt.models import load_model
    pretrained = not args.random_init
    student = load_model(args.student, pretrained=pretrained)
    teachers = [load_model(s, pretrained=pretrained) for s in (args.teacher, args.teacher2) if s]
    for m in [student.model] + [t.model for t in teachers]:
        m.to(device)
    return student, teachers


def train_config(args):
    """The training CLI's defaults (augmentation, seed) with this benchmark's batch size and workers."""
    from timm_gkt.cli import parse_args
    return parse_args(['--model', args.student, '-b', str(args.batch_size), '-j', str(args.workers), '--seed', '0'])


def replay_subset(args, student, n: int):
    """The first ``n`` training images through the engine's training loader (replayable, yields indices)."""
    from timm_gkt.data import create_image_dataset
    from timm_gkt.transfer import create_train_loader
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
    from timm_gkt.cache import CachedFrozenModel
    from timm_gkt.cache import TeacherCache
    from timm_gkt.cache import CacheKey
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
    from timm_gkt.cache import cached_batch
    from timm_gkt.transfer import cross_entropy, kl_div_loss
    from timm_gkt.transfer import KLDPTask
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
    from timm_gkt.transfer import KLDPTask
    from timm_gkt.models import frozen_copy
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
    from timm_gkt.data import ModeDataset
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

    def Epoch(batches, kldp=False, cache_dir=None):
        return _Epoch(args, device, student, teacher, frozen, ds, setup_times, batches, kldp, cache_dir)

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


class _Epoch:
    """``prepare`` (untimed: a fresh student copy; with a cache, key + open) then one timed epoch + commit."""

    def __init__(self, args, device, student, teacher, frozen, ds, setup_times, batches, kldp=False, cache_dir=None):
        self.args, self.device, self.student, self.teacher, self.frozen = args, device, student, teacher, frozen
        self.ds, self.setup_times = ds, setup_times
        self.batches, self.kldp, self.cache_dir = batches, kldp, cache_dir

    def prepare(self):
        from timm_gkt.cache import TeacherCache, cached_frozen_model
        from timm_gkt.transfer import KLDPTask, cross_entropy
        args, device = self.args, self.device
        model = student_copy(args, self.student, device)
        if not self.kldp:
            self.task, self.trainer = None, Trainer(args, device, model, lambda m, x, y: cross_entropy(m(x), y))
            return
        t, fs = self.teacher, self.frozen
        if self.cache_dir is not None:
            t0 = time.perf_counter()
            root = self.cache_dir() if callable(self.cache_dir) else self.cache_dir
            cache = TeacherCache(root, args.storage)
            t, fs = cached_frozen_model(cache, t, self.ds), cached_frozen_model(cache, fs, self.ds)
            self.setup_times.append(time.perf_counter() - t0)
        self.task = KLDPTask(model, t, fs)
        self.trainer = task_trainer(args, device, self.task)

    def __call__(self):
        from timm_gkt.cache import cached_batch, commit_cached
        for batch in self.batches:
            x, y = batch[0].to(self.device), batch[1].to(self.device)
            if self.cache_dir is None:
                self.trainer.step(x, y)
            else:
                with cached_batch(self.task, 0, batch[2]):
                    self.trainer.step(x, y)
        if self.task is not None:
            commit_cached(self.task, 0)


def cache_sizes(read_root: Path, epoch_images: int, num_classes: int) -> dict:
    from timm_gkt.cache import storage_format
    files = sorted(read_root.glob('*/epoch-00000.*.npy'))
    per_view = {name: storage_format(name, num_classes).dtype.itemsize * 10_000
                for name in ['float32', 'float16'] + ([f'topk:{min(5, num_classes - 1)}'] if num_classes > 2 else [])}
    return {'measured_bytes_per_10k_per_view': [round(f.stat().st_size / epoch_images * 10_000) for f in files],
            'bytes_per_10k_per_view_by_storage': per_view}


# ----------------------------------------------------------------------------- exactness of the storage formats

def exactness(args, device, student, teachers, cache_root: Path) -> dict:
    """One epoch from the same start, online and from cached logits: per-step relative loss differences."""
    from timm_gkt.cache import TeacherCache
    from timm_gkt.cache import cached_batch, cached_frozen_model, commit_cached
    from timm_gkt.transfer import KLDistillationTask, KLDPTask
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



#!/usr/bin/env python
"""What a transfer step costs next to plain fine-tuning: every contender in one process, interleaved, medians.

    python -m studies.benchmark.run --threads 1                # zoo pair on CPU (vit_a <- convnext_a)
    python -m studies.benchmark.run --threads 1 --json         # one JSON object; ratio_to_plain has the step ratios
    python -m studies.benchmark.run --device cuda --amp --channels-last --random-init \\
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
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from .contenders import (
    cache_sizes, epoch_contenders, exactness, fixed_batch, load_everything, step_contenders,
)

ROOT = Path(__file__).resolve().parents[2]


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

#!/usr/bin/env python
"""Throughput of a KL+DP transfer step (student forward/backward + teacher + frozen student), in img/s,
for combinations of loader workers and torch threads: the figures behind train.py's ``-j`` default.

    python scripts/benchmark.py --student local-dir:zoo/vit_a --teacher local-dir:zoo/convnext_a
    python scripts/benchmark.py --workers 0,1,2 --threads 1,2 --batches 30

Each combination runs in a fresh process (thread pools cannot be resized once used).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(student: str, teacher: str, data_dir: str, workers: int, threads: int, batches: int, batch_size: int,
            device: str) -> dict:
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    from timm_gkt.config import parse_args
    from timm_gkt.data import create_image_dataset
    from timm_gkt.engine import create_train_loader
    from timm_gkt.frozen import FrozenModel, frozen_copy
    from timm_gkt.models import load_model
    from timm_gkt.tasks import KLDPTask
    s, t = load_model(student), load_model(teacher)
    dev = torch.device(device)
    s.model.to(dev).train()
    ds = torch.utils.data.Subset(create_image_dataset('torch/fashion_mnist', data_dir, 'train'),
                                 range(batch_size * (batches + 5)))
    config = parse_args(['--model', student, '--workers', str(workers), '--batch-size', str(batch_size)])
    loader = create_train_loader(config, ds, s)
    task = KLDPTask(s.model, FrozenModel(t.model, s.preprocessing, t.preprocessing).to(dev),
                    frozen_copy(s.model, s.preprocessing).to(dev))
    opt = torch.optim.SGD(s.model.parameters(), lr=1e-3, momentum=0.9)
    seen, t0 = 0, None
    for i, (x, y) in enumerate(loader):
        if i == 5:  # warm-up: worker start, allocator, first-call kernels
            if dev.type == 'cuda':
                torch.cuda.synchronize()
            t0, seen = time.perf_counter(), 0
        out = task(x.to(dev), y.to(dev))
        opt.zero_grad(set_to_none=True)
        out['loss'].backward()
        opt.step()
        seen += x.shape[0]
    if dev.type == 'cuda':
        torch.cuda.synchronize()
    return {'workers': workers, 'threads': threads, 'img_per_s': round(seen / (time.perf_counter() - t0), 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--student', default='local-dir:zoo/vit_a')
    p.add_argument('--teacher', default='local-dir:zoo/convnext_a')
    p.add_argument('--data-dir', default='data')
    p.add_argument('--workers', default='0,1,2')
    p.add_argument('--threads', default='1,2')
    p.add_argument('--batches', type=int, default=30)
    p.add_argument('-b', '--batch-size', type=int, default=128)
    p.add_argument('--device', default='cpu')
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)  # internal: run one combination, print JSON
    args = p.parse_args(argv)
    if args.one:
        w, t = (int(v) for v in args.one.split(','))
        print(json.dumps(measure(args.student, args.teacher, args.data_dir, w, t, args.batches, args.batch_size,
                                 args.device)))
        return
    print(f'KL+DP step, student {args.student}, teacher {args.teacher}, batch {args.batch_size}, '
          f'{args.batches} timed batches, device {args.device}')
    print(f'{"workers":>8s}{"threads":>9s}{"img/s":>10s}')
    for w in (int(v) for v in args.workers.split(',')):
        for t in (int(v) for v in args.threads.split(',')):
            proc = subprocess.run([sys.executable, __file__, '--one', f'{w},{t}', '--student', args.student,
                                   '--teacher', args.teacher, '--data-dir', args.data_dir, '--batches',
                                   str(args.batches), '-b', str(args.batch_size), '--device', args.device],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                print(f'{w:8d}{t:9d}    failed: {proc.stderr.strip().splitlines()[-1]}')
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f'{w:8d}{t:9d}{r["img_per_s"]:10.1f}', flush=True)


if __name__ == '__main__':
    main()

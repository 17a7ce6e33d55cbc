#!/usr/bin/env python
"""Do the default flags hurt a pretrained student? The CE control with nothing but the defaults, on zoo students.

    python -m studies.defaults.measure                       # vit_a, resnet_a, mixer_a with today's defaults
    python -m studies.defaults.measure --recipe previous     # the same with the defaults before issue 23

Each run is ``python -m timm_gkt.train --model local-dir:zoo/S --transfer-method ce`` plus only the output
folder (and, for ``previous``, that recipe's crop flags): the command a new user types. One run at a time, one
thread each; a run whose record is in the JSON is skipped, so the script continues where it stopped.
The records go to ``studies/defaults/defaults.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECORDS = Path(__file__).resolve().parent / 'defaults.json'
STUDENTS = ('vit_a', 'resnet_a', 'mixer_a')
# what each recipe adds to the defaults of the code that runs it
RECIPES = {
    'defaults': [],
    # the crop defaults before issue 23 (flags.py: --scale 0.8 1 --ratio 0.9 1.1)
    'previous': ['--scale', '0.8', '1', '--ratio', '0.9', '1.1'],
}


def commit() -> str:
    out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or 'unknown'


def run_one(student: str, recipe: str, work: Path, threads: int) -> dict:
    flags = ['--model', f'local-dir:zoo/{student}', '--transfer-method', 'ce', *RECIPES[recipe]]
    out = work / f'{recipe}-{student}'
    cmd = [sys.executable, '-m', 'timm_gkt.train', *flags, '--output', str(work), '--experiment', out.name]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'{" ".join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}')
    r = json.loads((out / 'results.json').read_text())
    args_yaml = yaml.safe_load((out / 'args.yaml').read_text())  # the flags as the run resolved them
    return {'student': student, 'recipe': recipe, 'flags': flags, 'commit': commit(), 'threads': threads,
            'wall_seconds': round(time.time() - t0, 1), 'train_images': r['hyperparameters']['train_images'],
            'eval_samples': r['eval_samples'], 'top1_before': r['top1_before'], 'top1_after': r['top1_after'],
            'transfer_delta': round(r['transfer_delta'], 4), 'gains': r['gains'], 'losses': r['losses'],
            'p_value': r['p_value'], 'verdict': r['verdict']['text'], 'seed': r['seed'],
            'augmentation': {k: args_yaml[k] for k in ('scale', 'ratio', 'hflip')}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--recipe', choices=sorted(RECIPES), default='defaults')
    p.add_argument('--students', default=','.join(STUDENTS))
    p.add_argument('--work', default=str(ROOT / 'output' / 'defaults'), help='run folders (not committed)')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    records = json.loads(RECORDS.read_text()) if RECORDS.is_file() else {'runs': []}
    done = {(r['recipe'], r['student']) for r in records['runs']}
    for student in args.students.split(','):
        if (args.recipe, student) in done:
            continue
        record = run_one(student, args.recipe, Path(args.work), args.threads)
        records['runs'].append(record)
        RECORDS.write_text(json.dumps(records, indent=1) + '\n')
        print(f"{args.recipe} {student}: {record['top1_before']:.2f} -> {record['top1_after']:.2f} "
              f"({record['verdict']}; {record['wall_seconds']:.0f} s)", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

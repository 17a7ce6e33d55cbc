#!/usr/bin/env python
"""Pilot of the zoo study on its one plateaued student, and each pilot run paired with its CE control.

    python scripts/pilot_vit_a.py resnet_a:kldp resnet_a:kl vit_b:kldp vit_b:kl effnet_a:kldp   # resumable
    python scripts/pilot_vit_a.py --paired        # -> studies/zoo/pilot/paired_vs_ce.json

The student is vit_a after two polish rounds (`python scripts/polish_zoo.py --only vit_a` makes
.zoo_cache/polish/vit_a/round2/export, top-1 86.88); its CE control is polish round 3 (+0.14, p = 0.14).
Every run uses the study's recipe (study.BASE_FLAGS) at the CE control's lr 1e-3 (not chosen on the
validation split: the pilot compares like with like); metrics on the 10,000 test images. A run whose record
is in studies/zoo/pilot/ is skipped; an unfinished one resumes (--resume auto).

--paired scores every finished run's export and the CE control's on the same test images: the McNemar test
on the images exactly one of the two gets right.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from study import BASE_FLAGS, ROOT, _train_in_child

PILOT_DIR = ROOT / 'studies' / 'zoo' / 'pilot'
WORK = ROOT / '.zoo_cache' / 'pilot'
STUDENT = ROOT / '.zoo_cache' / 'polish' / 'vit_a' / 'round2' / 'export'
CE_CONTROL = ROOT / '.zoo_cache' / 'polish' / 'vit_a' / 'round3' / 'export'
LR = '1e-3'  # the CE control's (scripts/polish_zoo.py RECIPE)


def run(teacher: str, method: str, data_dir: str) -> None:
    name = f'vit_a_r2__{teacher}__{method}'
    record = PILOT_DIR / f'{name}.json'
    if record.is_file():
        return
    WORK.mkdir(parents=True, exist_ok=True)
    argv = ['--model', f'local-dir:{STUDENT}', '--teachers', f'local-dir:{ROOT / "zoo" / teacher}',
            '--transfer-method', method, *BASE_FLAGS, '--lr', LR, '--data-dir', data_dir,
            '--output', str(WORK), '--experiment', name, '--resume', 'auto']
    code = _train_in_child(argv, WORK / f'{name}.log')
    if code != 0:
        raise SystemExit(f'[pilot] {name} failed (exit {code}); log: {WORK / f"{name}.log"}')
    PILOT_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(WORK / name / 'results.json', record)


def paired(data_dir: str) -> None:
    from timm_gkt.data import create_image_dataset
    from timm_gkt.evaluation import predict
    from timm_gkt.metrics import correctness, knowledge_gain, knowledge_loss, mcnemar_p_value
    from timm_gkt.models import load_model
    exports = {'ce': CE_CONTROL}
    for record in sorted(PILOT_DIR.glob('vit_a_r2__*.json')):  # every finished pilot run
        _, teacher, method = record.stem.split('__')
        exports[f'{method}_{teacher}'] = WORK / record.stem / 'export'
    models = [load_model(f'local-dir:{path}') for path in exports.values()]
    preds, target = predict([m.model for m in models], [m.preprocessing for m in models],
                            create_image_dataset('torch/fashion_mnist', data_dir, 'test'), progress=False)
    right = {name: correctness(pred, target) for name, pred in zip(exports, preds)}
    out = {}
    for name in list(exports)[1:]:
        gains = int(knowledge_gain(right['ce'], right[name]).sum())
        losses = int(knowledge_loss(right['ce'], right[name]).sum())
        out[name] = {'minus_ce_points': round(100 * (gains - losses) / len(target), 2), 'right_only_here': gains,
                     'right_only_ce': losses, 'p': mcnemar_p_value(gains, losses)}
        print(name, f'top-1 {100 * right[name].double().mean().item():.2f}', out[name], flush=True)
    print(f'ce top-1 {100 * right["ce"].double().mean().item():.2f}')
    (PILOT_DIR / 'paired_vs_ce.json').write_text(json.dumps(out, indent=1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('runs', nargs='*', metavar='TEACHER:METHOD')
    p.add_argument('--paired', action='store_true')
    p.add_argument('--data-dir', default=str(ROOT / 'data'))
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for spec in args.runs:
        teacher, method = spec.split(':')
        run(teacher, method, args.data_dir)
    if args.paired:
        import torch
        torch.set_num_threads(args.threads)
        paired(args.data_dir)


if __name__ == '__main__':
    sys.exit(main())

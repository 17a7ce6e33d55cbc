#!/usr/bin/env python
"""Transfer study on the zoo: Δtransf (McNemar p) of KL-Dist, KL+DP (supervised and unsupervised)
and the cross-entropy control, for student-teacher pairs with weaker and stronger teachers.

    python scripts/study.py --pairs resnet_a:convnext_a,convnext_a:resnet_a --epochs 2
    python scripts/study.py --report                # markdown table of every finished run

Each run is one ``timm_gkt.train`` process writing ``OUT/<student>__<teacher>__<method>/results.json``;
finished runs are skipped, so the study can be stopped and continued.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timm_gkt.methods import get_method  # noqa: E402
# study variants: (registry method, extra flags)
METHODS = {
    'ce': ('ce', []),
    'kl': ('kl', []),
    'kldp': ('kldp', []),
    'kldp-unsup': ('kldp', ['--dp-mode', 'unsupervised']),
}


def variant_flags(variant: str) -> list[str]:
    method, extra = METHODS[variant]
    return ['--transfer-method', method, *extra]


def needs_teacher(variant: str) -> bool:
    return get_method(METHODS[variant][0]).needs_teacher


def run_name(student, teacher, method):
    # the CE control ignores the teacher for training but still reports the flip metrics against it
    return f'{student}__{teacher}__{method}'


def run_one(student, teacher, method, args) -> Path:
    name = run_name(student, teacher, method)
    results = Path(args.out) / name / 'results.json'
    if results.is_file():
        return results
    cmd = [sys.executable, '-m', 'timm_gkt.train', '--model', f'local-dir:{args.zoo}/{student}',
           '--teachers', f'local-dir:{args.zoo}/{teacher}', *variant_flags(method), '--epochs', str(args.epochs),
           '--data-dir', args.data_dir, '--output', args.out, '--experiment', name, '--seed', str(args.seed),
           '--checkpoint-hist', '1', *args.extra.split()]
    if args.train_subset:
        cmd += ['--train-subset', str(args.train_subset)]
    t0 = time.time()
    print(f'[study] {name} ...', flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f'[study] {name} failed with exit code {proc.returncode}')
    r = json.loads(results.read_text())
    print(f'[study] {name}: Δ {r["transfer_delta"]:+.2f} (p={r["p_value"]:.3g}) in {time.time() - t0:.0f} s',
          flush=True)
    return results


def report(out: str) -> str:
    rows = []
    for path in sorted(Path(out).glob('*/results.json')):
        r = json.loads(path.read_text())
        t = r['teachers'][0]
        student, teacher, method = path.parent.name.split('__')
        rows.append((student, teacher, method, r, t))
    order = {m: i for i, m in enumerate(METHODS)}
    rows.sort(key=lambda x: (x[0], x[1], order[x[2]]))
    lines = ['| student (top-1) | teacher (top-1) | method | Δtransf | p | gain / loss | routed | Δρpos | Δρneg |',
             '|---|---|---|---:|---:|---:|---:|---:|---:|']
    for student, teacher, method, r, t in rows:
        routed = '' if t['routed_share'] is None else f"{t['routed_share']:.1f}%"
        lines.append(
            f"| {student} ({r['top1_before']:.2f}) | {teacher} ({t['top1']:.2f}) | {method} | "
            f"{r['transfer_delta']:+.2f} | {r['p_value']:.2g} | {r['knowledge_gain']:.2f} / {r['knowledge_loss']:.2f} | "
            f"{routed} | {t['pos_flips_delta']:+.2f} | {t['neg_flips_delta']:+.2f} |")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pairs', default='', help='student:teacher,... (zoo names)')
    p.add_argument('--methods', default=','.join(METHODS))
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--train-subset', type=int, default=0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--zoo', default='zoo')
    p.add_argument('--data-dir', default='data')
    p.add_argument('--out', default='output/study')
    p.add_argument('--extra', default='--scale 1 1 --ratio 1 1',
                   help='more train.py flags; default: flips only, close to how the zoo was trained')
    p.add_argument('--report', action='store_true')
    args = p.parse_args(argv)
    if args.report:
        print(report(args.out))
        return
    methods = args.methods.split(',')
    pairs = [tuple(pair.split(':')) for pair in args.pairs.split(',') if pair]
    controls_done = set()
    for student, teacher in pairs:
        for method in methods:
            if not needs_teacher(method):
                if student in controls_done:
                    continue  # one control per student: it does not depend on the teacher
                controls_done.add(student)
            run_one(student, teacher, method, args)
    print(report(args.out))


if __name__ == '__main__':
    main()

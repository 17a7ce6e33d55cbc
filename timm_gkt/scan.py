"""Where to find complementary knowledge: evaluate a student and candidate teachers once, compare.

    python -m timm_gkt.scan --student local-dir:zoo/vit_a --teachers local-dir:zoo/convnext_a,local-dir:zoo/mixer_a
    python -m timm_gkt.scan --zoo zoo            # pairwise ρpos matrix over every model in zoo/index.json

Every model sees the same evaluation images through its own eval transform, in one
pass. Per teacher: top-1 of both, ρpos (complementary knowledge: teacher right,
student wrong), ρneg, the entropy of the per-class positive flips (low = specialist)
and the classes where the teacher knows most that the student does not.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .data import DataUnavailableError, create_image_dataset
from .evaluation import predict
from .frozen import InStudentOrder
from .metrics import complementary_knowledge, correctness, percent, positive_flips
from .models import (
    LabelSpaceError, ModelSpecError, check_dataset_labels, check_model_spec, label_permutation, load_model,
)


def scan(student: str, teachers: list[str], dataset: str, data_dir: str, split: str = 'test',
         batch_size: int = 256, workers: int = 0, eval_subset: int = 0) -> dict:
    for spec in [student] + teachers:
        check_model_spec(spec)
    s = load_model(student)
    ts = [load_model(t) for t in teachers]
    perms = [label_permutation(s.label_names, t.label_names, s.num_classes, t.num_classes, teacher=f'teacher {t.name}')
             for t in ts]
    ds = _eval_dataset(dataset, data_dir, split, eval_subset)
    check_dataset_labels(s, ds, dataset)
    models = [s.model] + [InStudentOrder(t.model, perm) for t, perm in zip(ts, perms)]
    preds, target = predict(models, [s.preprocessing] + [t.preprocessing for t in ts], ds,
                            batch_size=batch_size, num_workers=workers, desc='scan')
    out = {'student': student, 'student_name': s.name, 'dataset': dataset, 'split': split,
           'eval_samples': int(target.numel()), 'student_top1': percent(correctness(preds[0], target)), 'teachers': []}
    for t, pred in zip(ts, preds[1:]):
        ck = complementary_knowledge(pred, preds[0], target, s.num_classes, s.label_names)
        out['teachers'].append({'name': t.name, 'spec': t.spec, **ck})
    return out


def _eval_dataset(dataset, data_dir, split, eval_subset):
    import torch
    ds = create_image_dataset(dataset, data_dir, split)
    return torch.utils.data.Subset(ds, range(eval_subset)) if eval_subset else ds


def pairwise_matrix(specs: list[str], dataset: str, data_dir: str, split: str = 'test', batch_size: int = 256,
                    workers: int = 0, eval_subset: int = 0) -> dict:
    """ρpos(teacher=row, student=column) for every pair, from one pass over the evaluation split."""
    models = [load_model(s) for s in specs]
    ref = models[0]
    perms = [label_permutation(ref.label_names, m.label_names, ref.num_classes, m.num_classes, teacher=m.name)
             for m in models]
    ds = _eval_dataset(dataset, data_dir, split, eval_subset)
    check_dataset_labels(ref, ds, dataset)
    preds, target = predict([InStudentOrder(m.model, perm) for m, perm in zip(models, perms)],
                            [m.preprocessing for m in models], ds, batch_size=batch_size, num_workers=workers,
                            desc='scan')
    correct = [correctness(p, target) for p in preds]
    names = [m.name for m in models]
    return {
        'names': names,
        'top1': [percent(c) for c in correct],
        'rho_pos': [[percent(positive_flips(ct, cs)) for cs in correct] for ct in correct],
        'eval_samples': int(target.numel()),
    }


def format_scan(result: dict) -> str:
    lines = [f"student {result['student_name']}: top-1 {result['student_top1']:.2f} on {result['eval_samples']} "
             f"{result['dataset']} {result['split']} images",
             f"{'teacher':16s}{'top-1':>8s}{'ρpos':>8s}{'ρneg':>8s}{'entropy':>9s}  top classes of its expertise "
             f"(positive flips per class)"]
    max_entropy = None
    for t in sorted(result['teachers'], key=lambda t: -t['rho_pos']):
        n = len(t['per_class_pos_flips'])
        max_entropy = math.log(n)
        top = ', '.join(f"{c['class']} {c['pos_flip_rate']:.1f}%" for c in t['top_classes'])
        lines.append(f"{t['name']:16s}{t['teacher_top1']:8.2f}{t['rho_pos']:8.2f}{t['rho_neg']:8.2f}"
                     f"{t['flip_entropy']:9.3f}  {top}")
    if max_entropy is not None:
        lines.append(f'ρ in % of images; entropy in nats (uniform over classes = {max_entropy:.3f}; lower = specialist)')
    return '\n'.join(lines)


def format_matrix(m: dict, markdown: bool = False) -> str:
    names = m['names']
    if markdown:
        head = '| teacher \\ student | ' + ' | '.join(names) + ' |'
        sep = '|---|' + '---:|' * len(names)
        rows = [f"| **{n}** ({m['top1'][i]:.2f}) | " + ' | '.join(
            '—' if i == j else f"{m['rho_pos'][i][j]:.2f}" for j in range(len(names))) + ' |'
            for i, n in enumerate(names)]
        return '\n'.join([head, sep] + rows)
    width = max(8, max(len(n) for n in names) + 2)  # '-12.34' must not touch its neighbour
    lines = [' ' * (width + 8) + ''.join(f'{n:>{width}s}' for n in names)]
    for i, n in enumerate(names):
        lines.append(f'{n:>{width}s}{m["top1"][i]:8.2f}' + ''.join(
            f'{"-":>{width}s}' if i == j else f'{m["rho_pos"][i][j]:{width}.2f}' for j in range(len(names))))
    lines.append('rows: teacher (with its top-1), columns: student; cell: ρpos(teacher, student) in %')
    return '\n'.join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m timm_gkt.scan', description=__doc__.split('\n')[0])
    p.add_argument('--student', help='student spec (timm name, hf-hub:ORG/REPO, local-dir:PATH)')
    p.add_argument('--teachers', default='', help='comma-separated teacher specs')
    p.add_argument('--zoo', default=None, help='scan every pair of models listed in ZOO/index.json')
    p.add_argument('--dataset', '-d', default='torch/fashion_mnist')
    p.add_argument('--data-dir', default='data')
    p.add_argument('--val-split', default='test')
    p.add_argument('-b', '--batch-size', type=int, default=256)
    p.add_argument('-j', '--workers', type=int, default=0)
    p.add_argument('--eval-subset', type=int, default=0, help='first N images only (0 = all)')
    p.add_argument('--json', action='store_true', help='print JSON instead of a table')
    p.add_argument('--markdown', action='store_true', help='with --zoo: print the matrix as a markdown table')
    args = p.parse_args(argv)
    common = dict(dataset=args.dataset, data_dir=args.data_dir, split=args.val_split, batch_size=args.batch_size,
                  workers=args.workers, eval_subset=args.eval_subset)
    try:
        if args.zoo:
            index = json.loads((Path(args.zoo) / 'index.json').read_text())
            specs = [f"local-dir:{Path(args.zoo) / m['name']}" for m in index['models']]
            result = pairwise_matrix(specs, **common)
            print(json.dumps(result, indent=2) if args.json else format_matrix(result, args.markdown))
            return 0
        if not args.student or not args.teachers:
            p.error('give --student and --teachers, or --zoo DIR')
        teachers = [t.strip() for t in args.teachers.split(',') if t.strip()]
        result = scan(args.student, teachers, **common)
    except (ModelSpecError, LabelSpaceError, DataUnavailableError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_scan(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""``python -m timm_gkt.scan``: where to find complementary knowledge, before any training.

    python -m timm_gkt.scan --student local-dir:zoo/vit_a --teachers local-dir:zoo/convnext_a,local-dir:zoo/mixer_a
    python -m timm_gkt.scan --zoo zoo            # pairwise ρpos matrix over every model in zoo/index.json

Every model sees the same evaluation images through its own eval transform, in one pass
(:mod:`timm_gkt.evaluation.scans`); errors end in one line, as for ``train`` (:mod:`timm_gkt.cli.boundary`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .boundary import guarded
from .config import DEFAULT_DATA_DIR, DEFAULT_DATASET, check_dataset_named


def main(argv=None) -> int:
    return guarded(scan_command, argv)


def scan_command(argv: list[str]) -> int:
    from ..evaluation.scans import format_matrix, format_scan, pairwise_matrix, scan
    p = argparse.ArgumentParser(prog='python -m timm_gkt.scan', description=__doc__.split('\n')[0])
    p.add_argument('--student', help='student spec (timm name, hf-hub:ORG/REPO, local-dir:PATH)')
    p.add_argument('--teachers', default='', help='comma-separated teacher specs')
    p.add_argument('--zoo', default=None, help='scan every pair of models listed in ZOO/index.json')
    p.add_argument('--dataset', '-d', default=None, help=f'as for train.py (default: {DEFAULT_DATASET})')
    p.add_argument('--data-dir', default=None, help=f'as for train.py (default: {DEFAULT_DATA_DIR})')
    p.add_argument('--val-split', default=None, help='as for train.py (default: test for Fashion-MNIST and other '
                                                     'train/test torchvision datasets, else validation)')
    p.add_argument('--class-map', default='', help='as for train.py')
    p.add_argument('--trust-label-order', action='store_true', help='as for train.py')
    p.add_argument('--input-key', default=None, metavar='COLUMN', help='as for train.py (hfds/ image column)')
    p.add_argument('--target-key', default=None, metavar='COLUMN', help='as for train.py (hfds/ label column)')
    p.add_argument('-b', '--batch-size', type=int, default=256)
    p.add_argument('-j', '--workers', type=int, default=0)
    p.add_argument('--eval-subset', type=int, default=0,
                   help='a seeded, class-stratified sample of N images, the same as train.py takes (0 = all)')
    p.add_argument('--seed', type=int, default=42, help='seed of the --eval-subset sample (as train.py\'s --seed)')
    p.add_argument('--json', action='store_true', help='print JSON instead of a table')
    p.add_argument('--predictor', default=None, metavar='JSON',
                   help='gain-predictor coefficients (default: the file fitted on the zoo study, shipped in the package)')
    p.add_argument('--markdown', action='store_true', help='with --zoo: print the matrix as a markdown table')
    args = p.parse_args(argv)
    common = dict(dataset=args.dataset or DEFAULT_DATASET, data_dir=args.data_dir or DEFAULT_DATA_DIR,
                  split=args.val_split, batch_size=args.batch_size, workers=args.workers, eval_subset=args.eval_subset,
                  class_map=args.class_map, trust_label_order=args.trust_label_order, seed=args.seed,
                  say=lambda line: print(line, file=sys.stderr),
                  **{k: v for k, v in (('input_key', args.input_key), ('target_key', args.target_key)) if v})
    check_dataset_named(args.dataset, args.data_dir)
    if args.zoo:
        index = read_zoo_index(Path(args.zoo))
        specs = [f"local-dir:{Path(args.zoo) / m['name']}" for m in index['models']]
        result = pairwise_matrix(specs, **common)
        print(json.dumps(result, indent=2) if args.json else format_matrix(result, args.markdown))
        return 0
    if not args.student or not args.teachers:
        p.error('give --student and --teachers, or --zoo DIR')
    teachers = [t.strip() for t in args.teachers.split(',') if t.strip()]
    result = scan(args.student, teachers, **common)
    from ..evaluation.predictor import COEFFICIENTS, Predictor, annotate_scan, format_prediction
    result = annotate_scan(result, Predictor.load(Path(args.predictor) if args.predictor else COEFFICIENTS))
    print(json.dumps(result, indent=2) if args.json else '\n'.join([format_scan(result), *format_prediction(result)]))
    return 0


def read_zoo_index(zoo: Path) -> dict:
    path = zoo / 'index.json'
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f'{path} does not exist; give --zoo a folder with index.json (as studies.zoo.build writes '
                          f'it), or scan with --student and --teachers') from None
    except ValueError as e:
        raise ConfigError(f'{path} is not valid JSON ({str(e)[:80]}); restore the file') from None
    if not isinstance(index, dict) or not isinstance(index.get('models'), list):
        raise ConfigError(f'{path} lists no models; write {{"models": [{{"name": FOLDER}}, ...]}}')
    return index

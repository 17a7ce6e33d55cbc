"""The study's scans (every pair on the validation and test splits, and the CE controls against the same
teachers) and the gain predictor fitted on them; ``python -m studies.zoo.study scan`` / ``fit-predictor``."""
from __future__ import annotations

import json
from pathlib import Path

from .recipe import RUNS_DIR, STUDY_DIR, VALIDATION_SPLIT, ZOO, zoo_names


def scan_zoo(args) -> None:
    """Scan every student against the other seven on the validation split (which teachers a sequential run
    uses) and on the test split (the predictor's features, as a user's scan would measure them)."""
    from timm_gkt.evaluation import scan
    names = zoo_names()
    for split, path in ((VALIDATION_SPLIT, STUDY_DIR / 'scan_validation.json'), ('test', STUDY_DIR / 'scan_test.json')):
        if path.is_file():
            continue
        out = {}
        for s in names:
            others = [t for t in names if t != s]
            r = scan(f'local-dir:{ZOO / s}', [f'local-dir:{ZOO / t}' for t in others], 'torch/fashion_mnist',
                     args.data_dir, split=split)
            out[s] = {'student_top1': r['student_top1'], 'eval_samples': r['eval_samples'],
                      'teachers': {t: {k: v for k, v in e.items() if k not in ('spec', 'per_class_pos_flips')}
                                   for t, e in zip(others, r['teachers'])}}
            print(f'[study] scanned {s} on {split}', flush=True)
        STUDY_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({'split': split, 'students': out}, indent=1))
    validation = json.loads((STUDY_DIR / 'scan_validation.json').read_text())['students']
    matrix = {t: {s: validation[s]['teachers'][t]['rho_pos'] for s in names if s != t} for t in names}
    (STUDY_DIR / 'rho_pos_validation.json').write_text(json.dumps({'split': VALIDATION_SPLIT, 'rho_pos': matrix},
                                                                  indent=1))
    scan_controls(args, names)


def scan_controls(args, names: list[str]) -> None:
    """Each CE control's student against the same seven teachers on the test split: how much of a teacher's
    complementary knowledge more training alone takes (Δρpos of the control), the yardstick for a transfer's."""
    from timm_gkt.evaluation import scan
    path = STUDY_DIR / 'scan_ce_test.json'
    if path.is_file():
        return
    exports = {s: Path(args.work) / f'{s}__ce' / 'export' for s in names}
    missing = [s for s, e in exports.items() if not (e / 'model.safetensors').is_file()]
    if missing:
        print(f'[study] the CE controls of {", ".join(missing)} are not in {args.work}: run '
              f'`python -m studies.zoo.study run --part main` first; scan_ce_test.json not written', flush=True)
        return
    out = {}
    for s in names:
        others = [t for t in names if t != s]
        r = scan(f'local-dir:{exports[s]}', [f'local-dir:{ZOO / t}' for t in others], 'torch/fashion_mnist',
                 args.data_dir, split='test')
        out[s] = {'ce_top1': r['student_top1'],
                  'teachers': {t: {'rho_pos': e['rho_pos'], 'rho_neg': e['rho_neg']}
                               for t, e in zip(others, r['teachers'])}}
        print(f'[study] scanned the CE control of {s} on test', flush=True)
    path.write_text(json.dumps({'split': 'test', 'students': out}, indent=1))


def fit_predictor(args) -> None:
    """Fit the gain predictor on the single-teacher KL+DP runs and the test-split scan; write it into the package."""
    from timm_gkt.evaluation import COEFFICIENTS, fit, leave_one_student_out, pair_features
    scans = json.loads((STUDY_DIR / 'scan_test.json').read_text())['students']
    rows = []
    for path in sorted(RUNS_DIR.glob('*__kldp.json')):
        rec = json.loads(path.read_text())
        if rec['kind'] != 'pair':
            continue
        s, t = rec['student'], rec['teachers'][0]
        rows.append({'student': s, 'teacher': t, 'delta': rec['results']['transfer_delta'],
                     **pair_features(scans[s]['student_top1'], scans[s]['teachers'][t])})
    students = sorted({r['student'] for r in rows})
    predictor = fit(rows, alpha=args.alpha, fitted_on={
        'pairs': len(rows), 'students': len(students), 'method': 'kldp (supervised)',
        'description': 'timm_gkt zoo on Fashion-MNIST, 2 passes over 55k images'})
    predictor.save(COEFFICIENTS)
    validation = leave_one_student_out(rows, alpha=args.alpha)
    (STUDY_DIR / 'predictor_validation.json').write_text(json.dumps({'rows': rows, **validation}, indent=1))
    print(f'[study] predictor fitted on {len(rows)} pairs of {len(students)} students; leave-one-student-out '
          f'Spearman {validation["spearman"]:.2f}, MAE {validation["mae"]:.3f} points -> {COEFFICIENTS}')

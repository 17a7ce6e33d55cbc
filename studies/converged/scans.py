"""The converged study's scans and the gain predictor refitted on both zoos.

    python -m studies.converged.scans scan         # every student of this study against its teachers, test split
    python -m studies.converged.scans predictor    # refit on both zoos; leave-one-student-out per zoo and pooled
    python -m studies.converged.scans predictor --apply   # ... and put the both-zoo fit in the package if it wins

The scan holds what ``python -m timm_gkt.scan`` measures (ρpos, ρneg, flip entropy, top-1): the predictor's
features. The refit compares the package's features with the same plus the student's own CE-control Δ (how far
it is from its plateau); that extra feature is not known before a run, so the package's predictor keeps the scan's
features, refitted on both zoos only if that ranks new students better than the first zoo's fit alone.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from studies.zoo.recipe import ROOT, RUNS_DIR as FIRST_RUNS, STUDY_DIR as FIRST_STUDY, model_dir, zoo_names

from .study import RUNS, converged_names

HERE = Path(__file__).resolve().parent
SCAN = HERE / 'scan_test.json'
VALIDATION = HERE / 'predictor_validation.json'
EXTRA = 'student_ce_delta'


def scan_students(data_dir: str) -> None:
    """Converged students against every other model of both zoos; first-zoo students against the converged ones."""
    from timm_gkt.evaluation import scan
    conv, first = converged_names(), zoo_names()
    out = json.loads(SCAN.read_text())['students'] if SCAN.is_file() else {}
    plan = [(s, [t for t in conv + first if t != s]) for s in conv] + [(s, conv) for s in first]
    for student, teachers in plan:
        if student in out and set(out[student]['teachers']) >= set(teachers):
            continue
        r = scan(f'local-dir:{model_dir(student)}', [f'local-dir:{model_dir(t)}' for t in teachers],
                 'torch/fashion_mnist', data_dir, split='test')
        out[student] = {'student_top1': r['student_top1'], 'eval_samples': r['eval_samples'],
                        'teachers': {t: {k: v for k, v in e.items() if k not in ('spec', 'per_class_pos_flips')}
                                     for t, e in zip(teachers, r['teachers'])}}
        SCAN.write_text(json.dumps({'split': 'test', 'students': out}, indent=1))
        print(f'[converged] scanned {student}', flush=True)


def _ce_delta(records: dict, student: str) -> float | None:
    rec = records.get(f'{student}__ce')
    return rec['results']['transfer_delta'] if rec else None


def predictor_rows() -> list[dict]:
    """One row per single-teacher KL+DP pair at seed 0, with its zoo, its scan features and the student's CE Δ."""
    from timm_gkt.evaluation import pair_features
    first_scan = json.loads((FIRST_STUDY / 'scan_test.json').read_text())['students']
    conv_scan = json.loads(SCAN.read_text())['students'] if SCAN.is_file() else {}
    first_records = {p.stem: json.loads(p.read_text()) for p in FIRST_RUNS.glob('*.json')}
    own_records = {p.stem: json.loads(p.read_text()) for p in RUNS.glob('*.json')}
    rows = []
    for zoo, records in (('first', first_records), ('converged', own_records)):
        for name, rec in sorted(records.items()):
            if rec['method'] != 'kldp' or rec['kind'] not in ('pair', 'cross') or '__seed' in name:
                continue
            s, t = rec['student'], rec['teachers'][0]
            scan = (first_scan if t in first_scan.get(s, {}).get('teachers', {}) else conv_scan).get(s)
            ce = _ce_delta(first_records, s) if s in zoo_names() else _ce_delta(own_records, s)
            if scan is None or t not in scan['teachers'] or ce is None:
                continue
            rows.append({'zoo': zoo if rec['kind'] == 'pair' else 'cross', 'student': s, 'teacher': t,
                         'delta': rec['results']['transfer_delta'], EXTRA: ce,
                         **pair_features(scan['student_top1'], scan['teachers'][t])})
    return rows


def refit(alpha: float = 1.0, rows: list[dict] | None = None) -> dict:
    """Leave-one-student-out Spearman of the scan features and of the scan features + the student's CE Δ, on the
    first zoo, on the converged zoo's pairs and pooled over every pair (``rows``: ``predictor_rows()``)."""
    from timm_gkt.evaluation import FEATURES, leave_one_student_out
    rows = predictor_rows() if rows is None else rows
    groups = {'first zoo': [r for r in rows if r['zoo'] == 'first'],
              'converged zoo': [r for r in rows if r['zoo'] == 'converged'], 'pooled': rows}
    out = {}
    for label, group in groups.items():
        if len({r['student'] for r in group}) < 3:
            out[label] = None
            continue
        out[label] = {name: {k: v for k, v in leave_one_student_out(group, alpha, features).items()
                             if k not in ('predicted', 'actual')}
                      for name, features in (('scan features', FEATURES), ('+ student CE Δ', (*FEATURES, EXTRA)))}
    out['new pairs'] = new_pairs(rows, alpha)
    VALIDATION.write_text(json.dumps({'alpha': alpha, 'groups': out, 'rows': rows}, indent=1))
    return out


def new_pairs(rows: list[dict], alpha: float = 1.0) -> dict:
    """The package's question (this module's docstring): on the pairs the first zoo never held (within the converged
    zoo and across the zoos), does a fit that has seen both zoos, leave-one-student-out, rank them better (Spearman)
    than the first zoo's fit alone? Both use the scan's features only, the ones ``scan`` has before any run."""
    from timm_gkt.evaluation import fit, leave_one_student_out
    from timm_gkt.report import spearman
    new = [r for r in rows if r['zoo'] != 'first']
    if len({r['student'] for r in new}) < 3:
        return {}
    first_fit = fit([r for r in rows if r['zoo'] == 'first'], alpha)
    first_rho = spearman([first_fit.predict(r)[0] for r in new], [r['delta'] for r in new])
    # leave_one_student_out predicts student by student, in sorted order, each student's rows as given
    pooled = leave_one_student_out(rows, alpha)
    in_order = [r for s in sorted({r['student'] for r in rows}) for r in rows if r['student'] == s]
    assert pooled['actual'] == [r['delta'] for r in in_order], 'leave_one_student_out changed its order'
    kept = [(p, r['delta']) for p, r in zip(pooled['predicted'], in_order) if r['zoo'] != 'first']
    pooled_rho = spearman([p for p, _ in kept], [a for _, a in kept])
    return {'pairs': len(new), 'students': len({r['student'] for r in new}), 'first_zoo_fit': first_rho,
            'both_zoos_leave_one_student_out': pooled_rho, 'refit_the_package': pooled_rho > first_rho}


def apply_refit(rows: list[dict], alpha: float, decision: dict, path: Path | None = None) -> Path | None:
    """Write the both-zoo fit into the package (``timm_gkt/evaluation/predictor.json``) when ``decision`` says
    it ranks the new pairs better; otherwise leave the first zoo's fit there."""
    from timm_gkt.evaluation import COEFFICIENTS, fit
    if not decision.get('refit_the_package'):
        return None
    path = path or COEFFICIENTS
    fit(rows, alpha, fitted_on={
        'pairs': len(rows), 'students': len({r['student'] for r in rows}), 'method': 'kldp (supervised)',
        'description': 'timm_gkt zoo and converged zoo on Fashion-MNIST, 2 passes over 55k images'}).save(path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog='python -m studies.converged.scans', description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    sc = sub.add_parser('scan')
    sc.add_argument('--data-dir', default=str(ROOT / 'data'))
    fp = sub.add_parser('predictor')
    fp.add_argument('--alpha', type=float, default=1.0)
    fp.add_argument('--apply', action='store_true',
                    help="write the both-zoo fit into the package's predictor.json when it ranks the new pairs better")
    args = p.parse_args(argv)
    if args.command == 'scan':
        scan_students(args.data_dir)
    else:
        rows = predictor_rows()
        out = refit(args.alpha, rows)
        print(json.dumps(out, indent=1))
        if args.apply:
            path = apply_refit(rows, args.alpha, out['new pairs'])
            print(f'[converged] the package\'s predictor is now the both-zoo fit: {path}' if path else
                  '[converged] the first zoo\'s fit stays in the package: the both-zoo fit does not rank the new '
                  'pairs better')


if __name__ == '__main__':
    main()

"""``python -m studies.zoo.variants``: the objectives study (see this package's docstring and PLAN.md)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..recipe import ROOT, VALIDATION_SPLIT, chosen_lr, zoo_names
from ..study import Run, add_run_arguments, prepare_runs, run_parts

HERE = Path(__file__).resolve().parent
RUNS = HERE / 'runs'
CHOSEN = HERE / 'chosen.json'
WORK = ROOT / 'output' / 'variants'

# PLAN.md: the paper's KL+DP and nine variants, each a set of flags on top of the study's recipe
CONDITIONS = {
    'kldp': [],
    'kldp-ce0.1': ['--xe-weight', '0.1'],
    'kldp-ce0.3': ['--xe-weight', '0.3'],
    'kldp-ce0.5': ['--xe-weight', '0.5'],
    'kldp-3way': ['--dp-routing', 'three-way'],
    'kldp-cal': ['--dp-calibration', 'temperature'],
    'kldp-3way-cal': ['--dp-routing', 'three-way', '--dp-calibration', 'temperature'],
    'kldp-soft-cal': ['--dp-routing', 'soft', '--dp-calibration', 'temperature'],
    'kldp-T2': ['--kd-temperature', '2'],
    'kldp-ce0.3-T2': ['--xe-weight', '0.3', '--kd-temperature', '2'],
}
SELECT_PAIRS = (('vit_a', 'resnet_a'), ('effnet_a', 'byob_a'), ('resnet_a', 'convnext_a'), ('mixer_a', 'effnet_a'),
                ('vit_b', 'mixer_a'), ('mambaout_a', 'vit_b'), ('convnext_a', 'vit_a'), ('byob_a', 'mambaout_a'))


def select_runs() -> list[Run]:
    """The CE control of every selection student first, then condition by condition over the pairs (so a cut-short
    selection has whole conditions; the first condition fills the teacher cache the others read)."""
    lr, val = chosen_lr(), ['--val-split', VALIDATION_SPLIT]
    runs = [Run(f'select__{s}__ce', 'select-control', s, (), 'ce', ['--transfer-method', 'ce', '--lr', lr, *val],
                records=RUNS) for s, _ in SELECT_PAIRS]
    for name, flags in CONDITIONS.items():
        runs += [Run(f'select__{s}__{t}__{name}', 'select', s, (t,), name,
                     ['--transfer-method', 'kldp', *flags, '--lr', lr, *val], records=RUNS) for s, t in SELECT_PAIRS]
    return runs


def confirm_runs() -> list[Run]:
    """The chosen variant on every ordered pair of the zoo, scored on the test split (only after a go)."""
    if not CHOSEN.is_file() or not json.loads(CHOSEN.read_text()).get('go'):
        raise SystemExit('no variant was chosen for the confirmation (python -m studies.zoo.variants choose); '
                         'the plan stops at the selection on a no-go')
    name, lr = json.loads(CHOSEN.read_text())['chosen'], chosen_lr()
    names = zoo_names()
    return [Run(f'{s}__{t}__{name}', 'pair', s, (t,), name, ['--transfer-method', 'kldp', *CONDITIONS[name], '--lr', lr],
                records=RUNS) for s in names for t in names if s != t]


PARTS = {'select': select_runs, 'confirm': confirm_runs}


def records(prefix: str = '') -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RUNS.glob(f'{prefix}*.json'))]


def selection_table() -> dict:
    """Per condition: (condition − the student's CE control) per selection pair on the validation split."""
    recs = records('select__')
    control = {r['student']: r['results'] for r in recs if r['kind'] == 'select-control'}
    table = {}
    for name in CONDITIONS:
        rows = {}
        for s, t in SELECT_PAIRS:
            rec = next((r for r in recs if r['run'] == f'select__{s}__{t}__{name}'), None)
            if rec is None or s not in control:
                continue
            res = rec['results']
            rows[f'{s}<-{t}'] = {'delta': res['transfer_delta'], 'p': res['p_value'],
                                 'minus_ce': res['transfer_delta'] - control[s]['transfer_delta']}
        done = len(rows) == len(SELECT_PAIRS)
        mean = sum(r['minus_ce'] for r in rows.values()) / len(rows) if rows else None
        table[name] = {'pairs': rows, 'complete': done, 'mean_minus_ce': mean,
                       'mean_delta': sum(r['delta'] for r in rows.values()) / len(rows) if rows else None}
    return {'ce': {s: {'delta': r['transfer_delta'], 'p': r['p_value']} for s, r in control.items()},
            'conditions': table}


def choose() -> dict:
    """PLAN.md's rule: the variant with the largest mean (variant − CE control) on validation; a go only if above 0;
    ties to the simpler variant (fewer flags). The paper's kldp is reported, never chosen."""
    table = selection_table()
    variants = {n: c for n, c in table['conditions'].items() if n != 'kldp'}
    if not all(c['complete'] for c in variants.values()) or len(table['ce']) < len(SELECT_PAIRS):
        raise SystemExit('the selection is not complete: run `python -m studies.zoo.variants run --part select`')
    best = max(variants, key=lambda n: (round(variants[n]['mean_minus_ce'], 2), -len(CONDITIONS[n])))
    go = variants[best]['mean_minus_ce'] > 0
    out = {'chosen': best if go else None, 'best': best, 'go': go,
           'rule': 'largest mean (variant - CE control) over the 8 selection pairs on the validation split; '
                   'a go only if it is above 0 (studies/zoo/variants/PLAN.md)',
           'mean_minus_ce': {n: round(c['mean_minus_ce'], 4) for n, c in table['conditions'].items()}}
    CHOSEN.write_text(json.dumps(out, indent=1))
    return out


def report(args) -> None:
    from .report import confirmation, markdown, write_section
    table = selection_table()
    decision = json.loads(CHOSEN.read_text()) if CHOSEN.is_file() else None
    confirmed = confirmation(records(), decision and decision.get('chosen'))
    if args.json:
        print(json.dumps({'selection': table, 'decision': decision, 'confirmation': confirmed}, indent=1))
        return
    text = markdown(table, decision, confirmed)
    print(text)
    if not args.no_write:
        write_section(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog='python -m studies.zoo.variants', description=__doc__)
    sub = p.add_subparsers(dest='command', required=True)
    r = sub.add_parser('run', help='run (or continue) a part: select, confirm')
    r.add_argument('--part', default='select')
    add_run_arguments(r, WORK, in_memory=True)
    sub.add_parser('choose', help="apply the plan's rule to the selection records")
    rep = sub.add_parser('report', help='tables from the records')
    rep.add_argument('--json', action='store_true')
    rep.add_argument('--no-write', action='store_true', help='print only; leave the README as it is')
    args = p.parse_args(argv)
    if args.command == 'run':
        prepare_runs(args.threads)
        run_parts(PARTS, args, 'variants', 'python -m studies.zoo.variants report')
    elif args.command == 'choose':
        print(json.dumps(choose(), indent=1))
    else:
        report(args)


if __name__ == '__main__':
    sys.exit(main())

"""Where does transfer beat more training? The study on the converged zoo and across the two zoos.

    python -m studies.converged.study run --part within,across   # the plan's order (studies/converged/PLAN.md)
    python -m studies.converged.study run --part kl,seeds,variant
    python -m studies.converged.study status
    python -m studies.converged.study report [--json]            # tables, the map, the hypotheses

Every run is one ``timm_gkt.train`` process of the zoo study's recipe (``studies/zoo/recipe.py``) on the transfer
split ``train[:55000]``, scored on the 10,000 test images; its record is ``studies/converged/runs/<run>.json``
(finished runs are skipped, killed ones resumed). A first-zoo student's CE control at seed 0 is the zoo study's
(``studies/zoo/runs/<student>__ce.json``: the same recipe and seed).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from studies.zoo.recipe import ROOT, RUNS_DIR as FIRST_RUNS, chosen_lr, zoo_names
from studies.zoo.study import Run, add_run_arguments, prepare_runs, print_status, run_parts

HERE = Path(__file__).resolve().parent
RUNS = HERE / 'runs'
INDEX = ROOT / 'zoo' / 'converged' / 'index.json'
WORK = ROOT / 'output' / 'converged'
SEEDS = (1, 2)  # besides seed 0, for the first zoo's students (short of fit: one seed cannot separate methods)


def converged_names() -> list[str]:
    """The converged zoo's models that met the rule (a model still in training or failing it takes no part)."""
    if not INDEX.is_file():
        raise SystemExit(f'{INDEX} does not exist yet: build the zoo first (python -m studies.converged.build)')
    return [m['name'] for m in json.loads(INDEX.read_text())['models'] if m['convergence']['converged']]


def chosen_variant() -> tuple[str, list[str]] | None:
    """The objectives study's chosen variant (studies/zoo/variants/chosen.json), if it chose one."""
    from studies.zoo.variants.__main__ import CHOSEN, CONDITIONS
    if not CHOSEN.is_file() or not json.loads(CHOSEN.read_text()).get('go'):
        return None
    name = json.loads(CHOSEN.read_text())['chosen']
    return name, CONDITIONS[name]


def _run(name: str, kind: str, student: str, teachers: tuple, method: str, flags: list[str]) -> Run:
    return Run(name, kind, student, teachers, method, [*flags, '--lr', chosen_lr()], records=RUNS)


KLDP, KL, CE = ['--transfer-method', 'kldp'], ['--transfer-method', 'kl'], ['--transfer-method', 'ce']


def round_robin(names: list[str]) -> list[tuple[str, str]]:
    """Every ordered (student, teacher) pair of ``names``, in rounds that give each student one more teacher, so
    that a part cut short has measured every student rather than all teachers of a few."""
    n = len(names)
    return [(names[i], names[(i + k) % n]) for k in range(1, n) for i in range(n)]


def within_runs() -> list[Run]:
    names = converged_names()
    runs = [_run(f'{s}__ce', 'control', s, (), 'ce', CE) for s in names]
    return runs + [_run(f'{s}__{t}__kldp', 'pair', s, (t,), 'kldp', KLDP) for s, t in round_robin(names)]


def across_runs() -> list[Run]:
    first, conv = zoo_names(), converged_names()
    runs = [_run(f'{s}__{t}__kldp', 'cross', s, (t,), 'kldp', KLDP) for s in first for t in conv]
    return runs + [_run(f'{s}__{t}__kldp', 'cross', s, (t,), 'kldp', KLDP) for s in conv for t in first]


def kl_runs() -> list[Run]:
    """KL-Dist within the converged zoo, and from the converged teachers into the first zoo's students (seed 0):
    hypothesis 3 compares KL+DP with it there."""
    names, first = converged_names(), zoo_names()
    runs = [_run(f'{s}__{t}__kl', 'pair', s, (t,), 'kl', KL) for s, t in round_robin(names)]
    return runs + [_run(f'{s}__{t}__kl', 'cross', s, (t,), 'kl', KL) for s in first for t in names]


def seed_runs() -> list[Run]:
    first, conv = zoo_names(), converged_names()
    runs = []
    for seed in SEEDS:
        seed_flags = ['--seed', str(seed)]
        runs += [_run(f'{s}__ce__seed{seed}', 'control', s, (), 'ce', [*CE, *seed_flags]) for s in first]
        runs += [_run(f'{s}__{t}__kldp__seed{seed}', 'cross', s, (t,), 'kldp', [*KLDP, *seed_flags])
                 for s in first for t in conv]
    return runs


def variant_runs() -> list[Run]:
    chosen = chosen_variant()
    if chosen is None:
        return []
    name, flags = chosen
    conv, first = converged_names(), zoo_names()
    runs = [_run(f'{s}__{t}__{name}', 'pair', s, (t,), name, [*KLDP, *flags]) for s in conv for t in conv if s != t]
    return runs + [_run(f'{s}__{t}__{name}', 'cross', s, (t,), name, [*KLDP, *flags]) for s in first for t in conv]


PARTS = {'within': within_runs, 'across': across_runs, 'kl': kl_runs, 'seeds': seed_runs, 'variant': variant_runs}


def plan_progress() -> tuple[int, int]:
    """(runs recorded, runs planned) over every part of the plan."""
    runs = [r for part in PARTS.values() for r in part()]
    return sum(r.record_path.is_file() for r in runs), len(runs)


def load_records() -> list[dict]:
    """This study's records, and the zoo study's CE controls of the first zoo's students (seed 0)."""
    own = [json.loads(p.read_text()) for p in sorted(RUNS.glob('*.json'))]
    first = [json.loads((FIRST_RUNS / f'{s}__ce.json').read_text()) for s in zoo_names()
             if (FIRST_RUNS / f'{s}__ce.json').is_file()]
    return own + first


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog='python -m studies.converged.study', description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    r = sub.add_parser('run', help='run (or continue) parts: ' + ', '.join(PARTS))
    r.add_argument('--part', default='within,across')
    add_run_arguments(r, WORK, in_memory=True)
    sub.add_parser('status')
    rep = sub.add_parser('report')
    rep.add_argument('--json', action='store_true')
    rep.add_argument('--no-write', action='store_true', help='print only; write neither plots nor summary.json')
    args = p.parse_args(argv)
    if args.command == 'run':
        prepare_runs(args.threads)
        run_parts(PARTS, args, 'converged', 'python -m studies.converged.study report')
    elif args.command == 'status':
        print_status(PARTS)
    else:
        from .report import report_main
        report_main(args, load_records(), json.loads(INDEX.read_text()) if INDEX.is_file() else None,
                    plan_progress() if INDEX.is_file() else None)


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/env python
"""Polish the zoo to a plateau under the study's own recipe.

    python -m studies.zoo.polish --only vit_a          # resumable; one round = one CE run of the study recipe
    python -m studies.zoo.polish --status              # rounds so far, per model
    python -m studies.zoo.polish --only vit_a --rebuild  # re-make committed rounds whose weights are missing

The plateau rule: one more budget of plain cross-entropy at the study's recipe (the CE control)
moves test top-1 by at most 0.2 points. Each round runs exactly that CE control on the current
model (``timm_gkt.train --transfer-method ce`` with the study's flags), so every round is at once
a polish step and the plateau check of the model it started from. Rounds continue until a round
moves the model by <= 0.2; the model *before* that round is the plateaued zoo model, and that
round's Δ is its recorded check. Then ``--apply`` writes the weights into ``zoo/NAME`` and the
checks into ``zoo/index.json``.

Round k of model M lives in ``OUT/M/round<k>/`` (a train.py run folder: results.json, export/);
a finished round is skipped, an unfinished one is resumed (``--resume auto``). Each finished round
also leaves ``studies/zoo/polish/M/round<k>.json`` (its numbers) and ``studies/zoo/polish/M/round<k>/``
(its exported weights, about 1 MB), both committed: OUT is a cache that a new machine does not
have, and every later round starts from these weights (``--apply`` removes them once the zoo holds
the plateaued model). A round whose record is
committed but whose weights are not (made before the weights were kept) is re-run by
``--rebuild``, which says whether the new run reproduced the record.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


from .recipe import BASE_FLAGS, ROOT, repo_relative

TOLERANCE = 0.2
RECORDS = ROOT / 'studies' / 'zoo' / 'polish'  # one committed record per round
# The study's recipe (studies/zoo/study.py BASE_FLAGS: SGD momentum 0.9, per-update cosine, wd 1e-4, batch 128, flips
# only, two passes over the 55,000 transfer images) at lr 1e-3: each polish round is exactly the CE control.
RECIPE = [*BASE_FLAGS, '--lr', '1e-3']


WEIGHT_FILES = ('model.safetensors', 'config.json')  # what timm's save_for_hf writes, all a local-dir: load needs


def rounds(out: Path, name: str) -> list[dict]:
    """Finished rounds, from the run folders under OUT or, where a machine has none, from the committed records."""
    done = []
    for k in range(1, 100):
        path = out / name / f'round{k}' / 'results.json'
        if not path.is_file():
            path = RECORDS / name / f'round{k}.json'
        if not path.is_file():
            break
        r = json.loads(path.read_text())
        done.append({'round': k, 'top1_before': r['top1_before'], 'top1_after': r['top1_after'],
                     'delta': r['transfer_delta'], 'p_value': r['p_value'], 'gains': r['gains'], 'losses': r['losses'],
                     'seconds': sum(e.get('seconds', 0) or 0 for e in r.get('epochs', []))})
    return done


def plateau_reached(done: list[dict]) -> bool:
    return bool(done) and abs(done[-1]['delta']) <= TOLERANCE + 1e-9


def weights_of_round(out: Path, name: str, k: int) -> Path:
    """Round k's exported weights: the run folder's export, else the committed copy (which may be missing too)."""
    export = out / name / f'round{k}' / 'export'
    return export if (export / 'model.safetensors').is_file() else RECORDS / name / f'round{k}'


def model_of_round(out: Path, zoo: Path, name: str, k: int) -> str:
    """The model round k starts from: the zoo model for round 1, else round k-1's weights."""
    return f'local-dir:{zoo / name}' if k == 1 else f'local-dir:{weights_of_round(out, name, k - 1)}'


def applied_rounds(zoo: Path, name: str) -> int | None:
    """The polish rounds the zoo's copy of NAME has had (`--apply`), or None if no polish was applied to it."""
    for m in json.loads((zoo / 'index.json').read_text())['models']:
        if m['name'] == name and 'study_plateau' in m:
            return m['study_plateau']['polish_rounds']
    return None


def missing_weights(out: Path, zoo: Path, name: str) -> list[int]:
    """Rounds that another round or a transfer run starts from (all but the last) whose weights are nowhere here;
    none once the zoo holds the plateaued model (`--apply` put it there and dropped the rounds' copies)."""
    done = rounds(out, name)
    if plateau_reached(done) and applied_rounds(zoo, name) == len(done) - 1:
        return []
    return [d['round'] for d in done[:-1]
            if not (weights_of_round(out, name, d['round']) / 'model.safetensors').is_file()]


def run_round(out: Path, zoo: Path, data_dir: str, name: str, k: int, threads: int) -> dict:
    """Train round k (resumes an unfinished run folder) and commit its record and weights."""
    cmd = [sys.executable, '-m', 'timm_gkt.train', '--model', model_of_round(out, zoo, name, k),
           '--transfer-method', 'ce', '--data-dir', data_dir, '--output', str(out / name),
           '--experiment', f'round{k}', '--resume', 'auto', *RECIPE]
    env = dict(__import__('os').environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    print(f'[polish] {name} round {k} ...', flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f'[polish] {name} round {k} failed with exit code {proc.returncode}')
    record_round(out, name, k)
    r = rounds(out, name)[k - 1]
    print(f'[polish] {name} round {k}: {r["top1_before"]:.2f} -> {r["top1_after"]:.2f} '
          f'(Δ {r["delta"]:+.2f}, p={r["p_value"]:.2g}) in {time.time() - t0:.0f} s', flush=True)
    return r


RECORD_KEYS = ('student', 'method', 'top1_before', 'top1_after', 'transfer_delta', 'knowledge_gain', 'knowledge_loss',
               'gains', 'losses', 'p_value', 'seed', 'epochs', 'hyperparameters')


def record_round(out: Path, name: str, k: int) -> Path:
    """studies/zoo/polish/NAME/roundK.json (the round's numbers) and NAME/roundK/ (its weights), both committed."""
    folder = out / name / f'round{k}'
    r = json.loads((folder / 'results.json').read_text())
    path = RECORDS / name / f'round{k}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(repo_relative({key: r[key] for key in RECORD_KEYS if key in r}), indent=1))
    weights = RECORDS / name / f'round{k}'
    weights.mkdir(exist_ok=True)
    for file in WEIGHT_FILES:
        shutil.copyfile(folder / 'export' / file, weights / file)
    return path


def rebuild(out: Path, zoo: Path, data_dir: str, name: str, threads: int) -> None:
    """Re-run, in order, the committed rounds whose weights are missing; say whether each reproduced its record."""
    for k in missing_weights(out, zoo, name):
        old = json.loads((RECORDS / name / f'round{k}.json').read_text())
        new = run_round(out, zoo, data_dir, name, k, threads)
        same = (round(new['top1_after'], 2), new['gains'], new['losses']) == \
            (round(old['top1_after'], 2), old['gains'], old['losses'])
        print(f'[polish] {name} round {k} rebuilt: ' + (
            f'reproduced the record ({old["top1_after"]:.2f}, {old["gains"]} gains / {old["losses"]} losses)'
            if same else f'record {old["top1_before"]:.2f} -> {old["top1_after"]:.2f} '
                         f'({old["gains"]}/{old["losses"]}), now {new["top1_before"]:.2f} -> '
                         f'{new["top1_after"]:.2f} ({new["gains"]}/{new["losses"]}); the record now holds the new run'),
            flush=True)


def apply(out: Path, zoo: Path, name: str) -> None:
    """Copy the plateaued weights into the zoo and record every check in index.json."""
    done = rounds(out, name)
    if not plateau_reached(done):
        raise SystemExit(f'{name}: no plateau yet ({len(done)} rounds); run more rounds first.')
    k = len(done)  # round k is the check; the model it started from is the plateaued one
    if k > 1:
        src = weights_of_round(out, name, k - 1) / 'model.safetensors'
        if not src.is_file():
            raise SystemExit(f'{name}: the weights of round {k - 1} are not on this machine; '
                             f'run `python -m studies.zoo.polish --only {name} --rebuild` first.')
        shutil.copyfile(src, zoo / name / 'model.safetensors')
    # zoo/NAME now holds the plateaued weights: the rounds' committed copies were only needed to get here
    for folder in sorted((RECORDS / name).glob('round*/')):
        shutil.rmtree(folder)
    index_path = zoo / 'index.json'
    index = json.loads(index_path.read_text())
    for rec in index['models']:
        if rec['name'] == name:
            rec['test_top1'] = round(done[-1]['top1_before'], 2)
            rec['study_plateau'] = {
                'rule': f'one more budget of the study recipe (CE control) moves test top-1 by <= {TOLERANCE}',
                'recipe': ' '.join(RECIPE),
                'polish_rounds': k - 1,
                'checks': done,
                'final_delta': done[-1]['delta'],
            }
    tmp = index_path.with_suffix('.tmp')
    tmp.write_text(json.dumps(index, indent=2))
    tmp.replace(index_path)
    print(f'{name}: {k - 1} polish round(s), top-1 {done[-1]["top1_before"]:.2f}, check Δ {done[-1]["delta"]:+.2f}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--only', default='', help='comma-separated zoo names (default: all in zoo/index.json)')
    p.add_argument('--zoo', default=str(ROOT / 'zoo'))
    p.add_argument('--out', default=str(ROOT / '.zoo_cache' / 'polish'))
    p.add_argument('--data-dir', default=str(ROOT / 'data'))
    p.add_argument('--max-rounds', type=int, default=6)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--status', action='store_true')
    p.add_argument('--apply', action='store_true', help='write plateaued models into the zoo')
    p.add_argument('--rebuild', action='store_true',
                   help='re-run committed rounds whose weights are missing (rounds made before weights were kept)')
    args = p.parse_args(argv)
    zoo, out = Path(args.zoo), Path(args.out)
    names = [m['name'] for m in json.loads((zoo / 'index.json').read_text())['models']]
    if args.only:
        names = [n for n in args.only.split(',') if n]
    for name in names:
        done = rounds(out, name)
        if args.status:
            print(f'{name:12s} ' + ', '.join(f'r{d["round"]} {d["top1_before"]:.2f}->{d["top1_after"]:.2f} '
                                              f'({d["delta"]:+.2f})' for d in done)
                  + ('  PLATEAU' if plateau_reached(done) else '')
                  + (f'  (weights missing: rounds {missing}; --rebuild)' if (missing := missing_weights(out, zoo, name))
                     else ''))
            continue
        if args.rebuild:
            rebuild(out, zoo, args.data_dir, name, args.threads)
            continue
        if args.apply:
            apply(out, zoo, name)
            continue
        while not plateau_reached(done) and len(done) < args.max_rounds:
            run_round(out, zoo, args.data_dir, name, len(done) + 1, args.threads)
            done = rounds(out, name)


if __name__ == '__main__':
    main()

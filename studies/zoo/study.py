#!/usr/bin/env python
"""The zoo study: does General Knowledge Transfer make the zoo's students better than more training does?

    python -m studies.zoo.study run --part select      # hyper-parameter choice on the validation split (3 pairs)
    python -m studies.zoo.study run --part main        # 56 pairs x 5 methods + one CE control per student
    python -m studies.zoo.study run --part sequential  # each student's 2 and 3 most complementary teachers
    python -m studies.zoo.study scan                   # every pair scanned (validation: sequential teachers;
                                                   # test: predictor), and, once they exist, the CE controls
    python -m studies.zoo.study status                 # what is done, what is left
    python -m studies.zoo.study fit-predictor          # the gain predictor of `scan`, from the KL+DP runs
    python -m studies.zoo.study report [--json]        # tables, plots and verdict from studies/zoo/runs/*.json

Every run is one ``timm_gkt.train`` process with its own folder under ``--work`` (checkpoints,
export; resumed with ``--resume auto`` when it was killed halfway). A finished run's results are
kept as ``studies/zoo/runs/<run>.json`` (committed, a few KB each); a run whose file exists is
skipped, so the study continues across sessions and machines. The report needs only those files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .recipe import (
    BASE_FLAGS, CHOSEN_LR_FILE, FIRST_WAVE, LR_GRID, PAIR_METHODS, ROOT, RUNS_DIR, SELECT_PAIRS, STUDY_DIR,
    VALIDATION_SPLIT, WORK, chosen_lr, model_dir, repo_relative, zoo_names,
)
from .scans import fit_predictor, scan_zoo


@dataclass
class Run:
    name: str
    kind: str  # select | control | pair | sequential | sequential-control
    student: str
    teachers: tuple[str, ...]
    method: str
    flags: list[str] = field(default_factory=list)
    after: 'Run | None' = None  # a chained run starts from this run's export instead of the zoo model
    records: Path | None = None  # where its record goes (default: this study's runs/)

    @property
    def record_path(self) -> Path:
        return (self.records or RUNS_DIR) / f'{self.name}.json'


def select_runs() -> list[Run]:
    runs = []
    for lr in LR_GRID:
        for student, teacher in SELECT_PAIRS:
            runs.append(Run(f'select__{student}__{teacher}__kldp__lr{lr}', 'select', student, (teacher,), 'kldp',
                            ['--transfer-method', 'kldp', '--lr', lr, '--val-split', VALIDATION_SPLIT]))
    return runs


def ce_control(student: str, lr: str) -> Run:
    """One more budget of plain cross-entropy: the yardstick of every transfer from this student."""
    return Run(f'{student}__ce', 'control', student, (), 'ce', ['--transfer-method', 'ce', '--lr', lr])


def main_runs() -> list[Run]:
    lr = chosen_lr()
    names = zoo_names()
    runs = [ce_control(s, lr) for s in names]
    # In two waves, so that a study cut short still answers its main questions over every pair: first the CE
    # controls and, for all 56 pairs, KL+DP and KL-Dist (KL+DP against more training, KL+DP against plain
    # distillation); then the other three methods. Within a wave a pair's runs follow each other (they share
    # teacher outputs in the teacher cache).
    for wave in FIRST_WAVE, [m for m in PAIR_METHODS if m not in FIRST_WAVE]:
        for s in names:
            for t in names:
                if s == t:
                    continue
                for method in wave:
                    runs.append(Run(f'{s}__{t}__{method}', 'pair', s, (t,), method,
                                    [*PAIR_METHODS[method], '--lr', lr]))
    return runs


def complementary_teachers(student: str, k: int) -> list[str]:
    """The k teachers with the most complementary knowledge (ρpos on the validation split)."""
    path = STUDY_DIR / 'rho_pos_validation.json'
    if not path.is_file():
        raise SystemExit('no pair scan yet: run `python -m studies.zoo.study scan` first.')
    matrix = json.loads(path.read_text())
    col = {t: row[student] for t, row in matrix['rho_pos'].items() if t != student}
    return sorted(col, key=lambda t: -col[t])[:k]


def sequential_runs() -> list[Run]:
    """Each student's 2 and 3 most complementary teachers in sequence (one budget per teacher), and the CE
    control at as many budgets: the CE control (`S__ce`, budget 1) continued for a second (`S__ce-x2`) and a
    third (`S__ce-x3`) budget, each its own run from the previous one's export (a sequential stage is exactly
    one budget of the recipe, so is each link of the chain)."""
    lr = chosen_lr()
    runs = []
    for s in zoo_names():
        for k in (2, 3):
            teachers = tuple(complementary_teachers(s, k))
            runs.append(Run(f'{s}__seq{k}__kldp', 'sequential', s, teachers, 'kldp',
                            ['--transfer-method', 'kldp', '--multi-teacher', 'sequential', '--lr', lr]))
        previous = ce_control(s, lr)
        for k in (2, 3):
            previous = Run(f'{s}__ce-x{k}', 'sequential-control', s, (), 'ce', previous.flags, after=previous)
            runs.append(previous)
    return runs


PARTS = {'select': select_runs, 'main': main_runs, 'sequential': sequential_runs}


def start_of(run: Run, args) -> Path:
    return Path(args.work) / run.after.name / 'export' if run.after else model_dir(run.student)


def command(run: Run, args) -> list[str]:
    cmd = [sys.executable, '-m', 'timm_gkt.train', '--model', f'local-dir:{start_of(run, args)}',
           '--data-dir', args.data_dir, '--output', args.work, '--experiment', run.name, '--resume', 'auto',
           *BASE_FLAGS, *run.flags]
    if run.teachers:
        cmd += ['--teachers', ','.join(f'local-dir:{model_dir(t)}' for t in run.teachers)]
    if args.data_in_memory:  # the same batches, decoded once: the fast loop
        cmd += ['--data-in-memory']
    if args.teacher_cache:
        cmd += ['--teacher-cache', args.teacher_cache]
    return cmd


def _train_in_child(argv: list[str], log: Path) -> int:
    """Run ``timm_gkt.train`` in a forked child of this process: torch and timm are imported once
    (an import of the CUDA build of torch can take minutes on a busy 2-core machine), and every run
    still gets a fresh process state (Accelerate singletons, RNGs, thread pools)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            from timm_gkt import train
            code = train.main(argv)
        except SystemExit as e:  # argparse errors
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the log keeps the traceback
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


_RUN_LOCKS = defaultdict(threading.Lock)  # one run at a time per name: a chained run may run its predecessor


def execute(run: Run, args) -> dict | None:
    with _RUN_LOCKS[run.name]:
        return _execute(run, args)


def _execute(run: Run, args) -> dict | None:
    if run.record_path.is_file():
        return None
    if run.after:
        execute(run.after, args)  # no-op when its record exists (another job may be running it: the lock waits)
        if not (start_of(run, args) / 'model.safetensors').is_file():
            print(f'[study] {run.name} starts from the export of {run.after.name}, which is not in {args.work} '
                  f'(it ran on another machine or its folder was removed): skipped', flush=True)
            return None
    t0 = time.time()
    argv = command(run, args)[3:]  # drop `python -m timm_gkt.train`
    log = Path(args.work) / f'{run.name}.log'
    log.parent.mkdir(parents=True, exist_ok=True)
    code = _train_in_child(argv, log)
    if code != 0:
        print(f'[study] {run.name} FAILED (exit {code}); log: {log}', flush=True)
        return None
    results = json.loads((Path(args.work) / run.name / 'results.json').read_text())
    record = {'run': run.name, 'kind': run.kind, 'student': run.student, 'teachers': list(run.teachers),
              'method': run.method, 'flags': BASE_FLAGS + run.flags, 'wall_seconds': round(time.time() - t0, 1),
              'threads': args.threads, **({'after': run.after.name} if run.after else {}), 'results': results}
    run.record_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = run.record_path.with_suffix('.tmp')
    tmp.write_text(json.dumps(repo_relative(record), indent=1))
    tmp.replace(run.record_path)  # a half-written record never looks finished
    print(f'[study] {run.name}: Δ {results["transfer_delta"]:+.2f} (p={results["p_value"]:.2g}) '
          f'in {record["wall_seconds"]:.0f} s', flush=True)
    return record


def run_parts(parts: dict, args, label: str = 'study',
              report: str = 'python -m studies.zoo.study --report') -> None:
    """Every run of the parts named in ``args.part`` (comma-separated keys of ``parts``) not yet recorded,
    ``args.jobs`` at a time, then what was finished and what is missing."""
    runs = [r for part in args.part.split(',') for r in parts[part]()]
    todo = [r for r in runs if not r.record_path.is_file()]
    print(f'[{label}] {args.part}: {len(runs) - len(todo)} of {len(runs)} runs done, {len(todo)} to go, '
          f'{args.jobs} at a time', flush=True)
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        records = list(pool.map(lambda r: execute(r, args), todo))
    print(summary_of(args.part, runs, records, time.time() - t0).replace('python -m studies.zoo.study --report',
                                                                         report), flush=True)


def run_part(args) -> None:
    run_parts(PARTS, args)
    if 'select' in args.part.split(','):
        choose_lr()


def summary_of(part: str, runs: list, records: list, seconds: float) -> str:
    """The closing lines of `study.py run`: what this call finished (``records``: one per run it tried, None
    where it finished nothing), what is still missing and what to do next."""
    finished = sum(r is not None for r in records)
    missing = [r.name for r in runs if not r.record_path.is_file()]
    lines = [f'[study] {part}: {finished} of {len(records)} runs finished in {seconds / 3600:.1f} h; '
             f'{len(runs) - len(missing)} of {len(runs)} done']
    if missing:
        shown = ', '.join(missing[:5]) + (f' and {len(missing) - 5} more' if len(missing) > 5 else '')
        lines.append(f'[study] still missing (failed, skipped or stopped; the lines above say which): {shown}. '
                     f'Run the same command again to go on.')
    else:
        lines.append('[study] part complete: `python -m studies.zoo.study --report` rebuilds the report (its README '
                     'section, plots and summary.json) from the records.')
    return '\n'.join(lines)


def choose_lr() -> None:
    """The lr whose KL+DP runs gain most on the validation split, on average over the 3 pairs."""
    from timm_gkt.report import mean
    by_lr = {}
    for lr in LR_GRID:
        deltas = []
        for student, teacher in SELECT_PAIRS:
            path = RUNS_DIR / f'select__{student}__{teacher}__kldp__lr{lr}.json'
            if not path.is_file():
                return
            deltas.append(json.loads(path.read_text())['results']['transfer_delta'])
        by_lr[lr] = mean(deltas)
    best = max(by_lr, key=by_lr.get)
    CHOSEN_LR_FILE.write_text(json.dumps({
        'lr': best, 'rule': 'largest mean KL+DP transfer delta on the validation split over the 3 selection pairs',
        'validation_split': VALIDATION_SPLIT, 'pairs': [list(p) for p in SELECT_PAIRS],
        'mean_delta_by_lr': {k: round(v, 3) for k, v in by_lr.items()}}, indent=1))
    print(f'[study] chosen lr {best} (mean validation Δ by lr: {by_lr})')


def print_status(parts: dict) -> None:
    """Per part: runs done of all, and the time left at one job (from the finished runs' wall time)."""
    for part, make in parts.items():
        try:
            runs = make()
        except SystemExit as e:
            print(f'{part:10s} not ready: {e}')
            continue
        done = [r for r in runs if r.record_path.is_file()]
        secs = [json.loads(r.record_path.read_text()).get('wall_seconds', 0) for r in done]
        eta = f', ~{(len(runs) - len(done)) * sum(secs) / len(secs) / 3600:.1f} h left at one job' if secs else ''
        print(f'{part:10s} {len(done):4d} / {len(runs)} runs{eta}')


def add_run_arguments(parser, work: Path, in_memory: bool) -> None:
    """The arguments of every study's ``run``: parallel jobs, threads, folders, the fast loop."""
    parser.add_argument('--jobs', type=int, default=1, help='runs at a time (one thread each)')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--work', default=str(work))
    parser.add_argument('--data-dir', default=str(ROOT / 'data'))
    parser.add_argument('--teacher-cache', default=str(ROOT / 'output' / 'teacher_cache'))
    parser.set_defaults(data_in_memory=in_memory)
    parser.add_argument('--data-in-memory', dest='data_in_memory', action='store_true',
                        help='decode the images once and flip and normalise batches on the device (the same batches '
                             'as the per-image loader, bit for bit)' + (' (the default)' if in_memory else ''))
    parser.add_argument('--no-data-in-memory', dest='data_in_memory', action='store_false',
                        help='use the per-image loader')


def prepare_runs(threads: int) -> None:
    """Set before torch is imported: the forked runs inherit one-thread pools, and import the trainer once."""
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    import torch
    torch.set_num_threads(threads)
    from timm_gkt import train  # noqa: F401  (imported once, shared by every forked run)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    r = sub.add_parser('run', help='run (or continue) a part of the study')
    r.add_argument('--part', default='main', help='select, main, sequential (comma-separated)')
    add_run_arguments(r, WORK, in_memory=False)
    sub.add_parser('status', help='runs done and left')
    sc = sub.add_parser('scan', help='scan every pair on the validation and the test split (run before sequential)')
    sc.add_argument('--data-dir', default=str(ROOT / 'data'))
    sc.add_argument('--work', default=str(WORK), help="the study's run folders (CE controls)")
    fp = sub.add_parser('fit-predictor', help='fit the gain predictor from the KL+DP runs and the test-split scan')
    fp.add_argument('--alpha', type=float, default=1.0, help='ridge penalty on standardised features')
    rep = sub.add_parser('report', help='tables, plots and verdict from studies/zoo/runs')
    rep.add_argument('--json', action='store_true', help='print one JSON object instead of markdown')
    rep.add_argument('--readme', default=str(STUDY_DIR / 'README.md'),
                     help='README to rewrite between the study markers (default: studies/zoo/README.md)')
    rep.add_argument('--no-write', action='store_true', help='print only; do not touch the README or plots')
    argv = list(sys.argv[1:] if argv is None else argv)
    # the flag spellings of the issue and of earlier READMEs: --report, --fit-predictor
    argv = [{'--report': 'report', '--fit-predictor': 'fit-predictor', '--status': 'status'}.get(a, a) for a in argv]
    args = p.parse_args(argv)
    if args.command == 'scan':
        scan_zoo(args)
    elif args.command == 'fit-predictor':
        fit_predictor(args)
    elif args.command == 'run':
        prepare_runs(args.threads)
        run_part(args)
    elif args.command == 'status':
        print_status(PARTS)
    else:
        from .report import report_main
        report_main(args)


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Pilot of the zoo study on its plateaued students: transfer runs, each paired with the student's CE control.

    python -m studies.zoo.pilot resnet_a:kldp resnet_a:kl vit_b:kldp vit_b:kl effnet_a:kldp   # resumable
    python -m studies.zoo.pilot --paired              # -> studies/zoo/pilot/paired/vit_a_r2__test.json
    python -m studies.zoo.pilot --val resnet_a:kldp@3e-3 ce@3e-3   # the lr probe, on the validation split
    python -m studies.zoo.pilot --val --paired        # -> studies/zoo/pilot/paired/vit_a_r2__val.json
    python -m studies.zoo.pilot --student mambaout_a resnet_a:kldp   # another plateaued student
    python -m studies.zoo.pilot --val resnet_a:kldp/T2   # the temperature probe (distillation temperature 2)
    python -m studies.zoo.pilot --val resnet_a:kldp+rrc ce+rrc   # the augmentation probe (random resized crops)
    python -m studies.zoo.pilot --val resnet_a:kldp/E6 ce/E6   # the budget probe (6 passes instead of the recipe's 2)
    python -m studies.zoo.pilot resnet_a,effnet_a:kldp   # sequential: one stage per teacher

The student (--student, default vit_a) is the zoo model after its polish rounds (`python -m studies.zoo.polish`):
the export of the last round before the plateau check, e.g. vit_a round 2 (86.88), whose runs are named
vit_a_r2__...; its CE control at lr 1e-3 is the check round itself (vit_a round 3: +0.14, p = 0.14).
Every run uses the study's recipe (study.BASE_FLAGS); the learning rate is the CE control's 1e-3 unless a run
says `@LR`, and a run `ce@LR` is the CE control at that lr; `/T2` sets the distillation temperature (default 1;
the CE control has none, so a `/T` run is paired with the control of its lr); `/E6` trains 6 epochs (passes
over the transfer split) instead of the recipe's 2, and is paired with the CE control of the same budget (`ce/E6`:
the budget probe asks whether KL+DP catches up with more training when both get more time); `+rrc` (or the milder `+crop`)
trains on random resized crops (AUGMENTATIONS) besides the recipe's flips, and such a run is paired with the CE
control of the same lr and augmentation. `A,B:kldp` transfers from both in sequence (--multi-teacher sequential,
one budget per teacher, stages in the engine's default order: ascending teacher top-1, METHOD.md; the record's
stage_order says it); the run is named A-B and compared with the CE control and with each teacher's single run.
Test-split runs score the 10,000 test images;
`--val` runs score the validation split train[55000:] (the 5,000 training images the transfer never sees) and
are the ones any choice is made on. A run whose record is in studies/zoo/pilot/ is skipped; an unfinished one
resumes (--resume auto).

--paired scores every finished run's export of that split and the CE control of the same lr and augmentation on
the same images (McNemar's test on the images exactly one of the two gets right), a sequential run also against
each of its teachers' single runs, and each run's teachers against the start, the control and the run (ρpos: how
much of the teacher's complementary knowledge is left).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .polish import applied_rounds, plateau_reached, rounds, weights_of_round
from .recipe import BASE_FLAGS, ROOT, VALIDATION_SPLIT, repo_relative
from .study import _train_in_child

PILOT_DIR = ROOT / 'studies' / 'zoo' / 'pilot'
WORK = ROOT / '.zoo_cache' / 'pilot'
POLISH = ROOT / '.zoo_cache' / 'polish'
LR = '1e-3'  # the CE control's (studies/zoo/polish.py RECIPE)
# the recipe trains on flips only (study.BASE_FLAGS); a `+NAME` run adds these flags after it. rrc: Inception-style
# crops of 35-100 % of the image at aspect ratios 3:4-4:3, the augmentation under which a teacher's soft targets on
# a view can say more than the view's label (Beyer et al. 2022, "a good teacher is patient and consistent");
# crop: a mild one (75-100 %, 9:10-10:9), for students whose clean top-1 rrc costs points (vit_a: CE -4.96)
AUGMENTATIONS = {'rrc': ['--scale', '0.35', '1', '--ratio', '0.75', '1.3333'],
                 'crop': ['--scale', '0.75', '1', '--ratio', '0.9', '1.1111']}
GRAMMAR = 'TEACHER:METHOD[@LR][/T<temperature>][/E<epochs>][+AUG]'
RECIPE_EPOCHS = BASE_FLAGS[BASE_FLAGS.index('--epochs') + 1]  # a `/E` run names another budget


@dataclass(frozen=True)
class Student:
    prefix: str  # e.g. vit_a_r2: the zoo model after two polish rounds
    export: Path  # the plateaued weights the runs start from
    ce_control: Path  # the plateau check: one more CE budget at lr 1e-3 from `export`


def plateaued(name: str) -> Student:
    done = rounds(POLISH, name)
    if not plateau_reached(done):
        raise SystemExit(f'{name} is not at a plateau yet ({len(done)} polish rounds): '
                         f'run `python -m studies.zoo.polish --only {name}` first.')
    k = len(done) - 1  # the rounds before the check
    # round k's weights, which `polish_zoo.py --apply` put into the zoo once the polish was done
    zoo_holds_them = k == 0 or applied_rounds(ROOT / 'zoo', name) == k
    start = ROOT / 'zoo' / name if zoo_holds_them else weights_of_round(POLISH, name, k)
    if not (start / 'model.safetensors').is_file():
        raise SystemExit(f'the weights of {name} polish round {k} are not on this machine: '
                         f'run `python -m studies.zoo.polish --only {name} --rebuild` first.')
    return Student(f'{name}_r{k}', start, weights_of_round(POLISH, name, k + 1))


def run_name(student: Student, teacher: str, method: str, lr: str, val: bool, temperature: str = '',
             aug: str = '', epochs: str = '') -> str:
    name = f'{student.prefix}__{teacher.replace(",", "-")}__{method}' if teacher != '-' else f'{student.prefix}__ce'
    return name + ('' if lr == LR else f'__lr{lr}') + (f'__T{temperature}' if temperature else '') + \
        (f'__E{epochs}' if epochs else '') + (f'__{aug}' if aug else '') + ('__val' if val else '')


def parse_spec(spec: str) -> tuple[str, str, str, str, str, str]:
    """`TEACHER:METHOD[@LR][/T<temperature>][/E<epochs>][+AUG]`, or `ce[@LR][/E<epochs>][+AUG]` for the CE control.

    Returns (teacher, method, lr, temperature, augmentation, epochs); '' where the recipe's value holds."""
    rest, _, aug = spec.partition('+')
    body, *options = rest.split('/')
    head, _, lr = body.partition('@')
    teacher, _, method = head.partition(':') if head != 'ce' else ('-', '', 'ce')
    teachers = teacher.split(',')
    bad = not method or not all(teachers) or len(set(teachers)) < len(teachers) \
        or (teacher == '-') != (method == 'ce') or ('+' in spec and aug not in AUGMENTATIONS)
    temperature = epochs = ''
    for option in options:  # in the grammar's order, each at most once
        number = option[1:]
        if option.startswith('T') and not temperature and not epochs and method != 'ce':
            temperature = number
            bad |= not number.replace('.', '', 1).isdigit() or float(number) <= 0
        elif option.startswith('E') and not epochs:
            epochs = number
            bad |= not number.isdigit() or int(number) <= 0 or number == RECIPE_EPOCHS
        else:
            bad = True
    if bad:
        raise SystemExit(f'bad run {spec!r}: write {GRAMMAR} (AUG: {", ".join(AUGMENTATIONS)}; E: not the recipe\'s '
                         f'{RECIPE_EPOCHS}), e.g. resnet_a:kldp@3e-3 or '
                         f'resnet_a:kldp/T2+rrc, or ce[@LR][/E<epochs>][+AUG]')
    return teacher, method, lr or LR, temperature, aug, epochs


def run(student: Student, spec: str, data_dir: str, val: bool) -> None:
    teacher, method, lr, temperature, aug, epochs = parse_spec(spec)
    name = run_name(student, teacher, method, lr, val, temperature, aug, epochs)
    record = PILOT_DIR / f'{name}.json'
    if record.is_file():
        return
    WORK.mkdir(parents=True, exist_ok=True)
    argv = ['--model', f'local-dir:{student.export}', '--transfer-method', method, *BASE_FLAGS, '--lr', lr,
            '--data-dir', data_dir, '--output', str(WORK), '--experiment', name, '--resume', 'auto']
    if teacher != '-':
        argv += ['--teachers', ','.join(f'local-dir:{ROOT / "zoo" / t}' for t in teacher.split(','))]
        if ',' in teacher:
            argv += ['--multi-teacher', 'sequential']
    if temperature:
        argv += ['--kd-temperature', temperature]
    argv += AUGMENTATIONS.get(aug, [])
    if epochs:  # after the recipe's --epochs: argparse keeps the last value
        argv += ['--epochs', epochs]
    if val:
        argv += ['--val-split', VALIDATION_SPLIT]
    print(f'[pilot] {name} ...', flush=True)
    code = _train_in_child(argv, WORK / f'{name}.log')
    if code != 0:
        raise SystemExit(f'[pilot] {name} failed (exit {code}); log: {WORK / f"{name}.log"}')
    PILOT_DIR.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(repo_relative(json.loads((WORK / name / 'results.json').read_text())), indent=2))
    r = json.loads(record.read_text())
    print(f'[pilot] {name}: {r["top1_before"]:.2f} -> {r["top1_after"]:.2f} (p = {r["p_value"]:.2g})', flush=True)


def _control_of(stem: str) -> str:
    """The CE control a run is compared with: its lr, its augmentation and its budget where not the recipe's
    (`1e-3+rrc`, `1e-3/E6`)."""
    parts = stem.split('__')
    lr = [part[2:] for part in parts if part.startswith('lr')]
    aug = [part for part in parts if part in AUGMENTATIONS]
    epochs = [part[1:] for part in parts if part[:1] == 'E' and part[1:].isdigit()]
    return (lr[0] if lr else LR) + (f'+{aug[0]}' if aug else '') + (f'/E{epochs[0]}' if epochs else '')


def pilot_exports(student: Student, val: bool) -> dict[str, Path]:
    """The models ``paired`` compares: the start, the CE control of each lr, every finished run, the teachers."""
    mine = sorted(PILOT_DIR.glob(f'{student.prefix}__*.json'))
    ce_runs = f'{student.prefix}__ce'
    records = [r for r in mine if r.stem.endswith('__val') == val]
    controls = {LR: student.ce_control}
    controls.update({_control_of(r.stem): WORK / r.stem / 'export' for r in records if r.stem.startswith(ce_runs)})
    runs = {r.stem: WORK / r.stem / 'export' for r in records if not r.stem.startswith(ce_runs)}
    # the lr-1e-3 runs of the test split are scored on the validation split too: inference only
    if val:
        runs.update({r.stem: WORK / r.stem / 'export' for r in mine
                     if not r.stem.endswith('__val') and not r.stem.startswith(ce_runs)})
    teachers = sorted({t for stem in runs for t in stem.split('__')[1].split('-')})
    return {'start': student.export, **{f'ce@{lr}': path for lr, path in controls.items()}, **runs,
            **{f'teacher:{t}': ROOT / 'zoo' / t for t in teachers}}


def paired(student: Student, data_dir: str, val: bool) -> None:
    """Every finished run of the split against the CE control of its lr, on the same images."""
    from timm_gkt.data import create_image_dataset
    from timm_gkt.evaluation import correctness, knowledge_gain, knowledge_loss, predict
    from timm_gkt.models import load_model
    from timm_gkt.report import mcnemar_p_value
    exports = pilot_exports(student, val)
    models = [load_model(f'local-dir:{path}') for path in exports.values()]
    split = VALIDATION_SPLIT if val else 'test'
    preds, target = predict([m.model for m in models], [m.preprocessing for m in models],
                            create_image_dataset('torch/fashion_mnist', data_dir, split), progress=False)
    right = {name: correctness(pred, target) for name, pred in zip(exports, preds)}

    def versus(ref: str, name: str) -> dict:
        gains = int(knowledge_gain(right[ref], right[name]).sum())
        losses = int(knowledge_loss(right[ref], right[name]).sum())
        return {'points': round(100 * (gains - losses) / len(target), 2), 'right_only_here': gains,
                'right_only_other': losses, 'p': mcnemar_p_value(gains, losses)}

    out = {'split': split, 'images': len(target),
           'top1': {name: round(100 * r.double().mean().item(), 2) for name, r in right.items()}, 'runs': {}}
    for name in [n for n in exports if n != 'start' and not n.startswith('teacher:')]:
        entry = out['runs'][name] = _paired_entry(name, right, versus)
        shown = {k: v for k, v in entry.items() if k not in ('lr', 'augmentation', 'epochs')}
        print(f'{name:40s} top-1 {out["top1"][name]:.2f}', shown, flush=True)
    print(f'start top-1 {out["top1"]["start"]:.2f} on {split}')
    path = PILOT_DIR / 'paired' / f'{student.prefix}__{"val" if val else "test"}.json'
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


def _paired_entry(name: str, right: dict, versus) -> dict:
    """One run against the start and its CE control, and the teachers' complementary knowledge left in each."""
    condition = name.split('@')[1] if name.startswith('ce@') else _control_of(name)
    lr_and_aug, _, epochs = condition.partition('/E')
    lr, _, aug = lr_and_aug.partition('+')
    entry = {'lr': lr, **({'augmentation': aug} if aug else {}), **({'epochs': int(epochs)} if epochs else {}),
             'vs_start': versus('start', name)}
    if name.startswith('ce@'):
        return entry

    def rho_pos(teacher: str, model: str) -> float:  # teacher right where `model` is wrong, in points
        return round(100 * (right[f'teacher:{teacher}'] & ~right[model]).double().mean().item(), 2)

    control = f'ce@{condition}'
    if control in right:
        entry['vs_ce'] = versus(control, name)
    # the teacher's complementary knowledge left in the start, the CE control and this run: what the
    # run took beyond more training is its drop minus the control's
    teachers_part = name.split('__')[1]
    chain = teachers_part.split('-')
    knowledge = [{'teacher': t, 'start': rho_pos(t, 'start'), 'run': rho_pos(t, name),
                  **({'ce': rho_pos(t, control)} if control in right else {})} for t in chain]
    entry['rho_pos'] = knowledge[0] if len(chain) == 1 else knowledge
    # sequential: against each teacher's single run of the same method and condition (paper: it beats the best)
    singles = {t: name.replace(f'__{teachers_part}__', f'__{t}__', 1) for t in chain} if len(chain) > 1 else {}
    if any(single in right for single in singles.values()):
        entry['vs_single'] = {t: versus(single, name) for t, single in singles.items() if single in right}
    return entry


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--student', default='vit_a', help='a zoo model at its plateau (studies/zoo/polish.py)')
    p.add_argument('runs', nargs='*', metavar=f'{GRAMMAR} | ce[@LR][/E<epochs>][+AUG]')
    p.add_argument('--val', action='store_true', help=f'score on the validation split {VALIDATION_SPLIT}')
    p.add_argument('--paired', action='store_true')
    p.add_argument('--data-dir', default=str(ROOT / 'data'))
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    student = plateaued(args.student)
    for spec in args.runs:
        parse_spec(spec)  # every spec checked before the first run starts
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for spec in args.runs:
        run(student, spec, args.data_dir, args.val)
    if args.paired:
        import torch
        torch.set_num_threads(args.threads)
        paired(student, args.data_dir, args.val)


if __name__ == '__main__':
    sys.exit(main())

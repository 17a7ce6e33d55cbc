"""studies/zoo/pilot.py's run specs and run names: what a spec on the command line trains, and under which name its
record is kept (a finished record is what makes a run skipped). No training."""
from __future__ import annotations

import importlib

from pathlib import Path

import pytest


pilot = importlib.import_module('studies.zoo.pilot')
VIT_A = pilot.Student('vit_a_r2', Path('start'), Path('check'))


@pytest.mark.parametrize('spec, parsed, name, control', [
    ('resnet_a:kldp', ('resnet_a', 'kldp', '1e-3', '', '', ''), 'vit_a_r2__resnet_a__kldp', '1e-3'),
    ('resnet_a:kldp@3e-3', ('resnet_a', 'kldp', '3e-3', '', '', ''), 'vit_a_r2__resnet_a__kldp__lr3e-3', '3e-3'),
    ('resnet_a:kldp/T2', ('resnet_a', 'kldp', '1e-3', '2', '', ''), 'vit_a_r2__resnet_a__kldp__T2', '1e-3'),
    ('vit_b:kl@1e-4/T0.5', ('vit_b', 'kl', '1e-4', '0.5', '', ''), 'vit_a_r2__vit_b__kl__lr1e-4__T0.5', '1e-4'),
    ('resnet_a:kldp+rrc', ('resnet_a', 'kldp', '1e-3', '', 'rrc', ''), 'vit_a_r2__resnet_a__kldp__rrc', '1e-3+rrc'),
    ('resnet_a:kldp@3e-3/T2+rrc', ('resnet_a', 'kldp', '3e-3', '2', 'rrc', ''),
     'vit_a_r2__resnet_a__kldp__lr3e-3__T2__rrc', '3e-3+rrc'),
    ('ce', ('-', 'ce', '1e-3', '', '', ''), 'vit_a_r2__ce', '1e-3'),
    ('ce@3e-3', ('-', 'ce', '3e-3', '', '', ''), 'vit_a_r2__ce__lr3e-3', '3e-3'),
    ('ce+rrc', ('-', 'ce', '1e-3', '', 'rrc', ''), 'vit_a_r2__ce__rrc', '1e-3+rrc'),
    ('resnet_a:kldp+crop', ('resnet_a', 'kldp', '1e-3', '', 'crop', ''), 'vit_a_r2__resnet_a__kldp__crop', '1e-3+crop'),
    ('resnet_a,effnet_a:kldp', ('resnet_a,effnet_a', 'kldp', '1e-3', '', '', ''), 'vit_a_r2__resnet_a-effnet_a__kldp',
     '1e-3'),
    ('resnet_a:kldp/E6', ('resnet_a', 'kldp', '1e-3', '', '', '6'), 'vit_a_r2__resnet_a__kldp__E6', '1e-3/E6'),
    ('ce/E6', ('-', 'ce', '1e-3', '', '', '6'), 'vit_a_r2__ce__E6', '1e-3/E6'),
    ('resnet_a:kldp@3e-3/T2/E4+rrc', ('resnet_a', 'kldp', '3e-3', '2', 'rrc', '4'),
     'vit_a_r2__resnet_a__kldp__lr3e-3__T2__E4__rrc', '3e-3+rrc/E4'),
])
def test_specs_parse_into_the_names_their_records_keep(spec, parsed, name, control):
    assert pilot.parse_spec(spec) == parsed
    assert pilot.run_name(VIT_A, *parsed[:3], False, *parsed[3:]) == name
    assert pilot.run_name(VIT_A, *parsed[:3], True, *parsed[3:]) == name + '__val'
    assert pilot._control_of(name) == control  # how the paired comparison finds the CE control of the same lr/aug


def train_argv(spec, val, monkeypatch, tmp_path) -> list[str]:
    """The argv pilot.run would train with (the training child is replaced by one that fails at once)."""
    argvs = []
    monkeypatch.setattr(pilot, '_train_in_child', lambda argv, log: argvs.append(argv) or 1)
    monkeypatch.setattr(pilot, 'WORK', tmp_path)
    monkeypatch.setattr(pilot, 'PILOT_DIR', tmp_path / 'records')  # no committed record makes the run skipped
    with pytest.raises(SystemExit, match='failed'):
        pilot.run(VIT_A, spec, 'data', val=val)
    return argvs[0]


def test_an_augmented_run_adds_its_flags_after_the_recipe(monkeypatch, tmp_path):
    argv = train_argv('ce+rrc', True, monkeypatch, tmp_path)
    assert argv[argv.index('--experiment') + 1] == 'vit_a_r2__ce__rrc__val'
    def last(flag):  # argparse keeps the last value given
        return argv[len(argv) - 1 - argv[::-1].index(flag):][:3]
    assert argv.count('--scale') == 2 and last('--scale') == ['--scale', '0.35', '1']  # replaces the recipe's 1 1
    assert last('--ratio') == ['--ratio', '0.75', '1.3333']


@pytest.mark.parametrize('spec', ['resnet_a', 'resnet_a:', ':kldp', 'ce/T2', 'resnet_a:kldp/2', 'resnet_a:kldp/T0',
                                  'resnet_a:kldp/Tx', 'resnet_a:ce', 'resnet_a:kldp+', 'ce+mixup', 'resnet_a,:kldp',
                                  'resnet_a,resnet_a:kldp', 'ce/E', 'ce/E0', 'ce/E2', 'ce/E1.5', 'resnet_a:kldp/E6/T2',
                                  'resnet_a:kldp/E4/E6', 'resnet_a:kldp/T2/T4'])
def test_bad_specs_stop_with_the_grammar(spec):
    with pytest.raises(SystemExit, match=r'write TEACHER:METHOD\[@LR\]\[/T<temperature>\]\[/E<epochs>\]\[\+AUG\] '
                                         r"\(AUG: rrc, crop; E: not the recipe's 2\)"):
        pilot.parse_spec(spec)


def test_a_budget_run_trains_its_epochs_instead_of_the_recipes(monkeypatch, tmp_path):
    argv = train_argv('ce/E6', True, monkeypatch, tmp_path)
    assert argv[argv.index('--experiment') + 1] == 'vit_a_r2__ce__E6__val'
    assert argv.count('--epochs') == 2 and argv[len(argv) - 1 - argv[::-1].index('--epochs') + 1] == '6'
    from timm_gkt.cli.config import parse_args  # the engine's parser keeps the last value given
    assert parse_args(argv).epochs == 6


def test_a_teacher_chain_is_one_sequential_run(monkeypatch, tmp_path):
    argv = train_argv('resnet_a,effnet_a:kldp', False, monkeypatch, tmp_path)
    teachers = argv[argv.index('--teachers') + 1].split(',')
    assert [Path(t.removeprefix('local-dir:')).name for t in teachers] == ['resnet_a', 'effnet_a']
    assert argv[argv.index('--multi-teacher') + 1] == 'sequential'
    assert '--val-split' not in argv


def test_the_student_starts_from_the_committed_polish_weights_and_says_how_to_remake_missing_ones(tmp_path,
                                                                                              monkeypatch):
    polish = pilot.sys.modules['studies.zoo.polish']
    records, cache = tmp_path / 'records', tmp_path / 'cache'  # a new machine: committed records, an empty cache
    monkeypatch.setattr(polish, 'RECORDS', records)
    monkeypatch.setattr(pilot, 'POLISH', cache)
    for k, (before, after) in enumerate([(85.0, 85.9), (85.9, 85.95)], start=1):
        (records / 'm').mkdir(parents=True, exist_ok=True)
        (records / 'm' / f'round{k}.json').write_text(pilot.json.dumps(
            {'top1_before': before, 'top1_after': after, 'transfer_delta': after - before, 'p_value': 0.5,
             'gains': 10, 'losses': 5}))
    with pytest.raises(SystemExit, match=r'polish round 1 are not on this machine: run `python -m studies.zoo.polish '
                                         r'--only m --rebuild` first'):
        pilot.plateaued('m')
    (records / 'm' / 'round1').mkdir()
    (records / 'm' / 'round1' / 'model.safetensors').write_bytes(b'w')
    student = pilot.plateaued('m')
    assert (student.prefix, student.export, student.ce_control) == ('m_r1', records / 'm' / 'round1',
                                                                    records / 'm' / 'round2')

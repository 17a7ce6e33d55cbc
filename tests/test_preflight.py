"""Preflight (timm_gkt/preflight.py) through the CLI: a table of bad inputs, one parametrised test per class.

Each row asserts exit code 2, one ``error:`` line on stderr (the last line) with the expected words, no traceback,
and that nothing was written: no output folder, no change to an existing run folder. Tiny models exported on the
spot, no training: the quick part of the suite.
"""
import json
import os
from pathlib import Path

import pytest

from datasets_fixture import fashion_folder, fashion_hfds, fashion_hfds_labels  # noqa: F401
from timm_gkt import train
from timm_gkt.transfer.rundir import RUN_STATE, SCHEDULER_STATE

FAST = ['--train-subset', '256', '--eval-subset', '64', '-b', '64', '--epochs', '1']


@pytest.fixture(scope='module')
def models(tmp_path_factory, export_tiny):
    root = tmp_path_factory.mktemp('models')
    student, student_spec = export_tiny(root / 'student', seed=0)
    _, teacher_spec = export_tiny(root / 'teacher', seed=1)
    _, other_labels = export_tiny(root / 'other_labels', seed=2, label_names=[f'class{i}' for i in range(10)])
    _, hundred = export_tiny(root / 'hundred', seed=3, label_names=[f'class{i}' for i in range(100)])
    (root / 'no_config').mkdir()
    return {'student': student_spec, 'teacher': teacher_spec, 'other_labels': other_labels, 'hundred': hundred,
            'no_config': f'local-dir:{root / "no_config"}', 'student_model': student,
            **broken_models(root, export_tiny)}


def broken_models(root: Path, export_tiny) -> dict:
    """Models a transfer cannot use although their folders load: NaN weights, no head, 4 input channels,
    no label names; and a copy of the student under another name."""
    import shutil

    import timm
    import torch
    from timm.models import save_for_hf
    from conftest import FASHION_LABELS, tiny_vit
    nan = tiny_vit(seed=5)
    with torch.no_grad():
        nan.head.weight[0, :3] = float('nan')
    headless = tiny_vit(seed=6)
    headless.reset_classifier(0)
    four = timm.create_model('test_vit', num_classes=10, in_chans=4, img_size=28, patch_size=7, depth=1)
    save_for_hf(four, root / 'four_channels', model_config={'label_names': list(FASHION_LABELS)},
                data_config={'input_size': (4, 28, 28), 'mean': (0.5,) * 4, 'std': (0.5,) * 4, 'crop_pct': 1.0},
                safe_serialization=True)
    save_for_hf(tiny_vit(seed=7), root / 'unnamed', data_config={'input_size': (1, 28, 28), 'mean': (0.286,),
                                                                 'std': (0.353,), 'crop_pct': 1.0},
                safe_serialization=True)
    shutil.copytree(root / 'student', root / 'student_copy')
    return {'nan': export_tiny(root / 'nan', nan)[1], 'headless': export_tiny(root / 'headless', headless)[1],
            'four_channels': f'local-dir:{root / "four_channels"}', 'unnamed': f'local-dir:{root / "unnamed"}',
            'student_copy': f'local-dir:{root / "student_copy"}'}


@pytest.fixture(autouse=True)
def no_compute(monkeypatch):
    """Any evaluation or training here is a failure: bad input must be refused before both."""
    def evaluated(*args, **kwargs):
        raise AssertionError('preflight let a bad input reach the evaluation')
    monkeypatch.setattr('timm_gkt.transfer.engine.measure_baseline', evaluated)


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob('*')}


def refuse(tmp_path, data_dir, models, capsys, *argv, student=None, teachers='teacher', expect_code=2):
    """Run the CLI on bad input; assert the refusal and return its error line."""
    out = tmp_path / 'out'
    base = ['--model', student or models['student'], '--data-dir', str(data_dir), '--output', str(out),
            '--experiment', 'run', *FAST]
    if teachers:
        base += ['--teachers', ','.join(models.get(t, t) for t in teachers.split(','))]
    before = tree(tmp_path)
    try:
        code = train.main([*base, *argv])
    except SystemExit as e:  # argparse: usage errors and bad config files
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == expect_code, err
    assert 'Traceback' not in err
    assert [line for line in lines if 'error:' in line] == [lines[-1]] and lines[-1].startswith('error: ')
    assert tree(tmp_path) == before and not (out / 'run').exists()
    return lines[-1]


# ----------------------------------------------------------------------------- flags and configs

@pytest.mark.parametrize('argv, words', [
    (['--train-subset', '-5'], '--train-subset -5 is negative; give a number of images, or 0 to use them all'),
    (['--eval-subset', '-1'], '--eval-subset -1 is negative'),
    (['-b', '0'], '--batch-size 0 is zero;'),
    (['--epochs', '0'], '--epochs 0 is zero;'),
    (['--grad-accum-steps', '0'], '--grad-accum-steps 0 is zero; use 1'),
    (['--transfer-method', 'xekl-mcl', '--mcl-interval', '0'], '--mcl-interval 0 is zero;'),
    (['--lr', '0'], '--lr 0.0 is not positive'),
    (['--transfer-method', 'kl', '--dp-mode', 'unsupervised'], '--dp-mode applies to --transfer-method kldp only'),
    (['--smoothing', '0.1'], '--smoothing 0.1 smooths mixup/cutmix targets, and neither is on'),
    (['--hub-create-pr', '--hub-revision', 'dev', '--push-to-hub', 'alice/x'], 'A pull request is always opened'),
    (['--transfer-method', 'magic'], "argument --transfer-method: invalid choice: 'magic'"),
    (['--epochs', 'two'], "argument --epochs: invalid int value: 'two'"),
])
def test_bad_flags(argv, words, tmp_path, data_dir, models, capsys):
    assert words in refuse(tmp_path, data_dir, models, capsys, *argv)


def test_a_method_without_its_teacher(tmp_path, data_dir, models, capsys):
    assert 'needs a teacher' in refuse(tmp_path, data_dir, models, capsys, '--transfer-method', 'kl', teachers='')


@pytest.mark.parametrize('text, words', [
    ('epochs: 1\nteachrs: x\n', 'unknown keys in'),
    ('epochs: [1\n', 'is not valid YAML'),
    ('epochs: 1.5\n', 'epochs in'),
])
def test_bad_config_files(text, words, tmp_path, data_dir, models, capsys):
    cfg = tmp_path / 'job.yaml'
    cfg.write_text(text)
    assert words in refuse(tmp_path, data_dir, models, capsys, '-c', str(cfg))


# ----------------------------------------------------------------------------- the output folder

@pytest.mark.parametrize('layout', ['output_is_a_file', 'output_inside_a_file', 'not_writable'])
def test_bad_output_folders(layout, tmp_path, data_dir, models, capsys, monkeypatch):
    if layout == 'output_is_a_file':
        (tmp_path / 'out').write_text('a file')
        words = f'{tmp_path / "out"} is a file, so the run folder'
    elif layout == 'output_inside_a_file':
        (tmp_path / 'out').write_text('a file')
        words = f'{tmp_path / "out"} is a file'
    else:
        real_access = os.access
        monkeypatch.setattr(os, 'access', lambda p, m: Path(p) != tmp_path and real_access(p, m))
        words = f'cannot write to {tmp_path} '
    argv = ['--output', str(tmp_path / 'out' / 'deeper')] if layout == 'output_inside_a_file' else []
    assert words in refuse(tmp_path, data_dir, models, capsys, *argv)


# ----------------------------------------------------------------------------- resume checkpoints

def checkpoint(tmp_path, student: dict | None, method='kldp', **extra_files) -> Path:
    ckpt = tmp_path / 'earlier' / 'run' / 'checkpoints' / 'stage0-epoch1'
    ckpt.mkdir(parents=True)
    (ckpt / SCHEDULER_STATE).write_text('{}')
    for name, text in extra_files.items():
        (ckpt / name).write_text(text)
    (ckpt / RUN_STATE).write_text(json.dumps({'history': [], 'stage': 0, 'epoch': 1, 'student': student,
                                              'method': method}))
    return ckpt


@pytest.mark.parametrize('case, words', [
    ('missing', 'no such folder'),
    ('not_a_checkpoint', 'is not a complete checkpoint of this trainer (no run_state.json'),
    ('other_architecture', 'continues a test_resnet student (10 classes), but --model'),
    ('other_weights', 'continues other initial weights of test_vit'),
    ('other_method', 'belongs to a --transfer-method xekl run, not kldp'),
    ('pickled', 'was written by an older timm_gkt (pickled timm_gkt_extra.pt, which is not loaded)'),
])
def test_bad_resume_checkpoints(case, words, tmp_path, data_dir, models, capsys):
    from timm_gkt.transfer.rundir import student_fingerprint
    own = student_fingerprint(models['student_model'])
    if case == 'missing':
        ckpt = tmp_path / 'earlier' / 'run' / 'checkpoints' / 'stage9-epoch9'
    elif case == 'not_a_checkpoint':
        ckpt = tmp_path / 'earlier' / 'run' / 'checkpoints' / 'stage0-epoch1'
        ckpt.mkdir(parents=True)
        (ckpt / 'model.safetensors').write_text('')
    elif case == 'other_architecture':
        ckpt = checkpoint(tmp_path, {**own, 'architecture': 'test_resnet'})
    elif case == 'other_weights':
        ckpt = checkpoint(tmp_path, {**own, 'weights_sha256': '0' * 64})
    elif case == 'other_method':
        ckpt = checkpoint(tmp_path, own, method='xekl')
    else:
        ckpt = checkpoint(tmp_path, None, **{'timm_gkt_extra.pt': 'pickle'})
        (ckpt / SCHEDULER_STATE).unlink()
    line = refuse(tmp_path, data_dir, models, capsys, '--resume', str(ckpt))
    assert line.startswith(f'error: --resume {ckpt}') and words in line


# ----------------------------------------------------------------------------- models and label spaces

@pytest.mark.parametrize('student, teachers, words', [
    ('test_vitt', 'teacher', "Unknown model 'test_vitt': not a timm architecture. Did you mean"),
    ('student', 'local-dir:/nonexistent/teacher', 'Model folder /nonexistent/teacher does not exist'),
    ('student', 'no_config', 'has no config.json'),
    ('student', 'hundred', 'predicts 100 classes but the student predicts 10'),
    ('student', 'other_labels', 'has other label names than the student'),
])
def test_bad_models_and_label_spaces(student, teachers, words, tmp_path, data_dir, models, capsys):
    assert words in refuse(tmp_path, data_dir, models, capsys, student=models.get(student, student),
                           teachers=teachers)


@pytest.mark.parametrize('dry_run', [True, False])
@pytest.mark.parametrize('student, teachers, words', [
    ('student', 'nan', 'error: teacher nan has 3 non-finite values (NaN or inf) in its weights'),
    ('nan', 'teacher', 'error: student nan has 3 non-finite values (NaN or inf) in its weights'),
    ('student', 'headless', 'error: teacher headless has no classifier head (num_classes=0): its outputs are pooled '
                            'features, not class logits'),
    ('headless', 'teacher', 'error: student headless has no classifier head (num_classes=0)'),
    ('student', 'four_channels', 'error: teacher four_channels reads 4-channel images, and images can only be given '
                                 '1 (grey) or 3 (RGB) channels'),
    ('student', 'unnamed', 'error: teacher unnamed has no label names, so the class order of teacher unnamed cannot '
                           'be checked against the student\'s;'),
    ('student', 'student', 'is the student itself, which has no knowledge to add to itself'),
    ('student', 'teacher,teacher', 'is listed twice (also as local-dir:'),
    ('student', 'student_copy', 'error: teacher student_copy has exactly the student\'s weights'),
])
def test_teachers_are_checked_as_hard_as_students(student, teachers, words, dry_run, tmp_path, data_dir, models,
                                                  capsys):
    """Each was accepted before (a NaN teacher trained to the end, an unnamed one with a warning, a 4-channel one
    passed the dry run and failed mid-run as an unexpected error, repeats were dropped without a word); now
    each is one sentence before anything is evaluated, the dry run included (local weights are loaded for it)."""
    line = refuse(tmp_path, data_dir, models, capsys, *(['--dry-run'] if dry_run else []),
                  student=models.get(student, student), teachers=teachers)
    assert line.startswith(words) if words.startswith('error:') else words in line


def test_an_unnamed_teacher_is_accepted_on_trust_with_one_warning(tmp_path, data_dir, models, capsys):
    code = train.main(['--model', models['student'], '--teachers', models['unnamed'], '--data-dir', str(data_dir),
                       '--output', str(tmp_path / 'out'), *FAST, '--dry-run', '--trust-label-order'])
    out = capsys.readouterr().out
    assert code == 0
    assert 'warning: teacher unnamed has no label names; its 10 classes are taken to be in the same order' in out


@pytest.mark.parametrize('damage, words', [
    ('config', 'config.json is not valid JSON'),
    ('weights', 'model.safetensors is truncated or damaged'),
])
@pytest.mark.parametrize('role', ['student', 'teacher'])
def test_broken_model_files(damage, words, role, tmp_path, data_dir, models, capsys):
    import shutil
    folder = tmp_path / 'broken'
    shutil.copytree(Path(models['teacher'].split(':', 1)[1]), folder)
    if damage == 'config':
        (folder / 'config.json').write_text('{"architecture": ')
    else:
        with open(folder / 'model.safetensors', 'r+b') as f:
            f.truncate(1000)
    spec = f'local-dir:{folder}'
    line = refuse(tmp_path, data_dir, models, capsys, student=spec if role == 'student' else None,
                  teachers=spec if role == 'teacher' else 'teacher')
    assert words in line


def test_an_hfds_label_column_under_another_name(tmp_path, tmp_path_factory, data_dir, models, capsys,
                                                 fashion_hfds_labels):
    cache = tmp_path_factory.mktemp('datasets_cache')  # the datasets library's own cache is not the run's to keep
    line = refuse(tmp_path, data_dir, models, capsys, '--dataset', f'hfds/{fashion_hfds_labels}', '--data-dir',
                  str(cache))
    assert line == (f'error: hfds/{fashion_hfds_labels} split train has no label column \'label\' (its columns: '
                    f'image, labels); name the label column with --target-key labels')
    line = refuse(tmp_path, data_dir, models, capsys, '--target-key', 'labels')
    assert line == ('error: --target-key names columns of hfds/ datasets; torch/fashion_mnist has none, so remove it')


# ----------------------------------------------------------------------------- the schedule

@pytest.mark.parametrize('argv, words', [
    (['--train-subset', '10'], '10 transfer images make no full batch of 64, so nothing would be trained'),
    (['--transfer-method', 'xekl-mcl', '--mcl-interval', '5'],
     '--mcl-interval 5 is more than the 4 optimizer updates of a stage, so the slow weights would never move; '
     'use --mcl-interval 4 or less'),
    (['--transfer-method', 'xekl-mcl', '--mcl-interval', '3', '--grad-accum-steps', '2'],
     '--mcl-interval 3 is more than the 2 optimizer updates'),
])
def test_runs_that_would_not_train(argv, words, tmp_path, data_dir, models, capsys):
    assert words in refuse(tmp_path, data_dir, models, capsys, *argv)


def test_good_input_passes_the_dry_run_and_writes_nothing(tmp_path, data_dir, models, capsys):
    out = tmp_path / 'out'
    code = train.main(['--model', models['student'], '--teachers', models['teacher'], '--data-dir', str(data_dir),
                       '--output', str(out), '--experiment', 'run', *FAST, '--grad-accum-steps', '2', '--dry-run'])
    printed = capsys.readouterr().out
    assert code == 0 and not out.exists()
    assert 'batch 128 (64 x 2 accumulated), lr 0.001 (absolute: not scaled by the batch)' in printed

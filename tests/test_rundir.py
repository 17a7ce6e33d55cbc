"""The run folder (timm_gkt/rundir.py): output checks, checkpoints without pickle, what a resume may continue."""
import copy
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from timm_gkt.transfer.rundir import (
    LEGACY_EXTRA, MCL_SLOW_WEIGHTS, RUN_STATE, SCHEDULER_STATE, RunState, check_checkpoint, check_resume_matches,
    check_run_folder, latest_checkpoint, load_checkpoint, save_checkpoint, student_fingerprint, write_summary,
)
from timm_gkt.errors import RunFolderError

PACKAGE = Path(__file__).resolve().parent.parent / 'timm_gkt'


class BNNet(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.num_classes = 3

    def forward(self, x):
        return self.bn(self.fc(x))


# ----------------------------------------------------------------------------- fingerprints

def test_fingerprint_is_the_same_for_a_copy_and_changes_with_any_value_or_buffer():
    model = BNNet()
    fp = student_fingerprint(model)
    assert fp == student_fingerprint(copy.deepcopy(model))
    assert fp['architecture'] == 'BNNet' and fp['num_classes'] == 3 and re.fullmatch(r'[0-9a-f]{64}', fp['weights_sha256'])
    for change in (lambda m: m.fc.weight.data[0, 0].add_(1e-6), lambda m: m.bn.running_mean.add_(1.0),
                   lambda m: m.bn.num_batches_tracked.add_(1)):
        other = copy.deepcopy(model)
        change(other)
        assert student_fingerprint(other)['weights_sha256'] != fp['weights_sha256']
    assert student_fingerprint(model.double())['weights_sha256'] != fp['weights_sha256']  # same values, other dtype


def test_fingerprint_names_the_timm_architecture():
    import timm
    model = timm.create_model('test_vit', num_classes=5, img_size=16, patch_size=8, depth=1)
    assert student_fingerprint(model)['architecture'] == 'test_vit'
    assert student_fingerprint(model)['num_classes'] == 5


# ----------------------------------------------------------------------------- the output folder

def test_run_folder_checks_pass_and_create_nothing(tmp_path):
    check_run_folder(tmp_path / 'out' / 'run')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('layout', ['output_is_a_file', 'output_below_a_file', 'run_folder_is_a_file'])
def test_a_file_in_the_way_of_the_run_folder_is_refused(layout, tmp_path):
    blocker = {'output_is_a_file': tmp_path / 'out', 'output_below_a_file': tmp_path / 'x',
               'run_folder_is_a_file': tmp_path / 'out' / 'run'}[layout]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text('not a folder')
    run_dir = tmp_path / 'x' / 'out' / 'run' if layout == 'output_below_a_file' else tmp_path / 'out' / 'run'
    with pytest.raises(RunFolderError, match=f'^{re.escape(str(blocker))} is a file, so the run folder'):
        check_run_folder(run_dir)


def test_an_unwritable_output_folder_is_refused(tmp_path, monkeypatch):
    import os
    (tmp_path / 'out').mkdir()
    real_access = os.access
    monkeypatch.setattr(os, 'access', lambda p, mode: False if Path(p) == tmp_path / 'out' else real_access(p, mode))
    with pytest.raises(RunFolderError, match='cannot write to .*out .*give --output a folder you can write to'):
        check_run_folder(tmp_path / 'out' / 'run')


# ----------------------------------------------------------------------------- resume checkpoints

def fake_checkpoint(run_dir: Path, name='stage0-epoch1', state: dict | None = None, **files) -> Path:
    ckpt = run_dir / 'checkpoints' / name
    ckpt.mkdir(parents=True)
    for filename, text in files.items():
        (ckpt / filename.replace('__', '.')).write_text(text)
    if state is not None:
        (ckpt / RUN_STATE).write_text(json.dumps(state))
    return ckpt


STATE = {'history': [{'epoch': 1}], 'stage': 0, 'epoch': 1,
         'student': {'architecture': 'BNNet', 'num_classes': 3, 'weights_sha256': 'a' * 64}, 'method': 'kldp'}


def test_a_complete_checkpoint_gives_its_run_state(tmp_path):
    ckpt = fake_checkpoint(tmp_path, state=STATE, scheduler__json='{}')
    state = check_checkpoint(ckpt)
    assert (state.stage, state.epoch, state.method) == (0, 1, 'kldp') and state.student == STATE['student']


@pytest.mark.parametrize('case, message', [
    ('missing', 'no such folder; give a folder RUN/checkpoints/stage<k>-epoch<e>'),
    ('not_in_checkpoints', 'is not inside a run\'s checkpoints/ folder'),
    ('no_run_state', 'is not a complete checkpoint of this trainer (no run_state.json'),
    ('legacy', 'was written by an older timm_gkt (pickled timm_gkt_extra.pt, which is not loaded)'),
    ('damaged', 'run_state.json is damaged'),
])
def test_a_folder_that_is_not_a_usable_checkpoint_is_refused(case, message, tmp_path):
    if case == 'missing':
        ckpt = tmp_path / 'checkpoints' / 'stage0-epoch1'
    elif case == 'not_in_checkpoints':
        ckpt = tmp_path / 'somewhere'
        ckpt.mkdir()
        (ckpt / RUN_STATE).write_text(json.dumps(STATE))
    elif case == 'no_run_state':
        ckpt = fake_checkpoint(tmp_path, scheduler__json='{}')
    elif case == 'legacy':
        ckpt = fake_checkpoint(tmp_path, state=STATE, **{LEGACY_EXTRA.replace('.', '__'): 'pickle'})
    else:
        ckpt = fake_checkpoint(tmp_path, scheduler__json='{}', run_state__json='{"history": [')
    with pytest.raises(RunFolderError) as info:
        check_checkpoint(ckpt)
    assert str(info.value).startswith(f'--resume {ckpt}') and message in str(info.value)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('field, value, message', [
    ('architecture', 'test_vit', 'continues a BNNet student (3 classes), but --model S is a test_vit (3 classes)'),
    ('num_classes', 10, 'continues a BNNet student (3 classes), but --model S is a BNNet (10 classes)'),
    ('weights_sha256', 'b' * 64, 'continues other initial weights of BNNet (sha256 aaaaaaaaaaaa) than --model S '
                                 '(bbbbbbbbbbbb)'),
    ('method', 'xekl', 'belongs to a --transfer-method kldp run, not xekl'),
])
def test_a_checkpoint_of_another_student_or_method_is_refused(field, value, message):
    state = RunState.load(STATE)
    student, method = dict(STATE['student']), 'kldp'
    if field == 'method':
        method = value
    else:
        student[field] = value
    check_resume_matches(Path('C'), state, STATE['student'], 'S', 'kldp')  # the same student and method: fine
    with pytest.raises(RunFolderError, match=re.escape(message)):
        check_resume_matches(Path('C'), state, student, 'S', method)


def test_a_checkpoint_that_does_not_record_its_student_is_refused():
    state = RunState.load({**STATE, 'student': None})
    with pytest.raises(RunFolderError, match='does not record which student it continues'):
        check_resume_matches(Path('C'), state, STATE['student'], 'S', 'kldp')


def test_latest_checkpoint_skips_incomplete_ones(tmp_path):
    import os
    done = fake_checkpoint(tmp_path, 'stage0-epoch1', state=STATE)
    half = fake_checkpoint(tmp_path, 'stage0-epoch2', scheduler__json='{}')
    os.utime(done, (1, 1))
    assert latest_checkpoint(tmp_path) == done and half.exists()


# ----------------------------------------------------------------------------- checkpoints without pickle

def test_timm_gkt_never_unpickles_a_file():
    offenders = [f'{p.name}:{i + 1}' for p in PACKAGE.rglob('*.py') for i, line in enumerate(p.read_text().splitlines())
                 if 'torch.load(' in line or 'weights_only=False' in line or 'pickle' in line.split('#')[0]
                 and 'import' in line]
    assert offenders == []


def mcl_setup(seed=0):
    from accelerate import Accelerator
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from timm_gkt.transfer.tasks import XEKLMCLTask
    from tinynets import ConstantLogits
    accelerator = Accelerator(cpu=True)
    student = BNNet(seed)
    task = XEKLMCLTask(student, ConstantLogits([0.0, 1.0, 2.0]), momentum=0.5, interval=1)
    optimizer = create_optimizer_v2(student, opt='momentum', lr=0.1, momentum=0.9)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=2, updates_per_epoch=3,
                                       step_on_epochs=False)
    student, optimizer = accelerator.prepare(student, optimizer)
    task.trainable_module = student
    return accelerator, task, optimizer, scheduler


def test_checkpoint_round_trip_restores_scheduler_and_slow_weights_from_json_and_safetensors(tmp_path):
    accelerator, task, optimizer, scheduler = mcl_setup()
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    task.train()
    for step in (1, 2):
        task(x, y)['loss'].backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step_update(num_updates=step)
        task.after_optimizer_step(step)
    state = RunState(history=[{'epoch': 1}], stage=1, epoch=1, student={'architecture': 'BNNet'}, method='xekl-mcl')
    save_checkpoint(accelerator, tmp_path, 1, 1, scheduler, task, state, keep=2)
    ckpt = tmp_path / 'checkpoints' / 'stage1-epoch1'
    ours = {SCHEDULER_STATE, MCL_SLOW_WEIGHTS, RUN_STATE}
    assert ours <= {p.name for p in ckpt.iterdir()} and not (ckpt / LEGACY_EXTRA).exists()
    assert json.loads((ckpt / SCHEDULER_STATE).read_text())['t_initial'] == 6
    assert RunState.read(ckpt) == state
    slow = {k: v.clone() for k, v in task.get_trainable_module(ema=True).state_dict().items()}
    fast = {k: v.clone() for k, v in task.trainable_module.state_dict().items()}
    fresh_accelerator, fresh_task, _, fresh_scheduler = mcl_setup(seed=1)
    assert not torch.equal(fresh_task.get_trainable_module(ema=True).module.fc.weight, slow['module.fc.weight'])
    load_checkpoint(fresh_accelerator, ckpt, fresh_scheduler, fresh_task)
    restored = fresh_task.get_trainable_module(ema=True).state_dict()
    assert all(torch.equal(restored[k], v) for k, v in slow.items())
    assert all(torch.equal(fresh_task.trainable_module.state_dict()[k], v) for k, v in fast.items())
    assert not torch.equal(slow['module.fc.weight'], fast['fc.weight'])  # the two copies really are different
    assert fresh_scheduler.state_dict() == json.loads(json.dumps(scheduler.state_dict()))


def test_a_checkpoint_written_again_never_mixes_old_and_new_files(tmp_path):
    accelerator, task, optimizer, scheduler = mcl_setup()
    ckpt = tmp_path / 'checkpoints' / 'stage0-epoch1'
    ckpt.mkdir(parents=True)
    (ckpt / 'stale.bin').write_text('from an abandoned run')
    save_checkpoint(accelerator, tmp_path, 0, 1, scheduler, task, RunState(), keep=0)
    assert not (ckpt / 'stale.bin').exists() and (ckpt / RUN_STATE).is_file()


def test_summary_is_rewritten_whole(tmp_path):
    path = tmp_path / 'summary.csv'
    write_summary(path, [{'stage': 0, 'epoch': 1, 'top1': 90.5}, {'stage': 0, 'epoch': 2, 'top1': 91.0}])
    write_summary(path, [{'stage': 0, 'epoch': 1, 'top1': 90.5}])
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[1].split(',')[:2] == ['0', ''] and '90.5' in lines[1]
    assert [p.name for p in tmp_path.iterdir()] == ['summary.csv']

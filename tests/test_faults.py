"""The fault suite: runs killed with SIGKILL at chosen points and resumed, a forced NaN, a full disk at export.

A sequential two-teacher KL+DP run on the micro-zoo (BatchNorm student) is the reference. A forked copy of the
test process runs the same job and kills itself at one point (inside a stage, while a checkpoint is being saved,
between stages, while the export is being written); ``--resume auto`` must then end with the reference's
results.json metrics and bit-identical weights. Forking spares each run a fresh ``import torch``.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from timm_gkt import train
from timm_gkt.cli import boundary
from timm_gkt.transfer import engine

pytestmark = pytest.mark.slow
FLAGS = ['--train-subset', '128', '--eval-subset', '100', '-b', '32', '--epochs', '2', '--seed', '5',
         '--checkpoint-hist', '10']


def argv(zoo: Path, data_dir: Path, out: Path, experiment: str, *extra: str, teachers=('q_mlp', 'q_vit')) -> list:
    return ['--model', f'local-dir:{zoo / "q_cnn"}', '--teachers', ','.join(f'local-dir:{zoo / t}' for t in teachers),
            '--data-dir', str(data_dir), '--output', str(out), '--experiment', experiment, *FLAGS, *extra]


def comparable(results: dict) -> dict:
    """results.json without what honestly differs between two runs of the same job: the throughput."""
    r = json.loads(json.dumps(results))
    for row in r['epochs']:
        row.pop('img_per_s')
    return r


def weights(run_dir: Path) -> dict:
    files = [run_dir / 'export' / 'model.safetensors', *sorted((run_dir / 'stages').glob('*.safetensors'))]
    return {f'{f.parent.name}/{f.name}/{k}': v for f in files for k, v in load_file(str(f)).items()}


def assert_same_run(run_dir: Path, reference: Path):
    assert comparable(json.loads((run_dir / 'results.json').read_text())) == \
        comparable(json.loads((reference / 'results.json').read_text()))
    ours, theirs = weights(run_dir), weights(reference)
    assert ours.keys() == theirs.keys() and len(ours) > 0
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # bit-identical


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Every run of this module at one intra-op thread, the forked children included: a child forked while
    the OpenMP pool of an earlier multi-threaded op is alive hangs at its first parallel op (libgomp is not
    fork-safe), and the killed, resumed and reference runs must do the same arithmetic to be bit-identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def reference(micro_zoo, data_dir, tmp_path_factory):
    """The uninterrupted run, recording each stage's frozen student."""
    out = tmp_path_factory.mktemp('faults')
    frozen, real = [], engine.stage_frozen_models

    def recording(*args, **kwargs):
        models = real(*args, **kwargs)
        frozen.append({k: v.clone() for k, v in models.frozen_student.model.state_dict().items()})
        return models
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, 'stage_frozen_models', recording)
        assert train.main(argv(micro_zoo, data_dir, out, 'reference')) == 0
    return out, out / 'reference', frozen


def test_stage_two_distils_from_stage_one_result(reference, micro_zoo):
    """Sequential KL+DP: stage 1's frozen student is the initial student, stage 2's is stage 1's result."""
    _, run_dir, frozen = reference
    initial = load_file(str(micro_zoo / 'q_cnn' / 'model.safetensors'))
    stage0 = load_file(str(run_dir / 'stages' / 'stage0.safetensors'))
    assert len(frozen) == 2
    assert all(torch.equal(frozen[0][k], initial[k]) for k in initial)
    assert all(torch.equal(frozen[1][k], stage0[k]) for k in stage0)
    assert any(not torch.equal(stage0[k], initial[k]) for k in initial)  # stage 1 did change the student


# ----------------------------------------------------------------------------- kill -9 and resume

def kill_inside_a_stage():
    """SIGKILL after 2 batches of the second epoch of stage 1."""
    real, calls = engine.train_one_epoch, []

    class KillAfterTwo:
        def __init__(self, loader):
            self.loader = loader

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            for i, batch in enumerate(self.loader):
                if i == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield batch

    def train_one_epoch(accelerator, task, student, loader, *args, **kwargs):
        calls.append(1)
        return real(accelerator, task, student, KillAfterTwo(loader) if len(calls) == 2 else loader, *args, **kwargs)
    engine.train_one_epoch = train_one_epoch


def kill_while_saving_a_checkpoint():
    """SIGKILL when stage 2's first checkpoint has everything but run_state.json."""
    from timm_gkt.transfer import rundir
    real = rundir.write_text_atomic

    def write_text_atomic(path, text):
        if path.name == 'run_state.json' and path.parent.name == 'stage1-epoch1':
            os.kill(os.getpid(), signal.SIGKILL)
        real(path, text)
    rundir.write_text_atomic = write_text_atomic


def kill_between_stages():
    """SIGKILL right after stage 1's student was saved, before stage 2 starts."""
    real = engine.save_stage_result

    def save_stage_result(run_dir, index, state_dict):
        real(run_dir, index, state_dict)
        if index == 0:
            os.kill(os.getpid(), signal.SIGKILL)
    engine.save_stage_result = save_stage_result


def kill_while_exporting():
    """SIGKILL when the export's weights are written but the rest of the export is not."""
    from timm_gkt.transfer import rundir as export
    real = export.export_student

    def export_student(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    export.export_student = export_student


def run_killed(install_kill, args: list) -> int:
    """Run the CLI in a forked child that installs a kill point; the child's exit code (-9 when it was killed)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)  # no parallel region may reach the parent's OpenMP pool (see one_thread)
            install_kill()
            code = train.main(args)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize('install_kill, left_behind', [
    (kill_inside_a_stage, 'checkpoints/stage0-epoch1/run_state.json'),
    (kill_while_saving_a_checkpoint, 'checkpoints/stage1-epoch1/model.safetensors'),
    (kill_between_stages, 'stages/stage0.safetensors'),
    (kill_while_exporting, '.export.partial/model.safetensors'),
])
def test_killed_and_resumed_run_ends_identical(install_kill, left_behind, reference, micro_zoo, data_dir):
    out, reference_dir, _ = reference
    name = install_kill.__name__
    assert run_killed(install_kill, argv(micro_zoo, data_dir, out, name)) == -signal.SIGKILL
    run_dir = out / name
    assert (run_dir / left_behind).is_file()
    assert not (run_dir / 'export').exists() and not (run_dir / 'results.json').exists()
    if install_kill is kill_while_saving_a_checkpoint:
        assert not (run_dir / 'checkpoints' / 'stage1-epoch1' / 'run_state.json').exists()
    assert train.main(argv(micro_zoo, data_dir, out, name, '--resume', 'auto')) == 0
    assert_same_run(run_dir, reference_dir)
    assert not (run_dir / '.export.partial').exists()


def test_resume_with_another_student_is_refused(reference, micro_zoo, data_dir, capsys):
    out, run_dir, _ = reference
    ckpt = run_dir / 'checkpoints' / 'stage0-epoch1'
    # q_mlp as the student, so no longer among the teachers (a student that is also a teacher is refused first)
    args = argv(micro_zoo, data_dir, out, 'reference', '--resume', str(ckpt), teachers=('q_vit',))
    args[1] = f'local-dir:{micro_zoo / "q_mlp"}'
    assert train.main(args) == boundary.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err == (f'error: --resume {ckpt} continues a test_resnet student (10 classes), but --model '
                   f'local-dir:{micro_zoo / "q_mlp"} is a mixer_s16_224 (10 classes); resume with that run\'s '
                   f'--model, or start afresh without --resume')


def test_resume_in_the_middle_of_a_sequential_mcl_run(micro_zoo, data_dir, tmp_path):
    """XE-KL + MCL, two teachers: resumed from stage 2's first epoch, the slow weights come back from
    mcl_slow.safetensors and the run ends where the uninterrupted one did."""
    args = argv(micro_zoo, data_dir, tmp_path, 'mcl', '--transfer-method', 'xekl-mcl', '--mcl-interval', '1')
    assert train.main(args) == 0
    run_dir = tmp_path / 'mcl'
    shutil.copytree(run_dir, tmp_path / 'mcl-uninterrupted')
    ckpt = run_dir / 'checkpoints' / 'stage1-epoch1'
    assert (ckpt / 'mcl_slow.safetensors').is_file()
    assert train.main([*args, '--resume', str(ckpt)]) == 0
    assert_same_run(run_dir, tmp_path / 'mcl-uninterrupted')


# ----------------------------------------------------------------------------- failures during the run

def test_a_nan_loss_stops_the_run_naming_step_stage_and_checkpoint(micro_zoo, data_dir, tmp_path, monkeypatch,
                                                                   capsys):
    """Stage 1 (4 batches, 1 epoch) is fine; the third batch of stage 2 gives NaN."""
    from timm_gkt.transfer import tasks
    real, calls = tasks.kldp_loss, []

    def kldp_loss(*args, **kwargs):
        calls.append(1)
        loss, mask = real(*args, **kwargs)
        return (loss * float('nan') if len(calls) == 4 + 3 else loss), mask
    monkeypatch.setattr(tasks, 'kldp_loss', kldp_loss)
    code = train.main(argv(micro_zoo, data_dir, tmp_path, 'nan', '--epochs', '1'))
    err = capsys.readouterr().err.strip().splitlines()
    run_dir = tmp_path / 'nan'
    order = [p.name for p in sorted((run_dir / 'stages').glob('*'))]
    ckpt = run_dir / 'checkpoints' / 'stage0-epoch1'
    assert code == boundary.EXIT_ERROR and order == ['stage0.safetensors'] and len(calls) == 7
    assert err[-1].startswith('error: the loss became nan at step 3 (batch 3) of stage 2 [')
    assert err[-1].endswith(f'], epoch 1; the run stopped there and nothing was exported or pushed. Last good '
                            f'checkpoint: {ckpt}; continue from it with --resume {ckpt} and a lower --lr (or '
                            f'--clip-grad)')
    assert not (run_dir / 'export').exists() and not (run_dir / '.export.partial').exists()
    assert not (run_dir / 'results.json').exists()


def test_a_full_disk_during_export_leaves_no_export_and_the_run_can_finish(micro_zoo, data_dir, tmp_path,
                                                                           monkeypatch, capsys):
    from timm_gkt import hub

    def write_card(results, folder):
        (Path(folder) / 'README.md').write_text('half a card')
        raise OSError(errno.ENOSPC, 'No space left on device')
    args = argv(micro_zoo, data_dir, tmp_path, 'full', '--epochs', '1', teachers=('q_mlp',))
    with monkeypatch.context() as mp:
        mp.setattr(hub, 'write_card', write_card)
        code = train.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    run_dir = tmp_path / 'full'
    ckpt = run_dir / 'checkpoints' / 'stage0-epoch1'
    assert code == boundary.EXIT_ERROR
    assert err[-1] == (f'error: could not write the export to {run_dir / "export"} (No space left on device); '
                       f'nothing was exported or pushed and no partial export/ was left. Free space (or fix the '
                       f'folder) and continue with --resume {ckpt}')
    assert sorted(p.name for p in run_dir.iterdir()) == ['checkpoints', 'stages', 'summary.csv']
    # the advice works: resuming at the end trains nothing more and writes the export
    assert train.main([*args, '--resume', str(ckpt)]) == 0
    results = json.loads((run_dir / 'results.json').read_text())
    assert len(results['epochs']) == 1
    assert sorted(p.name for p in (run_dir / 'export').iterdir()) == ['README.md', 'args.yaml', 'config.json',
                                                                       'model.safetensors', 'plots', 'results.json']

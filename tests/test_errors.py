"""The CLI's error boundary (timm_gkt/cli/run.py main, timm_gkt/errors.py): one line and an exit code, never a
traceback unless asked for."""
import pytest

from timm_gkt import train
from timm_gkt.cli import run as run_module
from timm_gkt.errors import ConfigError
from timm_gkt.errors import NonFiniteLoss, TrainingFailed

ARGV = ['--model', 'local-dir:zoo/q_cnn', '--transfer-method', 'ce']


def run_raising(monkeypatch, capsys, error: BaseException, *extra):
    def run(config):
        raise error
    monkeypatch.setattr(run_module, 'run', run)
    code = train.main([*ARGV, *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize('error, code, line', [
    (ConfigError('--epochs 0 is zero; give the number of epochs per stage'), 2,
     'error: --epochs 0 is zero; give the number of epochs per stage'),
    (TrainingFailed('the loss became nan at step 3 (batch 3) of stage 1; lower --lr'), 1,
     'error: the loss became nan at step 3 (batch 3) of stage 1; lower --lr'),
    (RuntimeError('Error(s) in loading state_dict for VisionTransformer:\n\tMissing key(s): "head.weight"'), 1,
     'error: unexpected RuntimeError: Error(s) in loading state_dict for VisionTransformer:; rerun with --debug '
     '(or TIMM_GKT_DEBUG=1) for the traceback and report it'),
    (KeyError('x'), 1, "error: unexpected KeyError: 'x'; rerun with --debug (or TIMM_GKT_DEBUG=1) for the traceback "
                       "and report it"),
    (KeyboardInterrupt(), 130, 'error: interrupted; continue with the same flags and --resume auto (with '
                               '--experiment) or --resume CHECKPOINT'),
])
def test_every_failure_is_one_line_and_its_exit_code(error, code, line, monkeypatch, capsys):
    monkeypatch.delenv('TIMM_GKT_DEBUG', raising=False)
    got, err = run_raising(monkeypatch, capsys, error)
    assert got == code
    assert err == line + '\n'


@pytest.mark.parametrize('how', ['flag', 'env'])
def test_debug_shows_the_traceback_before_the_line(how, monkeypatch, capsys):
    monkeypatch.delenv('TIMM_GKT_DEBUG', raising=False)
    if how == 'env':
        monkeypatch.setenv('TIMM_GKT_DEBUG', '1')
    got, err = run_raising(monkeypatch, capsys, ValueError('boom'), *(['--debug'] if how == 'flag' else []))
    lines = err.strip().splitlines()
    assert got == 1
    assert lines[0] == 'Traceback (most recent call last):' and 'ValueError: boom' in lines
    assert lines[-1].startswith('error: unexpected ValueError: boom; rerun with --debug')


def test_debug_zero_shows_no_traceback(monkeypatch, capsys):
    monkeypatch.setenv('TIMM_GKT_DEBUG', '0')
    _, err = run_raising(monkeypatch, capsys, ValueError('boom'))
    assert 'Traceback' not in err and err.count('\n') == 1


def test_non_finite_loss_names_step_and_batch():
    assert str(NonFiniteLoss(float('nan'), 7, 4)) == 'the loss became nan at step 4 (batch 7)'
    assert str(NonFiniteLoss(float('inf'), 1, 1)) == 'the loss became inf at step 1 (batch 1)'
    # on a process whose own loss was fine, the message says where the problem was
    assert str(NonFiniteLoss(0.25, 2, 1)) == 'the loss became non-finite on another process at step 1 (batch 2)'

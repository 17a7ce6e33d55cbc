"""The launchers users are told to use (README "Launching"): exit codes 0/1/2/3/130 and one ``error:`` line for
1 and N processes (timm_gkt/cli/launch.py), and the process count in the run header with a warning when the
launcher asked for another (timm_gkt/cli/processes.py). On this CPU machine N processes are gloo processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from timm_gkt.cli.launch import outcome, split_argv
from timm_gkt.cli.processes import accelerate_launch_processes, describe_processes, requested_processes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
FAST = ['--train-subset', '256', '--eval-subset', '200', '-b', '32', '--epochs', '1', '--seed', '3', '--no-aug']
LAUNCHERS = {
    'python -m timm_gkt.train': ['-m', 'timm_gkt.train'],
    'python -m timm_gkt.launch --': ['-m', 'timm_gkt.launch', '--'],
    'python -m timm_gkt.launch --num-processes 2 --': ['-m', 'timm_gkt.launch', '--num-processes', '2', '--'],
}


def env(**extra) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith(('ACCELERATE_', 'TIMM_GKT_', 'WORLD_SIZE', 'RANK'))}
    return {**out, 'OMP_NUM_THREADS': '1', **extra}


def launch(launcher: str, *argv, timeout=600, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *LAUNCHERS[launcher], *argv], cwd=ROOT, env=env(**extra_env),
                          capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if 'error:' in line]


# ----------------------------------------------------------------------------- the outcome of N processes

def test_the_launchers_exit_code_and_line_follow_rank_0_then_the_first_failure():
    bad = {'code': 2, 'line': 'error: --epochs 0 is zero; give the number of epochs per stage'}
    assert outcome([2, 2], {0: bad, 1: bad}, set(), False) == (2, bad['line'])  # N alike: one line
    other = {'code': 1, 'line': 'error: the loss became nan at step 3'}
    assert outcome([-15, 1], {1: other}, {0}, False) == (1, other['line'])  # rank 1 failed, rank 0 was stopped
    assert outcome([3, 0], {}, set(), False) == (3, None)  # the gate refused: rank 0 decides
    assert outcome([0, 0], {}, set(), False) == (0, None)
    code, line = outcome([0, -9], {}, set(), False)
    assert code == 1 and line.startswith('error: process 1 of 2 was killed by signal 9 without a message;')
    code, line = outcome([-2, -2], {}, {0, 1}, True)
    assert code == 130 and line.startswith('error: interrupted; continue with the same flags and --resume auto')
    assert split_argv(['--num-processes', '2', '--', '--model', 'x']) == (['--num-processes', '2'], ['--model', 'x'])
    assert split_argv(['--model', 'x']) == ([], ['--model', 'x'])


# ----------------------------------------------------------------------------- the process count

def test_the_count_asked_for_comes_from_the_launcher():
    assert requested_processes({}) == (None, '')
    assert requested_processes({'TIMM_GKT_LAUNCH_PROCESSES': '2'}) == (2, 'timm_gkt.launch')
    assert requested_processes({'WORLD_SIZE': '4'}) == (4, 'the launcher (WORLD_SIZE)')
    line = ['/venv/bin/python', '/venv/bin/accelerate', 'launch', '--num_processes', '2', 'timm_gkt/train.py',
            '--model', 'x', '--num_processes', '7']  # the script's own flags are not Accelerate's
    assert requested_processes({'ACCELERATE_DYNAMO_BACKEND': 'NO'}, line) == (2, 'accelerate launch')
    assert accelerate_launch_processes(['python', '-m', 'accelerate.commands.launch', 'train.py']) == 1
    assert accelerate_launch_processes(['python', 'train.py']) is None


def test_the_header_names_the_processes_and_warns_when_they_differ():
    import torch
    from types import SimpleNamespace
    one = SimpleNamespace(num_processes=1, device=torch.device('cpu'), state=SimpleNamespace(backend=None))
    assert describe_processes(one, (None, '')) == ['processes: 1 (cpu)']
    lines = describe_processes(one, (2, 'accelerate launch'))
    assert lines[1] == ('warning: accelerate launch was asked for 2 processes but 1 is running; on a machine without '
                        'GPUs accelerate launch starts several only with --multi_gpu, or use python -m '
                        'timm_gkt.launch --num-processes 2 -- ...')


@pytest.mark.slow
def test_accelerate_launch_without_multi_gpu_is_warned_about(tmp_path, micro_zoo, data_dir):
    """The issue's case: accelerate launch --num_processes 2 on a CPU machine runs one process; it says so now."""
    proc = subprocess.run([sys.executable, '-m', 'accelerate.commands.launch', '--num_processes', '2',
                           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
                           'timm_gkt/train.py', '--model', f'local-dir:{micro_zoo / "q_cnn"}', '--transfer-method',
                           'ce', '--data-dir', str(data_dir), '--output', str(tmp_path), *FAST, '--dry-run'],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'processes: 1 (cpu)\n' in proc.stdout
    assert 'warning: accelerate launch was asked for 2 processes but 1 is running' in proc.stdout


# ----------------------------------------------------------------------------- each documented command

@pytest.mark.slow
@pytest.mark.parametrize('launcher', list(LAUNCHERS))
@pytest.mark.parametrize('bad, words', [
    (['--epochs', '0'], 'error: --epochs 0 is zero; give the number of epochs per stage'),  # a flag
    (['--val-split', 'nope'], "error: torch/fashion_mnist has the splits train and test, not 'nope'"),  # the data
    (['--epochs', 'two'], "error: argument --epochs: invalid int value: 'two'"),  # argparse
])
def test_bad_input_through_each_launcher_exits_2_with_one_error_line(launcher, bad, words, tmp_path, micro_zoo,
                                                                     data_dir):
    proc = launch(launcher, '--model', f'local-dir:{micro_zoo / "q_cnn"}', '--teachers',
                  f'local-dir:{micro_zoo / "q_mlp"}', '--data-dir', str(data_dir), '--output', str(tmp_path / 'out'),
                  '--experiment', 'run', *FAST, *bad)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    assert [line for line in error_lines(proc.stderr)] == [proc.stderr.strip().splitlines()[-1]]
    assert proc.stderr.strip().splitlines()[-1].startswith(words)
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
@pytest.mark.parametrize('launcher', ['python -m timm_gkt.launch --', 'python -m timm_gkt.launch --num-processes 2 --'])
def test_a_run_the_gate_refuses_exits_3_through_the_launcher(launcher, tmp_path, micro_zoo, data_dir):
    """What the CI example relies on: no significant improvement = exit 3, the job succeeds and pushes nothing."""
    from fakehub import FakeHub
    from hubkit import ALICE, TOKEN
    with FakeHub([ALICE]) as hub:
        proc = launch(launcher, '--model', f'local-dir:{micro_zoo / "q_vit"}', '--teachers',
                      f'local-dir:{micro_zoo / "q_mlp"}', '--data-dir', str(data_dir), '--output', str(tmp_path),
                      '--experiment', 'job', *FAST, '--push-to-hub', 'alice/job', '--push-min-delta', '100',
                      HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / 'hf_home'), HF_TOKEN=TOKEN,
                      HF_HUB_DISABLE_TELEMETRY='1')
        assert not any('commit' in c for c in hub.calls())
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == []
    results = json.loads((tmp_path / 'job' / 'results.json').read_text())
    n = 2 if '--num-processes 2' in launcher else 1
    assert (results['hyperparameters']['num_processes'], results['hyperparameters']['num_processes_requested']) == (n, n)
    assert f'processes: {n} (' in proc.stdout


@pytest.mark.slow
def test_ctrl_c_under_the_launcher_exits_130_with_one_line(tmp_path, micro_zoo, data_dir):
    cmd = [sys.executable, '-m', 'timm_gkt.launch', '--num-processes', '2', '--', '--model',
           f'local-dir:{micro_zoo / "q_cnn"}', '--teachers', f'local-dir:{micro_zoo / "q_mlp"}', '--data-dir',
           str(data_dir), '--output', str(tmp_path), '--experiment', 'run', '-b', '32', '--epochs', '3']
    # as from a terminal: Ctrl-C at its default (a CI started in the background by a shell runs with SIGINT ignored,
    # which children inherit)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # the header: both processes are up and preflight is done
        if line.startswith('student q_cnn: top-1'):
            break
    time.sleep(2)  # inside the first epoch
    # a header seen only when the run ended (a block-buffered pipe) would make this test signal a finished run
    assert proc.poll() is None, 'the header reached the pipe only when the run ended: its lines are not flushed'
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert error_lines(err) == [err.strip().splitlines()[-1]]
    assert err.strip().splitlines()[-1].startswith('error: interrupted; continue with the same flags and --resume')


@pytest.mark.slow
def test_the_ci_examples_transfer_step_passes_a_job_the_gate_refused(tmp_path, micro_zoo, data_dir):
    """scripts/retrain_workflow.yml's transfer step, run as GitHub would run it (bash, GITHUB_OUTPUT) on 2 processes
    against the fake Hub: exit 3 (nothing pushed) is a job that succeeds; a bad input fails it with exit 2."""
    import re

    import yaml
    from fakehub import FakeHub
    from hubkit import ALICE, TOKEN
    workflow = yaml.safe_load((ROOT / 'scripts' / 'retrain_workflow.yml').read_text())
    step = next(s for s in workflow['jobs']['transfer']['steps'] if s.get('id') == 'transfer')
    assert 'timm_gkt.launch' in step['run'] and 'accelerate launch' not in step['run']
    config = tmp_path / 'retrain.yaml'
    job = {'model': f'local-dir:{micro_zoo / "q_vit"}', 'teachers': [f'local-dir:{micro_zoo / "q_mlp"}'],
           'data_dir': str(data_dir), 'output': str(tmp_path / 'out'), 'experiment': 'retrain', 'epochs': 1,
           'train_subset': 256, 'eval_subset': 200, 'batch_size': 32, 'no_aug': True,
           'push_to_hub': 'alice/backbone', 'push_min_delta': 100.0}
    script = re.sub(r'\$\{\{.*?\}\}', '', step['run']).replace('scripts/retrain.yaml', str(config)) \
        .replace('.venv/bin/python', sys.executable)
    with FakeHub([ALICE]) as hub:
        # refused=3: not better than the start (4 would be: better than the start, not than more training)
        for settings, code, pushed in ((job, 0, 'pushed=false\nrefused=3'), ({**job, 'epochs': 0}, 2, None)):
            config.write_text(yaml.safe_dump(settings))
            outputs = tmp_path / f'github_output_{code}'
            outputs.write_text('')
            proc = subprocess.run(['bash', '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                                  env=env(NUM_PROCESSES='2', GITHUB_OUTPUT=str(outputs), HF_ENDPOINT=hub.url,
                                          HF_HOME=str(tmp_path / 'hf_home'), HF_TOKEN=TOKEN,
                                          HF_HUB_DISABLE_TELEMETRY='1'))
            assert proc.returncode == code, proc.stderr[-3000:]
            assert outputs.read_text().strip() == (pushed or '')
            assert len(error_lines(proc.stderr)) == (0 if code == 0 else 1)

"""Preflight (timm_gkt/cli/preflight.py), data side: the process count, short model names, weights checked without
downloading them, and the headline command offline, all before anything is trained."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fakehub import FakeHub
from timm_gkt.cli import preflight as pf
from timm_gkt.transfer import engine
from timm_gkt.errors import ConfigError
from timm_gkt.cli.config import parse_args

ROOT = Path(__file__).resolve().parent.parent


class FakeAccelerator:
    def __init__(self, num_processes):
        self.num_processes = num_processes


def test_several_processes_without_a_gpu_become_cpu_processes(monkeypatch):
    asked = []
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setattr(pf, '_has_accelerator_device', lambda: False)
    monkeypatch.setattr(engine, 'make_accelerator', lambda config, cpu=False: asked.append(cpu) or FakeAccelerator(2))
    pf.create_accelerator(parse_args(['--model', 'x']))
    assert asked == [True]
    monkeypatch.delenv('WORLD_SIZE')
    pf.create_accelerator(parse_args(['--model', 'x']))
    assert asked == [True, False]  # one process: Accelerate chooses the device as usual


def test_several_processes_seen_as_one_stop_with_one_sentence(monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setattr(pf, '_has_accelerator_device', lambda: True)
    monkeypatch.setattr(engine, 'make_accelerator', lambda config, cpu=False: FakeAccelerator(1))
    with pytest.raises(ConfigError) as e:
        pf.create_accelerator(parse_args(['--model', 'x']))
    assert str(e.value) == ('this job was launched as 2 processes (WORLD_SIZE=2) but Accelerate sees one, so each '
                            'would run the whole job on its own; on a machine without GPUs set ACCELERATE_USE_CPU=1 '
                            'for accelerate launch --multi_gpu --num_processes 2')


def test_short_names_resolve_once_when_the_flags_are_parsed_with_one_note_each():
    config = parse_args(['--model', 'pit_b', '--teachers', 'volo_d2,resmlp_36'])
    assert config.model.text == 'pit_b_224'
    assert [t.text for t in config.teachers] == ['volo_d2_224', 'resmlp_36_224']
    assert [s.note for s in (config.model, *config.teachers)] == [
        'model pit_b -> pit_b_224 (timm names the architecture by its input size)',
        'model volo_d2 -> volo_d2_224 (timm names the architecture by its input size; also available: volo_d2_384)',
        'model resmlp_36 -> resmlp_36_224 (timm names the architecture by its input size)']
    assert parse_args(['--model', 'local-dir:zoo/q_cnn']).model.note is None


# ----------------------------------------------------------------------------- the CLI, in a subprocess

DRIVER = textwrap.dedent('''
    import contextlib, io, json, sys, time
    import accelerate, huggingface_hub.file_download, timm.models, torch  # the CLI imports these before preflight
    from timm_gkt import train
    err = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stderr(err):
        code = train.main(sys.argv[1:])
    print(json.dumps({'seconds': time.monotonic() - start, 'code': code, 'stderr': err.getvalue()}))
''')


def run_cli(tmp_path, *argv, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGING_FACE'))}
    full.update(HF_HOME=str(tmp_path / 'hf'), HF_HUB_DISABLE_TELEMETRY='1', OMP_NUM_THREADS='1', **env)
    out = subprocess.run([sys.executable, '-c', DRIVER, *argv], cwd=ROOT, env=full, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


@pytest.mark.slow
def test_headline_command_offline_fails_in_preflight_within_seconds(tmp_path, data_dir):
    """The README's headline command, verbatim but for the data folder, against an unreachable Hub."""
    result, _ = run_cli(tmp_path, '--model', 'pit_b', '--teachers', 'volo_d2,resmlp_36', '--data-dir', str(data_dir),
                        '--output', str(tmp_path / 'out'), HF_ENDPOINT='http://127.0.0.1:9')
    assert result['code'] == 2 and result['seconds'] < 15, result  # huggingface_hub alone: a minute of retries
    err = result['stderr'].strip().splitlines()
    assert err[-1].startswith('error: pit_b_224 is not in the Hugging Face cache (') and len(err) == 1
    assert 'HF_HUB_OFFLINE' in err[-1] and 'local-dir:' in err[-1] and str(tmp_path / 'hf' / 'hub') in err[-1]
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_dry_run_checks_hub_weights_without_downloading_them(tmp_path, data_dir, export_tiny):
    folder = tmp_path / 'student'
    export_tiny(folder)
    with FakeHub() as hub:
        hub.add_repo('org/student', {p.name: p.read_bytes() for p in folder.iterdir()})
        result, stdout = run_cli(tmp_path, '--model', 'hf-hub:org/student', '--transfer-method', 'ce',
                                 '--data-dir', str(data_dir), '--dry-run', '--output', str(tmp_path / 'out'),
                                 HF_ENDPOINT=hub.url)
        calls = hub.calls()
    assert result['code'] == 0, result
    assert 'weights of org/student: on the Hub (not downloaded by a dry run)' in stdout
    assert 'dry run: all checks passed' in stdout
    assert 'HEAD /org/student/resolve/main/model.safetensors' in calls
    assert not any(c.startswith('GET') and 'model.safetensors' in c for c in calls), calls
    assert not list((tmp_path / 'hf').rglob('model.safetensors'))


@pytest.mark.slow
def test_missing_data_folder_is_one_sentence_even_in_a_dry_run(tmp_path, micro_zoo):
    result, _ = run_cli(tmp_path, '--model', f'local-dir:{micro_zoo / "q_cnn"}', '--transfer-method', 'ce',
                        '--dataset', 'folder', '--data-dir', str(tmp_path / 'mydata'), '--dry-run')
    assert result['code'] == 2
    assert result['stderr'].strip() == (f'error: data folder {tmp_path / "mydata"} does not exist; pass --data-dir '
                                        f'with the folder that holds train/<class>/<images>')

"""train.py with --push-to-hub against the in-process fake Hub, as a CI job would run it:
config file, documented exit codes, the gate, a chained transfer from a pulled student."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakehub import FakeHub  # noqa: E402
from hubkit import ALICE, BOB, TOKEN  # noqa: E402


@pytest.fixture
def hub():
    with FakeHub([ALICE, BOB]) as h:
        yield h
    assert not h.unknown_routes, h.unknown_routes


def train_job(tmp_path, hub, config: dict, *extra, token=TOKEN, name='job'):
    """Run train.py as CI does: a YAML config, HF_ENDPOINT/HF_HOME set before import, the token from HF_TOKEN."""
    import yaml
    cfg = tmp_path / f'{name}.yaml'
    cfg.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGING_FACE'))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / 'hf_home'), OMP_NUM_THREADS='1',
               GITHUB_STEP_SUMMARY=str(tmp_path / f'{name}_summary.md'), HF_HUB_DISABLE_TELEMETRY='1')
    if token:
        env['HF_TOKEN'] = token
    proc = subprocess.run([sys.executable, '-m', 'timm_gkt.train', '-c', str(cfg), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    return proc


def base_config(micro_zoo, data_dir, tmp_path, **overrides):
    cfg = {'model': f'local-dir:{micro_zoo / "q_cnn"}', 'teachers': [f'local-dir:{micro_zoo / "q_mlp"}'],
           'transfer_method': 'kldp', 'data_dir': str(data_dir), 'output': str(tmp_path / 'out'), 'epochs': 1,
           'train_subset': 256, 'eval_subset': 200, 'batch_size': 64, 'seed': 0, 'experiment': 'job'}
    cfg.update(overrides)
    return cfg


def assert_token_nowhere(tmp_path: Path, *texts: str):
    for path in tmp_path.rglob('*'):
        if path.is_file() and 'hf_home' not in path.parts:  # the client's own cache holds no token either way
            assert TOKEN.encode() not in path.read_bytes(), f'token written to {path}'
    for text in texts:
        assert TOKEN not in text


def test_ci_job_that_does_not_pass_the_gate_exits_3_and_creates_nothing(tmp_path, hub, micro_zoo, data_dir):
    cfg = base_config(micro_zoo, data_dir, tmp_path, push_to_hub='alice/refused', push_min_delta=100.0)
    proc = train_job(tmp_path, hub, cfg)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert 'Not pushed: Δtransf = ' in proc.stdout and 'is not greater than the minimum +100.00.' in proc.stdout
    assert '**Decision:** Not pushed: Δtransf' in (tmp_path / 'job_summary.md').read_text()
    assert not any('repos/create' in c or 'commit' in c for c in hub.calls())
    export = tmp_path / 'out' / 'job' / 'export'
    assert (export / 'model.safetensors').is_file() and (export / 'README.md').is_file()
    assert 'alice/refused' not in (export / 'README.md').read_text()  # the card names no repo it never reached


def test_ci_job_without_a_token_fails_before_training(tmp_path, hub, micro_zoo, data_dir):
    """The CLI's path: push access is checked before any compute. A rejected token takes the same path with
    another sentence, checked in-process (test_hub_publish, test_push); one more interpreter would add a minute."""
    cfg = base_config(micro_zoo, data_dir, tmp_path, push_to_hub='alice/q_cnn-gkt')
    proc = train_job(tmp_path, hub, cfg, token=None)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith('error: ') and 'HF_TOKEN' in err[-1]
    assert not (tmp_path / 'out').exists()  # nothing ran, nothing written


def test_chained_transfer_from_a_pulled_student_lists_both_generations(tmp_path, hub, micro_zoo, data_dir):
    """Generation 1 is a CI job that pushes (exit 0, every file, no local path, no token anywhere); generation 2
    pulls it from the Hub as its student and transfers from another teacher."""
    gen1 = base_config(micro_zoo, data_dir, tmp_path, push_to_hub='alice/gen1', push_min_delta=-100.0,
                       experiment='gen1')
    proc = train_job(tmp_path, hub, gen1, name='gen1')
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = hub.files('alice/gen1')
    assert {'config.json', 'model.safetensors', 'README.md', 'results.json', 'args.yaml'} <= set(files)
    assert b"hf-hub:alice/gen1" in files['README.md']
    for name, content in files.items():  # models and data are named by folder name only
        if not name.endswith(('.safetensors', '.png')):
            for local in (micro_zoo, data_dir, tmp_path):
                assert str(local).encode() not in content, (name, local)
    assert b'local-dir:q_cnn' in files['results.json'] and b'data_dir: data\n' in files['args.yaml']
    assert 'alice/gen1' in json.loads((tmp_path / 'out' / 'gen1' / 'results.json').read_text())['pushed']
    summary = (tmp_path / 'gen1_summary.md').read_text()
    assert 'pushed' in summary.lower() and 'q_cnn' in summary
    assert_token_nowhere(tmp_path, proc.stdout, proc.stderr)
    gen2 = base_config(micro_zoo, data_dir, tmp_path, model='hf-hub:alice/gen1',
                       teachers=[f'local-dir:{micro_zoo / "q_vit"}'], push_to_hub='alice/gen2',
                       push_min_delta=-100.0, experiment='gen2')
    proc = train_job(tmp_path, hub, gen2, name='gen2')
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / 'out' / 'gen2' / 'results.json').read_text())
    lineage = results['lineage']
    assert [g['generation'] for g in lineage] == [1, 2]
    assert any('q_mlp' in t for t in lineage[0]['teachers']) and any('q_vit' in t for t in lineage[1]['teachers'])
    assert results['student_source']['hub_id'] == 'alice/gen1'
    card = hub.files('alice/gen2')['README.md'].decode()
    assert 'q_mlp' in card and 'q_vit' in card and 'base_model: alice/gen1' in card
    # the pulled student is the pushed one: its top-1 before gen 2 is gen 1's top-1 after
    gen1_results = json.loads((tmp_path / 'out' / 'gen1' / 'results.json').read_text())
    assert results['top1_before'] == gen1_results['top1_after']
    assert_token_nowhere(tmp_path, proc.stdout, proc.stderr)

"""What the Hub tests share: accounts and tokens of the fake Hub, a results.json and run folder as train.py
writes them, and fixtures that keep the machine's own login and back-off waits out of the tests.

Test modules import the fixtures they use from here (``from hubkit import fakehub, hf_env``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FASHION_LABELS, export_tiny_model, tiny_vit
from fakehub import Account, FakeHub

TOKEN = 'hf_fAkEtOkEn0123456789abcdefGKT'  # the test scans every written byte for this string
READ_TOKEN = 'hf_rEaDoNlYtOkEn0123456789abcdef'
ALICE = Account('alice', TOKEN, orgs={'gkt-lab': 'write', 'readers': 'read'})
BOB = Account('bob', READ_TOKEN, token_role='read')
LABELS = FASHION_LABELS

# What the real client (huggingface_hub 2.4.0, hf_xet installed) sends for a fresh push of a run:
# access check before training, then create, validate the card, preupload, one commit.
EXPECTED_FIRST_PUSH = [
    'GET /api/models/alice/vit_a-gkt/auth-check/write',  # check_push_access: repo does not exist yet (404) ...
    'GET /api/whoami-v2',                                # ... so the namespace must be the user's or a writable org
    'POST /api/repos/create',                            # push_export: created only now
    'POST /api/validate-yaml',                           # README front matter validated before hashing
    'POST /api/models/alice/vit_a-gkt/preupload/main',   # every file answered 'regular': inline in the commit
    'POST /api/models/alice/vit_a-gkt/commit/main',      # the one commit
]
EXPECTED_PULL = [
    'HEAD /alice/vit_a-gkt/resolve/main/config.json',
    'GET /alice/vit_a-gkt/resolve/main/config.json',
    'HEAD /alice/vit_a-gkt/resolve/main/model.safetensors',
    'GET /alice/vit_a-gkt/resolve/main/model.safetensors',
]
PUSHED = {'config.json', 'model.safetensors', 'README.md', 'results.json', 'args.yaml',
          'plots/per_class_knowledge.png', 'plots/gain_loss.png'}


def make_results(**overrides) -> dict:
    """A results.json as train.py writes it, for a one-teacher KL+DP run that gained 0.5 points."""
    results = {
        'student': 'local-dir:zoo/vit_a', 'student_name': 'vit_a', 'method': 'kldp', 'method_title': 'KL + DP',
        'dp_mode': 'supervised', 'multi_teacher': None, 'stage_order': ['convnext_a'],
        'dataset': 'torch/fashion_mnist', 'train_split': 'train', 'eval_split': 'test', 'eval_samples': 10000,
        'label_names': LABELS, 'top1_before': 85.1, 'top1_after': 85.6, 'transfer_delta': 0.5,
        'knowledge_gain': 1.2, 'knowledge_loss': 0.7, 'gains': 120, 'losses': 70, 'p_value': 0.0003,
        'teachers': [{
            'name': 'convnext_a', 'spec': 'local-dir:zoo/convnext_a', 'source': 'local-dir', 'revision': None,
            'top1': 90.1, 'rho_pos': 6.0, 'rho_neg': 2.0, 'rho_pos_after': 5.5, 'rho_neg_after': 2.1,
            'pos_flips_delta': -0.5, 'neg_flips_delta': 0.1, 'routed_share': 30.2,
            'transfer_rates': {'top2': 10.0, 'top5': 8.0, 'top20': 6.0, 'top50': 5.0, 'top100': 4.0},
            'per_class_pos_flips_before': [4.0, 1.0, 9.0, 5.0, 8.0, 2.0, 18.0, 3.0, 1.0, 4.0],
            'per_class_pos_flips_after': [3.5, 1.0, 8.0, 4.5, 7.5, 2.0, 16.0, 3.0, 1.0, 3.5],
        }],
        'epochs': [
            {'stage': 0, 'teacher': 'convnext_a', 'epoch': 1, 'top1': 85.3, 'transfer_delta': 0.2,
             'knowledge_gain': 1.0, 'knowledge_loss': 0.8, 'routed_share': 29.0, 'train_loss': 0.12},
            {'stage': 0, 'teacher': 'convnext_a', 'epoch': 2, 'top1': 85.6, 'transfer_delta': 0.5,
             'knowledge_gain': 1.2, 'knowledge_loss': 0.7, 'routed_share': 30.2, 'train_loss': 0.10},
        ],
        'hyperparameters': {'epochs': 2, 'lr': 0.001, 'opt': 'sgd', 'momentum': 0.9, 'weight_decay': 1e-4,
                            'batch_size': 128, 'kd_temperature': 1.0, 'xe_weight': None, 'mcl_momentum': None,
                            'mcl_interval': None},
        'seed': 0,
        'versions': {'timm_gkt': '0.1.0', 'timm': '1.0.31', 'torch': '2.14.1', 'huggingface_hub': '2.4.0'},
        'student_source': {'spec': 'local-dir:zoo/vit_a', 'source': 'local-dir', 'revision': None, 'hub_id': None,
                           'license': None},
        'lineage': [{'generation': 1, 'student': 'local-dir:zoo/vit_a', 'teachers': ['local-dir:zoo/convnext_a'],
                     'method': 'kldp', 'transfer_delta': 0.5, 'top1_after': 85.6}],
    }
    results.update(overrides)
    return results


def make_run(run_dir: Path, results: dict, model=None) -> Path:
    """A run folder as train.py leaves it: results/args at the top, the Hub-layout export below."""
    import yaml
    export = run_dir / 'export'
    export_tiny_model(export, model, model_config={'timm_gkt': {'lineage': results.get('lineage') or []}})
    args = {'model': results['student'], 'teacher': [t['spec'] for t in results['teachers']],
            'transfer_method': results['method'], 'push_to_hub': 'alice/vit_a-gkt', 'seed': results['seed']}
    for folder in (run_dir, export):
        (folder / 'results.json').write_text(json.dumps(results, indent=2))
        (folder / 'args.yaml').write_text(yaml.safe_dump(args, sort_keys=False))
    return run_dir


def tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def assert_no_token_anywhere(*folders: Path, hub: FakeHub | None = None, text: str = '') -> None:
    for folder in folders:
        for path in folder.rglob('*'):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), f'token written to {path}'
    if hub is not None:
        assert hub.requests, 'no requests recorded'
        assert TOKEN not in hub.received_text(), 'token sent outside the Authorization header'
        assert all(r.headers.get('authorization') in (None, f'Bearer {TOKEN}', f'Bearer {READ_TOKEN}')
                   for r in hub.requests)
    assert TOKEN not in text, 'token in output or logs'


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def model():
    return tiny_vit()


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    """No login of the machine leaks in: token only from HF_TOKEN, caches under tmp_path."""
    import huggingface_hub.constants as hf_constants
    monkeypatch.setattr(hf_constants, 'HF_TOKEN_PATH', str(tmp_path / 'no_login' / 'token'))
    monkeypatch.setattr(hf_constants, 'HF_STORED_TOKENS_PATH', str(tmp_path / 'no_login' / 'stored_tokens'))
    monkeypatch.delenv('HF_TOKEN', raising=False)
    monkeypatch.delenv('HUGGING_FACE_HUB_TOKEN', raising=False)
    monkeypatch.delenv('GITHUB_STEP_SUMMARY', raising=False)
    monkeypatch.setenv('HF_TOKEN', TOKEN)
    return monkeypatch


@pytest.fixture
def fakehub():
    with FakeHub([ALICE, BOB]) as hub:
        yield hub
    assert not hub.unknown_routes, f'the client asked for routes fakehub does not serve: {hub.unknown_routes}'


@pytest.fixture
def run_dir(tmp_path, model):
    return make_run(tmp_path / 'run', make_results(), model)


@pytest.fixture
def no_waits(monkeypatch):
    """Record back-off waits instead of sleeping: ours (publish._sleep) and the client's (its http_backoff)."""
    import importlib

    import huggingface_hub.utils._http as hf_http
    gkt_publish = importlib.import_module('timm_gkt.hub.publish')
    waits = SimpleNamespace(ours=[], client=[])
    monkeypatch.setattr(gkt_publish, '_sleep', waits.ours.append)
    monkeypatch.setattr(hf_http, 'time', SimpleNamespace(sleep=waits.client.append))
    return waits

"""The Hub loop against the REAL huggingface_hub client and timm, with an in-process fake Hub.

No network: ``fakehub.FakeHub`` serves the Hub protocol on 127.0.0.1. Pushes go through
``HfApi(endpoint=hub.url)``; the pull runs ``timm.create_model('hf-hub:...')`` in a
subprocess with HF_ENDPOINT/HF_HOME set before import and timm_gkt made unimportable.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package is used from the checkout, not installed
    sys.path.insert(0, str(ROOT))

from fakehub import Account, FakeHub  # noqa: E402
from timm_gkt import hub as gkt_hub  # noqa: E402
from timm_gkt import push as gkt_push  # noqa: E402

TOKEN = 'hf_fAkEtOkEn0123456789abcdefGKT'  # the test scans every written byte for this string
READ_TOKEN = 'hf_rEaDoNlYtOkEn0123456789abcdef'
ALICE = Account('alice', TOKEN, orgs={'gkt-lab': 'write', 'readers': 'read'})
BOB = Account('bob', READ_TOKEN, token_role='read')
LABELS = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']

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


# ----------------------------------------------------------------------------- fixtures

def tiny_model():
    import timm
    import torch
    torch.manual_seed(0)
    return timm.create_model('test_vit', num_classes=10, in_chans=1, img_size=28, patch_size=7, depth=1).eval()


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
    from timm.models import save_for_hf
    export = run_dir / 'export'
    save_for_hf(model if model is not None else tiny_model(), export,
                model_config={'label_names': LABELS, 'timm_gkt': {'lineage': results.get('lineage') or []}},
                safe_serialization=True)
    args = {'model': results['student'], 'teacher': [t['spec'] for t in results['teachers']],
            'transfer_method': results['method'], 'push_to_hub': 'alice/vit_a-gkt', 'seed': results['seed']}
    for folder in (run_dir, export):
        (folder / 'results.json').write_text(json.dumps(results, indent=2))
        (folder / 'args.yaml').write_text(yaml.safe_dump(args, sort_keys=False))
    return run_dir


@pytest.fixture(scope='module')
def model():
    return tiny_model()


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
    """Record back-off waits instead of sleeping: ours (hub._sleep) and the client's (its http_backoff)."""
    import huggingface_hub.utils._http as hf_http
    waits = SimpleNamespace(ours=[], client=[])
    monkeypatch.setattr(gkt_hub, '_sleep', waits.ours.append)
    monkeypatch.setattr(hf_http, 'time', SimpleNamespace(sleep=waits.client.append))
    return waits


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


# ----------------------------------------------------------------------------- model card

def test_card_metadata_round_trips_through_modelcard_load(tmp_path):
    from huggingface_hub import ModelCard
    results = make_results(student_source={'spec': 'hf-hub:timm/vit_a.fmnist', 'source': 'hf-hub', 'revision': 'abc123',
                                           'hub_id': 'timm/vit_a.fmnist', 'license': 'apache-2.0'})
    readme = gkt_hub.write_card(results, tmp_path, 'alice/vit_a-gkt')

    card = ModelCard.load(readme)
    data = card.data
    assert data.library_name == 'timm'
    assert data.pipeline_tag == 'image-classification'
    assert {'timm', 'image-classification', 'knowledge-transfer', 'kldp'} <= set(data.tags)
    assert data.base_model == 'timm/vit_a.fmnist'
    assert data.license == 'apache-2.0'
    assert data.datasets == ['zalando-datasets/fashion_mnist']
    assert data.model_name == 'vit_a-gkt'
    metrics = {r.metric_type + ('' if 'flips' not in r.metric_type else ':' + r.metric_name.split(' vs ')[1].split()[0]):
               r.metric_value for r in data.eval_results}
    assert metrics == {
        'accuracy': 85.6, 'accuracy_before_transfer': 85.1, 'transfer_delta': 0.5, 'knowledge_gain': 1.2,
        'knowledge_loss': 0.7, 'mcnemar_p_value': 0.0003,
        'positive_flips_delta:convnext_a': -0.5, 'negative_flips_delta:convnext_a': 0.1,
    }
    assert {r.dataset_split for r in data.eval_results} == {'test'}

    body = card.text
    assert "timm.create_model('hf-hub:alice/vit_a-gkt', pretrained=True)" in body
    assert '| student top-1 | 85.10 | 85.60 | +0.50 |' in body
    assert '| ρpos vs convnext_a | 6.00 | 5.50 | -0.50 |' in body
    assert '`local-dir:zoo/convnext_a`' in body and '90.10' in body and '30.2%' in body
    assert 'revision `abc123`' in body and 'KL + DP (supervised data partitioning)' in body
    assert '| lr | 0.001 |' in body and 'seed 0' in body and 'timm 1.0.31' in body
    assert 'Fantastic Gains and Where to Find Them' in body and 'arXiv:2310.17653' in body
    assert 'Koepke, A. Sophia and Vinyals, Oriol and H{\\\'e}naff, Olivier and Akata, Zeynep' in body
    for plot in ('plots/per_class_knowledge.png', 'plots/gain_loss.png'):
        assert f']({plot})' in body
        assert (tmp_path / plot).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_card_of_local_student_names_it_in_the_lineage_and_has_no_base_model(tmp_path):
    from huggingface_hub import ModelCard
    card = ModelCard.load(gkt_hub.write_card(make_results(), tmp_path))
    assert card.data.base_model is None and card.data.license is None
    assert 'Student: `local-dir:zoo/vit_a` (local-dir)' in card.text
    assert "hf-hub:ORG/REPO" in card.text  # no repo yet: a placeholder, and the local way to load it
    assert 'local-dir:PATH/TO/export' in card.text


def test_card_without_epochs_or_per_class_data_skips_those_plots(tmp_path):
    from huggingface_hub import ModelCard
    full = gkt_hub.write_card(make_results(), tmp_path)
    assert sorted(p.name for p in (tmp_path / 'plots').iterdir()) == ['gain_loss.png', 'per_class_knowledge.png']
    results = make_results(epochs=[], p_value=None, knowledge_gain=None)
    for t in results['teachers']:
        del t['per_class_pos_flips_before'], t['per_class_pos_flips_after']
    readme = gkt_hub.write_card(results, tmp_path)
    assert readme == full
    assert list((tmp_path / 'plots').iterdir()) == []  # stale plots of the earlier card are gone
    text = ModelCard.load(readme).text
    assert '.png' not in text and 'p = –' in text


def test_card_of_chained_transfer_lists_both_generations_teachers(tmp_path):
    from huggingface_hub import ModelCard
    lineage = [
        {'generation': 1, 'student': 'local-dir:zoo/vit_a', 'teachers': ['local-dir:zoo/convnext_a'],
         'method': 'kldp', 'transfer_delta': 0.5, 'top1_after': 85.6},
        {'generation': 2, 'student': 'hf-hub:alice/vit_a-gkt', 'teachers': ['local-dir:zoo/mixer_a', 'resnet_a'],
         'method': 'kldp', 'transfer_delta': 0.12, 'top1_after': 85.72},
    ]
    results = make_results(student='hf-hub:alice/vit_a-gkt', lineage=lineage, top1_before=85.6, top1_after=85.72,
                           transfer_delta=0.12,
                           student_source={'spec': 'hf-hub:alice/vit_a-gkt', 'source': 'hf-hub', 'revision': None,
                                           'hub_id': 'alice/vit_a-gkt', 'license': None})
    card = ModelCard.load(gkt_hub.write_card(results, tmp_path, 'alice/vit_a-gkt2'))
    assert card.data.base_model == 'alice/vit_a-gkt'
    assert '| 1 | `local-dir:zoo/vit_a` | `local-dir:zoo/convnext_a` | kldp | +0.50 | 85.60 |' in card.text
    assert ('| 2 | `hf-hub:alice/vit_a-gkt` | `local-dir:zoo/mixer_a`, `resnet_a` | kldp | +0.12 | 85.72 |'
            in card.text)


def test_card_takes_lineage_from_config_json_when_results_lack_it(tmp_path, model):
    run = make_run(tmp_path / 'run', make_results(), model)
    results = make_results(lineage=None)
    text = gkt_hub.write_card(results, run / 'export').read_text()
    assert '| 1 | `local-dir:zoo/vit_a` | `local-dir:zoo/convnext_a` | kldp | +0.50 | 85.60 |' in text


def test_card_is_deterministic(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    gkt_hub.write_card(make_results(), a, 'alice/x')
    gkt_hub.write_card(make_results(), b, 'alice/x')
    assert tree_digest(a) == tree_digest(b)  # a re-push of the same run uploads nothing new


# ----------------------------------------------------------------------------- gate and CI summary

@pytest.mark.parametrize('overrides, kwargs, expected, words', [
    ({}, {}, True, ['+0.50', '85.10% -> 85.60%', 'p = 0.0003']),
    ({'top1_after': 84.9, 'transfer_delta': -0.2}, {}, False, ['-0.20', 'not greater than the minimum +0.00']),
    ({'top1_after': 85.1, 'transfer_delta': 0.0}, {}, False, ['+0.00', 'not greater']),  # strictly greater
    ({}, {'min_delta': 0.5}, False, ['+0.50', 'minimum +0.50']),
    ({}, {'min_delta': 0.49}, True, ['> +0.49']),
    ({'p_value': 0.2}, {'max_p_value': 0.05}, False, ['p = 0.2 > 0.05', 'noise']),
    ({'p_value': None}, {'max_p_value': 0.05}, False, ['no McNemar p-value']),
    ({'p_value': 0.05}, {'max_p_value': 0.05}, True, ['p = 0.05 <= 0.05']),
    ({'transfer_delta': None, 'top1_after': None}, {}, False, ['no transfer delta']),
])
def test_push_gate(overrides, kwargs, expected, words):
    ok, reason = gkt_hub.push_gate(make_results(**overrides), **kwargs)
    assert ok is expected
    assert reason.endswith('.') and reason.count('\n') == 0
    for w in words:
        assert w in reason


def test_step_summary_appends_to_github_step_summary(tmp_path, monkeypatch):
    path = tmp_path / 'summary.md'
    path.write_text('# earlier step\n')
    monkeypatch.setenv('GITHUB_STEP_SUMMARY', str(path))
    gkt_hub.write_step_summary(make_results(), 'pushed to alice/vit_a-gkt')
    gkt_hub.write_step_summary(make_results(), 'second run', path=None)
    text = path.read_text()
    assert text.startswith('# earlier step\n')
    assert text.count('### timm_gkt: vit_a ← convnext_a (KL + DP)') == 2
    assert '| top-1 (%) | 85.10 | 85.60 | +0.50 |' in text
    assert '| convnext_a | 90.10 | 6.00 → 5.50 | 2.00 → 2.10 |' in text
    assert '**Decision:** pushed to alice/vit_a-gkt' in text
    monkeypatch.delenv('GITHUB_STEP_SUMMARY')
    gkt_hub.write_step_summary(make_results(), 'nowhere')  # no file named: nothing to do, no error
    assert text == path.read_text()


# ----------------------------------------------------------------------------- access check (before training)

@pytest.mark.parametrize('token, repo_id, words', [
    (None, 'alice/vit_a-gkt', ['No Hugging Face token found', 'hf auth login', 'HF_TOKEN']),
    ('hf_not_a_valid_token', 'alice/vit_a-gkt', ['token was rejected', 'hf auth login', 'HF_TOKEN']),
    (READ_TOKEN, 'bob/vit_a-gkt', ['read-only', 'hf auth login']),
    (TOKEN, 'readers/vit_a-gkt', ['role in readers (read) cannot create', 'write role']),
    (TOKEN, 'carol/vit_a-gkt', ["'carol' is neither your user name (alice) nor one of your organisations"]),
    (TOKEN, 'carol/existing', ['may not write to carol/existing', 'hf auth login']),
    (TOKEN, 'not a repo id', ['not a valid repository id', 'NAMESPACE/NAME']),
], ids=['no-token', 'invalid-token', 'read-only-token', 'read-role-in-org', 'foreign-namespace', 'foreign-repo',
        'bad-repo-id'])
def test_push_access_fails_fast_with_one_sentence_naming_the_fix(hf_env, fakehub, token, repo_id, words):
    hf_env.delenv('HF_TOKEN')
    fakehub.add_repo('carol/existing')
    start = time.monotonic()
    with pytest.raises(gkt_hub.PushAccessError) as info:
        gkt_hub.check_push_access(repo_id, token=token, endpoint=fakehub.url)
    assert time.monotonic() - start < 5
    message = str(info.value)
    for w in words:
        assert w in message
    assert message.count('. ') == 0 and message.endswith('.')  # one sentence
    assert isinstance(info.value, RuntimeError)
    assert set(fakehub.repos) == {'carol/existing'}  # nothing created
    assert not any(r.method == 'POST' for r in fakehub.requests)
    if token is None:
        assert fakehub.requests == []  # no token: not even a request


@pytest.mark.parametrize('repo_id, expected', [
    ('alice/vit_a-gkt', ['GET /api/models/alice/vit_a-gkt/auth-check/write', 'GET /api/whoami-v2']),
    ('gkt-lab/vit_a-gkt', ['GET /api/models/gkt-lab/vit_a-gkt/auth-check/write', 'GET /api/whoami-v2']),
    ('alice/existing', ['GET /api/models/alice/existing/auth-check/write']),
])
def test_push_access_passes_without_creating_anything(hf_env, fakehub, repo_id, expected):
    fakehub.add_repo('alice/existing')
    gkt_hub.check_push_access(repo_id, endpoint=fakehub.url)  # token from HF_TOKEN
    assert fakehub.calls() == expected
    assert set(fakehub.repos) == {'alice/existing'}


def test_fakehub_answers_401_to_writes_without_a_valid_token(fakehub):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    for token in (False, 'hf_unknown'):
        with pytest.raises(HfHubHTTPError) as info:
            HfApi(endpoint=fakehub.url, token=token).create_repo('alice/x')
        assert info.value.response.status_code == 401
    assert 'authorization' not in fakehub.requests[0].headers
    assert fakehub.repos == {}


def test_pull_request_with_a_branch_is_refused_before_training():
    with pytest.raises(gkt_hub.PushAccessError, match='drop one of the two'):
        gkt_hub.check_push_access('alice/x', token=TOKEN, revision='dev', create_pr=True)


# ----------------------------------------------------------------------------- push and pull

PULL_SCRIPT = textwrap.dedent('''
    import sys
    sys.modules['timm_gkt'] = None  # the pulled model must load with timm alone
    import torch, timm
    torch.set_num_threads(1)
    model = timm.create_model(sys.argv[1], pretrained=True).eval()
    with torch.no_grad():
        logits = model(torch.load(sys.argv[2]))
    torch.save(logits, sys.argv[3])
    print('labels:', model.pretrained_cfg['label_names'][0], '|', model.pretrained_cfg['label_names'][-1])
''')


def local_logits(export: Path, x):
    import timm
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same kernels as the subprocess, so equality is exact
    try:
        model = timm.create_model(f'local-dir:{export}', pretrained=True).eval()
        with torch.no_grad():
            return model(x)
    finally:
        torch.set_num_threads(threads)


def test_push_then_pull_gives_identical_logits(hf_env, fakehub, run_dir, tmp_path, capfd, caplog):
    import torch
    caplog.set_level(logging.DEBUG)
    export = run_dir / 'export'
    repo_id = 'alice/vit_a-gkt'

    gkt_hub.check_push_access(repo_id, endpoint=fakehub.url)
    assert fakehub.repos == {}  # checked, not created
    url = gkt_hub.push_export(export, repo_id, endpoint=fakehub.url)

    assert fakehub.calls() == EXPECTED_FIRST_PUSH
    oid = fakehub.repos[repo_id].refs['main']
    assert url == f'{fakehub.url}/{repo_id}/commit/{oid}'
    hosted = fakehub.files(repo_id)
    assert set(hosted) == PUSHED | {'.gitattributes'}
    for name in PUSHED:
        assert hosted[name] == (export / name).read_bytes(), name
    readme = hosted['README.md'].decode()
    assert "timm.create_model('hf-hub:alice/vit_a-gkt', pretrained=True)" in readme
    assert fakehub.repos[repo_id].commit_messages[oid] == 'vit_a + convnext_a: kldp, Δtransf +0.50 (timm_gkt)'

    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / 'x.pt')
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGING'))}
    env.update(HF_ENDPOINT=fakehub.url, HF_HOME=str(tmp_path / 'hf_home'), PYTHONPATH='', HF_HUB_DISABLE_TELEMETRY='1')
    pulled = subprocess.run([sys.executable, '-c', PULL_SCRIPT, f'hf-hub:{repo_id}', tmp_path / 'x.pt',
                             tmp_path / 'logits.pt'], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert 'labels: T-shirt/top | Ankle boot' in pulled.stdout
    assert fakehub.calls()[len(EXPECTED_FIRST_PUSH):] == EXPECTED_PULL
    assert all('authorization' not in r.headers for r in fakehub.requests[len(EXPECTED_FIRST_PUSH):])

    pulled_logits = torch.load(tmp_path / 'logits.pt')
    assert torch.equal(pulled_logits, local_logits(export, x))

    out = capfd.readouterr()
    assert_no_token_anywhere(run_dir, tmp_path / 'hf_home', hub=fakehub,
                             text=out.out + out.err + caplog.text + pulled.stdout + pulled.stderr)


def test_re_push_of_an_unchanged_export_makes_no_new_commit(hf_env, fakehub, run_dir):
    first = gkt_hub.push_export(run_dir / 'export', 'alice/vit_a-gkt', endpoint=fakehub.url)
    n = len(fakehub.requests)
    second = gkt_hub.push_export(run_dir / 'export', 'alice/vit_a-gkt', endpoint=fakehub.url)
    assert second == first
    assert fakehub.calls()[n:] == [
        'POST /api/repos/create',  # 409: exists, fine
        'POST /api/validate-yaml',
        'POST /api/models/alice/vit_a-gkt/preupload/main',  # every oid matches: nothing to commit
        'GET /api/models/alice/vit_a-gkt/revision/main',
    ]


def test_push_to_a_new_branch_creates_it_and_leaves_main_alone(hf_env, fakehub, run_dir):
    gkt_hub.push_export(run_dir / 'export', 'gkt-lab/vit_a-gkt', endpoint=fakehub.url, revision='gen1',
                        private=True)
    repo = fakehub.repos['gkt-lab/vit_a-gkt']
    assert repo.private
    assert fakehub.calls()[:3] == ['POST /api/repos/create', 'POST /api/models/gkt-lab/vit_a-gkt/branch/gen1',
                                   'POST /api/validate-yaml']
    assert fakehub.calls()[-1] == 'POST /api/models/gkt-lab/vit_a-gkt/commit/gen1'
    assert set(fakehub.files('gkt-lab/vit_a-gkt', 'main')) == {'.gitattributes'}
    assert 'model.safetensors' in fakehub.files('gkt-lab/vit_a-gkt', 'gen1')


def test_push_as_pull_request_leaves_main_alone(hf_env, fakehub, run_dir):
    gkt_hub.push_export(run_dir / 'export', 'alice/vit_a-gkt', endpoint=fakehub.url, create_pr=True)
    assert fakehub.calls()[-3:] == ['POST /api/models/alice/vit_a-gkt/discussions',
                                    'GET /api/models/alice/vit_a-gkt/discussions/1',
                                    'POST /api/models/alice/vit_a-gkt/commit/refs/pr/1']
    assert set(fakehub.files('alice/vit_a-gkt', 'main')) == {'.gitattributes'}
    assert 'model.safetensors' in fakehub.files('alice/vit_a-gkt', 'refs/pr/1')


def test_transient_failures_are_retried_with_exponential_backoff(hf_env, fakehub, run_dir, no_waits):
    fakehub.fail('create_repo', times=1, status=503)   # not retried by the client: our retry
    fakehub.fail('validate_yaml', times=1, status=0)   # connection dropped: our retry
    fakehub.fail('commit', times=2, status=500)        # retried inside the client's own back-off
    url = gkt_hub.push_export(run_dir / 'export', 'alice/vit_a-gkt', endpoint=fakehub.url, retries=3, backoff=0.5)
    assert url.startswith(f'{fakehub.url}/alice/vit_a-gkt/commit/')
    assert no_waits.ours == [0.5, 1.0]
    assert no_waits.client == [1, 2]
    assert fakehub.calls(include_status=True) == [
        'POST /api/repos/create -> 503',
        'POST /api/repos/create -> 200',
        'POST /api/validate-yaml -> -1',
        'POST /api/repos/create -> 409',
        'POST /api/validate-yaml -> 200',
        'POST /api/models/alice/vit_a-gkt/preupload/main -> 200',
        'POST /api/models/alice/vit_a-gkt/commit/main -> 500',
        'POST /api/models/alice/vit_a-gkt/commit/main -> 500',
        'POST /api/models/alice/vit_a-gkt/commit/main -> 200',
    ]
    assert 'model.safetensors' in fakehub.files('alice/vit_a-gkt')


def test_upload_that_keeps_failing_leaves_the_export_intact_and_says_how_to_retry(
        hf_env, fakehub, run_dir, no_waits, caplog, capfd):
    export = run_dir / 'export'
    gkt_hub.write_card(json.loads((export / 'results.json').read_text()), export, 'alice/vit_a-gkt')
    before = tree_digest(export)
    fakehub.fail('commit', times=1000, status=500)
    with pytest.raises(gkt_hub.PushError) as info:
        gkt_hub.push_export(export, 'alice/vit_a-gkt', endpoint=fakehub.url, retries=2, backoff=0.5)
    message = str(info.value)
    assert f'retry with: python -m timm_gkt.push {run_dir} alice/vit_a-gkt' in message
    assert 'failed after 3 attempts' in message and '500' in message and 'intact' in message
    assert tree_digest(export) == before
    assert no_waits.ours == [0.5, 1.0]
    # each of our 3 attempts ends after the client's own 5 retries of the commit
    assert no_waits.client == [1, 2, 4, 8, 8] * 3
    commits = [c for c in fakehub.calls(include_status=True) if '/commit/' in c]
    assert commits == ['POST /api/models/alice/vit_a-gkt/commit/main -> 500'] * 18
    assert set(fakehub.files('alice/vit_a-gkt')) == {'.gitattributes'}
    out = capfd.readouterr()
    assert_no_token_anywhere(run_dir, hub=fakehub, text=message + caplog.text + out.out + out.err)


def test_a_token_written_into_the_export_is_never_uploaded(hf_env, fakehub, run_dir):
    export = run_dir / 'export'
    with (export / 'args.yaml').open('a') as f:
        f.write(f'hub_token: {TOKEN}\n')
    (export / 'notes.txt').write_text('not part of the Hub layout')
    with pytest.raises(gkt_hub.PushError, match='args.yaml contains your Hugging Face token'):
        gkt_hub.push_export(export, 'alice/vit_a-gkt', endpoint=fakehub.url)
    assert fakehub.requests == []
    (export / 'args.yaml').write_text('seed: 0\n')
    gkt_hub.push_export(export, 'alice/vit_a-gkt', endpoint=fakehub.url)
    assert 'notes.txt' not in fakehub.files('alice/vit_a-gkt')  # only the Hub layout is uploaded


# ----------------------------------------------------------------------------- python -m timm_gkt.push

def test_cli_exit_codes(hf_env, fakehub, tmp_path, model, capsys):
    good = make_run(tmp_path / 'good', make_results(), model)
    worse = make_run(tmp_path / 'worse', make_results(top1_after=84.9, transfer_delta=-0.2, gains=70, losses=90),
                     model)
    url = ['--endpoint', fakehub.url]

    assert gkt_push.main([str(worse), 'alice/worse', *url]) == gkt_hub.EXIT_NOT_IMPROVED == 3
    err = capsys.readouterr().err
    assert 'Not pushed: Δtransf = -0.20 points on the test split (85.10% -> 84.90%)' in err
    assert fakehub.requests == [] and fakehub.repos == {}  # refused: not even an empty repo

    assert gkt_push.main([str(worse), 'alice/worse', '--min-delta', '-0.5', *url]) == gkt_hub.EXIT_PUSHED
    assert gkt_push.main([str(good), 'alice/good', '--max-p-value', '0.0001', *url]) == 3
    assert gkt_push.main([str(good), 'alice/good', *url]) == gkt_hub.EXIT_PUSHED == 0
    out = capsys.readouterr().out
    assert f'Pushed {good / "export"} to alice/good: {fakehub.url}/alice/good/commit/' in out

    assert gkt_push.main([str(tmp_path / 'missing'), 'alice/good', *url]) == gkt_hub.EXIT_ERROR == 1
    assert 'results.json does not exist' in capsys.readouterr().err
    hf_env.setenv('HF_TOKEN', 'hf_wrong')
    assert gkt_push.main([str(good), 'alice/good', *url]) == 1
    assert 'token was rejected' in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        gkt_push.main([str(good)])
    assert usage.value.code == 2


def test_cli_as_module_in_a_subprocess(fakehub, tmp_path, model):
    good = make_run(tmp_path / 'good', make_results(), model)
    worse = make_run(tmp_path / 'worse', make_results(top1_after=84.9, transfer_delta=-0.2), model)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGING', 'GITHUB_'))}
    env.update(HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / 'hf_home'), PYTHONPATH=str(ROOT),
               GITHUB_STEP_SUMMARY=str(tmp_path / 'summary.md'))

    def cli(*args):
        return subprocess.run([sys.executable, '-m', 'timm_gkt.push', *map(str, args), '--endpoint', fakehub.url],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    refused = cli(worse, 'alice/vit_a-gkt')
    assert refused.returncode == 3, refused.stderr
    pushed = cli(good, 'alice/vit_a-gkt')
    assert pushed.returncode == 0, pushed.stderr
    assert set(fakehub.files('alice/vit_a-gkt')) == PUSHED | {'.gitattributes'}
    summary = (tmp_path / 'summary.md').read_text()
    assert summary.count('### timm_gkt: vit_a ← convnext_a') == 2
    assert '**Decision:** Not pushed: Δtransf = -0.20' in summary and '**Decision:** Pushed' in summary
    assert_no_token_anywhere(good, worse, tmp_path / 'hf_home', hub=fakehub,
                             text=refused.stdout + refused.stderr + pushed.stdout + pushed.stderr + summary)

"""Publishing (timm_gkt/hub/access.py, publish.py) against the REAL huggingface_hub client and timm, with an
in-process fake Hub: the gate, the access check before training, push and pull, retries, secrets.

No network: ``fakehub.FakeHub`` serves the Hub protocol on 127.0.0.1. Pushes go through
``HfApi(endpoint=hub.url)``; the pull runs ``timm.create_model('hf-hub:...')`` in a
subprocess with HF_ENDPOINT/HF_HOME set before import and timm_gkt made unimportable.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hubkit import (  # noqa: F401  (fixtures)
    EXPECTED_FIRST_PUSH, EXPECTED_PULL, PUSHED, READ_TOKEN, TOKEN, assert_no_token_anywhere, fakehub, hf_env,
    make_results, make_run, model, no_waits, run_dir, tree_digest,
)

from timm_gkt import hub as gkt_hub


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


@pytest.mark.slow  # a subprocess imports torch and timm
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




# ----------------------------------------------------------------------------- publish(): the one entry point

def test_publish_refused_by_the_gate_sends_nothing(hf_env, fakehub, tmp_path, model):
    from timm_gkt.hub.publish import publish
    run = make_run(tmp_path / 'worse', make_results(top1_after=84.9, transfer_delta=-0.2), model)
    outcome = publish(run, gkt_hub.PushTarget('alice/worse', endpoint=fakehub.url))
    assert outcome.code == gkt_hub.EXIT_NOT_IMPROVED and outcome.url is None
    assert outcome.message.startswith('Not pushed: Δtransf = -0.20 points on the test split')
    assert fakehub.requests == []


def test_publish_uses_the_given_results_and_can_skip_the_access_check(hf_env, fakehub, run_dir):
    """train.py checked access before training and hands its in-memory results: no second check."""
    from timm_gkt.hub.publish import publish
    target = gkt_hub.PushTarget('alice/vit_a-gkt', endpoint=fakehub.url, max_p_value=0.001)
    outcome = publish(run_dir, target, make_results(), check_access=False)
    assert outcome.code == gkt_hub.EXIT_PUSHED and outcome.url.startswith(f'{fakehub.url}/alice/vit_a-gkt/commit/')
    assert fakehub.calls() == EXPECTED_FIRST_PUSH[2:]  # no auth-check, no whoami
    refused = publish(run_dir, target, make_results(p_value=0.002), check_access=False)
    assert refused.code == gkt_hub.EXIT_NOT_IMPROVED and 'p = 0.002 > 0.001' in refused.message


def test_push_target_retry_command_names_every_option():
    target = gkt_hub.PushTarget('gkt-lab/x', private=True, revision='gen 2', endpoint='http://127.0.0.1:9')
    assert target.retry_command('/runs/a b') == ("python -m timm_gkt.push '/runs/a b' gkt-lab/x --private "
                                                 "--revision 'gen 2' --endpoint http://127.0.0.1:9")


# ----------------------------------------------------------------------------- the control requirement

@pytest.mark.parametrize('vs_control, expected, words', [
    ({'delta': 0.21, 'p_value': 0.004}, True, ['better than more training: +0.21 points', 'p = 0.004']),
    ({'delta': 0.21, 'p_value': 0.0501}, False, ['no better than more training: +0.21 points', 'p = 0.0501']),
    ({'delta': -0.42, 'p_value': 0.001}, False, ['no better than more training: -0.42 points']),
    ({'delta': 0.0, 'p_value': 1.0}, False, ['no better than more training: +0.00 points']),
    (None, False, ['trained no CE control', '--control ce']),
])
def test_control_gate_asks_for_a_significant_gain_over_more_training(vs_control, expected, words):
    ok, reason = gkt_hub.control_gate(make_results(vs_control=vs_control))
    assert ok is expected and reason.endswith('.') and '\n' not in reason
    assert reason.startswith('The student is better' if expected else 'Not pushed: ')
    for w in words:
        assert w in reason


def test_publish_says_which_requirement_failed(hf_env, fakehub, tmp_path, model):
    """3: not better than the start; 4: better than the start but not than more training; both: nothing sent."""
    from timm_gkt.hub.publish import publish
    target = gkt_hub.PushTarget('alice/vit_a-gkt', endpoint=fakehub.url, beat_control=True)
    not_better = {'delta': -0.1, 'p_value': 0.6}
    worse = make_run(tmp_path / 'worse', make_results(top1_after=84.9, transfer_delta=-0.2, vs_control=not_better),
                     model)
    assert publish(worse, target).code == gkt_hub.EXIT_NOT_IMPROVED == 3
    run = make_run(tmp_path / 'run', make_results(vs_control=not_better), model)
    outcome = publish(run, target)
    assert outcome.code == gkt_hub.EXIT_NOT_BETTER_THAN_CONTROL == 4 and outcome.url is None
    assert outcome.message == ('Not pushed: the student is no better than more training: -0.10 points against the '
                               'CE control on the same images (paired McNemar p = 0.6).')
    assert fakehub.requests == []
    # without the switch the same run is pushed: the requirement is the user's choice
    assert publish(run, dataclasses.replace(target, beat_control=False)).code == gkt_hub.EXIT_PUSHED
    assert publish(run, target, force=True).code == gkt_hub.EXIT_PUSHED
    better = make_run(tmp_path / 'better', make_results(vs_control={'delta': 0.3, 'p_value': 0.01}), model)
    assert publish(better, dataclasses.replace(target, repo_id='alice/better')).code == gkt_hub.EXIT_PUSHED

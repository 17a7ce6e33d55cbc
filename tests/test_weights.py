"""Are the weights there? (timm_gkt.weights): local folders, the HF cache, a fake Hub, an unreachable one.

The offline tests run in a subprocess with ``HF_ENDPOINT``/``HF_HOME`` set before
huggingface_hub is imported, and time the check itself (not the interpreter's start or
importing timm, which a busy 2-core machine can stretch to a minute).
"""
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
from huggingface_hub import constants

from fakehub import FakeHub
from timm_gkt.models.spec import parse_spec
from timm_gkt.models.weights import DEFAULT_DEADLINE_S, WeightsCheck, check_local_dir, check_weights_available
from timm_gkt.errors import WeightsUnavailableError

PIT_REPO = 'timm/pit_b_224.in1k'  # what timm's registry names for pit_b_224


@pytest.fixture
def zoo_copy(micro_zoo, tmp_path):
    dst = tmp_path / 'q_cnn'
    shutil.copytree(micro_zoo / 'q_cnn', dst)
    return dst


# ----------------------------------------------------------------------------- local-dir

def test_local_dir_ok(zoo_copy):
    assert check_local_dir(zoo_copy) == zoo_copy / 'model.safetensors'
    assert check_weights_available(f'local-dir:{zoo_copy}') == WeightsCheck(parse_spec(f'local-dir:{zoo_copy}'), 'local-dir', 'q_cnn')


def test_local_dir_config_not_json(zoo_copy):
    (zoo_copy / 'config.json').write_text('{"architecture": "test_resnet",')
    with pytest.raises(WeightsUnavailableError, match=r'config\.json is not valid JSON \(.*\); restore the file'):
        check_local_dir(zoo_copy)


def test_local_dir_truncated_safetensors(zoo_copy):
    weights = zoo_copy / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(WeightsUnavailableError, match=r'model\.safetensors is truncated or damaged \(.*incomplete'):
        check_local_dir(zoo_copy)
    weights.write_bytes(b'\x10\x00')
    with pytest.raises(WeightsUnavailableError, match='truncated or damaged'):
        check_local_dir(zoo_copy)


@pytest.mark.parametrize('remove, message', [
    ('model.safetensors', 'has no weights file'), ('config.json', 'has no config.json'),
])
def test_local_dir_missing_files(zoo_copy, remove, message):
    (zoo_copy / remove).unlink()
    with pytest.raises(WeightsUnavailableError, match=message):
        check_local_dir(zoo_copy)


def test_local_dir_without_architecture(zoo_copy):
    (zoo_copy / 'config.json').write_text('[1, 2]')
    with pytest.raises(WeightsUnavailableError, match='names no architecture'):
        check_local_dir(zoo_copy)


# ----------------------------------------------------------------------------- cache and Hub, in process

@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """An empty HF cache and the Hub switched on (whatever the shell exported)."""
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    return tmp_path / 'hub'


def fake_cache(cache, repo, files, commit='a' * 40):
    """The cache layout huggingface_hub writes: refs/main -> commit, snapshots/<commit>/<file>."""
    folder = cache / f'models--{repo.replace("/", "--")}'
    (folder / 'refs').mkdir(parents=True)
    (folder / 'refs' / 'main').write_text(commit)
    for name in files:
        path = folder / 'snapshots' / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'x')


def test_random_init_needs_no_weights():
    assert check_weights_available('pit_b_224', pretrained=False).where == 'none'


def test_cached_weights_need_no_network(hub_env, monkeypatch):
    fake_cache(hub_env, PIT_REPO, ['model.safetensors'])
    refuse = 'http://127.0.0.1:9'  # would refuse any request
    assert check_weights_available('pit_b_224', endpoint=refuse) == WeightsCheck(parse_spec('pit_b_224'), 'cache', str(hub_env))
    fake_cache(hub_env, 'org/student', ['config.json', 'pytorch_model.bin'])
    assert check_weights_available('hf-hub:org/student', endpoint=refuse).where == 'cache'


def test_hub_metadata_without_download(hub_env):
    with FakeHub() as hub:
        check = functools.partial(check_weights_available, endpoint=hub.url)
        hub.add_repo(PIT_REPO, {'model.safetensors': b'w' * 1000})
        hub.add_repo('org/student', {'config.json': b'{}', 'pytorch_model.bin': b'w'})
        hub.add_repo('org/empty', {'config.json': b'{}'})
        assert check('pit_b_224') == WeightsCheck(parse_spec('pit_b_224'), 'hub', f'{PIT_REPO}@main', True)
        assert check('hf-hub:org/student').where == 'hub'
        with pytest.raises(WeightsUnavailableError, match='org/empty has none of model.safetensors, pytorch_model.bin'):
            check('hf-hub:org/empty')
        with pytest.raises(WeightsUnavailableError, match='repository org/nope does not exist on the Hub'):
            check('hf-hub:org/nope')
        with pytest.raises(WeightsUnavailableError, match='revision v9 does not exist in org/student'):
            check('hf-hub:org/student@v9')
        # metadata only, nothing downloaded, and no telemetry lookup before it
        assert hub.calls() == [f'HEAD /{PIT_REPO}/resolve/main/model.safetensors',
                               'HEAD /org/student/resolve/main/config.json',
                               'HEAD /org/student/resolve/main/model.safetensors',
                               'HEAD /org/student/resolve/main/pytorch_model.bin',
                               'HEAD /org/empty/resolve/main/config.json',
                               'HEAD /org/empty/resolve/main/model.safetensors',
                               'HEAD /org/empty/resolve/main/pytorch_model.bin',
                               'HEAD /org/nope/resolve/main/config.json',
                               'HEAD /org/student/resolve/v9/config.json']
        assert not list(hub_env.glob('**/model.safetensors'))


def test_unknown_tag():
    with pytest.raises(WeightsUnavailableError, match='pit_b_224.nope: timm has no weights with that tag'):
        check_weights_available('pit_b_224.nope')


# ----------------------------------------------------------------------------- offline, in a subprocess

SLACK_S = 3.0  # scheduling on a loaded CI machine; the failure these tests catch is a wait of 15-60 s
CHECK = textwrap.dedent('''
    import contextlib, json, sys, time
    import huggingface_hub.file_download, timm.models  # imported by the CLI long before preflight
    from timm_gkt.models.weights import check_weights_available
    # warm up once against a closed port: the HTTP client and its lazy imports are the CLI's start-up cost, not
    # the check's, and on a loaded 2-core CI machine they alone took 1.5 s
    with contextlib.suppress(Exception):
        check_weights_available(sys.argv[1], endpoint='http://127.0.0.1:9')
    start = time.monotonic()
    try:
        check_weights_available(sys.argv[1])
        message = None
    except Exception as e:
        message = f'{type(e).__name__}: {e}'
    print(json.dumps({'seconds': time.monotonic() - start, 'message': message}))
''')


def run_check(spec, tmp_path, **env):
    full = {**os.environ, 'HF_HOME': str(tmp_path / 'hf'), 'HF_HUB_OFFLINE': '0', **env}
    full.pop('HF_HUB_CACHE', None)
    out = subprocess.run([sys.executable, '-c', CHECK, spec], env=full, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_one_offline_sentence(message, tmp_path):
    assert message.startswith('WeightsUnavailableError: ')
    assert 'HF_HUB_OFFLINE' in message and 'local-dir:' in message and str(tmp_path / 'hf' / 'hub') in message
    assert message.count('. ') == 0 and '\n' not in message


@pytest.mark.parametrize('spec', ['pit_b_224', 'hf-hub:org/student'])
def test_unreachable_endpoint_fails_fast(spec, tmp_path):
    result = run_check(spec, tmp_path, HF_ENDPOINT='http://127.0.0.1:9')
    assert result['seconds'] < DEFAULT_DEADLINE_S + SLACK_S, result  # huggingface_hub's retries back off for 15 s+
    assert 'the Hub cannot be reached (ConnectError)' in result['message']
    assert_one_offline_sentence(result['message'], tmp_path)


def test_silent_endpoint_fails_within_the_deadline(tmp_path):
    """A server that accepts connections but never answers: only the deadline ends the wait."""
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen(8)
        result = run_check('pit_b_224', tmp_path, HF_ENDPOINT=f'http://127.0.0.1:{silent.getsockname()[1]}')
    assert DEFAULT_DEADLINE_S - 0.1 < result['seconds'] < DEFAULT_DEADLINE_S + SLACK_S, result
    assert 'the Hub cannot be reached' in result['message']
    assert_one_offline_sentence(result['message'], tmp_path)


def test_offline_mode_names_the_variable(tmp_path):
    result = run_check('hf-hub:org/student', tmp_path, HF_HUB_OFFLINE='1', HF_ENDPOINT='http://127.0.0.1:9')
    assert result['seconds'] < 1, result
    assert 'and HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to download it' in result['message']
    assert_one_offline_sentence(result['message'], tmp_path)

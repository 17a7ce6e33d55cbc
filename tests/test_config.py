"""Flags, -c configs and the frozen TransferConfig (timm_gkt/config.py); the preflight flag checks."""
import dataclasses

import pytest
import yaml

from timm_gkt.config import DEFAULT_LR, ConfigError, TransferConfig, check_flags, parse_args
from timm_gkt.methods import METHODS
from timm_gkt.spec import parse_spec

STUDENT, TEACHER, TEACHER2 = 'local-dir:zoo/q_cnn', 'local-dir:zoo/q_mlp', 'local-dir:zoo/q_vit'


def test_config_file_sets_defaults_and_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / 'job.yaml'
    cfg.write_text(f"model: {STUDENT}\nteachers: [{TEACHER}]\ntransfer_method: kl\nepochs: 1\n")
    config = parse_args(['-c', str(cfg), '--epochs', '2'])
    assert config.model == parse_spec(STUDENT) and config.transfer_method == 'kl' and config.epochs == 2
    assert [t.text for t in config.teachers] == [TEACHER]
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: x\nteachrs: y\n')
    with pytest.raises(SystemExit):
        parse_args(['-c', str(bad)])


def test_teachers_from_both_flags_keep_their_order_without_repeats():
    config = parse_args(['--model', STUDENT, '--teachers', f'{TEACHER}, {TEACHER2}', '--transfer-teacher', TEACHER,
                         '--transfer-teacher', 'hf-hub:alice/t3'])
    assert [t.text for t in config.teachers] == [TEACHER, TEACHER2, 'hf-hub:alice/t3']
    assert config.teachers[2].source == 'hf-hub' and config.multi == 'sequential'
    assert parse_args(['--model', STUDENT, '--teachers', TEACHER]).multi is None  # one teacher: no mode


def test_the_config_is_frozen_and_resolves_defaults_without_changing():
    config = parse_args(['--model', STUDENT, '-b', '64'])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.1
    assert config.lr is None and config.learning_rate == DEFAULT_LR
    assert config.validation_batch_size is None and config.eval_batch_size == 128
    assert parse_args(['--model', STUDENT, '--lr', '0.05']).learning_rate == 0.05
    assert parse_args(['--model', STUDENT, '-j', '3']).loader_workers == 3


@pytest.mark.parametrize('method', list(METHODS))
def test_args_yaml_replays_to_the_same_config(method, tmp_path):
    """What a run writes as args.yaml is a -c config for the same run, for every method."""
    argv = ['--model', STUDENT, '--teachers', f'{TEACHER},{TEACHER2}', '--transfer-method', method,
            '--scale', '1', '1', '--epochs', '3', '--push-to-hub', 'alice/x', '--push-max-pvalue', '0.05']
    if method == 'xekl-mcl':
        argv += ['--mcl-interval', '4']
    config = parse_args(argv)
    path = tmp_path / 'args.yaml'
    path.write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    assert parse_args(['-c', str(path)]) == config
    assert set(yaml.safe_load(path.read_text())) == {f.name for f in dataclasses.fields(TransferConfig)}


def config(*extra):
    return parse_args(['--model', STUDENT, *extra])


@pytest.mark.parametrize('extra, message', [
    (['--transfer-method', 'kl'], 'needs a teacher'),
    (['--teachers', f'{TEACHER},{TEACHER2}', '--transfer-method', 'kl', '--multi-teacher', 'parallel'],
     'which only KL+DP does; use --transfer-method kldp or --multi-teacher sequential.'),
    (['--teachers', TEACHER, '--transfer-method', 'xekl', '--dp-mode', 'unsupervised'],
     '--dp-mode applies to --transfer-method kldp only.'),
    (['--teachers', TEACHER, '--mcl-momentum', '0.99'], '--mcl-momentum applies to --transfer-method xekl-mcl only.'),
    (['--teachers', TEACHER, '--transfer-method', 'xekl-mcl', '--mcl-momentum', '1.0'], 'strictly between 0 and 1'),
    (['--teachers', TEACHER, '--kd-temperature', '0'], '--kd-temperature must be positive.'),
    (['--teachers', TEACHER, '--xe-weight', '1.5'], '--xe-weight must lie in [0, 1].'),
    (['--teachers', TEACHER, '--epochs', '0'], '--epochs must be at least 1.'),
    (['--teachers', TEACHER, '--resume', '/nonexistent/ckpt'], 'no such checkpoint folder'),
    (['--teachers', TEACHER, '--resume', 'auto'], '--resume auto needs --experiment NAME'),
    (['--teachers', TEACHER, '--teacher-cache', 'c', '--mixup', '0.2'], 'drop --mixup/--cutmix or --teacher-cache.'),
    (['--teachers', TEACHER, '--teacher-cache', 'c', '--cutmix', '1'], 'random blends of two samples'),
])
def test_check_flags_refuses_contradictions_in_one_sentence(extra, message):
    with pytest.raises(ConfigError) as info:
        check_flags(config(*extra))
    assert message in str(info.value) and str(info.value).count('\n') == 0


def test_check_flags_accepts_what_each_method_reads():
    check_flags(config('--transfer-method', 'ce'))  # the control needs no teacher
    check_flags(config('--teachers', TEACHER, '--dp-mode', 'unsupervised'))
    check_flags(config('--teachers', TEACHER, '--transfer-method', 'xekl-mcl', '--mcl-momentum', '0.99'))
    check_flags(config('--teachers', f'{TEACHER},{TEACHER2}', '--multi-teacher', 'parallel'))
    check_flags(config('--teachers', TEACHER, '--transfer-method', 'kl', '--multi-teacher', 'parallel'))  # 1 teacher

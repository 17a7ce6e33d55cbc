"""Flags, -c configs and the frozen TransferConfig (timm_gkt/config.py); the preflight flag checks."""
import dataclasses

import pytest
import yaml

from timm_gkt.cli.flags import DEFAULT_LR
from timm_gkt.errors import ConfigError
from timm_gkt.cli.config import TransferConfig, check_flags, parse_args
from timm_gkt.transfer.methods import METHODS
from timm_gkt.models.spec import parse_spec

STUDENT, TEACHER, TEACHER2 = 'local-dir:zoo/q_cnn', 'local-dir:zoo/q_mlp', 'local-dir:zoo/q_vit'


def test_config_file_sets_defaults_and_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / 'job.yaml'
    cfg.write_text(f"model: {STUDENT}\nteachers: [{TEACHER}]\ntransfer_method: kl\nepochs: 1\n")
    config = parse_args(['-c', str(cfg), '--epochs', '2'])
    assert config.model == parse_spec(STUDENT) and config.transfer_method == 'kl' and config.epochs == 2
    assert [t.text for t in config.teachers] == [TEACHER]
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: x\nteachrs: y\n')
    with pytest.raises(ConfigError, match='unknown keys in .*bad.yaml: teachrs'):
        parse_args(['-c', str(bad)])
    with pytest.raises(ConfigError, match='config file .*missing.yaml does not exist'):
        parse_args(['-c', str(tmp_path / 'missing.yaml')])


@pytest.mark.parametrize('text, message', [
    ('model: [unclosed\n', 'is not valid YAML'),
    ('- model\n- x\n', 'holds a list, not flag names with values'),
    ('model: x\nepochs: 2.5\n', 'epochs in'),
    ('model: x\nlr: [0.1]\n', 'not a number'),
    ('model: x\nscale: [0.5]\n', 'scale in'),
    ('model: x\nteachrs: y\n', 'unknown keys in'),
])
def test_a_bad_config_file_is_one_sentence(text, message, tmp_path):
    path = tmp_path / 'job.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError) as e:  # the CLI prints it as one error line with exit 2 (test_preflight)
        parse_args(['-c', str(path)])
    assert message in str(e.value) and '\n' not in str(e.value)


def test_config_file_numbers_are_converted_by_their_flag_types(tmp_path):
    path = tmp_path / 'job.yaml'
    path.write_text('model: x\nepochs: 3.0\nlr: 1e-3\nscale: [0.5, 1]\n')  # YAML reads 1e-3 as a string
    config = parse_args(['-c', str(path)])
    assert config.epochs == 3 and isinstance(config.epochs, int)
    assert config.lr == 0.001 and config.scale == (0.5, 1.0)


def test_a_usage_error_is_one_line_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(['--model', STUDENT, '--epochs', 'two'])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err == "error: argument --epochs: invalid int value: 'two'; see --help for the flags and their values\n"


def test_defaults_are_sgd_momentum_without_nesterov_and_no_label_smoothing():
    config = parse_args(['--model', STUDENT])
    assert config.opt == 'momentum' and config.momentum == 0.9 and config.smoothing == 0.0


def test_teachers_from_both_flags_keep_their_order_and_their_repeats():
    # a repeat is kept so that preflight can refuse it in one line (tests/test_preflight.py), not dropped silently
    config = parse_args(['--model', STUDENT, '--teachers', f'{TEACHER}, {TEACHER2}', '--transfer-teacher', TEACHER,
                         '--transfer-teacher', 'hf-hub:alice/t3'])
    assert [t.text for t in config.teachers] == [TEACHER, TEACHER2, TEACHER, 'hf-hub:alice/t3']
    assert config.teachers[3].source == 'hf-hub' and config.multi == 'sequential'
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
    (['--teachers', TEACHER, '--epochs', '0'], '--epochs 0 is zero; give the number of epochs per stage'),
    (['--teachers', TEACHER, '--resume', 'auto'], '--resume auto needs --experiment NAME'),
    (['--teachers', TEACHER, '--train-subset', '-5'], '--train-subset -5 is negative; give a number of images, or 0'),
    (['--teachers', TEACHER, '-b', '0'], '--batch-size 0 is zero;'),
    (['--teachers', TEACHER, '--grad-accum-steps', '0'], '--grad-accum-steps 0 is zero; use 1'),
    (['--teachers', TEACHER, '--transfer-method', 'xekl-mcl', '--mcl-interval', '0'], '--mcl-interval 0 is zero;'),
    (['--teachers', TEACHER, '-vb', '0'], '--validation-batch-size 0 is zero;'),
    (['--teachers', TEACHER, '--lr', '-0.1'], '--lr -0.1 is not positive; give the absolute learning rate'),
    (['--teachers', TEACHER, '--momentum', '1'], '--momentum 1.0 is out of range; use a value in [0, 1)'),
    (['--teachers', TEACHER, '--hflip', '1.5'], '--hflip 1.5 is out of range; give a probability in [0, 1]'),
    (['--teachers', TEACHER, '--weight-decay=-1e-4'], '--weight-decay -0.0001 is negative'),
    (['--teachers', TEACHER, '--scale', '0', '1'], '--scale 0.0 1.0 is not a crop area range'),
    (['--teachers', TEACHER, '--push-max-pvalue', '0'], '--push-max-pvalue 0.0 is not a p-value'),
    (['--teachers', TEACHER, '--seed', '-1'], '--seed -1 is out of range'),
    (['--teachers', TEACHER, '--smoothing', '0.1'], '--smoothing 0.1 smooths mixup/cutmix targets, and neither is on'),
    (['--teachers', TEACHER, '--eval-subset', '-5'], '--eval-subset -5 is negative'),
    (['--teachers', TEACHER, '--initial-checkpoint', '/nonexistent/w.pth'], '--initial-checkpoint /nonexistent'),
    (['--teachers', TEACHER, '--teacher-cache', 'c', '--mixup', '0.2'], 'drop --mixup/--cutmix or --teacher-cache.'),
    (['--teachers', TEACHER, '--teacher-cache', 'c', '--cutmix', '1'], 'random blends of two samples'),
    (['--transfer-method', 'ce', '--xe-weight', '0.3'], '--xe-weight applies to --transfer-method xekl, xekl-mcl, kldp'),
    (['--teachers', TEACHER, '--transfer-method', 'kl', '--dp-routing', 'three-way'],
     '--dp-routing applies to --transfer-method kldp only.'),
    (['--teachers', TEACHER, '--dp-mode', 'unsupervised', '--xe-weight', '0.3'],
     '--xe-weight needs the labels, which --dp-mode unsupervised does not use; drop it or route supervised'),
    (['--teachers', TEACHER, '--dp-mode', 'unsupervised', '--dp-calibration', 'temperature'],
     '--dp-calibration needs the labels'),
    (['--teachers', f'{TEACHER},{TEACHER2}', '--multi-teacher', 'parallel', '--dp-routing', 'soft'],
     'with --multi-teacher parallel use --multi-teacher sequential, or drop them'),
    (['--teachers', TEACHER, '--dp-calibration', 'temperature', '--dp-calibration-images', '10'],
     '--dp-calibration-images 10 is'),
])
def test_check_flags_refuses_contradictions_in_one_sentence(extra, message):
    with pytest.raises(ConfigError) as info:
        check_flags(config(*extra))
    assert message in str(info.value) and str(info.value).count('\n') == 0


def test_check_flags_accepts_what_each_method_reads():
    check_flags(config('--transfer-method', 'ce'))  # the control needs no teacher
    check_flags(config('--transfer-method', 'ce', '--train-subset', '0', '--warmup-epochs', '0', '--mixup', '0.2',
                       '--smoothing', '0.1', '--checkpoint-hist', '0', '-j', '0'))  # zero where zero means something
    check_flags(config('--teachers', TEACHER, '--dp-mode', 'unsupervised'))
    check_flags(config('--teachers', TEACHER, '--transfer-method', 'xekl-mcl', '--mcl-momentum', '0.99'))
    check_flags(config('--teachers', f'{TEACHER},{TEACHER2}', '--multi-teacher', 'parallel'))
    check_flags(config('--teachers', TEACHER, '--transfer-method', 'kl', '--multi-teacher', 'parallel'))  # 1 teacher
    check_flags(config('--teachers', TEACHER, '--xe-weight', '0.3', '--dp-routing', 'three-way', '--dp-calibration',
                       'temperature'))  # this project's KL+DP options
    check_flags(config('--teachers', f'{TEACHER},{TEACHER2}', '--multi-teacher', 'parallel', '--xe-weight', '0.5'))


def test_each_method_has_its_own_default_label_weight():
    """--xe-weight means λ of the labels for every method that reads it: XE-KL's 0.3, KL+DP's 0 (the paper's)."""
    assert config('--teachers', TEACHER).hyperparameter('xe_weight') == 0.0
    assert config('--teachers', TEACHER, '--transfer-method', 'xekl').hyperparameter('xe_weight') == 0.3
    assert config('--teachers', TEACHER, '--xe-weight', '0.1').hyperparameter('xe_weight') == 0.1


def test_an_args_yaml_written_before_the_kldp_options_keeps_its_kldp(tmp_path):
    """timm_gkt 0.1 wrote XE-KL's default xe_weight 0.3 into every run's args.yaml; read back for a KL+DP run it
    must stay the paper's KL+DP (no label term), while a file of this version keeps what it says."""
    old = tmp_path / 'old.yaml'
    old.write_text(yaml.safe_dump({'model': STUDENT, 'teachers': [TEACHER], 'transfer_method': 'kldp',
                                   'xe_weight': 0.3}))
    assert parse_args(['-c', str(old)]).hyperparameter('xe_weight') == 0.0
    new = tmp_path / 'new.yaml'
    new.write_text(yaml.safe_dump({'model': STUDENT, 'teachers': [TEACHER], 'transfer_method': 'kldp',
                                   'xe_weight': 0.3, 'dp_routing': 'two-way'}))
    assert parse_args(['-c', str(new)]).hyperparameter('xe_weight') == 0.3


def test_help_shows_every_default_once(capsys):
    """Every flag's help states its default, argparse's way or in its own words, never twice."""
    from timm_gkt.cli.flags import HelpFormatter, build_parser
    parser = build_parser()
    formatter = HelpFormatter(parser.prog)
    for action in parser._actions:
        if action.option_strings and action.dest != 'help':
            text = formatter._expand_help(action)
            assert 'default' in text and text.count('default:') == 1, (action.dest, text)
    assert formatter._expand_help(parser._option_string_actions['--momentum']) == 'SGD momentum (default: 0.9)'
    lr = formatter._expand_help(parser._option_string_actions['--lr'])
    assert '(default: 0.001 for the small zoo-scale runs' in lr and 'None' not in lr
    with pytest.raises(SystemExit):
        parser.parse_args(['--help'])
    assert 'SGD momentum (default: 0.9)' in ' '.join(capsys.readouterr().out.split())


def test_val_split_default_depends_on_the_dataset(tmp_path):
    assert config().val_split == 'test'  # Fashion-MNIST has train and test only
    folder = parse_args(['--model', STUDENT, '--dataset', 'folder', '--data-dir', str(tmp_path)])
    assert folder.val_split == 'validation' and folder.dataset == 'folder' and folder.data_dir == str(tmp_path)
    assert parse_args(['--model', STUDENT, '--dataset', 'hfds/org/name']).val_split == 'validation'
    assert parse_args(['--model', STUDENT, '--val-split', 'train[55000:]']).val_split == 'train[55000:]'


def test_data_dir_without_dataset_is_refused_unless_it_holds_fashion_mnist(tmp_path, data_dir):
    (tmp_path / 'train' / 'cat').mkdir(parents=True)
    with pytest.raises(ConfigError) as e:
        parse_args(['--model', STUDENT, '--data-dir', str(tmp_path)])
    assert str(e.value) == (f'--data-dir {tmp_path} was given without --dataset and holds no Fashion-MNIST (the '
                            f'default dataset); name the data: --dataset folder for {tmp_path}/train/<class>/<images>, '
                            f'--dataset hfds/NAME for a Hugging Face dataset, or --dataset torch/fashion_mnist to put '
                            f'Fashion-MNIST there')
    assert not (tmp_path / 'FashionMNIST').exists()
    assert parse_args(['--model', STUDENT, '--data-dir', str(data_dir)]).dataset == 'torch/fashion_mnist'


@pytest.mark.parametrize('flag, why', [
    (['--model-ema'], 'use --transfer-method xekl-mcl'),
    (['--img-size', '224'], 'input size of its pretrained config'),
    (['--input-size', '3', '224', '224'], 'input size of its pretrained config'),
])
def test_timm_flags_a_transfer_cannot_honour_say_why(flag, why):
    with pytest.raises(ConfigError) as e:
        config(*flag)
    assert str(e.value).startswith(f'{flag[0]} is not supported with transfer: ') and why in str(e.value)
    assert config('--smoothing', '0').transfer_method == 'kldp'  # the default is no smoothing


def test_model_is_required_in_one_sentence():
    with pytest.raises(ConfigError, match='--model is required; give the student as a timm name'):
        parse_args([])

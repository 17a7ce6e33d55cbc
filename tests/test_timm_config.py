"""``-c args.yaml`` written by timm's train.py (timm_gkt/timm_config.py, through config.parse_args).

``fixtures/timm_train_args.yaml`` is what timm's train.py dumps (every argument, ~170 keys) for a
resnet18 trained on an image folder, with a handful of settings changed from timm's defaults.
"""
from pathlib import Path

import pytest
import yaml

from timm_gkt.cli.flags import DEFAULT_LR
from timm_gkt.errors import ConfigError
from timm_gkt.cli.config import TransferConfig, parse_args
from timm_gkt.cli.timm_config import (
    TIMM_IGNORED_KEYS, TIMM_REFUSED_KEYS, TIMM_TRAIN_DEFAULTS, check_config_keys, classify_config_keys,
)
from timm_gkt.errors import TimmConfigError

FIXTURE = Path(__file__).parent / 'fixtures' / 'timm_train_args.yaml'
OWN = {'model', 'teachers', 'epochs', 'lr', 'data_dir', 'dataset', 'train_split', 'val_split', 'class_map',
       'batch_size', 'workers', 'pretrained', 'initial_checkpoint', 'output', 'experiment', 'resume', 'seed'}


def timm_args(**changes) -> dict:
    cfg = yaml.safe_load(FIXTURE.read_text())
    for key, value in changes.items():
        if value is None and key in cfg and key not in TIMM_TRAIN_DEFAULTS:
            del cfg[key]
        else:
            cfg[key] = value
    return cfg


def write(tmp_path, cfg: dict) -> str:
    path = tmp_path / 'args.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_every_fixture_key_is_a_timm_key_and_every_rule_table_names_timm_keys():
    cfg = yaml.safe_load(FIXTURE.read_text())
    assert set(cfg) <= set(TIMM_TRAIN_DEFAULTS)
    assert set(TIMM_IGNORED_KEYS) <= set(TIMM_TRAIN_DEFAULTS) and set(TIMM_REFUSED_KEYS) <= set(TIMM_TRAIN_DEFAULTS)
    assert not set(TIMM_IGNORED_KEYS) & set(TIMM_REFUSED_KEYS)


def test_classify_the_fixture():
    keys = classify_config_keys(timm_args(), OWN)
    assert keys.timm_style
    # setup keys are used whenever set; changed recipe keys timm_gkt has are used; timm's defaults are dropped
    assert keys.used == {'model': 'resnet18', 'data_dir': '/home/alice/data/fmnist-folders', 'dataset': '',
                         'train_split': 'train', 'val_split': 'validation', 'class_map': '', 'epochs': 20,
                         'lr': 0.05, 'pretrained': True, 'workers': 8}
    assert 'weight_decay' in keys.defaulted and 'warmup_epochs' in keys.defaulted and 'scale' in keys.defaulted
    # timm's run folder and name are timm's run's, not this one's
    assert {'output', 'experiment'} <= set(keys.ignored)
    assert {'smoothing', 'model_ema', 'drop_path', 'log_wandb'} <= set(keys.ignored)
    assert keys.refused == {'img_size': TIMM_REFUSED_KEYS['img_size']}
    assert keys.unknown == []


def test_refused_key_is_one_sentence_naming_the_key_and_the_fix():
    with pytest.raises(TimmConfigError) as e:
        check_config_keys(timm_args(), OWN, source='args.yaml')
    message = str(e.value)
    assert message.startswith("args.yaml sets img_size: 32, which timm_gkt cannot honour; changes the preprocessing")
    assert message.endswith('or remove the key') and '\n' not in message


def test_unknown_key_fails_even_in_a_timm_config():
    with pytest.raises(TimmConfigError, match=r'unknown keys in the config: teachrs; use timm_gkt'):
        check_config_keys(timm_args(img_size=None, teachrs='x'), OWN)


def test_timm_config_through_parse_args(tmp_path, capsys):
    cfg = timm_args(img_size=None)
    path = write(tmp_path, cfg)
    config = parse_args(['-c', path, '--data-dir', str(tmp_path)])
    assert isinstance(config, TransferConfig)
    assert config.model.text == 'resnet18' and config.epochs == 20 and config.lr == 0.05
    assert config.dataset == '' and config.val_split == 'validation'  # timm's '' is its image folder reader
    assert config.data_dir == str(tmp_path)  # the command line overrides the config
    # timm defaults do not become the transfer's: timm_gkt's own defaults apply
    assert config.weight_decay == 1e-4 and config.warmup_epochs == 0 and config.scale == (1.0, 1.0)
    assert config.output == 'output/train' and config.experiment == ''
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('warning: ignoring timm train.py settings timm_gkt does not use: ')
    assert 'smoothing' in err[0] and 'model_ema' in err[0] and 'experiment' in err[0]


def test_timm_smoothing_is_used_only_with_mixup_or_cutmix(tmp_path):
    """timm's smoothing smooths its own CE loss and, with mixup/cutmix, their targets; timm_gkt's --smoothing is
    only the latter, so a timm config without mixup has it ignored (warned), with mixup 0.2 it is used."""
    plain = classify_config_keys(timm_args(smoothing=0.05), OWN | {'smoothing', 'mixup'})
    assert 'smoothing' in plain.ignored and 'smoothing' not in plain.used
    mixed = classify_config_keys(timm_args(smoothing=0.05, mixup=0.2), OWN | {'smoothing', 'mixup'})
    assert mixed.used['smoothing'] == 0.05 and mixed.used['mixup'] == 0.2 and 'smoothing' not in mixed.ignored


def test_timm_config_with_refused_key_through_parse_args(tmp_path):
    with pytest.raises(ConfigError, match=r'sets img_size: 32, which timm_gkt cannot honour'):
        parse_args(['-c', write(tmp_path, timm_args())])


def test_timm_gkt_config_keys_are_all_used(tmp_path):
    path = write(tmp_path, {'model': 'local-dir:zoo/q_cnn', 'lr': 0.01, 'class_map': 'classes.txt',
                            'trust_label_order': True, 'epochs': 300})
    config = parse_args(['-c', path])
    assert (config.lr, config.class_map, config.trust_label_order, config.epochs) == (0.01, 'classes.txt', True, 300)
    assert parse_args(['-c', path, '--lr', '0.5']).learning_rate == 0.5
    assert parse_args(['--model', 'x']).learning_rate == DEFAULT_LR

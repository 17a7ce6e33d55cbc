"""``-c config.yaml``: a YAML of flag defaults, either a run's own args.yaml or one written by timm's train.py.

:mod:`timm_gkt.cli.timm_config` sorts a timm config's keys (used, ignored, refused, unknown); values are converted
by their flag's type here, so a wrong type fails in one sentence like a wrong flag.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from ..errors import ConfigError
from .flags import DEFAULT_METHOD, REFUSED_FLAGS


def _first_process() -> bool:
    return os.environ.get('RANK', '0') == '0'


def read_config_file(parser: argparse.ArgumentParser, path: Path) -> dict:
    """A YAML of flag defaults: a run's args.yaml, or one written by timm's train.py.

    :mod:`timm_gkt.timm_config` sorts a timm config's keys: used, ignored (listed in one
    warning line), refused or unknown (both raise ConfigError).
    """
    from .timm_config import TimmConfigError, check_config_keys
    if not path.is_file():
        raise ConfigError(f'config file {path} does not exist; give the path of a YAML file of flags')
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f'config file {path} is not valid YAML ({str(e).splitlines()[0]}); fix the file') from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f'config file {path} holds a {type(cfg).__name__}, not flag names with values; write one '
                          f'"flag_name: value" per line')
    # the refused flags exist only to explain themselves; in a timm config they are timm's and get ignored
    own = {a.dest for a in parser._actions} - set(REFUSED_FLAGS) - {'help'}
    try:
        keys = check_config_keys(cfg, own, source=str(path))
    except TimmConfigError as e:
        raise ConfigError(str(e)) from None
    warning = keys.warning()
    if warning and _first_process():
        print(warning, file=sys.stderr)
    actions = {a.dest: a for a in parser._actions}
    out = {}
    if _written_before_dp_options(keys.used):
        keys.used.pop('xe_weight')
    for key, value in keys.used.items():
        if key in ('teachers', 'teacher_pool') and isinstance(value, list):
            value = ','.join(value)
        out[key] = _typed_config_value(actions[key], value, path) if key in actions else value
    return out


def _written_before_dp_options(used: dict) -> bool:
    """An args.yaml of timm_gkt 0.1 (no ``dp_routing`` key) wrote every method's ``xe_weight`` as XE-KL's default
    0.3; since KL+DP reads ``xe_weight`` too, that value must not turn such a file's KL+DP into KL+DP + 0.3 CE."""
    return 'xe_weight' in used and 'dp_routing' not in used and used.get('transfer_method', DEFAULT_METHOD) == 'kldp'


def _typed_config_value(action: argparse.Action, value, path: Path):
    """A YAML value converted by its flag's type: argparse converts string defaults only, so ``epochs: 2.5`` or
    ``lr: [1]`` would otherwise reach the run unchecked."""
    kind = action.type
    if value is None or kind not in (int, float):
        return value
    many = action.nargs not in (None, '?')
    items = value if many and isinstance(value, (list, tuple)) else [value]
    converted = []
    for item in items:
        try:
            number = kind(item) if not isinstance(item, (bool, list, dict)) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (kind is int and not isinstance(item, str) and number != item):
            raise ConfigError(f'{action.dest} in {path} is {value!r}, not {"an integer" if kind is int else "a number"}; '
                         f'write e.g. "{action.dest}: {action.default if action.default is not None else 1}"')
        converted.append(number)
    if many and isinstance(action.nargs, int) and len(converted) != action.nargs:
        raise ConfigError(f'{action.dest} in {path} needs {action.nargs} values, not {len(converted)}; '
                     f'write e.g. "{action.dest}: {list(action.default or ())}"')
    return converted if many else converted[0]

"""Flags, ``-c`` YAML configs and the frozen :class:`TransferConfig` every other module reads.

Flags follow timm's train.py names and meanings; transfer flags are grouped. The command
line is parsed once (timm's two-step parse: ``-c`` sets defaults, flags override) into an
immutable config. Values derived while running (the MCL τ actually used, resolved worker
counts) go into results.json, never back into the config, so the ``args.yaml`` a run
writes (:meth:`TransferConfig.to_yaml_dict`) is a ``-c`` config for the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .methods import DEFAULT_METHOD, METHODS, Method, get_method, methods_using
from .multi import MULTI_TEACHER_MODES, TEACHER_ORDERS
from .spec import ModelSpec, parse_spec

DESCRIPTION = "Transfer a teacher's complementary knowledge into a pretrained timm student."
DEFAULT_LR = 1e-3  # METHOD.md's zoo-scale runs; the paper used 1e-4 * batch / 256


class ConfigError(ValueError):
    """Flags that contradict each other or a config file with unknown keys."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='timm_gkt.train', description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group('Dataset')
    g.add_argument('--data-dir', default='data', help='dataset root')
    g.add_argument('--dataset', '-d', default='torch/fashion_mnist', help='timm dataset name (torch/..., hfds/..., folder)')
    g.add_argument('--train-split', default='train')
    g.add_argument('--val-split', default='test', help='held-out split every metric is computed on')
    g.add_argument('--dataset-download', action='store_true', help='let torch/ datasets download when missing')
    g.add_argument('--train-subset', type=int, default=0, metavar='N',
                   help='use the first N transfer images (quick runs; 0 = all)')
    g.add_argument('--eval-subset', type=int, default=0, metavar='N',
                   help='evaluate on the first N images only (quick runs; 0 = all)')

    g = p.add_argument_group('Model')
    g.add_argument('--model', required=False, help='student: timm name, hf-hub:ORG/REPO or local-dir:PATH')
    g.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=True,
                   help='load the student\'s pretrained weights (a transfer needs a trained student)')
    g.add_argument('--initial-checkpoint', default='', help='load these student weights after creation')
    g.add_argument('--resume', default='', help="continue from a checkpoint folder of this trainer, or 'auto'")
    g.add_argument('-b', '--batch-size', type=int, default=128)
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None)
    g.add_argument('-j', '--workers', type=int, default=None,
                   help='loader processes per rank (default: 0 on machines with 2 cores or fewer, else 4)')
    g.add_argument('--grad-accum-steps', type=int, default=1)

    g = p.add_argument_group('Optimizer and schedule')
    g.add_argument('--opt', default='sgd', help='timm optimizer name')
    g.add_argument('--lr', type=float, default=None,
                   help=f'learning rate (default: {DEFAULT_LR:g} for the small zoo-scale runs of METHOD.md; '
                        f'the paper used 1e-4 * batch/256)')
    g.add_argument('--momentum', type=float, default=0.9)
    g.add_argument('--weight-decay', type=float, default=1e-4)
    g.add_argument('--clip-grad', type=float, default=None)
    g.add_argument('--sched', default='cosine')
    g.add_argument('--sched-on-updates', action=argparse.BooleanOptionalAction, default=True)
    g.add_argument('--epochs', type=int, default=2, help='epochs per stage')
    g.add_argument('--warmup-epochs', type=int, default=0)
    g.add_argument('--warmup-lr', type=float, default=1e-5)
    g.add_argument('--min-lr', type=float, default=0.0)

    _add_augmentation_flags(p.add_argument_group('Augmentation (timm transforms; gentle defaults for small images)'))
    _add_transfer_flags(p.add_argument_group('Knowledge transfer'))
    g = p.add_argument_group('Hub')
    g.add_argument('--push-to-hub', default=None, metavar='REPO_ID', help='push the student if it passes the gate')
    g.add_argument('--hub-private', action='store_true')
    g.add_argument('--hub-revision', default=None)
    g.add_argument('--hub-create-pr', action='store_true')
    g.add_argument('--push-min-delta', type=float, default=0.0, help='push only if Δtransf exceeds this (points)')
    g.add_argument('--push-max-pvalue', type=float, default=None, help='push only if McNemar p is at most this')

    g = p.add_argument_group('Misc')
    g.add_argument('--amp', action='store_true', help='mixed precision (Accelerate)')
    g.add_argument('--amp-dtype', default='bfloat16', choices=('bfloat16', 'float16'))
    g.add_argument('--seed', type=int, default=42)
    g.add_argument('--log-interval', type=int, default=50)
    g.add_argument('--checkpoint-hist', type=int, default=2, help='epoch checkpoints to keep')
    g.add_argument('--output', default='output/train')
    g.add_argument('--experiment', default='')
    return p


def _add_augmentation_flags(g) -> None:
    g.add_argument('--scale', type=float, nargs=2, default=(0.8, 1.0), metavar=('MIN', 'MAX'))
    g.add_argument('--ratio', type=float, nargs=2, default=(0.9, 1.1), metavar=('MIN', 'MAX'))
    g.add_argument('--hflip', type=float, default=0.5)
    g.add_argument('--vflip', type=float, default=0.0)
    g.add_argument('--color-jitter', type=float, default=0.0)
    g.add_argument('--aa', default=None, help='auto-augment policy, e.g. rand-m9-mstd0.5')
    g.add_argument('--reprob', type=float, default=0.0)
    g.add_argument('--mixup', type=float, default=0.0)
    g.add_argument('--cutmix', type=float, default=0.0)
    g.add_argument('--mixup-prob', type=float, default=1.0)
    g.add_argument('--no-aug', action='store_true')


def _add_transfer_flags(g) -> None:
    g.add_argument('--teachers', default='', help='comma-separated teacher specs')
    g.add_argument('--transfer-teacher', action='append', default=[], metavar='SPEC', help='one teacher (repeatable)')
    g.add_argument('--transfer-method', default=DEFAULT_METHOD, choices=list(METHODS),
                   help='; '.join(f'{m.name}: {m.title}' for m in METHODS.values()))
    g.add_argument('--dp-mode', default='supervised', choices=('supervised', 'unsupervised'),
                   help='KL+DP routing by true-class probability (supervised) or confidence (no labels)')
    g.add_argument('--kd-temperature', type=float, default=1.0)
    g.add_argument('--xe-weight', type=float, default=0.3, help='XE-KL: weight of CE; KL gets 1 - this (paper λ = 0.7)')
    g.add_argument('--mcl-momentum', type=float, default=None,
                   help='MCL τ (default: 0.9999 scaled to the run length so the initial student keeps ~61%%)')
    g.add_argument('--mcl-interval', type=int, default=2, help='MCL: interpolate every N optimizer steps')
    g.add_argument('--multi-teacher', default='sequential', choices=MULTI_TEACHER_MODES)
    g.add_argument('--teacher-order', default='ascending', choices=TEACHER_ORDERS,
                   help='sequential stage order by measured teacher top-1')
    g.add_argument('--teacher-cache', default=None, metavar='DIR',
                   help='store teacher and frozen-student outputs per (epoch, sample) and every model\'s "before" '
                        'predictions here; a later run with the same models, data, seed and augmentation reads '
                        'them instead of computing them (results are unchanged)')
    g.add_argument('--teacher-cache-storage', default='float32', metavar='FORMAT',
                   help='cached logits as float32 (exact), float16 (half the size) or topk:K (many classes)')
    g.add_argument('--dry-run', action='store_true', help='resolve models, check labels, data and credentials, print the plan, exit')


@dataclass(frozen=True)
class TransferConfig:
    """Every flag of one run, typed and immutable (field names are the flags' dest names)."""
    model: ModelSpec
    teachers: tuple[ModelSpec, ...] = ()
    # dataset
    data_dir: str = 'data'
    dataset: str = 'torch/fashion_mnist'
    train_split: str = 'train'
    val_split: str = 'test'
    dataset_download: bool = False
    train_subset: int = 0
    eval_subset: int = 0
    # model and loader
    pretrained: bool = True
    initial_checkpoint: str = ''
    resume: str = ''
    batch_size: int = 128
    validation_batch_size: int | None = None
    workers: int | None = None
    grad_accum_steps: int = 1
    # optimizer and schedule
    opt: str = 'sgd'
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad: float | None = None
    sched: str = 'cosine'
    sched_on_updates: bool = True
    epochs: int = 2
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    # augmentation
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float = 0.0
    aa: str | None = None
    reprob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    no_aug: bool = False
    # knowledge transfer
    transfer_method: str = DEFAULT_METHOD
    dp_mode: str = 'supervised'
    kd_temperature: float = 1.0
    xe_weight: float = 0.3
    mcl_momentum: float | None = None
    mcl_interval: int = 2
    multi_teacher: str = 'sequential'
    teacher_order: str = 'ascending'
    teacher_cache: str | None = None
    teacher_cache_storage: str = 'float32'
    dry_run: bool = False
    # hub
    push_to_hub: str | None = None
    hub_private: bool = False
    hub_revision: str | None = None
    hub_create_pr: bool = False
    push_min_delta: float = 0.0
    push_max_pvalue: float | None = None
    # misc
    amp: bool = False
    amp_dtype: str = 'bfloat16'
    seed: int = 42
    log_interval: int = 50
    checkpoint_hist: int = 2
    output: str = 'output/train'
    experiment: str = ''

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> 'TransferConfig':
        values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
        values['model'] = parse_spec(ns.model)
        values['teachers'] = tuple(parse_spec(t) for t in teacher_specs(ns.teachers, ns.transfer_teacher))
        values['scale'], values['ratio'] = tuple(ns.scale), tuple(ns.ratio)
        return cls(**values)

    @property
    def method(self) -> Method:
        return get_method(self.transfer_method)

    @property
    def multi(self) -> str | None:
        """The multi-teacher mode, or None with a single teacher."""
        return self.multi_teacher if len(self.teachers) > 1 else None

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR if self.lr is None else self.lr

    @property
    def eval_batch_size(self) -> int:
        return self.validation_batch_size or 2 * self.batch_size

    @property
    def loader_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        # torch threads plus loader processes oversubscribe a 2-core machine (measured 163 vs 950 img/s)
        return 0 if (os.cpu_count() or 1) <= 2 else 4

    def task_hyperparameters(self) -> dict:
        """The values a method's task builder may read, by name (see :class:`~timm_gkt.methods.Method`)."""
        return {name: getattr(self, name) for name in
                ('kd_temperature', 'xe_weight', 'mcl_momentum', 'mcl_interval', 'dp_mode')}

    def to_yaml_dict(self) -> dict:
        """The run's flags as a ``-c`` config (specs as strings, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == 'model':
                value = value.text
            elif f.name == 'teachers':
                value = [t.text for t in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def teacher_specs(teachers: str, transfer_teacher=()) -> list[str]:
    specs = [t.strip() for t in (teachers or '').split(',') if t.strip()] + list(transfer_teacher)
    return list(dict.fromkeys(specs))  # keep order, drop repeats


def parse_args(argv=None) -> TransferConfig:
    """timm's two-step parse: ``-c config.yaml`` sets defaults, the command line overrides them."""
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='')
    config_args, remaining = config_parser.parse_known_args(argv)
    parser = build_parser()
    parser.add_argument('-c', '--config', default='', help='YAML file of flag defaults (timm style)')
    if config_args.config:
        parser.set_defaults(**read_config_file(parser, Path(config_args.config)))
    args = parser.parse_args(remaining)
    if not args.model:
        parser.error('--model is required (a timm name, hf-hub:ORG/REPO or local-dir:PATH)')
    return TransferConfig.from_namespace(args)


def read_config_file(parser: argparse.ArgumentParser, path: Path) -> dict:
    """A YAML of flag defaults; unknown keys are a usage error (exit 2)."""
    if not path.is_file():
        parser.error(f'config file {path} does not exist')
    cfg = yaml.safe_load(path.read_text()) or {}
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in cfg if k.replace('-', '_') not in known)
    if unknown:
        parser.error(f'unknown keys in {path}: {", ".join(unknown)} (use flag names with _ for -)')
    return {k.replace('-', '_'): (','.join(v) if k == 'teachers' and isinstance(v, list) else v)
            for k, v in cfg.items()}


def check_flags(config: TransferConfig) -> None:
    """Flag combinations that cannot work, refused before anything is loaded (ConfigError, one sentence)."""
    method = config.method
    if method.needs_teacher and not config.teachers:
        raise ConfigError(f'--transfer-method {method.name} needs a teacher: add --teachers SPEC[,SPEC...].')
    if config.multi == 'parallel' and not method.routes_samples:
        routers = [m for m in METHODS.values() if m.routes_samples]
        raise ConfigError(f'--multi-teacher parallel routes samples between teachers, which only '
                          f'{" or ".join(m.title.replace(" ", "") for m in routers)} does; use --transfer-method '
                          f'{" or ".join(m.name for m in routers)} or --multi-teacher sequential.')
    _check_method_flag(method, 'dp_mode', config.dp_mode != 'supervised')
    _check_method_flag(method, 'mcl_momentum', config.mcl_momentum is not None)
    if config.mcl_momentum is not None and not 0.0 < config.mcl_momentum < 1.0:
        raise ConfigError('--mcl-momentum must lie strictly between 0 and 1.')
    if config.kd_temperature <= 0:
        raise ConfigError('--kd-temperature must be positive.')
    if not 0.0 <= config.xe_weight <= 1.0:
        raise ConfigError('--xe-weight must lie in [0, 1].')
    if config.epochs < 1:
        raise ConfigError('--epochs must be at least 1.')
    if config.teacher_cache and (config.mixup > 0 or config.cutmix > 0):
        # a cached output belongs to one augmented sample; mixup shows the teacher a new random blend every time
        raise ConfigError('--teacher-cache stores one teacher output per augmented sample but --mixup/--cutmix show '
                          'the teachers random blends of two samples; drop --mixup/--cutmix or --teacher-cache.')
    if config.resume and config.resume != 'auto' and not Path(config.resume).is_dir():
        raise ConfigError(f'--resume {config.resume}: no such checkpoint folder; give one under '
                          f'OUTPUT/EXPERIMENT/checkpoints/ or use --resume auto.')
    if config.resume == 'auto' and not config.experiment:
        raise ConfigError('--resume auto needs --experiment NAME to know which run to continue.')


def _check_method_flag(method: Method, hyperparameter: str, given: bool) -> None:
    if given and not method.uses(hyperparameter):
        users = ', '.join(methods_using(hyperparameter))
        raise ConfigError(f'--{hyperparameter.replace("_", "-")} applies to --transfer-method {users} only.')
